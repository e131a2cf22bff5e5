"""`synthetic-clm`: the world's tiny causal LM, built, cached, pinned and loaded like the masked one.

It lives in the world's own folder (bench.synthetic.world), next to the masked model, and reads the same corpus,
tokenizer vocabulary and data sets (`Subject.data_dir` is the world's `data/`):
  clm/            the pinned causal LM: config.json, model.safetensors, clm.json (options, recipe, figures)
  clm-trained/    the same, trained on this machine (other options, or `bench synthetic build --kind clm`)
The default world (bias 0.8, seed 0) is pinned in `pinned_clm/` (bench.synthetic.pinned's three files): loading
generates the world's text (the masked world's pin) and installs these weights after checking both hashes, and
every later load checks the cached copy again; damaged, it is installed again. Other options train the causal LM
(TRAIN, then while `probe_clm.learned` says the planted signal is not yet there up to MAX_EXTRA_ROUNDS rounds of
EXTRA_TRAIN) after their world is built, masked model included.
"""
from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

from bench.files import atomic_dir, remove_dir
from bench.synthetic import pinned
from bench.synthetic.probe_clm import learned
from bench.synthetic.tokenizer import load_causal_tokenizer
from bench.synthetic.train_clm import CausalTrainConfig, gpt2_config, new_causal_model, random_causal_model, train_clm
from bench.synthetic.world import GENERATOR_VERSION, MODEL_SIZE, World, _locked, _quiet_save, build_world, \
    check_options, model_options, world_root  # fmt: skip

# Bump whenever the causal model, its tokenizer or its training recipe changes: the cached causal LM is trained
# again (the pinned one is used only where its record names this recipe).
RECIPE = "1"
FOLDER = Path(__file__).resolve().parent / "pinned_clm"
PINNED, TRAINED, INFO = "clm", "clm-trained", "clm.json"
TRAIN = CausalTrainConfig(steps=1000)
EXTRA_TRAIN = CausalTrainConfig(steps=300, lr=1e-3, warmup=0.0)
MAX_EXTRA_ROUNDS = 3
NAME = "synthetic-clm"


def pin_for(bias: float, seed: int) -> dict | None:
    """The pinned causal LM's record if it is for these options, this generator and this recipe."""
    rec = pinned.pins(bias, seed, GENERATOR_VERSION, FOLDER)
    return rec if rec and rec.get("kind") == "clm" and rec.get("recipe") == RECIPE else None


def source_string(bias: float, seed: int, init: str, weights: str = "trained") -> str:
    """The subject's identity in cache keys (as the masked world's, with the kind and recipe)."""
    tail = "" if init == "random" else f",weights={weights[:16]}"
    return f"{NAME}:bias={bias},init={init},seed={seed},generator={GENERATOR_VERSION},recipe={RECIPE}{tail}"


def build_clm(bias: float = 0.8, seed: int = 0, cache_dir=None, progress: bool = True,
              train: bool = False) -> tuple[World, Path]:  # fmt: skip
    """(the world, the folder of its causal LM): the world built as `synthetic` builds it, then the causal LM
    loaded from the cache, installed from the pin (seconds) or trained (a few minutes). `train=True` trains
    even where a pin exists (into clm-trained/)."""
    bias, seed = check_options(bias, seed)
    world = build_world(bias, seed, cache_dir, progress)
    pin = None if train else pin_for(bias, seed)
    folder = world.root / (PINNED if pin else TRAINED)
    if _intact(world, folder, pin):
        return world, folder
    with _locked(world.root.parent / f".{world.root.name}.{folder.name}.lock"):
        if _intact(world, folder, pin, warn=True):  # another process built it while we waited
            return world, folder
        if folder.exists():
            remove_dir(folder)
        how = "installing the pinned" if pin else "training the"
        print(f"{how} causal LM of the synthetic world (bias={bias}, seed={seed}) in {folder}", file=sys.stderr)
        with atomic_dir(folder) as tmp:
            if pin:
                _from_pin(world, tmp, pin)
            else:
                _train(world, tmp, bias, seed, progress)
    return world, folder


