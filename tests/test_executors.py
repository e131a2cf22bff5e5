"""Executors: local (in process), Ray (in-process cluster: 2 CPUs, 2 fake GPUs) and SLURM through submitit's
local executor give the same results.jsonl; each unit sees its own GPU; failures are contained and retried; an
interrupted driver resumes.

The fast tests use a tiny random BERT and plugins registered here (local executor, in process). The slow ones
run the `ci` suite (synthetic world) in subprocesses, against one local reference run per session
(tests/ci_runs.py). Identity of two runs: every field of every row, in order, except `runtime_s` (wall-clock).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial

import pytest
import torch

from bench.api import EMBED, Column, Estimate, Metric, Scores, statistic
from bench.errors import BenchError
from bench.registry import METHODS, METRICS, register_method, register_metric
from ci_runs import REPO, assert_same_results, bench_cli, ci_args, ci_reference, fresh_cache, rows, units  # noqa: F401
from cli_helpers import run_bench
from tests.test_runner_cli import ScaleHidden


@statistic
def _mean_rows(values, idx):
    return values[idx[0]].mean(axis=1) * 100


class ExNorm(Metric):
    """Mean norm of the first hidden state of a few sentences, per sentence."""

    requires = EMBED
    columns = (Column("NORM", "norm", "0", 2),)

    def score(self, subject, ctx):
        enc = subject.tokenizer(["a b c", "d e", "f g h i", "j"], return_tensors="pt", padding=True)
        with torch.inference_mode():
            h = subject.hidden_states(enc.input_ids, enc.attention_mask)[:, 0].norm(dim=-1).numpy().astype(float)
        h = h * (1.0 + 0.01 * ctx.seed)  # seed-dependent, so rows per seed differ
        return Scores("ex-norm", {"norm": Estimate((len(h),), partial(_mean_rows, h))})


class ExScale(ScaleHidden):
    label = "ExScale"


class ExFails(ExScale):
    label = "ExFails"

    def fit(self, subject, ctx):
        raise BenchError("ex-fails cannot be fitted here")


@pytest.fixture(scope="module", autouse=True)
def plugins():
    added = [(METRICS, "ex-norm", ExNorm), (METHODS, "ex-scale", ExScale), (METHODS, "ex-fails", ExFails)]
    for registry, name, cls in added:
        if name not in registry:
            (register_metric if registry is METRICS else register_method)(name)(cls)
    yield
    for registry, name, _ in added:
        registry.unregister(name)


def _tiny(tiny_model_dir, tmp_path, methods, *extra):
    return ["run", "--models", tiny_model_dir, "--methods", methods, "--metrics", "ex-norm", "--data-dir", tmp_path,
            "--cache-dir", tmp_path / "cache", "--resamples", "50", *extra]  # fmt: skip


# ---- fast: the local executor ----------------------------------------------------------------------------------
def test_failing_unit_does_not_stop_the_others_and_is_retried_next_run(tiny_model_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    args = _tiny(tiny_model_dir, tmp_path, "ex-fails,ex-scale,ex-fails+ex-scale", "--out", out)
    code, stdout, err = run_bench(args, capsys)
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: ")
    assert err.count("ex-fails cannot be fitted here") >= 3  # two units failed, each reported
    got = rows(out)
    assert [r["method"] for r in got] == ["base", "ex-scale"]  # the others finished, in plan order
    assert "ExScale" in stdout  # the table of what finished is printed
    failed = [l for l in stdout.splitlines() if "ExFails" in l]  # ... with the failed cells marked, not blank
    assert len(failed) == 2 and all("| error" in l for l in failed) and "error: failed in this run" in stdout
    assert "| error" in (out / "leaderboard.md").read_text()
    # the failed units have no rows, so the next run retries them (here: they can be fitted now)
    monkeypatch.setattr(ExFails, "fit", ExScale.fit)
    code, _, err = run_bench(args, capsys)
    assert code == 0, err
    assert [r["method"] for r in rows(out)] == ["base", "ex-fails", "ex-scale", "ex-fails+ex-scale"]
    assert rows(out)[:1] == got[:1] and rows(out)[2] == got[1]


def test_scoring_error_ends_one_metric_not_the_run(tiny_model_dir, tmp_path, capsys, monkeypatch):
    calls = []

    def score(self, subject, ctx):
        calls.append(subject.method)
        if subject.method == "ex-scale":
            raise BenchError("scoring failed on ex-scale")
        return original(self, subject, ctx)

    original = ExNorm.score
    monkeypatch.setattr(ExNorm, "score", score)
    out = tmp_path / "run"
    code, _, err = run_bench(_tiny(tiny_model_dir, tmp_path, "ex-scale,ex-scale+ex-scale", "--out", out), capsys)
    assert code == 2 and "scoring failed on ex-scale" in err.strip().splitlines()[-1]
    assert [r["method"] for r in rows(out)] == ["base", "ex-scale+ex-scale"]


def test_rows_are_written_in_plan_order_whatever_the_order_units_finish(tiny_model_dir, tmp_path, capsys):
    """The collector (the driver) keeps results.jsonl in plan order when results arrive out of order."""
    from bench.run.request import RunRequest
    from bench.run.runner import Runner

    ref = tmp_path / "ref"
    assert run_bench(_tiny(tiny_model_dir, tmp_path, "ex-scale,ex-scale+ex-scale", "--out", ref), capsys)[0] == 0
    request = RunRequest(models=[str(tiny_model_dir)], methods=["ex-scale", "ex-scale+ex-scale"], metrics=["ex-norm"],
                         data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), stats={"resamples": 50},
                         progress=False)  # fmt: skip
    runner = Runner(request, out=tmp_path / "shuffled", echo=lambda m: None)
    plan = runner.plan()
    collector = runner.collector(plan)
    results = [runner.run_unit(u.to_dict()) for u in plan.units]
    for result in reversed(results):
        collector.add(result)
    collector.finish()
    assert_same_results(ref, tmp_path / "shuffled")


def test_remote_workers_receive_names_and_dicts_only(tiny_model_dir, tmp_path):
    """What travels to a worker is JSON: the request's fields and the unit (no model, no plugin object)."""
    from bench.run.unit import request_dict
    from bench.run.request import RunRequest
    from bench.run.runner import Runner

    runner = Runner(RunRequest(models=[str(tiny_model_dir)], methods=["ex-scale"], metrics=["ex-norm"],
                               cache_dir=str(tmp_path / "c")), echo=lambda m: None)  # fmt: skip
    payload = {"request": request_dict(runner), "units": [u.to_dict() for u in runner.plan().units]}
    assert json.loads(json.dumps(payload)) == payload
    again = RunRequest(**payload["request"]).normalised()
    assert again.data_dir == str(runner.data_dir)  # the driver's resolved data directory (same path on every node)
    assert again.manifest()["request"] == dict(runner.request.manifest()["request"], data_dir=again.data_dir)


