"""`--log-to mlflow`: one MLflow run per run directory (entry point `mlflow` of the group `bench.trackers`).

Where: MLflow's own settings. MLFLOW_TRACKING_URI (a server, `sqlite:///mlflow.db`, or a local file store
`file:./mlruns`, which MLflow 3 asks to allow with MLFLOW_ALLOW_FILE_STORE=true), else MLflow's default;
MLFLOW_EXPERIMENT_NAME, else the experiment `bench`. The run is named after the run directory.

Not twice: the metrics the MLflow run already holds are read back through the client, and only the others are
sent; parameters are sent once; artifacts again only when a file changed.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from reports import trackers as common


class MLflowTracker:
    name = "mlflow"

    @staticmethod
    def check() -> None:
        common.missing_extra("mlflow", "mlflow", "MLflow")

    def log(self, rows: list[dict], out: Path, request: dict) -> str:
        import mlflow
        from mlflow.tracking import MlflowClient

        out = Path(out)
        uri = mlflow.get_tracking_uri()
        client = MlflowClient(tracking_uri=uri)
        record = common.read_state(out, self.name)
        run_id = self._open(client, record, uri, out, request)
        try:
            new_rows, total = self._send(client, run_id, rows, request)
            paths = common.artifacts(out)
            digest = common.digest(paths)
            if digest != record.get("artifacts") or record.get("run_id") != run_id:
                for p in paths:
                    client.log_artifact(run_id, str(p))
            common.write_state(out, self.name, {"run_id": run_id, "tracking_uri": uri, "artifacts": digest})
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id, "FINISHED")
        return common.summary(self.name, uri, run_id, new_rows, total)

    def _open(self, client, record: dict, uri: str, out: Path, request: dict) -> str:
        """The MLflow run of this run directory: the recorded one when it is still there (same tracking URI, not
        deleted), else a new one, recorded before anything is sent."""
        from mlflow.exceptions import MlflowException

        if record.get("run_id") and record.get("tracking_uri") == uri:
            try:
                run = client.get_run(record["run_id"])
                if run.info.lifecycle_stage == "active":
                    client.update_run(run.info.run_id, status="RUNNING")
                    return run.info.run_id
            except MlflowException:
                pass
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "bench"
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
        tags = {"bench.run_dir": str(out.resolve()), "bench.request_hash": str(request.get("request_hash", ""))}
        run = client.create_run(experiment_id, run_name=out.resolve().name, tags=tags)
        common.write_state(out, self.name, {"run_id": run.info.run_id, "tracking_uri": uri})
        return run.info.run_id

    @staticmethod
    def _send(client, run_id: str, rows: list[dict], request: dict) -> tuple[int, int]:
        """Send the parameters and metrics the run lacks; returns (rows sent, rows with numbers)."""
        from mlflow.entities import Metric, Param

        held = client.get_run(run_id).data
        wanted = common.params(request)
        new_params = [Param(k, v) for k, v in wanted.items() if k not in held.params]
        per_row = common.rows_metrics(rows)
        stamp = int(time.time() * 1000)
        new_rows, metrics = 0, []
        for metrics_of_row in per_row.values():
            missing = [Metric(k, v, stamp, 0) for k, v in metrics_of_row.items() if k not in held.metrics]
            new_rows += bool(missing)
            metrics.extend(missing)
        for i in range(0, len(new_params), 100):  # a batch holds at most 100 parameters, 1000 metrics
            client.log_batch(run_id, params=new_params[i:i + 100])
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i:i + 1000])
        return new_rows, len(per_row)
