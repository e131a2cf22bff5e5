"""`--log-to wandb`: one Weights & Biases run per run directory (entry point `wandb` of the group `bench.trackers`).

Where: W&B's own settings: WANDB_PROJECT (else the project `bench`), WANDB_ENTITY, WANDB_MODE (`offline` keeps
the run in WANDB_DIR until `wandb sync`), WANDB_DIR. The run is named after the run directory; its id is chosen
here and recorded in OUT/trackers.json before the run starts, and every later command resumes it
(`resume="allow"`).

Not twice: an offline run cannot be asked what it holds, so the keys of the rows sent are recorded beside the id
(right after they are sent) and only the other rows are sent; all new rows go in one `log` call (one step).
The tables go as one artifact (`bench-<run id>`, type `bench-run`), again only when a file changed.
"""
from __future__ import annotations

import os
import secrets
import string
from pathlib import Path

from reports import trackers as common


class WandbTracker:
    name = "wandb"

    @staticmethod
    def check() -> None:
        common.missing_extra("wandb", "wandb", "Weights & Biases (wandb)")

    def log(self, rows: list[dict], out: Path, request: dict) -> str:
        out = Path(out)
        project = os.environ.get("WANDB_PROJECT") or "bench"
        record = common.read_state(out, self.name)
        if record.get("project") != project:  # a new project: a new run there
            record = {}
        per_row = common.rows_metrics(rows)
        logged = set(record.get("logged", []))
        new = {k: m for k, m in per_row.items() if k not in logged}
        paths = common.artifacts(out)
        digest = common.digest(paths)
        run_id = record.get("run_id")
        if run_id and not new and digest == record.get("artifacts"):
            return common.summary(self.name, f"project {project}", run_id, 0, len(per_row))
        if not run_id:  # chosen here and recorded first: a failure from now on resumes this run
            run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(12))
            record = {"run_id": run_id, "project": project, "logged": []}
            common.write_state(out, self.name, record)
        self._send(record, out, request, new, paths, digest)
        return common.summary(self.name, f"project {project}", run_id, len(new), len(per_row))

    def _send(self, record: dict, out: Path, request: dict, new: dict, paths: list[Path], digest: str) -> None:
        import wandb

        run = wandb.init(project=record["project"], id=record["run_id"], resume="allow", name=out.resolve().name,
                         config=common.params(request), settings=wandb.Settings(console="off", quiet=True))  # fmt: skip
        try:
            if new:
                run.log({k: v for metrics in new.values() for k, v in metrics.items()})
                record = dict(record, logged=[*record.get("logged", []), *new])
                common.write_state(out, self.name, record)
            if digest != record.get("artifacts"):
                artifact = wandb.Artifact(f"bench-{record['run_id']}", type="bench-run",
                                          metadata={"run_dir": str(out.resolve())})  # fmt: skip
                for p in paths:
                    artifact.add_file(str(p), name=p.name)
                run.log_artifact(artifact)
                common.write_state(out, self.name, dict(record, artifacts=digest))
        except BaseException:
            run.finish(exit_code=1)
            raise
        run.finish()
