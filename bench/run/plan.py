"""The plan of a run: the normalised request as units of work, what each waits for, what is cached.

A unit is (model, method chain, seed) with the run's metrics (and its bias type): one worker loads the model,
debiases it (fitted artifacts through the content-addressed cache), scores every metric (scores through the
cache) and returns its rows as plain data. Units are in plan order: model, then seed, then the request's
chains (`base` first); the run's results.jsonl is written in this order whatever the executor.

Dependencies (per model and seed) only avoid duplicate work; correctness never depends on them, because the
cache's first complete writer wins:
- the base unit runs before the chains of its model (they compare with its scores);
- a chain runs after the unit that fits its longest prefix: `gradiend-bpi+inlp` waits for `gradiend-bpi`;
  when the prefix is not a unit of its own, the first chain (in plan order) sharing it fits it and the others
  wait for that one. So no two units fit the same artifact at the same time;
- a chain whose first method shares work with an earlier one (the same `Debiaser.fit_family`: GRADIEND-BPI,
  -FPI and -MPI share one training and one decoder grid) waits for the first chain of that family.

What is cached is found without loading a model where the subject's identity is known from its name (Hugging
Face ids and directories; the synthetic world once it is generated); otherwise "unknown until loaded".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.api import serves_bias_type
from bench.errors import BenchError
from bench.registry import make_method, make_metric
from bench.files import stable_hash
from bench.models.loading import light_subject
from bench.models.subject import Subject

FIT_COST, SCORE_COST = 10, 1  # relative cost units for the critical path when no timings are known


@dataclass(frozen=True)
class Unit:
    id: str
    model: str
    chain: str
    seed: int
    metrics: tuple[str, ...]
    bias_type: str = "gender"
    waits_for: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """What travels to a worker: names only."""
        return {"id": self.id, "model": self.model, "chain": self.chain, "seed": self.seed,
                "metrics": list(self.metrics), "bias_type": self.bias_type, "waits_for": list(self.waits_for)}  # fmt: skip


def unit_id(model: str, chain: str, seed: int) -> str:
    return f"{model} / {chain} / seed {seed}"


@dataclass
class Plan:
    units: list[Unit]
    models: list[str]
    chains: list[str]
    seeds: list[int]
    metrics: list[str]
    by_id: dict[str, Unit] = field(default_factory=dict)

    def __post_init__(self):
        self.by_id = {u.id: u for u in self.units}

    # ---- plan order of rows ------------------------------------------------------------------------------
    def row_key(self, row: dict) -> tuple:
        """Sort key of a results row: model, seed (aggregate rows after every seed), chain, metric."""

        def index(values, value):
            try:
                return values.index(value)
            except ValueError:
                return len(values) + 1

        seed = len(self.seeds) if row.get("aggregate") else index(self.seeds, row.get("seed"))
        return (index(self.models, row.get("model")), seed, index(self.chains, row.get("method")),
                index(self.metrics, row.get("metric")))  # fmt: skip

    # ---- the critical path --------------------------------------------------------------------------------
    def critical_path(self, cost: dict[str, float]) -> tuple[list[str], float]:
        """The longest chain of waiting units by `cost` (unit id -> cost): the run's shortest possible time
        with unlimited workers."""
        best: dict[str, tuple[float, list[str]]] = {}
        for u in self.units:  # plan order is a topological order: a unit waits only for earlier ones
            prev = max((best[d] for d in u.waits_for if d in best), key=lambda t: t[0], default=(0.0, []))
            best[u.id] = (prev[0] + cost.get(u.id, 0.0), prev[1] + [u.id])
        if not best:
            return [], 0.0
        total, path = max(best.values(), key=lambda t: t[0])
        return path, total


def make_plan(req) -> Plan:
    """The units of a (normalised) RunRequest and what each waits for."""
    seeds = list(req.seeds) or [req.seed]
    units = []
    for model in req.models:
        for seed in seeds:
            ids = {chain: unit_id(model, chain, seed) for chain in req.methods}
            for i, chain in enumerate(req.methods):
                waits = () if chain == "base" else (ids["base"],) if "base" in ids else ()
                prefix_owner = _prefix_owner(chain, req.methods[:i])
                if prefix_owner is not None:
                    waits = waits + (ids[prefix_owner],)
                sibling = _family_owner(chain, req.methods[:i]) if prefix_owner is None else None
                if sibling is not None and ids[sibling] not in waits:
                    waits = waits + (ids[sibling],)
                units.append(Unit(ids[chain], model, chain, seed, tuple(req.metrics), req.bias_type, waits))
    return Plan(units, list(req.models), list(req.methods), seeds, list(req.metrics))


def _prefix_owner(chain: str, earlier: list[str]) -> str | None:
    """The earlier chain that fits the longest proper prefix of `chain` (see the module docstring)."""
    parts = chain.split("+")
    for j in range(len(parts) - 1, 0, -1):
        prefix = parts[:j]
        if "+".join(prefix) in earlier:
            return "+".join(prefix)
        for other in earlier:
            if other != "base" and other.split("+")[:j] == prefix:
                return other
    return None


def _family_owner(chain: str, earlier: list[str]) -> str | None:
    """The first earlier chain whose first method is of the same `fit_family` as this chain's first method
    (GRADIEND-FPI after GRADIEND-BPI: their fits share one training, which must not run twice at once)."""
    from bench.registry import METHODS

    first = chain.split("+")[0]
    family = METHODS.get(first).fit_family if first != "base" else ""
    if not family:
        return None
    for other in earlier:
        head = other.split("+")[0]
        if other != "base" and head != first and METHODS.get(head).fit_family == family:
            return other
    return None


# ---- what is cached, without loading models -------------------------------------------------------------------
def cache_status(worker, plan: Plan) -> dict[str, dict]:
    """Per unit: {"fits": [(method, "cached" | "to fit" | "unknown until loaded" | note)],
    "scores": {metric: status}, "cost": estimated cost}. Loads no model (`worker`: a bench.run.unit.UnitWorker,
    for its contexts, cache keys and cache)."""
    light: dict[str, Subject | None] = {}
    out: dict[str, dict] = {}
    for u in plan.units:
        if u.model not in light:
            light[u.model] = light_subject(u.model, worker.data_dir, worker.cache.root)
        fits, subject, na = _fit_status(worker, light[u.model], u)
        scores = {m: "n/a" if na else _score_status(worker, subject, m, u.seed) for m in u.metrics}
        # the prefix a unit waits for is fitted by then: count only the fits after it
        owner = next((plan.by_id[w].chain for w in u.waits_for if plan.by_id[w].chain != "base"), None)
        skip = 0
        for a, b in zip(owner.split("+") if owner else [], u.chain.split("+")[:-1]):
            if a != b:
                break
            skip += 1
        todo_fits = sum(1 for i, (_, s) in enumerate(fits) if i >= skip and s not in ("cached",) and not s.startswith("n/a"))
        todo_scores = sum(1 for s in scores.values() if s not in ("cached", "n/a"))
        out[u.id] = {"fits": fits, "scores": scores, "cost": FIT_COST * todo_fits + SCORE_COST * todo_scores}
    return out


def _fit_status(worker, subject: Subject | None, u: Unit) -> tuple[list[tuple[str, str]], Subject | None, bool]:
    """(what each method of the unit's chain needs, the stamped subject after them or None, whether n/a)."""
    fits: list[tuple[str, str]] = []
    for name in [] if u.chain == "base" else u.chain.split("+"):
        method = make_method(name, worker.request.options.get(name))
        if method.changes == "nothing":
            continue
        if subject is None:
            fits.append((name, "unknown until loaded"))
            continue
        ctx = worker.context(subject, u.seed)
        if not serves_bias_type(type(method), ctx.bias_type):
            fits.append((name, "n/a for this bias type"))
            return fits, subject, True
        try:
            key, cfg = worker.method_key(name, method, subject, ctx)
        except BenchError as e:
            fits.append((name, f"unknown ({e})"))
            subject = None
            continue
        fits.append((name, "cached" if worker.cache.complete(worker.cache.path("artifacts", name, key)) else "to fit"))
        subject = subject.stamped(name, stable_hash(cfg))
    return fits, subject, False


def _score_status(worker, subject: Subject | None, metric_name: str, seed: int) -> str:
    if subject is None:
        return "unknown until loaded"
    metric = make_metric(metric_name, worker.request.options.get(metric_name))
    ctx = worker.context(subject, seed)
    if not serves_bias_type(type(metric), ctx.bias_type):
        return "n/a"
    try:
        key = worker.score_key(metric_name, metric, subject, ctx)
    except BenchError as e:
        return f"unknown ({e})"
    return "cached" if worker.cache.complete(worker.cache.path("scores", metric_name, key)) else "to score"


def describe(worker, plan: Plan, executor: str = "local", done: dict[str, bool] | None = None) -> str:
    """The plan as text: units, what each waits for, what is cached, the critical path (`bench run --dry-run`)."""
    status = cache_status(worker, plan)
    number = {u.id: i + 1 for i, u in enumerate(plan.units)}
    req = worker.request
    lines = [
        f"plan: {len(plan.units)} units = {len(plan.models)} model(s) x {len(plan.chains)} method chain(s) x "
        f"{len(plan.seeds)} seed(s) {plan.seeds}; each scores {', '.join(plan.metrics) or 'no metric'}; "
        f"bias type {req.bias_type}; executor {executor}",
        "",
    ]
    for u in plan.units:
        st = status[u.id]
        waits = ", ".join(f"#{number[w]}" for w in u.waits_for) or "-"
        fits = ", ".join(f"{m} {s}" for m, s in st["fits"]) or "-"
        counts: dict[str, int] = {}
        for s in st["scores"].values():
            counts[s] = counts.get(s, 0) + 1
        scores = ", ".join(f"{n} {s}" for s, n in counts.items()) or "-"
        tail = "  [done in the run directory]" if done and done.get(u.id) else ""
        lines.append(f"#{number[u.id]:<3d} {u.id}")
        lines.append(f"     waits for: {waits}; fits: {fits}; scores: {scores}{tail}")
    cost = {u.id: (0.0 if done and done.get(u.id) else status[u.id]["cost"]) for u in plan.units}
    path, total = plan.critical_path(cost)
    path = path if total > 0 else []
    lines += ["", f"critical path (estimated cost {total:g}; a fit = {FIT_COST}, a score = {SCORE_COST}, "
                  "cached work = 0; no timings known):"]  # fmt: skip
    lines += [f"  #{number[p]} {p}" for p in path] or ["  (nothing to do)"]
    total_cost = sum(cost.values())
    lines.append(f"total estimated cost {total_cost:g}: with enough workers the run takes about "
                 f"{total / total_cost:.0%} of its sequential time" if total_cost else "everything is cached")
    return "\n".join(lines)


def dry_run(worker, out, executor: str = "local") -> str:
    """`bench run --dry-run`: the plan of the worker's request, what is cached, and what `out` already holds."""
    from bench.run.store import RunStore

    plan = make_plan(worker.request)
    done = {}
    if out is not None and (Path(out) / "manifest.json").is_file():
        store = RunStore(out, worker.request.manifest())
        done = {u.id: all(store.done(u.model, u.chain, m, u.seed) for m in u.metrics) for u in plan.units}
    return describe(worker, plan, executor, done)
