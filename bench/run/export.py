"""`bench export`: a debiased model of a run as a Hugging Face directory with a model card.

The chain is rebuilt as the run built it (the run's request, its cache: fitted artifacts are reused, a missing
one is fitted again and said so), then written with `save_pretrained` (safetensors) next to the tokenizer, so
that `AutoModelForMaskedLM` / `AutoModelForCausalLM.from_pretrained(OUT_DIR)` loads it without bench and without
remote code. Methods that change the weights are exported exactly. A projection (INLP, SentenceDebias, LEACE, RLACE)
acts on the last hidden states at inference; it is folded into the LM head's first linear map
(`bench.models.folding`), which is exact for the LM's outputs (StereoSet, CrowS, generation) but leaves the hidden
states unprojected (SEAT, GLUE), as the card says; the projection itself is saved beside the weights
(`projection.safetensors`: h -> h A + c). SelfDebias re-weights the output distribution with a second, prompted
pass, which a checkpoint cannot carry: refused with the reason. The folder is written beside OUT_DIR and renamed
into place when complete, so an interrupted export leaves nothing half-written.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Callable

from safetensors.torch import save_file

from bench.errors import BenchError
from bench.files import atomic_dir
from bench.run.request import RunRequest
from bench.run.schema import manifest_problem, read_rows

REFUSED = {
    "output": "re-weights the output distribution at inference with a second, prompted pass; it has no weights",
}
PROJECTION_FILE = "projection.safetensors"


def read_manifest(run_dir: Path) -> dict:
    path = Path(run_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"{run_dir} is not a run directory (no manifest.json); give the --out of a `bench run`") from None
    except (OSError, ValueError) as e:
        raise BenchError(f"cannot read {path}: {e}") from None
    problem = manifest_problem(manifest)
    if problem:
        raise BenchError(f"{path}: {problem}")
    return manifest


def _check_choice(request: RunRequest, model: str, chain: str) -> None:
    chains = request.normalised().methods
    if model not in request.models:
        raise BenchError(f"model {model!r} is not in this run; its models: {', '.join(request.models)}")
    if chain not in chains or chain == "base":
        raise BenchError(f"method {chain!r} is not a debiased chain of this run; its chains: "
                         f"{', '.join(c for c in chains if c != 'base') or '(none)'}")  # fmt: skip


def _check_exportable(chain: str, options: dict) -> list:
    from bench.registry import make_method

    methods = [make_method(name, options.get(name)) for name in chain.split("+")]
    for name, method in zip(chain.split("+"), methods):
        if method.changes in REFUSED:
            raise BenchError(f"{name} cannot be exported as a checkpoint: it {REFUSED[method.changes]}. Export a "
                             "chain of weight-changing methods (GRADIEND, CDA, Dropout, ...)")  # fmt: skip
    return methods


def export(run_dir: Path, model: str, chain: str, out_dir: Path, *, cache_dir=None, data_dir=None, seed=None,
           echo: Callable[[str], None] = print) -> Path:  # fmt: skip
    from bench.run.unit import UnitWorker

    manifest = read_manifest(run_dir)
    request = RunRequest(**{**manifest["request"], "cache_dir": cache_dir, "data_dir": data_dir, "progress": False})
    _check_choice(request, model, chain)
    _check_exportable(chain, request.options)
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise BenchError(f"{out_dir} exists; export writes a new folder (remove it or choose another)")
    worker = UnitWorker(request, echo=echo)
    base = worker.base_subject(model)
    seed = request.seed if seed is None else int(seed)
    subject = worker.debias(base, chain, worker.context(base, seed))
    rows = [r for r in read_rows(Path(run_dir) / "results.jsonl") if r.get("model") == model
            and r.get("method") in (chain, "base") and r.get("seed", seed) == seed]  # fmt: skip
    model, projection = _exported_model(subject)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        subject.tokenizer.save_pretrained(tmp)
        if projection is not None:
            save_file(projection, str(Path(tmp) / PROJECTION_FILE), metadata={"map": "h -> h @ A + c", "applies_to":
                      "the last hidden state (masked LM: the encoder output; causal LM: after the final norm)"})
        card = model_card(manifest, request, base, chain, seed, rows, folded=projection is not None)
        (Path(tmp) / "README.md").write_text(card, encoding="utf-8")
    return out_dir


def _exported_model(subject):
    """(model to save, {"A", "c"} of the folded projection or None). A projection is folded into a copy of the
    model, so the run's cached subject is left as it was."""
    if subject.logits_transform is not None:
        raise BenchError(f"{subject.method} changes the output distribution at inference; it cannot be exported")
    if not subject.transforms:
        return subject.model, None
    from bench.models.folding import composed_affine, fold_into_head

    a, c = composed_affine(subject.transforms)
    model = fold_into_head(copy.deepcopy(subject.model), subject.kind, subject.transforms)
    return model, {"A": a.contiguous(), "c": c.contiguous()}


