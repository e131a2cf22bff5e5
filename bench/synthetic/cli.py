"""`bench synthetic`: build (train) a synthetic world, pin the default one, show what is pinned."""
from __future__ import annotations

import json
from pathlib import Path

import click

from bench.errors import BenchError


@click.group()
def synthetic():
    """The synthetic planted-bias world (the embedded default model).

    \b
    The default world (bias 0.8, seed 0) is pinned: its weights ship with bench, its text and data sets are
    generated on first use (seconds). Other options (`--models synthetic:bias=0.3,seed=1`) are trained on
    first use and cached (a few minutes on 2 CPU cores). The world's causal LM (`--models synthetic-clm`, a tiny
    GPT-2 on the same text and data sets) is pinned and trained the same way (`build --kind clm`).
    """


@synthetic.command()
@click.option("--bias", type=click.FloatRange(0.0, 1.0), default=0.8, show_default=True,
              help="Strength of the planted gender lean (0 = none, 1 = every pairing follows the lean).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Cache (default: $BENCH_CACHE_DIR or ~/.cache/bench).")
@click.option("--kind", type=click.Choice(["mlm", "clm"]), default="mlm", show_default=True,
              help="Which model of the world: the masked LM (synthetic) or the causal LM (synthetic-clm; its world's "
                   "text comes from the cache or the masked world's pin, only the causal LM is trained).")
@click.option("--pin", is_flag=True,
              help="Write the trained weights into the package's pinned folder (maintainers, from a source checkout; "
                   "default options only). Commit the three files, and bump GENERATOR_VERSION if the text changed "
                   "(for --kind clm: bench/synthetic/pinned_clm/, and clm.RECIPE if the causal recipe changed).")
def build(bias, seed, cache_dir, kind, pin):
    """Train a world with the package's recipe (even where a pinned one exists) and print its figures."""
    from bench.synthetic import pinned
    from bench.synthetic.world import DEFAULTS, build_world

    if pin and (bias, seed) != (DEFAULTS["bias"], DEFAULTS["seed"]):
        raise BenchError(f"--pin is for the default world (bias {DEFAULTS['bias']}, seed {DEFAULTS['seed']}) only")
    if kind == "clm":
        return _build_clm(bias, seed, cache_dir, pin)
    world = build_world(bias, seed, cache_dir, train=True)
    info = world.info
    click.echo(f"world: {world.root}")
    click.echo(f"final loss {info['final_loss']:.3f}, extra rounds {info['extra_rounds']}, "
               f"signal {json.dumps(info['signal'], sort_keys=True)}")
    if pin:
        rec = pinned.write(world.root)
        click.echo(f"pinned: {pinned.FOLDER} (weights sha256 {rec['weights_sha256'][:16]}, "
                   f"generated files {rec['generated_sha256'][:16]})")


def _build_clm(bias, seed, cache_dir, pin) -> None:
    from bench.synthetic import clm

    world, folder = clm.build_clm(bias, seed, cache_dir, train=True)
    info = json.loads((folder / clm.INFO).read_text(encoding="utf-8"))
    click.echo(f"causal LM: {folder}")
    click.echo(f"final loss {info['final_loss']:.3f}, extra rounds {info['extra_rounds']}, "
               f"{info['seconds']['total']:.0f} s, signal {json.dumps(info['signal'], sort_keys=True)}")
    if pin:
        rec = clm.pin(world, folder)
        click.echo(f"pinned: {clm.FOLDER} (weights sha256 {rec['weights_sha256'][:16]}, "
                   f"generated files {rec['generated_sha256'][:16]})")


@synthetic.command()
@click.option("--kind", type=click.Choice(["mlm", "clm"]), default="mlm", show_default=True,
              help="The masked LM's record (synthetic) or the causal LM's (synthetic-clm).")
def info(kind):
    """Show the pinned default world's record: options, hashes, how and where it was trained."""
    from bench.synthetic import pinned
    from bench.synthetic.world import GENERATOR_VERSION

    if kind == "clm":
        return _clm_info()
    rec = pinned.record()
    if rec is None:
        raise BenchError(f"no pinned world in {pinned.FOLDER}; `bench synthetic build --pin` makes one")
    click.echo(json.dumps(rec, indent=2, sort_keys=True))
    if rec.get("generator") != GENERATOR_VERSION:
        click.echo(f"note: pinned for generator {rec.get('generator')}, this bench generates version "
                   f"{GENERATOR_VERSION}: the default world is trained on first use", err=True)


def _clm_info() -> None:
    from bench.synthetic import clm, pinned
    from bench.synthetic.world import GENERATOR_VERSION

    rec = pinned.record(clm.FOLDER)
    if rec is None:
        raise BenchError(f"no pinned causal LM in {clm.FOLDER}; `bench synthetic build --kind clm --pin` makes one")
    click.echo(json.dumps(rec, indent=2, sort_keys=True))
    if (rec.get("generator"), rec.get("recipe")) != (GENERATOR_VERSION, clm.RECIPE):
        click.echo(f"note: pinned for generator {rec.get('generator')} and causal recipe {rec.get('recipe')}, this "
                   f"bench has {GENERATOR_VERSION} and {clm.RECIPE}: the default world's causal LM is trained on "
                   "first use", err=True)
