"""Model names -> Subjects.

A model name is one of
  - an alias of the paper's checkpoints: bert-base, bert-large, distilbert, roberta-base, roberta-large, and of
    the causal LMs: gpt2, llama-3.2-3b, llama-3.2-3b-instruct;
  - `synthetic[:bias=0.8,seed=0,init=trained|random]`: the planted-bias world (built and cached on first use);
  - `random:<config>`: random weights of a real architecture; <config> is a directory with config.json and
    tokenizer files, the name of one under <data-dir>/models/ (e.g. `random:bert-base-uncased`, `random:gpt2`),
    or a built-in Llama-style configuration (`random:llama-small`, `random:llama-3.2-3b`; bench.models.causal);
  - a local directory holding a saved masked or causal LM, or any Hugging Face model id.
Whether a model is masked or causal is read from its config (bench.models.causal.model_kind).
Hub models load from a local directory or the HF cache; with no network and no local copy, the error says
how to provide one. Further model kinds register through the entry-point group `bench.models`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.errors import BenchError, ModelUnavailable
from bench.registry import MODELS, register_model
from bench.models.causal import CAUSAL_ALIASES, builtin_configs, builtin_random, model_kind, prepare_tokenizer
from bench.models.subject import Subject

ALIASES = {
    "bert-base": "bert-base-cased",
    "bert-large": "bert-large-cased",
    "distilbert": "distilbert-base-cased",
    "roberta-base": "roberta-base",
    "roberta-large": "roberta-large",
    **CAUSAL_ALIASES,
}


@dataclass
class ModelSpec:
    name: str  # as the user wrote it
    kind: str  # registered loader name, or "hf"
    target: str = ""  # positional argument (HF id, directory, config)
    options: dict = field(default_factory=dict)


def split_model_names(value: str) -> list[str]:
    """`--models a,synthetic:bias=0.8,seed=0,b` -> ['a', 'synthetic:bias=0.8,seed=0', 'b']: a comma starts a new
    model name unless what follows is a `key=value` option of the previous `kind:...` name."""
    names: list[str] = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        key, eq, _ = part.partition("=")
        if names and eq and ":" in names[-1] and key.strip().isidentifier():
            names[-1] += "," + part
        else:
            names.append(part)
    return names


def parse_model_name(name: str) -> ModelSpec:
    if name in ALIASES:
        return ModelSpec(name, "hf", ALIASES[name])
    if Path(name).expanduser().is_dir():
        return ModelSpec(name, "hf", str(Path(name).expanduser()))
    head, sep, rest = name.partition(":")
    if head in MODELS:
        options, target = {}, ""
        for part in filter(None, (p.strip() for p in rest.split(","))) if sep else ():
            if "=" in part:
                k, v = part.split("=", 1)
                if not k.strip().isidentifier():
                    raise BenchError(f"malformed model name {name!r}: {k.strip()!r} is no option name; write "
                                     f"{head}:target,key=value,key=value")  # fmt: skip
                options[k.strip()] = _parse_value(v.strip())
            elif not target:
                target = part
            else:
                raise BenchError(f"malformed model name {name!r}: write {head}:key=value,key=value")
        return ModelSpec(name, MODELS.canonical(head), target, options)
    if "/" in name or name.count("-") >= 1 and name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        return ModelSpec(name, "hf", name)  # a hub id such as bert-base-uncased or org/model
    valid = sorted(ALIASES) + [f"{m}:..." for m in MODELS.names()]
    raise BenchError(
        f"unknown model {name!r}; valid models: {', '.join(valid)}, a local directory, or a Hugging Face id"
    )


def _parse_value(v: str):
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return v


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError("--device cuda was asked for but CUDA is not available here; use --device cpu or auto")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise BenchError(f"unknown device {device!r}; use auto, cpu or cuda")
    return device


def load_subject(name: str, *, device: str = "cpu", data_dir=None, cache_dir=None) -> Subject:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bars only
    spec = parse_model_name(name)
    if spec.kind == "hf":
        subject = load_hf(spec.target, name)
    else:
        subject = MODELS.get(spec.kind)(spec, data_dir=data_dir, cache_dir=cache_dir)
    subject.model.to(resolve_device(device)).eval()
    return subject


def model_class(kind: str):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    return AutoModelForCausalLM if kind == "clm" else AutoModelForMaskedLM


def make_subject(model, tokenizer, kind: str, **fields) -> Subject:
    """A Subject of the given kind; a causal LM's tokenizer gets pad = eos (bench.models.causal)."""
    from bench.api import CAUSAL_CAPABILITIES

    if kind == "clm":
        prepare_tokenizer(tokenizer, model)
        fields.setdefault("capabilities", CAUSAL_CAPABILITIES)
    return Subject(model=model, tokenizer=tokenizer, kind=kind, **fields)