def _intact(world: World, folder: Path, pin: dict | None, warn: bool = False) -> bool:
    """Whether the causal LM at `folder` is complete, of this recipe and, when pinned, still the pinned one."""
    try:
        info = json.loads((folder / INFO).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    why = pinned.damage(world.root, pin, FOLDER, folder) if pin else None
    if info.get("recipe") != RECIPE:
        why = f"it was made by recipe {info.get('recipe')}, this bench's is {RECIPE}"
    if why and warn:
        print(f"warning: the cached causal LM {folder} is damaged ({why}); making it again", file=sys.stderr)
    return why is None


def _from_pin(world: World, folder: Path, pin: dict) -> None:
    pinned.install(world.root, pin, FOLDER, folder)
    info = {"options": pin["options"], "generator": GENERATOR_VERSION, "recipe": RECIPE, "kind": "clm",
            "pinned": {k: pin[k] for k in ("weights_sha256", "generated_sha256", "made_by")}, **pin["training"]}
    (folder / INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _train(world: World, folder: Path, bias: float, seed: int, progress: bool) -> None:
    from bench.progress import bar

    start, cpu = time.perf_counter(), time.process_time()
    lines = (world.root / "corpus.txt").read_text(encoding="utf-8").splitlines()
    tokenizer = load_causal_tokenizer(world.model_dir)
    model = new_causal_model(gpt2_config(tokenizer, MODEL_SIZE), seed)
    losses, rounds = [], 0
    for rounds, cfg in enumerate([TRAIN] + [EXTRA_TRAIN] * MAX_EXTRA_ROUNDS):
        desc = "synthetic world: training the causal LM" + (f" (extra round {rounds})" if rounds else "")
        losses += train_clm(model, tokenizer, lines, cfg, seed + rounds, functools.partial(bar, enabled=progress,
                                                                                           leave=False), desc)
        ok, figures = learned(model, tokenizer, bias)
        if ok:
            break
    else:
        print(f"warning: the causal LM of the synthetic world (bias={bias}, seed={seed}) did not fully learn its "
              f"planted signal: {figures}", file=sys.stderr)
    _quiet_save(model, folder)
    tail = losses[-100:]
    info = {
        "options": {"bias": bias, "seed": seed}, "generator": GENERATOR_VERSION, "recipe": RECIPE, "kind": "clm",
        "corpus_lines": len(lines), "vocab_size": len(tokenizer), "parameters": sum(p.numel() for p in model.parameters()),
        "model_size": MODEL_SIZE.__dict__, "training": TRAIN.__dict__, "extra_training": EXTRA_TRAIN.__dict__,
        "final_loss": sum(tail) / len(tail), "extra_rounds": rounds, "signal": {"learned": ok, **figures},
        "loss_per_100_steps": [round(sum(losses[i : i + 100]) / len(losses[i : i + 100]), 3)
                               for i in range(0, len(losses), 100)],
        "seconds": {"total": round(time.perf_counter() - start, 1), "cpu": round(time.process_time() - cpu, 1)},
    }  # fmt: skip
    (folder / INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def pin(world: World, folder: Path) -> dict:
    """Pin a causal LM trained by `build_clm(train=True)`: its files into `pinned_clm/`, with its record."""
    info = json.loads((folder / INFO).read_text(encoding="utf-8"))
    return pinned.write(world.root, FOLDER, folder, info, kind="clm")


# ---- the model loader of the registry (entry point bench.models: synthetic-clm) --------------------------------
def load(spec, data_dir=None, cache_dir=None):
    """Synthetic planted-bias world: tiny GPT-2 causal LM trained on its text (options bias, seed, init)."""
    from transformers import GPT2LMHeadModel

    from bench.models.loading import make_subject

    bias, seed, init = model_options(spec, NAME)
    if init == "trained":
        world, folder = build_clm(bias, seed, cache_dir)
        weights = _weights(folder)
        model = GPT2LMHeadModel.from_pretrained(str(folder), use_safetensors=True)  # never a pickle
    else:  # the random control needs the world's text and vocabulary only
        world, weights = build_world(bias, seed, cache_dir), "trained"
    tokenizer = load_causal_tokenizer(world.model_dir)
    if init == "random":
        model = random_causal_model(gpt2_config(tokenizer, MODEL_SIZE), seed)
    return make_subject(
        model.eval(), tokenizer, "clm", name=spec.name, source=source_string(bias, seed, init, weights),
        data_dir=world.data_dir,
        meta={"synthetic": True, "bias": bias, "seed": seed, "init": init,
              "pinned": init == "trained" and weights != "trained"},
    )  # fmt: skip


def _weights(folder: Path) -> str:
    """The pinned weights' sha256, or "trained" (trained on this machine)."""
    info = json.loads((folder / INFO).read_text(encoding="utf-8"))
    return info.get("pinned", {}).get("weights_sha256", "trained")


def identity(spec, data_dir=None, cache_dir=None):
    """The Subject of `synthetic-clm` without weights (identity, kind, data directory) where what it loads is in
    the cache already; else None (the loader's `light`, bench.models.loading.light_subject)."""
    from bench.api import CAUSAL_CAPABILITIES
    from bench.models.subject import Subject

    bias, seed, init = model_options(spec, NAME)
    root, _ = world_root(bias, seed, cache_dir)
    folder = root / (PINNED if pin_for(bias, seed) else TRAINED)
    if not (root / "world.json").is_file() or init == "trained" and not (folder / INFO).is_file():
        return None  # built on first load
    weights = _weights(folder) if init == "trained" else "trained"
    return Subject(model=None, tokenizer=None, name=spec.name, data_dir=World.at(root).data_dir, kind="clm",
                   capabilities=CAUSAL_CAPABILITIES, source=source_string(bias, seed, init, weights))  # fmt: skip


load.light = identity
