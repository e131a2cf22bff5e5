"""The pinned default world: its trained weights ship with the package.

Training the tiny BERT is float32 work whose rounding path depends on the CPU (AVX2 vs. AVX-512 kernels, thread
count), so two machines that train the same world get two different models, and every number downstream moves.
The generated text and data sets are pure-Python seeded and byte-identical everywhere. So the default world
(bias 0.8, seed 0) is generated on the user's machine as before, and its weights come from `pinned/`:

  pinned/model.safetensors   the trained weights (safetensors: data, never code)
  pinned/config.json         the model's BertConfig
  pinned/pinned.json         generator version, options, sha256 of the weights, hash of the generated files the
                             weights were trained on, training figures, and how and where it was made

Installing checks both hashes: weights that are not the recorded ones, or a generator that no longer writes the
text they were trained on, stop with a message instead of giving silently different numbers. Every later load
checks the cached copy again (`damage`: weights, config and generated files against this record, ~20 ms), so a
cache shared by a team cannot change a number of the pinned world without bench noticing.
`bench synthetic build --pin` retrains the world with the same code and rewrites the three files.

The world's causal LM (`synthetic-clm`, bench.synthetic.clm) is pinned the same way in `pinned_clm/`: the same
three files, installed into the world folder's `clm/` and checked on every load by these functions (`model_dir`).
"""
from __future__ import annotations

import hashlib
import json
import platform
import shutil
import time
from pathlib import Path

from bench.data.paths import file_sha256 as sha256
from bench.errors import BenchError

FOLDER = Path(__file__).resolve().parent / "pinned"
RECORD, WEIGHTS, CONFIG = "pinned.json", "model.safetensors", "config.json"


def generated_files(world_root: Path) -> list[Path]:
    """The generator's output that the weights depend on or the metrics read: corpus, vocabulary, data sets.
    (Tokenizer JSON files written by `transformers` are left out: their layout changes between its versions.)"""
    root = Path(world_root)
    data = sorted(p for p in (root / "data").rglob("*") if p.is_file())
    return [root / "corpus.txt", root / "model" / "vocab.txt", *data]


def content_hash(world_root: Path) -> str:
    root = Path(world_root)
    h = hashlib.sha256()
    for path in generated_files(root):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(sha256(path).encode() + b"\0")
    return h.hexdigest()


def record(folder: Path = FOLDER) -> dict | None:
    path = Path(folder) / RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise BenchError(f"the pinned synthetic world's record {path} is unreadable ({e}); reinstall bench") from None


def pins(bias: float, seed: int, generator: str, folder: Path = FOLDER) -> dict | None:
    """The pinned record if it is the world for these options and this generator version, else None."""
    rec = record(folder)
    if rec and rec.get("options") == {"bias": bias, "seed": seed} and rec.get("generator") == generator:
        return rec
    return None


def install(world_root: Path, rec: dict, folder: Path = FOLDER, model_dir: Path | None = None) -> None:
    """Put the pinned weights into a freshly generated world folder (its `model/`, or `model_dir`), after
    checking both hashes."""
    root, folder = Path(world_root), Path(folder)
    model = Path(model_dir) if model_dir is not None else root / "model"
    found = content_hash(root)
    if found != rec["generated_sha256"]:
        raise BenchError(
            "the synthetic world's generator no longer writes the text the pinned weights were trained on "
            f"(generated files hash {found[:12]}, pinned {rec['generated_sha256'][:12]}); bump GENERATOR_VERSION "
            "in bench/synthetic/world.py and rebuild the pin with `bench synthetic build --pin`"
        )
    weights = folder / WEIGHTS
    if not weights.is_file() or sha256(weights) != rec["weights_sha256"]:
        raise BenchError(f"the pinned synthetic weights {weights} are missing or damaged (sha256 differs from "
                         f"{folder / RECORD}); reinstall bench or rebuild with `bench synthetic build --pin`")
    model.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / CONFIG, model / CONFIG)
    shutil.copyfile(weights, model / WEIGHTS)


def damage(world_root: Path, rec: dict, folder: Path = FOLDER, model_dir: Path | None = None) -> str | None:
    """What differs between a cached pinned world (its weights in `model/`, or `model_dir`) and the package's
    record (None: it is intact)."""
    root, folder = Path(world_root), Path(folder)
    model = Path(model_dir) if model_dir is not None else root / "model"
    try:
        if sha256(model / WEIGHTS) != rec["weights_sha256"]:
            return f"{WEIGHTS} is not the pinned one"
        if (model / CONFIG).read_bytes() != (folder / CONFIG).read_bytes():
            return f"{CONFIG} is not the pinned one"
        if content_hash(root) != rec["generated_sha256"]:
            return "its generated text or data sets are not the pinned ones"
    except OSError as e:
        return f"{e.filename or e}: {e.strerror or 'unreadable'}"
    extra = sorted(p.name for p in model.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".h5"))
    if extra:
        return f"it holds {', '.join(extra)} next to the weights"
    return None


def write(world_root: Path, folder: Path = FOLDER, model_dir: Path | None = None, info: dict | None = None,
          kind: str = "") -> dict:
    """Pin a trained world: copy its weights and config (from `model/`, or `model_dir`) into `folder` and record
    how they were made (`info`: the training record, default the world's world.json; `kind`: "clm" for the
    causal LM, whose record also names its kind and recipe, taken from `info`)."""
    import torch
    import transformers

    from bench import __version__

    root, folder = Path(world_root), Path(folder)
    model = Path(model_dir) if model_dir is not None else root / "model"
    info = info if info is not None else json.loads((root / "world.json").read_text(encoding="utf-8"))
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model / CONFIG, folder / CONFIG)
    shutil.copyfile(model / WEIGHTS, folder / WEIGHTS)
    options = f"--bias {info['options']['bias']} --seed {info['options']['seed']}"
    rec = {
        "options": info["options"],
        "generator": info["generator"],
        "weights_sha256": sha256(folder / WEIGHTS),
        "generated_sha256": content_hash(root),
        "training": {k: info[k] for k in ("training", "extra_training", "extra_rounds", "final_loss", "signal",
                                          "parameters", "vocab_size", "corpus_lines", "model_size", "seconds")},
        "made_by": {
            "command": f"bench synthetic build {f'--kind {kind} ' if kind else ''}{options} --pin",
            "date": time.strftime("%Y-%m-%d"), "bench": __version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "cpu": _cpu(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        },
    }
    if kind:
        rec.update(kind=kind, recipe=info["recipe"])
    (folder / RECORD).write_text(json.dumps(rec, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return rec


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
