"""A real two-node Ray cluster on this machine: one member's replicas run on both nodes.

The head and a second node are separate ``ray start --block`` processes on loopback
(:mod:`tests.platform.ray_nodes`), with Ray's token authentication on, as Ray 2.59 and later
start clusters. The sweep is given only the cluster's token (``RAY_AUTH_TOKEN``, no
``RAY_AUTH_MODE``): Esper turns Ray's token mode on when the cluster asks for it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from esper.analysis import EventLog
from tests.platform.ray_nodes import (
    TOKEN,
    active_nodes,
    driver_env,
    print_logs,
    start_head,
    start_node,
    stop_node,
    wait_for,
)

pytestmark = pytest.mark.slow

NODE_CPUS = 2
"""Logical CPUs per node: one learner (0.5) and one replica (1.5) fit, two replicas do not."""
RUN_TIMEOUT_S = 150
ENV = driver_env(RAY_AUTH_TOKEN=TOKEN)
"""The sweep's environment: the cluster's token, and no ``RAY_AUTH_MODE``."""


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[str]:
    """The address of a head and a second node, each with :data:`NODE_CPUS` CPUs."""
    temp_dir = Path(tempfile.mkdtemp(prefix="esper-ray-", dir="/tmp"))  # short socket paths
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        address, head = start_head(NODE_CPUS, temp_dir)
        nodes.append(head)
        nodes.append(
            start_node([f"--address={address}"], NODE_CPUS, temp_dir, temp_dir / "worker.log")
        )
        wait_for(lambda: active_nodes(address) == 2, "second node joined", nodes)
        yield address
    except Exception:
        print_logs(temp_dir)
        raise
    finally:
        for node in reversed(nodes):
            stop_node(node)
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
    nodes: list[subprocess.Popen[bytes]] = []
    iterations = 10
    try:
        address, head = start_head(NODE_CPUS, temp_dir)
        nodes.append(head)
        nodes.append(
            start_node([f"--address={address}"], NODE_CPUS, temp_dir, temp_dir / "second.log")
        )
        wait_for(lambda: active_nodes(address) == 2, "second node joined", nodes)
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
        nodes.append(
            start_node([f"--address={address}"], NODE_CPUS, temp_dir, temp_dir / "third.log")
        )
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
        print_logs(temp_dir)
        raise
    finally:
        for node in reversed(nodes):
            stop_node(node)
        shutil.rmtree(temp_dir, ignore_errors=True)
