"""`bench gradiend train|encoder|decoder`: the GRADIEND stages one at a time, for researchers.

    bench gradiend train   --model synthetic --out runs/gradiend-synth          # resumable: rerun to continue
    bench gradiend encoder --model synthetic --gradiend runs/gradiend-synth --out runs/gradiend-synth/encoder
    bench gradiend decoder --model synthetic --gradiend runs/gradiend-synth --out runs/gradiend-synth/decoder

Hyperparameters are the constructor arguments of `gradiend-bpi`, given as `-o NAME=VALUE` (JSON values),
e.g. `-o max_steps=500 -o seeds=[0]`.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from bench.errors import BenchError


def _options(pairs) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BenchError(f"malformed option {pair!r}; write NAME=VALUE, e.g. max_steps=500")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _setup(model: str, device: str, data_dir, options, no_progress: bool, pair: str | None = None):
    from bench.api import Context
    from bench.data.paths import default_cache_dir, default_data_dir
    from bench.models.loading import load_subject, resolve_device
    from bench.registry import _construct
    from methods.gradiend.method import GradiendBPI

    if pair:
        from methods.gradiend.pair_cli import pair_method

        method = pair_method(pair, _options(options))
    else:
        method = _construct(GradiendBPI, _options(options), "method 'gradiend'")
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    subject = load_subject(model, device=resolve_device(device), data_dir=data_dir, cache_dir=default_cache_dir())
    ctx = Context(data_dir=Path(subject.data_dir) if subject.data_dir else data_dir, cache_dir=default_cache_dir(),
                  device=str(subject.device), progress=not no_progress)  # fmt: skip
    return method, subject, ctx


def _load_gradiend(path: Path, subject):
    from methods.gradiend.model import Gradiend
    from methods.gradiend.train import SELECTED

    path = Path(path)
    folder = path / SELECTED if (path / SELECTED / "config.json").is_file() else path
    gradiend, config = Gradiend.load(folder, device=subject.device)
    return gradiend, config


def _common(f):
    f = click.option("--model", required=True, help="Model name (synthetic, bert-base, a directory, ...).")(f)
    f = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)(f)
    f = click.option("--data-dir", type=click.Path(path_type=Path), help="Data directory (default: $BENCH_DATA_DIR).")(f)
    f = click.option("-o", "--option", "options", multiple=True, metavar="NAME=VALUE",
                     help="A gradiend-bpi constructor argument, e.g. -o max_steps=500 (repeatable).")(f)  # fmt: skip
    f = click.option("--no-progress", is_flag=True, help="Hide progress bars.")(f)
    f = click.option("--pair", help="A race / religion pair GRADIEND (race1..3, religion1..3 or e.g. race-white-black; "
                     "methods/gradiend/pair_cli.py); -o then sets that plugin's arguments.")(f)  # fmt: skip
    return f


@click.group()
def gradiend():
    """GRADIEND stages: train the autoencoder, evaluate its encoder, evaluate the decoder grid."""


@gradiend.command()
@_common
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder for checkpoints, the runs and the selected GRADIEND (rerun to resume).")  # fmt: skip
def train(model, device, data_dir, options, no_progress, pair, out):
    """Train GRADIEND for every seed (resumable) and keep the best run in OUT/gradiend."""
    from tabulate import tabulate

    from methods.gradiend.data import load
    from methods.gradiend.stages import train_stage
    from methods.gradiend.train import SELECTED

    method, subject, ctx = _setup(model, device, data_dir, options, no_progress, pair)
    if pair:
        from methods.gradiend import pair_cli

        return pair_cli.train(method, subject, ctx, out)
    data = load(ctx.data_dir)
    click.echo(f"data: {data.describe()}", err=True)
    _, summary, _ = train_stage(subject, data, method.train_config(subject), ctx, out_dir=out)
    rows = [[r["seed"], r["val_cor"], r["best_step"], len(r["history"])] for r in summary["runs"]]
    click.echo(tabulate(rows, headers=["seed", "Cor_GENTER (val)", "best step", "evaluations"], tablefmt="github", floatfmt=".4f"))
    click.echo(f"selected seed {summary['selected_seed']}; GRADIEND saved in {Path(out) / SELECTED}", err=True)


@gradiend.command()
@_common
@click.option("--gradiend", "gradiend_dir", type=click.Path(path_type=Path, exists=True), required=True,
              help="A `train` output folder (or the GRADIEND folder inside it).")  # fmt: skip
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True)
@click.option("--neutral-max", type=int, default=10_000, show_default=True, help="GENEUTRAL rows (type 3).")
@click.option("--out", type=click.Path(path_type=Path), help="Folder for encoder.md, encoder_rows.csv, encoder.png.")
def encoder(model, device, data_dir, options, no_progress, pair, gradiend_dir, split, neutral_max, out):
    """Encoder metrics (Acc/Cor_GENTER, Acc/Cor_Enc, mean |h|) and the plot of encoded values."""
    from methods.gradiend.data import load
    from methods.gradiend.encoder_eval import analyse, plot

    method, subject, ctx = _setup(model, device, data_dir, options, no_progress, pair)
    gradiend_model, _ = _load_gradiend(gradiend_dir, subject)
    if pair:
        from methods.gradiend import pair_cli

        return pair_cli.encoder(method, subject, ctx, gradiend_model, split, neutral_max, out)
    report = analyse(subject, gradiend_model, load(ctx.data_dir), split=split, neutral_max=neutral_max,
                     max_length=method.max_length, exclude=method.exclude, layers=method.layers, bar=ctx.bar)  # fmt: skip
    click.echo(report.table())
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "encoder.md").write_text(report.table() + "\n")
        report.rows.to_csv(out / "encoder_rows.csv", index=False)
        plot(report.rows, out / "encoder.png", title=f"GRADIEND encoder - {model} ({split})")
        click.echo(f"written: {out / 'encoder.md'}, {out / 'encoder_rows.csv'}, {out / 'encoder.png'}", err=True)


@gradiend.command()
@_common
@click.option("--gradiend", "gradiend_dir", type=click.Path(path_type=Path, exists=True), required=True,
              help="A `train` output folder (or the GRADIEND folder inside it).")  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path),
              help="Folder for grid.csv, heatmap.png, selection.md, timings.json.")  # fmt: skip
def decoder(model, device, data_dir, options, no_progress, pair, gradiend_dir, out):
    """Evaluate the (h, alpha) grid and print the BPI/FPI/MPI selection table."""
    from methods.gradiend.data import load
    from methods.gradiend.decoder_eval import selection_table
    from methods.gradiend.stages import evaluate_grid, write_grid

    method, subject, ctx = _setup(model, device, data_dir, options, no_progress, pair)
    gradiend_model, _ = _load_gradiend(gradiend_dir, subject)
    if pair:
        from methods.gradiend import pair_cli

        return pair_cli.decoder(method, subject, ctx, gradiend_model, out)
    result = evaluate_grid(subject, gradiend_model, load(ctx.data_dir), method.grid_config(subject), ctx.bar)
    click.echo(selection_table(result.table))
    t = result.timings
    click.echo(f"grid: {len(result.table)} models in {t['total']:.1f}s (evaluation {t['evaluate']:.1f}s, "
               f"edits and restore {t['edit']:.2f}s)", err=True)  # fmt: skip
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_grid(result, out, title=f"GRADIEND decoder grid - {model}")
        click.echo(f"written: {out / 'grid.csv'}, {out / 'selection.md'}, {out / 'timings.json'}, "
                   f"{out / 'heatmap.png'}", err=True)  # fmt: skip
