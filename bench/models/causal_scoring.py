"""Batched next-token log-probabilities, the scoring primitive of causal LMs (StereoSet, CrowS-Pairs).

A `TokenQuery` asks for log P(ids[p] | ids[:p]) for every position p >= `first` of one token sequence (the
sequence holds its own prefix: a start token, a context). `token_log_probs` answers many queries at once.

Shared prefixes are computed once. log P(ids[p] | ids[:p]) depends only on ids[:p + 1], and in a causal LM the
hidden state at position p depends only on ids[:p + 1] as well. So the queried sequences are merged into a
prefix tree (a trie over token ids: one node per distinct prefix), and every node that some answer needs runs
once through the model and, where an answer reads its logits, once through the LM head:

- a sequence's last token is never run (its logits predict nothing); identical sequences, the three sentences
  of a StereoSet example up to the candidate word, the start token every sentence shares: each is one node;
- nodes are packed into rows of at most `TREE_ROW_TOKENS` slots, each row holding whole root-to-node paths
  (sequences in lexicographic order, so that a row shares as much as possible); a slot attends to its own
  ancestors only, through a 4-D attention mask, at position id = its depth in the tree. The hidden state of a
  slot is therefore the same function of the same tokens at the same positions as in the sequence run alone
  (exact up to the order of floating-point sums);
- rows are grouped into forward passes by `bench.models.batching.token_batches` (bounded in rows and tokens);
- the LM head runs only at the slots whose logits are read, in chunks that bound the (positions x vocabulary)
  logits held at once; each (prefix, next token) answer is read once and shared by every query asking it.

On StereoSet's dev set with GPT-2's tokenizer ("joint": 6,318 sentences after `<|endoftext|>`) this runs 26,856
slots (26,410 distinct prefixes) through the model and 26,410 positions through the LM head, where one pass
per sentence runs 67,438 positions through both (tests/benchmarks/test_causal_scoring_throughput.py).

Plain passes instead for a subject with an output transform (`logits_transform`, whose interface is a plain
padded batch), an architecture other than GPT-2 and Llama (`TREE_MODEL_TYPES`, the ones checked), or with
`share_prefixes=False`: distinct sequences right-padded with an attention mask and default position ids (a
real position never attends to a later one, so the logits read at real positions are those of the sequence run
alone; reading `logits[:, -1]` of a right-padded batch, as the reference code does, reads a pad position:
SPEC-beyond §9.1). Either way the base model runs once per pass, under `torch.inference_mode()` in eval mode
on the subject's device, with the subject's representation transforms.

`sentence_log_probs` scores whole sentences the two ways the metrics offer (`CAUSAL_SCORING`): "joint", every
token after the start token and all before it in one pass (the chain rule), and "bias-bench", the reference's
two passes (SPEC-beyond §9.2).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from bench.models.batching import batch_limits, token_batches
from bench.models.scoring import eval_mode

LOGITS_PER_CHUNK = 1 << 26  # float32 logits held at once per pass (256 MB), e.g. 1,335 positions of GPT-2
TREE_ROW_TOKENS = 256  # slots of one packed row: attention over a row costs ~ its width squared
CAUSAL_SCORING = ("joint", "bias-bench")
# architectures whose forward takes a 4-D attention mask and position ids as given, checked equal to plain passes
# (tests/test_causal_metrics.py); any other one runs plain passes
TREE_MODEL_TYPES = frozenset({"gpt2", "llama"})


@dataclass(frozen=True)
class TokenQuery:
    input_ids: tuple[int, ...]  # the whole sequence, unpadded
    first: int = 1  # first scored position (>= 1: position 0 has nothing to be predicted from)


def _check(queries: Sequence[TokenQuery], vocab: int | None) -> None:
    for qi, q in enumerate(queries):
        if not 1 <= q.first <= len(q.input_ids):
            raise IndexError(f"query {qi}: first scored position {q.first} outside 1..{len(q.input_ids)}")
    top = max((max(q.input_ids) for q in queries if q.input_ids), default=0)
    if vocab is not None and top >= vocab:
        raise IndexError(f"token id {top} outside the vocabulary of size {vocab}")


def _vocab(subject) -> int | None:
    head = subject.model.get_output_embeddings()
    return None if head is None else int(head.weight.shape[0])


# ---- the prefix tree ----------------------------------------------------------------------------------------


class _Trie:
    """Distinct prefixes of the queried sequences (nodes), and the distinct (node, next token) answers asked."""

    def __init__(self):
        self.parent: list[int] = []
        self.token: list[int] = []
        self.depth: list[int] = []
        self._child: dict[tuple[int, int], int] = {}
        self.answers: dict[tuple[int, int], int] = {}  # (node, target) -> answer index

    def path(self, ids: Sequence[int]) -> list[int]:
        """The nodes of ids[:1], ids[:2], ..., ids (created where new)."""
        nodes, parent = [], -1
        for depth, token in enumerate(ids):
            node = self._child.get((parent, token))
            if node is None:
                node = self._child[(parent, token)] = len(self.parent)
                self.parent.append(parent)
                self.token.append(int(token))
                self.depth.append(depth)
            nodes.append(node)
            parent = node
        return nodes

    def answer(self, node: int, target: int) -> int:
        return self.answers.setdefault((node, int(target)), len(self.answers))


def _build(queries: Sequence[TokenQuery]) -> tuple[_Trie, list[list[int]], list[np.ndarray]]:
    """The trie, the node paths to run (one per distinct input, sorted by token ids) and per query the answer
    indices of its positions first .. len - 1."""
    trie, paths, wanted = _Trie(), {}, []
    for q in queries:
        ids = tuple(q.input_ids)
        nodes = trie.path(ids[:-1])  # the last token is never an input
        wanted.append(np.asarray([trie.answer(nodes[p - 1], ids[p]) for p in range(q.first, len(ids))], np.int64))
        if q.first < len(ids):
            paths[ids[:-1]] = nodes
    return trie, [paths[k] for k in sorted(paths)], wanted


def _rows(paths: list[list[int]], width: int) -> list[list[int]]:
    """Pack root-to-node paths into rows of at most `width` nodes (a longer path gets a row of its own); a row
    holds every ancestor of its nodes, parents before children."""
    rows, row, in_row = [], [], set()
    for path in paths:
        shared = 0
        while shared < len(path) and path[shared] in in_row:
            shared += 1
        new = path[shared:]
        if row and len(row) + len(new) > width:
            rows.append(row)
            row, in_row, new = [], set(), path
        row += new
        in_row.update(new)
    if row:
        rows.append(row)
    return rows


# ---- forward passes -----------------------------------------------------------------------------------------


def _tree_inputs(trie: _Trie, rows: list[list[int]], pad_id: int):
    """(input ids, position ids, allowed) of packed rows; allowed[r, i, j]: slot i attends to slot j (its
    ancestors and itself; a pad slot only to itself)."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    pos = np.zeros((len(rows), width), dtype=np.int64)
    allowed = np.zeros((len(rows), width, width), dtype=bool)
    allowed[:, np.arange(width), np.arange(width)] = True
    for r, row in enumerate(rows):
        slot = {node: i for i, node in enumerate(row)}
        for i, node in enumerate(row):
            ids[r, i], pos[r, i] = trie.token[node], trie.depth[node]
            parent = trie.parent[node]
            if parent >= 0:
                allowed[r, i, :i] = allowed[r, slot[parent], :i]
    return ids, pos, allowed


