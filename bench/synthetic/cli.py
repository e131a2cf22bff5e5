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
    first use and cached (a few minutes on 2 CPU cores).
    """


@synthetic.command()
@click.option("--bias", type=click.FloatRange(0.0, 1.0), default=0.8, show_default=True,
              help="Strength of the planted gender lean (0 = none, 1 = every pairing follows the lean).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Cache (default: $BENCH_CACHE_DIR or ~/.cache/bench).")
@click.option("--pin", is_flag=True,
              help="Write the trained weights into the package's pinned folder (maintainers, from a source checkout; "
                   "default options only). Commit the three files, and bump GENERATOR_VERSION if the text changed.")
def build(bias, seed, cache_dir, pin):
    """Train a world with the package's recipe (even where a pinned one exists) and print its figures."""
    from bench.synthetic import pinned
    from bench.synthetic.world import DEFAULTS, build_world

    if pin and (bias, seed) != (DEFAULTS["bias"], DEFAULTS["seed"]):
        raise BenchError(f"--pin is for the default world (bias {DEFAULTS['bias']}, seed {DEFAULTS['seed']}) only")
    world = build_world(bias, seed, cache_dir, train=True)
    info = world.info
    click.echo(f"world: {world.root}")
    click.echo(f"final loss {info['final_loss']:.3f}, extra rounds {info['extra_rounds']}, "
               f"signal {json.dumps(info['signal'], sort_keys=True)}")
    if pin:
        rec = pinned.write(world.root)
        click.echo(f"pinned: {pinned.FOLDER} (weights sha256 {rec['weights_sha256'][:16]}, "
                   f"generated files {rec['generated_sha256'][:16]})")


@synthetic.command()
def info():
    """Show the pinned default world's record: options, hashes, how and where it was trained."""
    from bench.synthetic import pinned
    from bench.synthetic.world import GENERATOR_VERSION

    rec = pinned.record()
    if rec is None:
        raise BenchError(f"no pinned world in {pinned.FOLDER}; `bench synthetic build --pin` makes one")
    click.echo(json.dumps(rec, indent=2, sort_keys=True))
    if rec.get("generator") != GENERATOR_VERSION:
        click.echo(f"note: pinned for generator {rec.get('generator')}, this bench generates version "
                   f"{GENERATOR_VERSION}: the default world is trained on first use", err=True)
