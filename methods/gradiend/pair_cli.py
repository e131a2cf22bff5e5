"""`bench gradiend train|encoder|decoder --pair PAIR`: the stages of one race / religion pair GRADIEND.

PAIR is a pair plugin's name without `gradiend-` (`race-white-black`) or its short alias (`race1`); options are
that plugin's constructor arguments (`-o max_steps=300`).

    bench gradiend train   --model synthetic --pair race1 --out runs/race1
    bench gradiend encoder --model synthetic --pair race1 --gradiend runs/race1 --out runs/race1/encoder
    bench gradiend decoder --model synthetic --pair race1 --gradiend runs/race1 --out runs/race1/decoder
"""
from __future__ import annotations

from pathlib import Path

import click

from bench.errors import BenchError


def pair_method(pair: str, options: dict):
    from bench.registry import _construct
    from methods.gradiend.pair_method import PAIR_PLUGINS

    names = {n[len("gradiend-"):]: n for n in PAIR_PLUGINS}
    names.update({a[len("gradiend-"):]: n for n, cls in PAIR_PLUGINS.items() for a in cls.aliases})
    name = names.get(pair[len("gradiend-"):] if pair.startswith("gradiend-") else pair)
    if name is None:
        raise BenchError(f"unknown pair {pair!r}; choose one of {', '.join(sorted(names))}")
    return _construct(PAIR_PLUGINS[name], options, f"method {name!r}")


def _data(method, ctx):
    from methods.gradiend.pairs_data import load

    data = load(ctx.data_dir, method.bias_type)
    click.echo(f"data: {data.describe()}", err=True)
    return data


def train(method, subject, ctx, out: Path) -> None:
    from tabulate import tabulate

    from methods.gradiend.pairs import train_pair
    from methods.gradiend.train import SELECTED

    _, summary, _ = train_pair(subject, _data(method, ctx), method.pair, method.train_config(subject), ctx, out_dir=out)
    rows = [[r["seed"], r["val_cor"], r["best_step"], len(r["history"])] for r in summary["runs"]]
    click.echo(tabulate(rows, headers=["seed", "r (val)", "best step", "evaluations"], tablefmt="github", floatfmt=".4f"))
    click.echo(f"selected seed {summary['selected_seed']}; GRADIEND saved in {Path(out) / SELECTED}", err=True)


def encoder(method, subject, ctx, gradiend, split: str, neutral_max: int, out) -> None:
    from methods.gradiend.encoder_eval import plot
    from methods.gradiend.pairs import analyse_pair, encoder_table, pair_name

    split = {"val": "validation"}.get(split, split)
    report = analyse_pair(subject, gradiend, _data(method, ctx), method.pair, split=split, neutral_max=neutral_max,
                          exclude=method.exclude, bar=ctx.bar)  # fmt: skip
    click.echo(encoder_table(report))
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "encoder.md").write_text(encoder_table(report) + "\n")
        report.rows.to_csv(out / "encoder_rows.csv", index=False)
        plot(report.rows, out / "encoder.png", title=f"GRADIEND {pair_name(method.pair)} encoder ({split})",
             kinds=(*method.pair, *sorted(set(report.rows["kind"]) - set(method.pair) - {"masked-neutral", "neutral"}),
                    "masked-neutral", "neutral"))  # fmt: skip
        click.echo(f"written: {out / 'encoder.md'}, {out / 'encoder_rows.csv'}, {out / 'encoder.png'}", err=True)


def decoder(method, subject, ctx, gradiend, out) -> None:
    from tabulate import tabulate

    from methods.gradiend.decoder_eval import run_grid
    from methods.gradiend.pairs import PairEvaluator, heatmap, pair_name, select_point

    evaluator = PairEvaluator(subject, _data(method, ctx), method.pair, max_rows=int(method.max_rows),
                              batch_size=int(method.grid_batch_size))  # fmt: skip
    result = run_grid(subject, gradiend, evaluator, h_values=method.h_values, alpha_values=method.alpha_values,
                      exclude=method.exclude, bar=ctx.bar)  # fmt: skip
    table = result.table
    chosen = select_point(table)
    base = table[table["kind"] == "base"].iloc[0]
    cols = [c for c in table.columns if c != "kind"]
    click.echo(tabulate([["base"] + [base[c] for c in cols], ["selected"] + [chosen[c] for c in cols]],
                        headers=["model"] + cols, tablefmt="github", floatfmt=".4g"))  # fmt: skip
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "grid.csv", index=False)
        heatmap(table, out / "heatmap.png", title=f"GRADIEND {pair_name(method.pair)} - {subject.name}")
        click.echo(f"written: {out / 'grid.csv'}, {out / 'heatmap.png'}", err=True)