def _tree_hidden(subject, ids: np.ndarray, pos: np.ndarray, allowed: np.ndarray):
    """Last hidden states (transforms applied) of packed rows, shape (rows, width, d)."""
    import torch

    device = subject.device
    dtype = next(subject.model.parameters()).dtype
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~torch.from_numpy(allowed), torch.finfo(dtype).min)
    with subject.hooks():
        return subject.model.base_model(
            input_ids=torch.from_numpy(ids).to(device), attention_mask=mask[:, None].to(device),
            position_ids=torch.from_numpy(pos).to(device), use_cache=False,
        )[0]  # fmt: skip


def _head(subject, hidden, rows: list[int], cols: list[int], pairs: list[tuple[int, int]], logits_at=None):
    """log P(target) for each (index into rows/cols, target) of `pairs`: the LM head at hidden[rows, cols] in
    chunks; `logits_at(sl, logits)` may replace the logits of a chunk (an output transform)."""
    import torch

    from bench.models.subject import lm_head

    device = hidden.device
    head = lm_head(subject.model, "clm")
    vocab = head.weight.shape[0]
    chunk = max(1, LOGITS_PER_CHUNK // vocab)
    at = torch.tensor([i for i, _ in pairs], device=device)
    targets = torch.tensor([t for _, t in pairs], device=device)
    rows_t, cols_t = torch.tensor(rows, device=device), torch.tensor(cols, device=device)
    values = torch.empty(len(pairs), dtype=torch.float64, device=device)
    for start in range(0, len(rows), chunk):
        sl = slice(start, start + chunk)
        logits = head(hidden[rows_t[sl], cols_t[sl]])
        if logits_at is not None:
            logits = logits_at(sl, logits)
        logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
        log_probs = torch.log_softmax(logits, dim=-1)
        inside = (at >= start) & (at < start + chunk)
        values[inside] = log_probs[at[inside] - start, targets[inside]].double()
    return values.cpu().numpy()


def _targets_by_node(trie: _Trie) -> dict[int, list[tuple[int, int]]]:
    """node -> [(target, answer index)] of the answers read at the node's logits."""
    by_node: dict[int, list[tuple[int, int]]] = {}
    for (node, target), a in trie.answers.items():
        by_node.setdefault(node, []).append((target, a))
    return by_node


def _reads(units: list[list[int]], by_node: dict):
    """Where the head runs in a pass (row and column lists), the (head index, target) pairs read there and
    their answer indices; a node in several rows (or passes) is read in the first one only."""
    head_rows, head_cols, pairs, answer_ids = [], [], [], []
    for r, unit in enumerate(units):
        for i, node in enumerate(unit):
            for target, a in by_node.pop(node, ()):
                if not head_rows or (head_rows[-1], head_cols[-1]) != (r, i):
                    head_rows.append(r)
                    head_cols.append(i)
                pairs.append((len(head_rows) - 1, target))
                answer_ids.append(a)
    return head_rows, head_cols, pairs, np.asarray(answer_ids, dtype=np.int64)


def _tree_pass(subject, trie: _Trie, rows: list[list[int]], by_node: dict, pad_id: int, out: np.ndarray) -> None:
    """One forward pass over packed rows: the answers read at their nodes go into `out`."""
    head_rows, head_cols, pairs, answer_ids = _reads(rows, by_node)
    if pairs:
        hidden = _tree_hidden(subject, *_tree_inputs(trie, rows, pad_id))
        out[answer_ids] = _head(subject, hidden, head_rows, head_cols, pairs)


def _plain_pass(subject, trie: _Trie, paths: list[list[int]], by_node: dict, pad_id: int, out: np.ndarray) -> None:
    """One forward pass over whole sequences, right-padded, default position ids (no prefix sharing)."""
    import torch

    head_rows, head_cols, pairs, answer_ids = _reads(paths, by_node)
    if not pairs:
        return
    width = max(len(p) for p in paths)
    ids = np.full((len(paths), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(paths), width), dtype=np.int64)
    for b, path in enumerate(paths):
        ids[b, : len(path)] = [trie.token[n] for n in path]
        mask[b, : len(path)] = 1
    device = subject.device
    input_ids, attention = torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)
    hidden = subject.hidden_states(input_ids, attention)
    logits_at = None
    if subject.logits_transform is not None:
        rows_t, cols_t = torch.tensor(head_rows, device=device), torch.tensor(head_cols, device=device)

        def logits_at(sl, logits):
            return subject.logits_transform(subject, input_ids, attention, rows_t[sl], cols_t[sl], logits)

    out[answer_ids] = _head(subject, hidden, head_rows, head_cols, pairs, logits_at)


