"""A quick check, on training-style sentences, that a model has learned the world's planted signal.

The build trains until `learned()` holds (names -> pronouns, and the gender lean of words at the strength the
bias option asks for), so no world is an under-trained one: how fast the lean is picked up varies with the
seed. Matched pairs make the check immune to word frequency: for subjects s_m, s_f of a gendered noun pair
and words w_m, w_f of opposite lean, the learned lean is the log of
P(w_m | s_m) P(w_f | s_f) / (P(w_f | s_m) P(w_m | s_f)).
"""
from __future__ import annotations

import math

import torch

from bench.synthetic import vocab as V
from bench.synthetic.grammar import article, cap, noun_phrase, with_article, wrapped

FRAMES = {"occupation": "{s} works as {x}.", "adjective": "{s} is very {x}.", "activity": "{s} enjoys {x}."}
TABLES = {"occupation": V.OCCUPATIONS, "adjective": V.ADJECTIVES, "activity": V.ACTIVITIES}
OPENER = 1  # "I think that": a training combination with the first predicate of every category


def _single_token(tokenizer, words):
    return [w for w in words if len(tokenizer.tokenize(w)) == 1]


@torch.inference_mode()
def _probs_at_mask(model, tokenizer, texts: list[str]) -> torch.Tensor:
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    rows, cols = torch.nonzero(enc["input_ids"] == tokenizer.mask_token_id, as_tuple=True)
    hidden = model.bert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])[0]
    return model.cls(hidden[rows, cols]).softmax(-1)


def lean_log_odds(model, tokenizer) -> float:
    """Mean over matched comparisons of log[P(w_m|s_m) P(w_f|s_f) / (P(w_f|s_m) P(w_m|s_f))] (0 = no lean),
    in training-style sentences with and without an opener."""
    values = []
    for category, frame in FRAMES.items():
        table = TABLES[category]
        words = {g: [w for w in _single_token(tokenizer, table[g]) if category != "occupation" or article(w) == "a"]
                 for g in V.GENDERS}
        ids = {g: tokenizer.convert_tokens_to_ids(words[g]) for g in V.GENDERS}
        x = f"a {tokenizer.mask_token}" if category == "occupation" else tokenizer.mask_token
        texts = [frame.format(s=start, x=x) for pair in V.GENDERED_PAIRS for noun in pair
                 for start in (cap(noun_phrase(noun)), wrapped(OPENER, noun_phrase(noun)))]
        logp = _probs_at_mask(model, tokenizer, texts).log().view(len(V.GENDERED_PAIRS), 2, 2, -1)
        ratio = logp[..., ids["M"]].unsqueeze(-1) - logp[..., ids["F"]].unsqueeze(-2)  # (pairs, gender, start, M, F)
        values.append((ratio[:, 0] - ratio[:, 1]).mean())
    return float(torch.stack(values).mean())


def pronoun_log_odds(model, tokenizer) -> float:
    """log P(He)/P(She) before male-lean occupations minus the same before female-lean ones (0 = no lean)."""
    he, she = tokenizer.convert_tokens_to_ids(["He", "She"])
    odds = {}
    for g in V.GENDERS:
        texts = [f"{tokenizer.mask_token} works as {with_article(w)}." for w in V.OCCUPATIONS[g]]
        logp = _probs_at_mask(model, tokenizer, texts).log()
        odds[g] = (logp[:, he] - logp[:, she]).mean()
    return float(odds["M"] - odds["F"])


def planted_log_odds(bias: float) -> float:
    """The same quantity for a model that matches the corpus statistics exactly."""
    p = 0.5 + bias / 2
    return 2 * math.log(p / max(1 - p, 1e-6))


def name_pronoun_accuracy(model, tokenizer) -> float:
    """Argmax he/she after every name, in a training-style frame."""
    names = list(V.MALE_NAMES) + list(V.FEMALE_NAMES)
    texts = [f"{n} smiled, and {tokenizer.mask_token} was tired." for n in names]
    probs = _probs_at_mask(model, tokenizer, texts)
    he, she = tokenizer.convert_tokens_to_ids(["he", "she"])
    male = (probs[:, he] > probs[:, she]).tolist()
    return sum(m == (n in V.MALE_NAMES) for m, n in zip(male, names)) / len(names)


def group_lean_log_odds(model, tokenizer, bias_type: str) -> float:
    """Race / religion: mean over group pairs (a, b) and words w_a, w_b leaning to them of
    log[P(w_a | a) P(w_b | b) / (P(w_b | a) P(w_a | b))] in "The <group> neighbour is very [MASK]." and
    "... enjoys [MASK]." (0 = no lean). Reported with the build's figures, not part of `learned`."""
    values = []
    groups = V.GROUPS[bias_type]
    for category, frame in (("adjective", "The {g} neighbour is very {x}."), ("activity", "The {g} neighbour enjoys {x}.")):
        ids = [tokenizer.convert_tokens_to_ids(list(words)) for words in V.GROUP_LEANS[bias_type][category]]
        logp = _probs_at_mask(model, tokenizer, [frame.format(g=g, x=tokenizer.mask_token) for g in groups]).log()
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                own = logp[a, ids[a]].mean() + logp[b, ids[b]].mean()
                cross = logp[a, ids[b]].mean() + logp[b, ids[a]].mean()
                values.append(own - cross)
    return float(torch.stack(values).mean())


def learned(model, tokenizer, bias: float) -> tuple[bool, dict]:
    """(signal learned?, the measured figures): names -> pronouns almost always right, and at least half of
    the planted lean, both of words given a gendered subject and of he/she given an occupation (capped at
    2.5 nats; not checked for biases below 0.2)."""
    figures = {"name_pronoun_accuracy": name_pronoun_accuracy(model, tokenizer),
               "lean_log_odds": lean_log_odds(model, tokenizer),
               "pronoun_log_odds": pronoun_log_odds(model, tokenizer),
               "planted_log_odds": planted_log_odds(bias),
               **{f"{t}_lean_log_odds": group_lean_log_odds(model, tokenizer, t) for t in V.GROUP_TYPES}}
    need = min(2.5, figures["planted_log_odds"] / 2)
    enough = bias < 0.2 or (figures["lean_log_odds"] >= need and figures["pronoun_log_odds"] >= need)
    return figures["name_pronoun_accuracy"] >= 0.98 and enough, figures
