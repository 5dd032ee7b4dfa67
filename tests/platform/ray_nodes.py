"""Real Ray nodes for the platform tests, each a ``ray start --block`` process on loopback.

Every node has its own ports and temporary directory, so other Ray sessions on the machine are
left alone, and is stopped by signalling the process group it was started in (never
``ray stop``, which stops every Ray on the machine). Nodes run with Ray's token authentication
(``RAY_AUTH_MODE=token``) and a token of this test session, :data:`TOKEN`; drivers get the
environment :func:`driver_env` makes, with the token or without it.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
TOKEN = secrets.token_hex(16)
"""The clusters' token (Ray compares it byte for byte)."""
JOIN_TIMEOUT_S = 60
_AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")
"""What a driver's environment must not inherit from the test's own."""


def driver_env(**extra: str) -> dict[str, str]:
    """The test's environment without Ray's address and authentication variables, with the
    repository importable, usage stats off, and ``extra`` (e.g. ``RAY_AUTH_TOKEN=TOKEN``)."""
    env = {k: v for k, v in os.environ.items() if k not in _AUTH_VARS}
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**env, "PYTHONPATH": path, "RAY_USAGE_STATS_ENABLED": "0", **extra}


NODE_ENV = driver_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN)
"""Every node's environment: token authentication with :data:`TOKEN`."""


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start_node(
    args: list[str], num_cpus: int, temp_dir: Path, log: Path
) -> subprocess.Popen[bytes]:
    """``ray start --block`` in a process group of its own (its raylet, GCS and workers join it)."""
    ports = free_ports(4)  # two nodes on one machine must not share these defaults
    command = [
        RAY, "start", *args, f"--num-cpus={num_cpus}", "--disable-usage-stats", "--block",
        f"--temp-dir={temp_dir}", f"--dashboard-agent-listen-port={ports[0]}",
        f"--dashboard-agent-grpc-port={ports[1]}", f"--runtime-env-agent-port={ports[2]}",
        f"--metrics-export-port={ports[3]}",
    ]  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(
            command, env=NODE_ENV, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def start_head(num_cpus: int, temp_dir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """A head node on a free loopback port: ``(address, process)``, once its GCS accepts
    connections (stopped again if it never does)."""
    (port,) = free_ports(1)
    head = start_node(
        ["--head", f"--port={port}", "--include-dashboard=false"],
        num_cpus,
        temp_dir,
        temp_dir / "head.log",
    )
    try:
        wait_for(lambda: gcs_listening(port), "head listening", [head])
    except Exception:
        stop_node(head)
        raise
    return f"127.0.0.1:{port}", head


def stop_node(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM lets ``ray start --block`` stop its node; SIGKILL then takes whatever is left of
    its process group."""
    if process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=45)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def active_nodes(address: str) -> int:
    status = subprocess.run(
        [RAY, "status", f"--address={address}"], env=NODE_ENV, capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    active = status.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
    return len(re.findall(r"node_[0-9a-f]+", active)) if status.returncode == 0 else 0


def wait_for(
    condition: Callable[[], bool], what: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while not condition():
        if any(p.poll() is not None for p in processes):
            raise RuntimeError(f"a Ray node exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {JOIN_TIMEOUT_S} s")
        time.sleep(1)


def gcs_listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def print_logs(temp_dir: Path) -> None:
    """The end of every node's log, for a failing test's report."""
    for log in sorted(temp_dir.glob("*.log")):
        print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
