"""The `bench` command line: thin wrappers that parse, call the runner / renderers, and print."""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from bench.errors import BenchError


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def _parse_options(pairs: tuple[str, ...]) -> dict:
    """`-o inlp.n_iterations=10` -> {"inlp": {"n_iterations": 10}} (values parsed as JSON when possible)."""
    options: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        plugin, dot, param = key.partition(".")
        if not sep or not dot or not plugin or not param:
            raise BenchError(f"malformed option {pair!r}; write PLUGIN.PARAM=VALUE, e.g. inlp.n_iterations=10")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        options.setdefault(plugin, {})[param] = parsed
    return options


# Command groups of the core imported only when called (`bench report` does not pay for the synthetic world's imports)
_LAZY_GROUPS = {"data": ("bench.data.cli", "data"), "synthetic": ("bench.synthetic.cli", "synthetic")}


class BenchGroup(click.Group):
    """Adds the core's lazily imported groups and subcommands contributed by plugins (entry-point group
    `bench.commands`)."""

    def _plugin_commands(self):
        from bench.registry import COMMANDS

        return dict(COMMANDS.items())

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(_LAZY_GROUPS) | set(self._plugin_commands()))

    def get_command(self, ctx, name):
        if name in _LAZY_GROUPS:
            import importlib

            module, attr = _LAZY_GROUPS[name]
            return getattr(importlib.import_module(module), attr)
        from bench.registry import COMMANDS

        return super().get_command(ctx, name) or COMMANDS.find(name)  # loads that plugin command alone