def _shares_prefixes(subject, share_prefixes: bool) -> bool:
    if not share_prefixes or subject.logits_transform is not None:
        return False
    return getattr(subject.model.config, "model_type", "") in TREE_MODEL_TYPES


def token_log_probs(
    subject,
    queries: Sequence[TokenQuery],
    *,
    batch_size: int | None = None,
    batch_tokens: int | None = None,
    bar: Callable | None = None,
    desc: str = "causal LM",
    share_prefixes: bool = True,
) -> list[np.ndarray]:
    """Per query, the float64 array of log P(ids[p] | ids[:p]) for p = first .. len(ids) - 1 (the values the
    model computes in its dtype). `batch_size` bounds the rows and `batch_tokens` the padded tokens of a forward
    pass (None: the device's defaults, `bench.models.batching.DEFAULT_LIMITS`); a row is a packed prefix tree of
    at most TREE_ROW_TOKENS nodes, or with plain passes one sequence. `bar` is a tqdm-like factory (`ctx.bar`)."""
    import torch  # here: metric plugins import this module, and `bench report` needs no torch

    if not queries:
        return []
    _check(queries, _vocab(subject))
    max_rows, max_tokens = batch_limits(subject.device, batch_size, batch_tokens)
    trie, paths, wanted = _build(queries)
    tree = _shares_prefixes(subject, share_prefixes)
    units = _rows(paths, min(TREE_ROW_TOKENS, max_tokens)) if tree else paths
    units.sort(key=len)
    batches = [[units[i] for i in b] for b in token_batches([len(u) for u in units], max_rows, max_tokens)]
    batches.reverse()  # longest first: a pass too large for the device's memory fails at once
    pad_id = subject.tokenizer.pad_token_id if subject.tokenizer.pad_token_id is not None else 0
    by_node, values = _targets_by_node(trie), np.full(len(trie.answers), np.nan)
    run = _tree_pass if tree else _plain_pass
    progress = bar(total=len(batches), desc=desc, unit="batch") if bar is not None else None
    with torch.inference_mode(), eval_mode(subject.model):
        for batch in batches:
            run(subject, trie, batch, by_node, pad_id, values)
            if progress is not None:
                progress.update(1)
    if progress is not None:
        progress.close()
    return [values[w] for w in wanted]


