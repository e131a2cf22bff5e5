"""The causal counterpart of bench.synthetic.probe: whether a causal LM of the world has learned its planted
signal, read with the causal scoring primitive the metrics use (bench.models.causal_scoring.token_log_probs:
log P(tokens | start token, prefix)).

A causal LM sees only what comes before, so each figure conditions on a prefix of a training-style sentence:
- names -> pronouns: "John smiled, and" -> he vs. she;
- the lean of words given a gendered subject (matched pairs, as the masked probe): for subjects s_m, s_f of a
  gendered noun pair and words w_m, w_f of opposite lean, log P(w_m | s_m) P(w_f | s_f) / (P(w_f | s_m) P(w_m | s_f))
  after "<s> works as a" / "<s> is very" / "<s> enjoys", with and without an opener;
- the lean of pronouns given an occupation: log P(he)/P(she) after "The engineer said that" (and his/her after
  "The engineer lost") for male-lean occupations minus female-lean ones, the pronoun of the corpus' lines about
  an occupation (planted log-odds 2 log((1 + bias) / (1 - bias))).
A word's log-probability is that of all its tokens.
"""
from __future__ import annotations

import numpy as np

from bench.synthetic import vocab as V
from bench.synthetic.grammar import article, cap, noun_phrase, wrapped
from bench.synthetic.probe import FRAMES, OPENER, TABLES, planted_log_odds

PRONOUN_FRAMES = (("The {o} said that", "subject"), ("The {o} lost", "possessive"))


def subject_of(model, tokenizer):
    """A causal Subject of a bare model (what the scoring primitive takes)."""
    from bench.models.loading import make_subject

    return make_subject(model, tokenizer, "clm", name="synthetic-clm probe", source="probe")


def next_log_probs(subject, prefixes: list[str], words: list[str]) -> np.ndarray:
    """(len(prefixes), len(words)): log P(word | start token, prefix) (a word's tokens after " prefix")."""
    from bench.models.causal import start_id
    from bench.models.causal_scoring import TokenQuery, sentence_ids, token_log_probs

    start = start_id(subject.tokenizer)
    heads = sentence_ids(subject.tokenizer, prefixes)
    tails = sentence_ids(subject.tokenizer, words)
    queries = [TokenQuery((start, *h, *t), first=1 + len(h)) for h in heads for t in tails]
    scores = token_log_probs(subject, queries)
    return np.array([s.sum() for s in scores]).reshape(len(prefixes), len(words))


def lean_log_odds(subject) -> float:
    """Mean over matched comparisons of log[P(w_m|s_m) P(w_f|s_f) / (P(w_f|s_m) P(w_m|s_f))] (0 = no lean)."""
    values = []
    for category, frame in FRAMES.items():
        words = {g: [w for w in TABLES[category][g] if category != "occupation" or article(w) == "a"]
                 for g in V.GENDERS}  # fmt: skip
        head = frame.split("{x}")[0] + ("a" if category == "occupation" else "")
        prefixes = [head.format(s=start).rstrip() for pair in V.GENDERED_PAIRS for noun in pair
                    for start in (cap(noun_phrase(noun)), wrapped(OPENER, noun_phrase(noun)))]  # fmt: skip
        logp = next_log_probs(subject, prefixes, words["M"] + words["F"]).reshape(len(V.GENDERED_PAIRS), 2, 2, -1)
        male, female = logp[..., : len(words["M"])], logp[..., len(words["M"]) :]
        ratio = male[..., :, None] - female[..., None, :]  # (pairs, gender, start, M, F)
        values.append((ratio[:, 0] - ratio[:, 1]).mean())
    return float(np.mean(values))


def pronoun_log_odds(subject) -> float:
    """log P(he)/P(she) after an occupation subject, male-lean occupations minus female-lean ones (0 = no lean)."""
    odds = {}
    for g in V.GENDERS:
        per_frame = []
        for frame, role in PRONOUN_FRAMES:
            logp = next_log_probs(subject, [frame.format(o=o) for o in V.OCCUPATIONS[g]], list(V.PRONOUNS[role]))
            per_frame.append((logp[:, 0] - logp[:, 1]).mean())
        odds[g] = np.mean(per_frame)
    return float(odds["M"] - odds["F"])


def name_pronoun_accuracy(subject) -> float:
    """he more likely than she after "<name> smiled, and", for every male and female name."""
    names = list(V.MALE_NAMES) + list(V.FEMALE_NAMES)
    logp = next_log_probs(subject, [f"{n} smiled, and" for n in names], ["he", "she"])
    return float(np.mean((logp[:, 0] > logp[:, 1]) == np.array([n in V.MALE_NAMES for n in names])))


def group_lean_log_odds(subject, bias_type: str) -> float:
    """Race / religion: mean over group pairs (a, b) of log[P(w_a | a) P(w_b | b) / (P(w_b | a) P(w_a | b))] after
    "The <group> neighbour is very" / "... enjoys" (0 = no lean); reported, not part of `learned`."""
    values = []
    groups = V.GROUPS[bias_type]
    for category, head in (("adjective", "The {g} neighbour is very"), ("activity", "The {g} neighbour enjoys")):
        lists = [list(words) for words in V.GROUP_LEANS[bias_type][category]]
        logp = next_log_probs(subject, [head.format(g=g) for g in groups], sum(lists, []))
        bounds = np.cumsum([0] + [len(w) for w in lists])
        mean = lambda a, b: logp[a, bounds[b] : bounds[b + 1]].mean()  # noqa: E731 - group a's P of b's words
        values += [mean(a, a) + mean(b, b) - mean(a, b) - mean(b, a)
                   for a in range(len(groups)) for b in range(a + 1, len(groups))]  # fmt: skip
    return float(np.mean(values))


def learned(model, tokenizer, bias: float) -> tuple[bool, dict]:
    """(signal learned?, the measured figures), by the masked probe's rule: names -> pronouns almost always
    right, and at least half of the planted lean (capped at 2.5 nats; not checked below bias 0.2), both of words
    given a gendered subject and of he/she given an occupation."""
    subject = subject_of(model, tokenizer)
    figures = {"name_pronoun_accuracy": name_pronoun_accuracy(subject),
               "lean_log_odds": lean_log_odds(subject),
               "pronoun_log_odds": pronoun_log_odds(subject),
               "planted_log_odds": planted_log_odds(bias),
               **{f"{t}_lean_log_odds": group_lean_log_odds(subject, t) for t in V.GROUP_TYPES}}  # fmt: skip
    need = min(2.5, figures["planted_log_odds"] / 2)
    enough = bias < 0.2 or (figures["lean_log_odds"] >= need and figures["pronoun_log_odds"] >= need)
    return figures["name_pronoun_accuracy"] >= 0.98 and enough, figures
