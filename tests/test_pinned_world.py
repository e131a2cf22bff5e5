"""The pinned default world: generated text identical to what the pinned weights were trained on, weights checked
by hash, no training on load, and a random-weight control that is the same on every CPU."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from bench.errors import BenchError
from bench.synthetic import pinned
from bench.synthetic import world as W


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pinned-world")
    W.generate(folder, W.DEFAULTS["bias"], W.DEFAULTS["seed"], progress=False)
    return folder


def test_record_is_for_this_generator_and_its_weights():
    rec = pinned.record()
    assert rec["generator"] == W.GENERATOR_VERSION
    assert rec["options"] == {"bias": W.DEFAULTS["bias"], "seed": W.DEFAULTS["seed"]}
    assert pinned.sha256(pinned.FOLDER / pinned.WEIGHTS) == rec["weights_sha256"]
    assert rec["training"]["signal"]["learned"] and rec["made_by"]["command"].startswith("bench synthetic build")
    assert pinned.pins(0.8, 0, W.GENERATOR_VERSION) == rec
    assert pinned.pins(0.8, 1, W.GENERATOR_VERSION) is None and pinned.pins(0.8, 0, "0") is None


def test_generator_still_writes_the_text_the_weights_were_trained_on(generated):
    """Pure-Python seeded generation: the same bytes on every machine, so this holds wherever the tests run."""
    assert pinned.content_hash(generated) == pinned.record()["generated_sha256"]


def test_install_refuses_damaged_weights_and_changed_text(generated, tmp_path):
    rec = pinned.record()
    copy = tmp_path / "pinned"
    shutil.copytree(pinned.FOLDER, copy)
    world = tmp_path / "world"
    shutil.copytree(generated, world)
    pinned.install(world, rec, copy)  # intact: fine
    assert pinned.sha256(world / "model" / pinned.WEIGHTS) == rec["weights_sha256"]
    blob = bytearray((copy / pinned.WEIGHTS).read_bytes())
    blob[-1] ^= 1
    (copy / pinned.WEIGHTS).write_bytes(bytes(blob))
    with pytest.raises(BenchError, match="missing or damaged"):
        pinned.install(world, rec, copy)
    with open(world / "corpus.txt", "a", encoding="utf-8") as f:
        f.write("One more line.\n")
    with pytest.raises(BenchError, match="GENERATOR_VERSION"):
        pinned.install(world, rec, pinned.FOLDER)


def test_default_world_loads_without_training(tmp_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("the pinned world must not be trained")

    monkeypatch.setattr(W, "train_mlm", no_training)
    world = W.build_world(cache_dir=tmp_path, progress=False)
    info = world.info
    assert info["pinned"]["weights_sha256"] == pinned.record()["weights_sha256"]
    assert pinned.sha256(world.model_dir / pinned.WEIGHTS) == info["pinned"]["weights_sha256"]
    assert json.loads((world.model_dir / "config.json").read_text())["vocab_size"] == info["vocab_size"]
    assert W.build_world(cache_dir=tmp_path, progress=False).root == world.root  # cached


RANDOM_HASH = """
import hashlib, sys, torch
from transformers import BertConfig
from bench.synthetic.train import random_model
config = BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    max_position_embeddings=64, pad_token_id=0)
h = hashlib.sha256()
for name, p in sorted(random_model(config, 0).state_dict().items()):
    h.update(name.encode() + p.detach().numpy().tobytes())
print(torch.backends.cpu.get_cpu_capability(), h.hexdigest())
"""


def test_random_control_is_the_same_on_every_cpu_kind():
    """torch's CPU normal_ gives other values with ATEN_CPU_CAPABILITY=default than with AVX2/AVX-512 kernels;
    the random-weight control draws from numpy instead, so it must not depend on the capability."""
    out = {}
    for capability in ("", "default"):
        env = {**os.environ, "ATEN_CPU_CAPABILITY": capability} if capability else dict(os.environ)
        if not capability:
            env.pop("ATEN_CPU_CAPABILITY", None)
        run = subprocess.run([sys.executable, "-c", RANDOM_HASH], env=env, capture_output=True, text=True, check=True)
        out[capability or "native"] = run.stdout.split()
    assert out["default"][0] == "DEFAULT"
    assert out["native"][1] == out["default"][1]


def test_cli_info_and_pin_only_for_the_default_world(capsys):
    from bench.cli import main

    main(["synthetic", "info"])
    assert json.loads(capsys.readouterr().out)["weights_sha256"] == pinned.record()["weights_sha256"]
    with pytest.raises(SystemExit) as e:
        main(["synthetic", "build", "--bias", "0.3", "--pin"])
    assert e.value.code == 2 and "--pin is for the default world" in capsys.readouterr().err