@click.group(cls=BenchGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="bench-debias")
@click.option("-v", "--verbose", is_flag=True, help="Log details (cache hits, timings).")
def cli(verbose):
    """bench: debias masked language models with many methods and measure them all the same way.

    \b
    Quick start (synthetic planted-bias model, no downloads):
      bench run --suite demo --out runs/demo
    Real models (GPU advised; weights from a local dir or the HF cache):
      bench run --methods gradiend,inlp --models bert-base --data-dir /path/to/data
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")


def _parse_seeds(value: str | None) -> list[int] | None:
    if not value:
        return None
    seeds = []
    for part in _split(value):
        try:
            seeds.append(int(part))
        except ValueError:
            raise BenchError(f"--seeds must be comma-separated non-negative integers, e.g. 0,1,2; got {value!r}") from None
    return seeds


@cli.command()
@click.option("--models", help="Comma-separated model names (bert-base, roberta-large, synthetic, a dir, an HF id).")
@click.option("--methods", help="Comma-separated methods; combine with '+', e.g. gradiend-bpi+inlp. 'base' is always run.")
@click.option("--metrics", help="Comma-separated metrics (default: the suite's, else stereoset,seat,crows).")
@click.option("--suite", help="A suite name from `bench list suites` or a path to a .toml file.")
@click.option("--out", type=click.Path(path_type=Path), help="Run directory for results and tables (resumable).")
@click.option("--seed", type=int, help="Seed for methods, metrics and the bootstrap (default 0).")
@click.option("--seeds", "seeds_", metavar="S1,S2,...",
              help="Run every cell once per seed (a grid axis; rows per seed plus rows aggregated over the seeds).")
@click.option("--bias-type", type=click.Choice(["gender", "race", "religion"]),
              help="Which bias the metrics measure and the methods remove (default: the suite's, else gender). "
                   "Methods defined for one type only (GRADIEND: gender) show n/a for the others.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), help="Data directory (default: $BENCH_DATA_DIR).")
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Artifact/score cache (default: $BENCH_CACHE_DIR or ~/.cache/bench).")
@click.option("--resamples", type=int, help="Bootstrap resamples (default 1000).")
@click.option("-o", "--option", "options", multiple=True, metavar="PLUGIN.PARAM=VALUE",
              help="A method or metric option, e.g. -o inlp.n_iterations=10 (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["md", "tex"]), default="md", show_default=True,
              help="Format of the leaderboard printed at the end.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@click.option("--dry-run", is_flag=True, help="Print the plan (units, what each waits for, what is cached, the "
              "critical path) and exit without loading a model.")
@click.option("--executor", type=click.Choice(["local", "ray", "slurm"]), default="local", show_default=True,
              help="Where units (model x method chain x seed) run: this process, Ray tasks, or SLURM jobs (submitit).")
@click.option("--address", help="ray: the cluster to use (auto, or HOST:PORT); default: RAY_ADDRESS, else an "
              "in-process cluster on this machine.")
@click.option("--gpus-per-job", type=float, default=0, show_default=True, help="GPUs of each unit (ray, slurm).")
@click.option("--cpus-per-job", type=int, default=1, show_default=True, help="CPU threads of each unit (ray, slurm).")
@click.option("--max-retries", type=int, default=2, show_default=True,
              help="How often a unit whose worker died is run again (ray, slurm).")
@click.option("--ray-cpus", type=int, help="CPUs of the in-process Ray cluster (default: this machine's).")
@click.option("--ray-gpus", type=int, help="GPUs of the in-process Ray cluster (default: this machine's).")
@click.option("--slurm-partition", help="slurm: the partition.")
@click.option("--slurm-time", type=int, default=24 * 60, show_default=True, help="slurm: time limit of a job in minutes.")
@click.option("--slurm-mem", help="slurm: memory of a job, e.g. 32G.")
@click.option("--slurm-array-parallelism", type=int, default=16, show_default=True,
              help="slurm: at most this many jobs of an array run at once.")
@click.option("--slurm-cluster", type=click.Choice(["slurm", "local"]),
              help="slurm: 'local' runs the jobs as processes on this machine (submitit's LocalExecutor).")
@click.option("--no-wait", is_flag=True, help="slurm: submit the units that are ready and return; run the same "
              "command again to collect finished jobs and submit the next ones.")
@click.option("--log-to", "log_to", multiple=True, metavar="TRACKER",
              help="Also log the rows, the request and the tables to an experiment tracker: mlflow, wandb (optional "
                   "extras; repeatable). Needs --out: one tracker run per run directory, resumed with it.")
def run(models, methods, metrics, suite, out, seed, seeds_, bias_type, device, data_dir, cache_dir, resamples, options,
        fmt, no_progress, dry_run, executor, address, gpus_per_job, cpus_per_job, max_retries, ray_cpus, ray_gpus,
        slurm_partition, slurm_time, slurm_mem, slurm_array_parallelism, slurm_cluster, no_wait, log_to):
    """Run every (model, method, metric) and print the leaderboard.

    Results are stored one row per number in OUT/results.jsonl, with Markdown and LaTeX tables beside them.
    An interrupted run resumes when the same command is run again; fitted methods and scores are cached.
    Units run in this process, on Ray or on SLURM (--executor); every executor writes the same results.
    """
    from bench.engines.base import ExecutorOptions, make_executor
    from bench.models.loading import split_model_names
    from bench.registry import RENDERERS
    from bench.run.request import RunRequest
    from bench.run.runner import Runner

    request = RunRequest.from_flags(
        suite, split_model_names(models) if models else [], _split(methods), _split(metrics), seed,
        _parse_seeds(seeds_), _parse_options(options), resamples, bias_type=bias_type, device=device,
        data_dir=str(data_dir) if data_dir else None, cache_dir=str(cache_dir) if cache_dir else None,
        progress=not no_progress,
    )  # fmt: skip
    ex = make_executor(ExecutorOptions(
        kind=executor, address=address, gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job, max_retries=max_retries,
        ray_cpus=ray_cpus, ray_gpus=ray_gpus, slurm_partition=slurm_partition, slurm_time=slurm_time,
        slurm_mem=slurm_mem, slurm_array_parallelism=slurm_array_parallelism, slurm_cluster=slurm_cluster,
        no_wait=no_wait,
    ))  # fmt: skip
    if dry_run:
        from bench.run.plan import dry_run as describe_run

        click.echo(describe_run(Runner(request, out=None, echo=lambda m: click.echo(m, err=True)), out, executor))
        return
    trackers = _trackers(log_to, out)
    runner = Runner(request, out=out, echo=lambda m: click.echo(m, err=True))
    failed: list[str] = []
    try:
        ex.start()
        rows = runner.run(ex)
        # failed cells read "error" beside the results (results.jsonl keeps only results); nothing at all
        # finished: the error alone, and nothing written
        shown = rows + runner.error_rows if rows else []
        renderers = [renderer for _, renderer in RENDERERS.items()]  # the tables of reports/ (bench.renderers)
        tables = [p for r in renderers for p in r.write(shown, out)] if out is not None and shown else []
        if shown or not runner.errors:
            click.echo("\n\n".join(text for r in renderers if (text := r.show(shown, fmt))))
        if out is not None and shown:
            click.echo(f"\nresults: {out / 'results.jsonl'}  tables: {', '.join(str(p) for p in tables)}", err=True)
        if trackers and rows:
            failed = _log_to_trackers(trackers, rows, runner.store)
    finally:
        ex.close()  # (Ray's cluster stops after the table is out)
    if runner.errors or failed:
        raise BenchError("; ".join(runner.errors + failed))


def _trackers(names: tuple[str, ...], out: Path | None) -> list:
    """The trackers of `--log-to` (bench.trackers), each checked before the run starts (e.g. its library is
    installed), so a missing extra fails in a second rather than after the run."""
    from bench.registry import TRACKERS

    if not names:
        return []
    if out is None:
        raise BenchError("--log-to needs --out: the tracker run is kept with the run directory (one tracker run per "
                         "run directory; running the command again adds only the rows it does not hold)")
    trackers = [TRACKERS.get(name)() for name in dict.fromkeys(names)]
    for tracker in trackers:
        tracker.check()
    return trackers


def _log_to_trackers(trackers: list, rows: list[dict], store) -> list[str]:
    """Send the stored rows to each tracker, after results and tables are written: a tracker that fails is
    reported and the others still log; returns the failures (the run then exits non-zero)."""
    failed = []
    manifest = {"request": store.manifest.get("request", {}), "request_hash": store.manifest.get("request_hash")}
    try:
        store.acquire()  # one writer of the run directory (OUT/trackers.json) at a time
    except BenchError as e:
        return [f"nothing logged to {', '.join(t.name for t in trackers)}: {e}"]
    try:
        for tracker in trackers:
            try:
                click.echo(tracker.log(rows, store.out, manifest), err=True)
            except Exception as e:  # the results are stored: a tracker error must not hide them
                failed.append(f"logging to {tracker.name} failed ({type(e).__name__}: {e}); the results are kept in "
                              f"{store.out}: run the same command again to log them")  # fmt: skip
    finally:
        store.release()
    return failed


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--baseline", type=click.Path(path_type=Path), required=True,
              help="A results.jsonl (or run directory) of a trusted run; rows may carry a 'tolerance'.")
@click.option("--tolerance", type=float, default=1e-4, show_default=True,
              help="Allowed absolute difference (finite, >= 0) for rows without their own tolerance. The default "
                   "leaves room for float32 rounding on another CPU (~1e-6 on SEAT, CIs, LMS); a changed count-based "
                   "value (SS, CrowS) moves by 100/n, far more.")
def check(run_dir, baseline, tolerance):
    """Exit non-zero when a metric of RUN_DIR leaves its tolerance around the baseline (for CI).

    \b
    Exit status:
      0  every baseline value is present and within its tolerance
      1  regression: a value left its tolerance or is missing from the run
      2  bad usage (a missing file, a bad --tolerance)
      3  nothing comparable: the baseline has no row with status ok and a value
      4  malformed baseline or run (a row that is not JSON or lacks model/method/metric, a non-numeric value)
    """
    import math

    from bench.run.check import EXIT_MALFORMED, EXIT_NOTHING, EXIT_REGRESSION, Malformed, compare_runs, read_checked
    from bench.errors import DataError

    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise BenchError(f"--tolerance must be a finite number >= 0, got {tolerance}")
    try:
        run_rows, base_rows = read_checked(run_dir, "run"), read_checked(baseline, "baseline")
        failures, checked = compare_runs(run_rows, base_rows, tolerance)
    except (DataError, Malformed) as e:
        click.echo(f"error: malformed baseline or run: {e}", err=True)
        sys.exit(EXIT_MALFORMED)
    if checked == 0:
        click.echo(f"error: no comparable values: none of the {len(base_rows)} rows of {baseline} has status ok "
                   "and a value, so nothing was checked", err=True)  # fmt: skip
        sys.exit(EXIT_NOTHING)
    for f in failures:
        click.echo(f"FAIL {f}")
    click.echo(f"{checked - len(failures)} of {checked} values within tolerance")
    if failures:
        sys.exit(EXIT_REGRESSION)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--model", "model", required=True, help="A model of the run, as the run names it (e.g. synthetic).")
@click.option("--method", "chain", required=True, help="A debiased chain of the run (e.g. gradiend-bpi or cda+gradiend-bpi).")
@click.option("--seed", type=int, default=None, help="Which seed's fit (default: the run's seed).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="The cache the run used (default: BENCH_CACHE_DIR or ~/.cache/bench); its fits are reused.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="The data directory the run used.")
def export(run_dir, out_dir, model, chain, seed, cache_dir, data_dir):
    """Write MODEL debiased with METHOD, as RUN_DIR built it, to OUT_DIR: a Hugging Face folder (safetensors,
    tokenizer, a model card with the run's rows) that transformers loads without bench.

    \b
    Weight-changing methods only (GRADIEND, CDA, Dropout and chains of them); projections and SelfDebias act at
    inference and are refused with the reason.
      bench export runs/demo exported/gradiend --model synthetic --method gradiend-bpi
    """
    from bench.run.export import export as export_model

    done = export_model(run_dir, model, chain, out_dir, cache_dir=cache_dir, data_dir=data_dir, seed=seed,
                        echo=lambda m: click.echo(m, err=True))  # fmt: skip
    click.echo(f"wrote {done} (load it with AutoModel*.from_pretrained({str(done)!r}))")


@cli.command(name="list")
@click.argument("what", type=click.Choice(["methods", "metrics", "models", "suites"]))
def list_(what):
    """List registered methods, metrics, model names or suites (with the aliases that name them too)."""
    from bench.api import requirement_text
    from bench.registry import METHODS, METRICS

    def also(registry, name):
        aliases = registry.aliases_of(name)
        return f"  [also: {', '.join(aliases)}]" if aliases else ""

    if what == "methods":
        for name, cls in METHODS.items():
            kinds = ", ".join(sorted(getattr(cls, "model_kinds", ())))
            click.echo(f"{name:28s} {cls.label or ''}  ({cls.changes}; {kinds}){also(METHODS, name)}")
    elif what == "metrics":
        for name, cls in METRICS.items():
            subs = ", ".join(c.label for c in cls.columns)
            click.echo(f"{name:28s} needs {requirement_text(cls.requires)}; columns: {subs or '-'}{also(METRICS, name)}")
    elif what == "models":
        from bench.models.loading import available_models

        for name, doc in available_models():
            click.echo(f"{name:28s} {doc}")
    else:
        from bench.run.suite import load_suite, suite_names

        for name in suite_names():
            click.echo(f"{name:28s} {load_suite(name).get('description', '')}")


def main(argv=None):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        cli.main(args=argv, prog_name="bench", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted; finished results are kept — rerun the same command to resume", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted; finished results are kept — rerun the same command to resume", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except BenchError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except SystemExit:
        raise
    return 0


if __name__ == "__main__":
    main()
