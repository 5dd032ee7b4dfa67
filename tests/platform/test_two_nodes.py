"""A real two-node Ray cluster on this machine: one member's replicas run on both nodes.

The head and a second node are separate ``ray start --block`` processes on loopback, with their
own ports and temporary directory, so other Ray sessions on the machine are left alone; each
is stopped by signalling the process group it was started in (never ``ray stop``, which stops
every Ray on the machine). Every process runs with ``RAY_AUTH_MODE=disabled``: Ray 2.60 turns
token authentication on for a new head by default, and the second node then cannot join.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from esper.analysis import EventLog

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
NODE_CPUS = 2
"""Logical CPUs per node: one learner (0.5) and one replica (1.5) fit, two replicas do not."""
JOIN_TIMEOUT_S = 60
RUN_TIMEOUT_S = 150

ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(":"),
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _start_node(args: list[str], temp_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    """``ray start --block`` in a process group of its own (its raylet, GCS and workers join it)."""
    ports = _free_ports(4)  # two nodes on one machine must not share these defaults
    command = [
        RAY, "start", *args, f"--num-cpus={NODE_CPUS}", "--disable-usage-stats", "--block",
        f"--temp-dir={temp_dir}", f"--dashboard-agent-listen-port={ports[0]}",
        f"--dashboard-agent-grpc-port={ports[1]}", f"--runtime-env-agent-port={ports[2]}",
        f"--metrics-export-port={ports[3]}",
    ]  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(
            command, env=ENV, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop_node(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM lets ``ray start --block`` stop its node; SIGKILL then takes whatever is left of
    its process group."""
    if process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=45)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def _active_nodes(address: str) -> int:
    status = subprocess.run(
        [RAY, "status", f"--address={address}"], env=ENV, capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    active = status.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
    return len(re.findall(r"node_[0-9a-f]+", active)) if status.returncode == 0 else 0


def _wait_for(
    condition: Callable[[], bool], what: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while not condition():
        if any(p.poll() is not None for p in processes):
            raise RuntimeError(f"a Ray node exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {JOIN_TIMEOUT_S} s")
        time.sleep(1)


def _gcs_listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[str]:
    """The address of a head and a second node, each with :data:`NODE_CPUS` CPUs."""
    temp_dir = Path(tempfile.mkdtemp(prefix="esper-ray-", dir="/tmp"))  # short socket paths
    (port,) = _free_ports(1)
    address = f"127.0.0.1:{port}"
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        nodes.append(
            _start_node(
                ["--head", f"--port={port}", "--include-dashboard=false"],
                temp_dir,
                temp_dir / "head.log",
            )
        )
        _wait_for(lambda: _gcs_listening(port), "head listening", nodes)
        nodes.append(_start_node([f"--address={address}"], temp_dir, temp_dir / "worker.log"))
        _wait_for(lambda: _active_nodes(address) == 2, "second node joined", nodes)
        yield address
    except Exception:
        for log in sorted(temp_dir.glob("*.log")):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        for node in reversed(nodes):
            _stop_node(node)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_a_sweep_member_runs_one_replica_on_each_node(two_nodes: str, tmp_path: Path) -> None:
    overrides = [
        "policy=emrakul", "policy.density=0.2", "policy.surgery_interval=10",
        "workload.batch_size=16", "workload.host.params.hidden=[32,16]",
        "workload.organism.sense_batches=2", "workload.organism.spike_window=2",
        "policy.training.rollout=3", "policy.training.replicas=2",
        "policy.training.iterations=2", "search=none", "search.num_samples=1",
        # 1.5 + 1.5 CPUs do not fit one node of 2: the replicas must take a node each.
        "cluster.replica_cpus=1.5", "cluster.learner_cpus=0.5",
        f"cluster.storage_path={tmp_path}", "experiment.name=twonode",
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "esper", "sweep", *overrides, "--address", two_nodes],
        env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = [p.parent for p in tmp_path.glob("*/run.json")]
    with EventLog.open(run_dir) as log:
        rows = log.sql(
            "SELECT replica_id, count(DISTINCT node_id) AS nodes, min(node_id) AS node "
            "FROM metrics GROUP BY replica_id ORDER BY replica_id"
        )
        nodes = log.sql("SELECT DISTINCT node_id FROM metrics")
    assert list(rows["replica_id"]) == [0, 1]
    assert list(rows["nodes"]) == [1, 1]  # each replica stayed on its node
    assert len(nodes) == 2 and all(nodes["node_id"] != "")


def test_a_worker_node_lost_mid_sweep_is_survived(tmp_path: Path) -> None:
    """A cluster of its own: the member's two replicas take a node each; the second node is
    SIGKILLed mid-sweep (its raylet and workers at once, as a machine lost) and a third joins
    (as an autoscaler replaces it). Ray reschedules the lost bundle and restarts the replica
    from its restart checkpoint (or Tune the trial from its checkpoint, if the learner was
    there): the sweep completes with every surgery step once."""
    temp_dir = Path(tempfile.mkdtemp(prefix="esper-ray-", dir="/tmp"))
    (port,) = _free_ports(1)
    address = f"127.0.0.1:{port}"
    head_args = ["--head", f"--port={port}", "--include-dashboard=false"]
    nodes: list[subprocess.Popen[bytes]] = []
    iterations = 10
    try:
        nodes.append(_start_node(head_args, temp_dir, temp_dir / "head.log"))
        _wait_for(lambda: _gcs_listening(port), "head listening", nodes)
        nodes.append(_start_node([f"--address={address}"], temp_dir, temp_dir / "second.log"))
        _wait_for(lambda: _active_nodes(address) == 2, "second node joined", nodes)
        overrides = [
            "policy=emrakul", "policy.density=0.2", "policy.surgery_interval=10",
            "workload.batch_size=16", "workload.host.params.hidden=[32,16]",
            "workload.organism.sense_batches=2", "workload.organism.spike_window=2",
            "policy.training.rollout=3", "policy.training.replicas=2",
            f"policy.training.iterations={iterations}", "search=none", "search.num_samples=1",
            "search.perturbation_interval=2", "cluster.max_restarts=3",
            "cluster.replica_cpus=1.5", "cluster.learner_cpus=0.5",
            f"cluster.storage_path={tmp_path}", "experiment.name=nodeloss",
        ]  # fmt: skip
        with (temp_dir / "sweep.log").open("wb") as log:
            sweep = subprocess.Popen(
                [sys.executable, "-m", "esper", "sweep", *overrides, "--address", address],
                env=ENV, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while not list(tmp_path.glob("*/tune/*/checkpoint_*")):
            assert sweep.poll() is None and time.monotonic() < deadline, "no checkpoint"
            time.sleep(0.5)
        os.killpg(nodes[1].pid, signal.SIGKILL)  # the second machine is gone
        nodes[1].wait(timeout=30)
        nodes.append(_start_node([f"--address={address}"], temp_dir, temp_dir / "third.log"))
        assert sweep.wait(timeout=4 * RUN_TIMEOUT_S) == 0, (temp_dir / "sweep.log").read_text()
        (run_dir,) = [p.parent for p in tmp_path.glob("*/run.json")]
        with EventLog.open(run_dir) as events:
            assert not events.damage()
            steps = events.sql(
                "SELECT replica, count(*) AS n, count(DISTINCT surgery_step) AS distinct_steps, "
                "max(surgery_step) AS last, count(DISTINCT node_id) AS nodes "
                "FROM metrics GROUP BY replica ORDER BY replica"
            )
            all_nodes = events.sql("SELECT count(DISTINCT node_id) AS n FROM metrics")["n"][0]
        assert (steps["last"] == iterations * 3).all(), steps
        assert (steps["n"] == steps["distinct_steps"]).all() and (
            steps["n"] == steps["last"] + 1
        ).all()
        assert all_nodes == 3  # the lost node's work went on on the new one
    except Exception:
        for log_file in sorted(temp_dir.glob("*.log")):
            print(f"--- {log_file.name}\n{log_file.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        for node in reversed(nodes):
            _stop_node(node)
        shutil.rmtree(temp_dir, ignore_errors=True)