FAULT_HOOK = REPO / "tests" / "fault_hook"


def _fault_env(**fault) -> dict:
    """The environment of a `bench run` whose workers fail as `fault` says (tests/fault_hook/sitecustomize.py)."""
    path = os.pathsep.join([str(FAULT_HOOK), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {"PYTHONPATH": path, "BENCH_TEST_FAULT": json.dumps(fault)}


def test_test_fault_hook_raises_in_a_matching_unit_only(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("fault_hook_under_test", FAULT_HOOK / "sitecustomize.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)  # (BENCH_TEST_FAULT unset: it patches nothing)
    work = hook.wrap(lambda request, unit, *a: unit["id"], {"unit": "/ cda /", "action": "raise", "marker": ""})
    assert work({}, {"id": "synthetic / inlp / seed 0"}) == "synthetic / inlp / seed 0"
    assert work({}, {"id": "synthetic / cda / seed 0", "warm": True}) == "synthetic / cda / seed 0"
    with pytest.raises(BenchError, match="injected failure in synthetic / cda / seed 0"):
        work({}, {"id": "synthetic / cda / seed 0"})


def test_production_code_has_no_fault_hook(tiny_model_dir, tmp_path):
    """BENCH_FAULT_INJECT (the hook bench had in its workers) neither kills a worker nor creates a file: a worker
    (bench.run.unit.work, in a fresh process as on Ray or SLURM) runs its unit as if it were not set."""
    sources = {p: p.read_text() for p in (REPO / "bench").rglob("*.py")}
    assert not [p for p, text in sources.items() if "FAULT_INJECT" in text or "inject_fault" in text]
    marker = tmp_path / "marker"
    script = """if True:
        import json, sys
        from bench.run.unit import work
        from bench.run.request import RunRequest
        from bench.run.runner import Runner
        request = dict(models=[sys.argv[1]], methods=["base"], metrics=["crows"], data_dir=sys.argv[2],
                       cache_dir=sys.argv[3], progress=False)
        (unit,) = Runner(RunRequest(**request), echo=lambda m: None).plan().units
        print(json.dumps(work(request, unit.to_dict(), [], "slurm")["errors"]))
    """
    fault = {"unit": "", "action": "kill", "marker": str(marker)}
    env = {**os.environ, "BENCH_FAULT_INJECT": json.dumps(fault), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-c", script, str(tiny_model_dir), str(tmp_path / "data"), str(tmp_path / "cache")]
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]  # not killed
    (error,) = json.loads(done.stdout.splitlines()[-1])  # the unit ran: crows has no data file here
    assert "crows" in error and "injected" not in error
    assert not marker.exists()


class _FakeCollector:
    """What bench.engines.schedule.schedule needs of a Collector: every unit to do, results recorded in order."""

    def __init__(self, plan):
        self.plan, self.finished, self.log_units, self.added = plan, 0, False, []

    def check_data(self):
        pass

    def todo(self):
        return list(self.plan.units)

    def add(self, result, worker):
        self.added.append(result["unit"])
        self.finished += 1


def _schedule_events(slots: int, models=("m",), quiet_waits: int = 0, echoed: list | None = None) -> list[tuple]:
    """Run _schedule on a fake engine that finishes handles first in, first out (after `quiet_waits` waits in
    which nothing finishes); returns what it was asked."""
    from types import SimpleNamespace

    from bench.engines.schedule import schedule

    units = []
    for m in models:
        units.append(SimpleNamespace(id=f"{m}/base", model=m, waits_for=()))
        units += [SimpleNamespace(id=f"{m}/{x}", model=m, waits_for=(f"{m}/base",)) for x in "abc"]
    plan = SimpleNamespace(units=units, models=list(models))
    events: list[tuple] = []
    queue: list = []
    quiet = [None] * quiet_waits

    def submit_many(ready):
        for u in ready:
            events.append(("submit", u.id))
            queue.append(u.id)
        return [u.id for u in ready]

    def warm(model):
        events.append(("warm", model))
        queue.append(f"warm-{len(events)}")
        return queue[-1]

    def wait_any(handles, timeout):
        assert timeout > 0
        if quiet:
            quiet.pop()
            return None
        handle = next(h for h in queue if h in handles)
        queue.remove(handle)
        events.append(("done", handle))
        return handle, {"unit": handle}, None

    collector = _FakeCollector(plan)
    echo = echoed.append if echoed is not None else (lambda m: None)
    schedule(plan, collector, submit_many, wait_any, echo, warm=warm, slots=slots)
    assert sorted(collector.added) == sorted(u.id for u in units)  # warm-ups never reach the collector
    return events


def test_idle_slots_load_the_model_while_its_first_unit_runs():
    events = _schedule_events(slots=3)
    # the base runs on one slot; the two idle ones warm up (no more than the three units waiting for it)
    assert events[:3] == [("submit", "m/base"), ("warm", "m"), ("warm", "m")]
    assert events.count(("warm", "m")) == 2  # once per model
    assert events.index(("submit", "m/a")) > events.index(("done", "m/base"))
    assert _schedule_events(slots=1).count(("warm", "m")) == 0  # no idle slot: nothing to warm
    assert _schedule_events(slots=8).count(("warm", "m")) == 3  # one per waiting unit, not per slot
    two = _schedule_events(slots=2, models=("m", "n"))
    # both bases run at once (nothing idle); a model is warmed only while one of its units runs
    assert two[:2] == [("submit", "m/base"), ("submit", "n/base")]
    for model in ("m", "n"):
        for i, e in enumerate(two):
            if e == ("warm", model):
                started = [x for x in two[:i] if x[0] == "submit" and x[1].startswith(model + "/")]
                finished_all = [x for x in two[:i] if x[0] == "done" and x[1].startswith(model + "/")]
                assert len(started) > len(finished_all), (model, two)


def test_unreachable_ray_cluster_is_a_clear_error_at_once(capsys, tmp_path):
    pytest.importorskip("ray")
    from ray_head import free_port

    t0 = time.monotonic()
    code, _, err = run_bench(["run", "--models", "synthetic", "--executor", "ray", "--address",
                              f"127.0.0.1:{free_port()}", "--cache-dir", tmp_path], capsys)  # fmt: skip
    assert code == 2 and "no Ray cluster answers at 127.0.0.1:" in err and "ray start --head" in err
    assert time.monotonic() - t0 < 30  # (Ray alone retries for minutes)


def test_a_driver_waiting_long_says_what_is_still_running():
    echoed: list[str] = []
    events = _schedule_events(slots=1, quiet_waits=2, echoed=echoed)
    still = [m for m in echoed if "still running" in m]
    assert len(still) == 2 and still[0].startswith("  still running: 1 unit(s), 3 waiting, 0/4 finished; longest: m/base (")
    assert sorted(e[1] for e in events if e[0] == "done") == ["m/a", "m/b", "m/base", "m/c"]  # and then it goes on


def test_executor_options_are_checked(capsys, tmp_path):
    code, _, err = run_bench(["run", "--models", "synthetic", "--executor", "ray", "--cpus-per-job", "0",
                           "--cache-dir", tmp_path], capsys)  # fmt: skip
    assert code == 2 and "--cpus-per-job" in err


# ---- slow: the ci suite on Ray and on submitit's local executor -------------------------------------------------
def _assert_own_gpus(log: list[dict]) -> None:
    """Each unit saw exactly one GPU, and units that ran at the same time saw different ones."""
    for u in log:
        assert u["cuda_visible_devices"] in ("0", "1"), u
    for i, a in enumerate(log):
        for b in log[i + 1:]:
            if a["start"] < b["end"] and b["start"] < a["end"]:  # overlapping in time
                assert a["cuda_visible_devices"] != b["cuda_visible_devices"], (a, b)


RAY = ["--executor", "ray", "--ray-cpus", "2", "--ray-gpus", "2", "--gpus-per-job", "1", "--cpus-per-job", "1"]
SUBMITIT = ["--executor", "slurm", "--slurm-cluster", "local", "--slurm-array-parallelism", "2", "--gpus-per-job", "1"]


def _same_as_local(ci_reference, tmp_path, *args, env=None) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """`bench run --suite ci ARGS` into a fresh cache: it succeeds and its results.jsonl equals the local run's;
    returns the process and OUT/units.jsonl."""
    ref, _ = ci_reference
    out, cache = tmp_path / "run", fresh_cache(tmp_path / "cache")
    done = bench_cli(ci_args(out, cache, *args), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_results(ref, out)
    return done, units(out)


@pytest.mark.slow
def test_ray_gives_the_local_results(ci_reference, tmp_path):
    pytest.importorskip("ray")
    _, log = _same_as_local(ci_reference, tmp_path, *RAY)
    assert len(log) == 5 and {u["executor"] for u in log} == {"ray"}
    _assert_own_gpus(log)


@pytest.mark.slow
def test_ray_on_an_existing_cluster_gives_the_local_results(ci_reference, tmp_path):
    """`ray start --head` (token authentication, as Ray sets it up), then `bench run --address`: the driver finds
    the token on its own; CPU-only units, so workers are reused and warmed up (bench.engines.schedule)."""
    pytest.importorskip("ray")
    from ray_head import ray_head

    with ray_head(tmp_path) as (address, env):
        done, log = _same_as_local(ci_reference, tmp_path, "--executor", "ray", "--address", address, env=env)
    assert "ray: connected to the cluster (2 CPUs, 0 GPUs)" in done.stderr
    assert len(log) == 5 and len({u["pid"] for u in log}) <= 2  # two 1-CPU workers ran all five units


@pytest.mark.slow
def test_submitit_gives_the_local_results(ci_reference, tmp_path):
    pytest.importorskip("submitit")
    _, log = _same_as_local(ci_reference, tmp_path, *SUBMITIT)
    assert len(log) == 5 and {u["executor"] for u in log} == {"slurm"}
    assert len({u["pid"] for u in log}) == 5  # one job (process) per unit
    _assert_own_gpus(log)


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["ray", "slurm"])
def test_killed_worker_is_retried(executor, ci_reference, tmp_path):
    pytest.importorskip("ray" if executor == "ray" else "submitit")
    ref, ref_cache = ci_reference
    marker = tmp_path / "killed"
    env = _fault_env(unit="/ cda+inlp /", action="kill", marker=str(marker))
    out = tmp_path / "run"
    done = bench_cli(ci_args(out, ref_cache, *(RAY if executor == "ray" else SUBMITIT)), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert marker.is_file(), "the fault was not injected"
    killed_pid = int(marker.read_text())
    (retry,) = [u for u in units(out) if "cda+inlp" in u["unit"]]
    assert retry["pid"] != killed_pid  # a new worker ran it
    assert_same_results(ref, out)


@pytest.mark.slow
def test_failing_unit_on_ray_does_not_stop_the_others(ci_reference, tmp_path):
    pytest.importorskip("ray")
    ref, ref_cache = ci_reference
    out = tmp_path / "run"
    done = bench_cli(ci_args(out, ref_cache, *RAY), env=_fault_env(unit="/ inlp /", action="raise", marker=""))
    assert done.returncode == 2 and "injected failure in synthetic / inlp / seed 0" in done.stderr.splitlines()[-1]
    assert "synthetic / inlp / seed 0: the worker raised" in done.stderr and "in _inject_fault" in done.stderr
    assert {r["method"] for r in rows(out)} == {"base", "cda", "sentence-debias", "cda+inlp"}
    done = bench_cli(ci_args(out, ref_cache, *RAY))  # the next run does what failed
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_results(ref, out)


@pytest.mark.slow
def test_killed_driver_resumes(ci_reference, tmp_path):
    ref, _ = ci_reference
    out, cache = tmp_path / "run", fresh_cache(tmp_path / "cache")
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    driver = subprocess.Popen([sys.executable, "-m", "bench.cli", *map(str, ci_args(out, cache))], env=env, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 600
    while time.time() < deadline and driver.poll() is None:
        if (out / "results.jsonl").is_file() and {r["method"] for r in rows(out)} >= {"base", "cda"}:
            break
        time.sleep(0.2)
    assert driver.poll() is None, "the run ended before it could be interrupted"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    partial_rows = rows(out)
    assert 0 < len(partial_rows) < len(rows(ref))
    done = bench_cli(ci_args(out, cache))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cda: fitted" not in done.stderr  # finished work is not redone: CDA's fit came from the cache
    assert_same_results(ref, out)


@pytest.mark.slow
def test_slurm_no_wait_submits_and_a_rerun_collects(ci_reference, tmp_path):
    pytest.importorskip("submitit")
    ref, ref_cache = ci_reference
    out = tmp_path / "run"
    args = ci_args(out, ref_cache, *SUBMITIT, "--no-wait")
    first = bench_cli(args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "run the same command again" in first.stderr
    for _ in range(120):
        time.sleep(2)
        again = bench_cli(args)
        assert again.returncode == 0, again.stderr[-3000:]
        if "every unit is finished" in again.stderr:
            break
    else:
        pytest.fail("the run never finished")
    assert_same_results(ref, out)
    assert not (out / ".bench-slurm" / "jobs.json").exists()