def load_hf(target: str, name: str | None = None) -> Subject:
    """Load a masked or causal LM from a local directory or the HF cache (network only if the hub is reachable)."""
    from transformers import AutoConfig, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    is_dir = Path(target).is_dir()
    attempts = [True] if is_dir or os.environ.get("HF_HUB_OFFLINE") == "1" else [True, False]
    last = None
    if len(attempts) == 2 and (why := _hub_down()):  # huggingface_hub would retry for a minute before giving up
        attempts, last = [True], ConnectionError(why)
    for local_only in attempts:
        try:
            config = AutoConfig.from_pretrained(target, local_files_only=local_only)
            kind = model_kind(config)
            tokenizer = AutoTokenizer.from_pretrained(target, local_files_only=local_only)
            model = model_class(kind).from_pretrained(target, local_files_only=local_only, use_safetensors=True)
            return make_subject(model, tokenizer, kind, name=name or target, source=f"hf:{target}")
        except ModelUnavailable:
            raise
        except Exception as e:  # OSError, connection errors, missing files: all mean "not available"
            last = e
    hint = (
        f"cannot load model {name or target!r} ({target}): no local copy and the model hub is not reachable "
        f"({type(last).__name__}). Provide it as a local directory (bench run --models /path/to/{target.split('/')[-1]}, "
        f"saved with save_pretrained) or put it in the Hugging Face cache (HF_HOME) on a machine with network."
    )
    raise ModelUnavailable(hint)


_HUB_DOWN: dict[str, str | None] = {}  # endpoint -> why it did not answer (None: it did), once per process


def _hub_down() -> str | None:
    """Why the model hub does not answer one HTTP request (3 s), else None; asked once per process."""
    from bench.data.download import http_refused
    from bench.data.manifest import hub_site

    endpoint = hub_site()
    if endpoint not in _HUB_DOWN:
        _HUB_DOWN[endpoint] = http_refused(endpoint, HUB_CONNECT_TIMEOUT)
    return _HUB_DOWN[endpoint]


HUB_CONNECT_TIMEOUT = 3.0


@register_model("random")
def load_random(spec: ModelSpec, data_dir=None, cache_dir=None) -> Subject:
    """Random-init model of a real architecture (for performance work and as a no-knowledge control)."""
    target = spec.target or "bert-base-uncased"
    builtin = builtin_random(target, data_dir, spec.options)
    if builtin is not None:
        return _random_subject(spec, *builtin, source=f"random:builtin:{target}")
    from transformers import AutoConfig, AutoTokenizer

    candidates = [Path(target).expanduser()]
    if data_dir is not None:
        candidates += [Path(data_dir) / "models" / target, Path(data_dir) / "models" / f"{target}-tokenizer"]
    folder = next((c for c in candidates if (c / "config.json").is_file()), None)
    if folder is None:
        raise ModelUnavailable(
            f"random:{target}: no config.json in {', '.join(str(c) for c in candidates)}; give a directory with "
            f"config.json and tokenizer files, or one of the built-in configurations: {', '.join(builtin_configs())}"
        )
    return _random_subject(spec, AutoConfig.from_pretrained(folder), AutoTokenizer.from_pretrained(folder),
                           source=f"random:{folder}")  # fmt: skip


def _random_subject(spec: ModelSpec, config, tokenizer, source: str) -> Subject:
    for key, value in spec.options.items():
        if key != "seed":
            setattr(config, key, value)
    kind = model_kind(config)
    torch.manual_seed(int(spec.options.get("seed", 0)))
    model = model_class(kind).from_config(config)
    return make_subject(model, tokenizer, kind, name=spec.name, source=f"{source}:{sorted(spec.options.items())}")


def light_subject(name: str, data_dir=None, cache_dir=None) -> Subject | None:
    """A Subject with the identity (and data directory) of model `name` but no weights, where a model kind knows
    them without loading it (a hub id; a kind whose loader has a `light` function); else None ("unknown until
    loaded")."""
    spec = parse_model_name(name)
    if spec.kind == "hf":
        return Subject(model=None, tokenizer=None, name=name, source=f"hf:{spec.target}")
    light = getattr(MODELS.get(spec.kind), "light", None)
    if light is None:
        return None
    try:
        return light(spec, data_dir=data_dir, cache_dir=cache_dir)
    except (BenchError, OSError, ValueError) as e:  # a damaged cache entry or world.json: the loader will say
        import logging

        logging.getLogger("bench").info(f"{name}: identity unknown until loaded ({e})")
        return None


def available_models() -> list[tuple[str, str]]:
    rows = [(alias, f"Hugging Face {hf}") for alias, hf in ALIASES.items()]
    for name, loader in MODELS.items():
        doc = (loader.__doc__ or "").strip().splitlines()
        rows.append((f"{name}:...", doc[0] if doc else ""))
    return rows
