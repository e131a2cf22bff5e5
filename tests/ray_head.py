"""A Ray cluster started the way a user starts one (`ray start --head --block`, on loopback), for the tests and
the benchmark of `bench run --executor ray --address HOST:PORT`. Token authentication as Ray sets it up by default,
with a token file of the test's own (RAY_AUTH_TOKEN_PATH) so that nothing in ~/.ray is read or written.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def ray_head(tmp: Path, cpus: int = 2, env: dict | None = None, timeout: float = 90):
    """Yields (address, env): the address to pass as --address and the environment a driver needs (the token
    path, the same thread settings as the workers'). Stops the cluster (its whole process group) afterwards."""
    ray = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    assert ray, "the `ray` command is not installed"
    token = tmp / "ray_auth_token"
    token.write_text(secrets.token_hex(32))
    port = free_port()
    common = {"RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1",
              "TOKENIZERS_PARALLELISM": "false", **(env or {})}  # fmt: skip
    head_env = {**os.environ, **common, "RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    cmd = [ray, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
           "--num-cpus", str(cpus), "--num-gpus", "0", "--include-dashboard", "false", "--disable-usage-stats",
           "--dashboard-agent-listen-port", str(free_port())]  # fmt: skip
    log = (tmp / "ray-head.log").open("w")
    proc = subprocess.Popen(cmd, env=head_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while "Ray runtime started" not in (tmp / "ray-head.log").read_text():
            assert proc.poll() is None, f"ray start failed:\n{(tmp / 'ray-head.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"ray start timed out:\n{(tmp / 'ray-head.log').read_text()[-3000:]}"
            time.sleep(0.1)
        yield f"127.0.0.1:{port}", common
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