# ---- whole sentences ----------------------------------------------------------------------------------------


def sentence_ids(tokenizer, texts: Sequence[str]) -> list[tuple[int, ...]]:
    """Token ids of each text without special tokens (the scorer adds the start token where it wants one)."""
    if not texts:
        return []
    encoded = tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)
    return [tuple(ids) for ids in encoded["input_ids"]]


def scoring_start(tokenizer, mode: str) -> int:
    """The token a sentence is scored after: "joint" `bench.models.causal.start_id` (BOS, else EOS), "bias-bench"
    the reference's unconditional start token, EOS (`<|endoftext|>` for GPT-2, `tokenizer.eos_token` for Llama)."""
    from bench.models.causal import start_id

    if mode not in CAUSAL_SCORING:
        raise ValueError(f"causal scoring must be one of {', '.join(CAUSAL_SCORING)}, got {mode!r}")
    if mode == "bias-bench" and tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    return start_id(tokenizer)


def sentence_log_probs(
    subject, sentences: Sequence[tuple[int, ...]], mode: str = "joint", **limits
) -> list[np.ndarray]:
    """Per sentence t_1..t_T (token ids, no special tokens, T >= 1), the array of log p_1 .. log p_T:

    - "joint": log P(t_i | s, t_1..t_{i-1}) from the sequence s, t_1..t_T with s = `scoring_start`;
    - "bias-bench": log p_1 = log P(t_1 | s) from s alone, log p_i = log P(t_i | t_1..t_{i-1}) for i >= 2 from the
      sentence alone, without s (bias-bench's `_likelihood_score_generative`).
    `limits`: batch_size, batch_tokens, bar, desc, share_prefixes of `token_log_probs`."""
    if any(not s for s in sentences):
        raise ValueError("a sentence without tokens has no score")
    start = scoring_start(subject.tokenizer, mode)
    if mode == "joint":
        return token_log_probs(subject, [TokenQuery((start, *s), 1) for s in sentences], **limits)
    queries = [TokenQuery((start, s[0]), 1) for s in sentences]
    queries += [TokenQuery(tuple(s), 1) for s in sentences if len(s) > 1]
    found = token_log_probs(subject, queries, **limits)
    rest = iter(found[len(sentences) :])
    return [np.concatenate([first, next(rest)]) if len(s) > 1 else first for s, first in zip(sentences, found)]


def without_default_scoring(config: dict) -> dict:
    """A metric's config without `causal_scoring` where it holds the default ("joint"): the option was added
    after masked models had been scored, and their configs (part of the score cache key) stay as they were."""
    if config.get("causal_scoring") == CAUSAL_SCORING[0]:
        config = {k: v for k, v in config.items() if k != "causal_scoring"}
    return config
