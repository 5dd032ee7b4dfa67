"""``esper demo`` (what ``make demo`` runs) end to end: MLflow holds one run per member with
params and metrics, Tune's PBT log records exploits, and the event log has the matching
``exploit`` rows. Slow (about 5 minutes on 2 cores): ``make test-slow``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from esper.analysis import EventLog
from tests.platform.test_population import _no_duplicate_or_missing_steps

pytestmark = pytest.mark.slow


def test_demo_sweep_tracks_members_and_logs_pbt_exploits(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "esper", "demo", f"cluster.storage_path={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # What a newcomer reads: no library banners or INFO lines, each member once on the
    # leaderboard, and the best member against RigL on a held-out seed.
    assert "Configuration for experiment" not in out.stdout and " INFO " not in out.stderr
    assert "WARNING" not in out.stderr, out.stderr[-2000:]
    board = out.stdout.split("leaderboard", 1)[1].split("best member", 1)[0]
    trials = {line.split()[1] for line in board.splitlines() if "_0000" in line}
    assert len(trials) == 4 and all(board.count(t) == 1 for t in trials), board
    assert "Emrakul (best member" in out.stdout and "· RigL " in out.stdout and "Δ " in out.stdout
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir() and p.name != "mlartifacts"]
    assert (tmp_path / "mlartifacts").is_dir()  # the store's artifacts, beside it
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == run.name]
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 4  # one per member
    for r in runs:
        assert {"reward.beta", "esper/policy/density"} <= set(r.data.params)
        history = client.get_metric_history(r.info.run_id, "online_accuracy")
        assert len(history) >= 2
    # Tune's PBT log: one line per exploit, [target, source, target iter, source iter, ...]
    lines = (run / "tune" / "pbt_global.txt").read_text().splitlines()
    decisions = [json.loads(line) for line in lines]
    assert decisions, "PBT made no exploit"
    exploits = EventLog.open(run).sql(
        "SELECT DISTINCT trial, detail FROM events WHERE action = 'exploit'"
    )
    assert len(exploits) == len(decisions)
    pairs = {
        (trial[-1], json.loads(detail)["source_trial"][-1])
        for trial, detail in zip(exploits["trial"], exploits["detail"], strict=True)
    }
    assert pairs == {(d[0].split("_")[0], d[1].split("_")[0]) for d in decisions}
    # Synchronous PBT copies a member of the same age, so each partition's steps still run
    # 0, 1, 2, ... once each across the exploit.
    _no_duplicate_or_missing_steps(run)