FOLDED_NOTE = ("The chain's projection of the last hidden states is folded into the first linear map of the LM head "
               "(W' = W A^T, b' = b + W c), so the masked-LM / next-token outputs are the debiased model's (up to "
               "float rounding). The hidden states themselves are NOT projected: sentence embeddings (SEAT) and a "
               "classifier fine-tuned on them (GLUE) see the unprojected states. To project them, apply "
               f"`{PROJECTION_FILE}` (tensors A (d, d) and c (d,), float64: h -> h @ A + c) to the last hidden state.")


def model_card(manifest: dict, request: RunRequest, base, chain: str, seed: int, rows: list[dict],
               folded: bool = False) -> str:  # fmt: skip
    from bench import __version__

    source = str(getattr(base, "source", "") or "")
    meta = {"library_name": "transformers", "tags": ["bench", "debiasing", *chain.split("+")],
            "pipeline_tag": "fill-mask" if base.kind == "mlm" else "text-generation"}  # fmt: skip
    if source.startswith("hf:"):
        meta["base_model"] = source[3:]
    options = {m: request.options.get(m, {}) for m in chain.split("+")}
    lines = ["---", *_front_matter(meta), "---", "",
             f"# {base.name} debiased with {chain}", "",
             f"Exported by bench {__version__} from a run of `bench run` (request hash {manifest['request_hash']}, "
             f"seed {seed}, bias type {request.bias_type}). Base model: `{base.name}` ({source or 'unknown source'}); "
             "its license applies to these weights.", "", "## Chain", "",
             f"`{chain}` with options `{json.dumps(options, sort_keys=True)}` (empty: the methods' defaults).", "",
             *([FOLDED_NOTE, ""] if folded else []),
             "## Measured (the run's rows; 95 % CIs; change vs. the base model with its paired CI)", "",
             "| method | metric | value | CI | change | change CI |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if r.get("status") == "ok" and r.get("value") is not None:
            lines.append(f"| {r['method']} | {r['metric']}/{r['submetric']} | {_num(r['value'])} | "
                         f"[{_num(r.get('ci_low'))}, {_num(r.get('ci_high'))}] | {_num(r.get('delta'))} | "
                         f"[{_num(r.get('delta_low'))}, {_num(r.get('delta_high'))}] |")  # fmt: skip
    lines += ["", "## Data fingerprints", "", *(f"- `{k}`: {v}" for k, v in sorted(manifest.get("data", {}).items())), ""]
    return "\n".join(lines)


def _num(x) -> str:
    return "" if x is None else f"{x:.4g}"


def _front_matter(meta: dict) -> list[str]:
    """Hugging Face card metadata; values as JSON strings, which YAML reads as the same strings."""
    out = []
    for key, value in meta.items():
        if isinstance(value, list):
            out += [f"{key}:", *(f"- {json.dumps(str(v))}" for v in value)]
        else:
            out.append(f"{key}: {json.dumps(str(value))}")
    return out
