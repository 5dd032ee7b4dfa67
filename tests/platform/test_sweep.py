"""End to end on real Ray and Tune: a PBT sweep through the CLI (MLflow runs, exploits in the
event log), ``esper run``, and a sweep whose driver is SIGKILLed and then resumed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import psutil
import pytest

from esper.analysis import EventLog
from esper.events.learning import read_learning_curves
from esper.platform.trust import SECRET_ENV, verify_sweep
from tests.platform.conftest import TINY
from tests.platform.test_population import _no_duplicate_or_missing_steps

_SWEEP = [
    *TINY,
    "search=pbt",
    "search.num_samples=2",
    "search.perturbation_interval=2",
    "search.quantile_fraction=0.5",
    "policy.training.iterations=3",  # one exploit, at 2 (one at 4 would restart a member
    "policy.training.replicas=1",  # that has nothing left to do: new actors, ~30 s)
    "cluster.num_cpus=2",
    "cluster.replica_cpus=0.25",
    "cluster.learner_cpus=0.25",
]


def _esper(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "esper", *args], capture_output=True, text=True, timeout=timeout
    )


def _run_dir(storage: Path, kind: str) -> Path:
    (run,) = [p for p in storage.iterdir() if p.is_dir() and f"-{kind}-" in p.name]
    return run


@pytest.mark.slow  # the default suite's end-to-end Ray + Tune run is the tiny PBT sweep's
def test_random_sweep_tracks_every_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two members searched at random, tracked and signed."""
    monkeypatch.setenv(SECRET_ENV, str(tmp_path / "secret"))  # the driver's signing key
    args = [*_SWEEP, "search=random", "policy.training.iterations=2"]
    out = _esper("sweep", *args, f"cluster.storage_path={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "leaderboard" in out.stdout and "mlflow ui --backend-store-uri" in out.stdout
    run = _run_dir(tmp_path, "sweep")
    _members_tracked(tmp_path, run)
    log = EventLog.open(run)
    assert log.sql("SELECT count(DISTINCT trial) AS n FROM metrics")["n"][0] == 2
    assert (run / "tune").is_dir() and json.loads((run / "run.json").read_text())["state"] == (
        "complete"
    )
    verify_sweep(run, trust=False)  # signed as it stopped, with this user's key


def _members_tracked(tmp_path: Path, run: Path) -> None:
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == run.name]
    # the artifacts live beside the store, under the runs' storage, not in ./mlruns
    assert experiment.artifact_location == (tmp_path / "mlartifacts").resolve().as_uri()
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    for r in runs:
        assert "reward.beta" in r.data.params and "esper/policy/density" in r.data.params
        assert {"online_accuracy", "density", "r_flops", "hp/reward.beta"} <= set(r.data.metrics)
        assert not any(k.startswith("config/") for k in r.data.metrics)
        assert r.data.tags["esper.config_digest"] and r.data.tags["esper.run_dir"] == str(run)
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"config.json", "event_log.json"} <= artifacts


_LR = "policy.training.learner_params.lr"
_PBT_BOUNDS = "search.bounds={reward.beta:[0,0.5],policy.training.learner_params.lr:[1e-4,1e-2]}"


@pytest.fixture(scope="module")
def tiny_pbt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, float]:
    """The default suite's end-to-end Ray + Tune run, once for the tests below: 2 members,
    perturbations at iterations 2 and 4, the Specialists' lr and β searched. Returns the
    storage, the command's output and its wall time."""
    storage = tmp_path_factory.mktemp("pbt")
    env = {**os.environ, SECRET_ENV: str(storage / "secret")}
    args = [*_SWEEP, "policy.training.iterations=5", "search.resample_probability=0", _PBT_BOUNDS]
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "esper", "sweep", *args, f"cluster.storage_path={storage}"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return storage, out.stdout, time.monotonic() - started


def test_tiny_pbt_sweep_applies_what_it_explores(
    tiny_pbt: tuple[Path, str, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exploit happens, the member runs its explored values (the optimizer's lr is the
    explored one), MLflow keeps each member's schedule and its exploits, every writer closed,
    and the leaderboard lists each member once."""
    storage, stdout, elapsed = tiny_pbt
    run = _run_dir(storage, "sweep")
    log = EventLog.open(run)
    exploits = log.sql("SELECT trial, detail FROM events WHERE action = 'exploit'")
    assert len(exploits) >= 1, stdout[-2000:]
    curves = read_learning_curves(run)
    assert {r["trial"] for r in curves} == {r["trial"] for r in curves if r["iteration"] == 5}
    for row in curves:  # the rate Adam ran is the value the member was given, exploit or not
        assert row["specialists/lr"] == pytest.approx(row[f"hp/{_LR}"]), row
    for trial in set(exploits["trial"]):  # the explored lr differs from the one before
        rates = [r[f"hp/{_LR}"] for r in curves if r["trial"] == trial]
        assert len(set(rates)) > 1, rates
    _members_tracked(storage, run)  # params, metrics, tags and artifacts of every member
    monkeypatch.setenv(SECRET_ENV, str(storage / "secret"))  # the driver's signing key
    verify_sweep(run, trust=False)  # signed as it stopped, with this user's key
    client = mlflow.MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == run.name]
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    for r in runs:
        history = client.get_metric_history(r.info.run_id, f"hp/{_LR}")
        assert len(history) == 5  # one value per iteration: the schedule
    tagged = [r for r in runs if "exploited_from" in r.data.tags]
    assert tagged and any(k.startswith("exploit.") for k in tagged[0].data.tags)
    for table in ("events", "metrics"):
        gaps = log.gaps(table)
        assert len(gaps) and gaps["closed"].all(), gaps  # every writer left its manifest
    board = stdout.split("leaderboard", 1)[1].split("best member", 1)[0]
    for trial in {r["trial"] for r in curves}:
        assert board.count(trial) == 1, board  # each member once
    print(f"tiny PBT sweep: {elapsed:.1f} s")


def test_compare_groups_a_sweep_by_the_values_its_members_ran(
    tiny_pbt: tuple[Path, str, float], tmp_path: Path
) -> None:
    storage, _, _ = tiny_pbt
    run = _run_dir(storage, "sweep")
    out = _esper("compare", str(run), "--by", "reward", "--json", str(tmp_path / "c.json"))
    assert out.returncode == 0, out.stderr[-2000:]
    groups = json.loads((tmp_path / "c.json").read_text())["groups"]
    curves = read_learning_curves(run)
    ran = {round(r["hp/reward.beta"], 3) for r in curves}
    assert len(groups) == len(ran) >= 2  # one group per shaping that actually ran
    assert "β=0.1 " not in " ".join(g["reward"] for g in groups)  # not the base config's


def test_deleting_the_last_part_of_any_writer_is_refused(
    tiny_pbt: tuple[Path, str, float], tmp_path: Path
) -> None:
    """Every writer of the sweep closed with its manifest, so a lost last part is seen by
    every reader of the run (exit 2), whichever writer it was."""
    storage, _, _ = tiny_pbt
    source = _run_dir(storage, "sweep")
    parts = sorted(source.glob("events/trial=*/replica=*/part-*.parquet"))
    for victim in (parts[0], parts[-1]):  # two writers' last parts, on copies of the run
        run = tmp_path / f"copy-{victim.parent.parent.name}-{victim.parent.name}"
        shutil.copytree(source, run)
        partition = run / victim.relative_to(source).parent
        last = sorted(partition.glob("part-*.parquet"))[-1]
        last.unlink()
        commands = [
            ["events", str(run), "--sql", "SELECT count(*) FROM events"],
            ["strategies", str(run)],
            ["compare", str(run)],
            ["report", str(run), "--out", str(tmp_path / "r.html")],
        ]
        for command in commands:
            out = _esper(*command)
            assert out.returncode == 2, (command, out.stdout[-500:], out.stderr[-500:])


@pytest.mark.slow
def test_replay_reruns_a_members_schedule(
    tiny_pbt: tuple[Path, str, float], tmp_path: Path
) -> None:
    storage, _, _ = tiny_pbt
    source = _run_dir(storage, "sweep")
    curves = read_learning_curves(source)
    schedules: dict[str, set[float]] = {}
    for row in curves:
        schedules.setdefault(row["trial"], set()).add(row[f"hp/{_LR}"])
    trial = sorted(t for t, rates in schedules.items() if len(rates) > 1)[0]  # an exploited one
    out = _esper("sweep", "--replay", str(source), "--trial", trial,
                 f"cluster.storage_path={tmp_path}")  # fmt: skip
    assert out.returncode == 2 and "no overrides" in out.stderr + out.stdout
    env = {**os.environ, SECRET_ENV: str(tmp_path / "secret")}
    out = subprocess.run(
        [sys.executable, "-m", "esper", "sweep", "--replay", str(source), "--trial", trial],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    (replay,) = [p for p in (storage).iterdir() if "-replay-" in p.name]
    replayed = read_learning_curves(replay)
    ours = [r[f"hp/{_LR}"] for r in curves if r["trial"] == trial]
    assert [r[f"hp/{_LR}"] for r in replayed] == pytest.approx(ours)  # the same schedule
    assert (
        not EventLog.open(replay).sql("SELECT * FROM events WHERE action = 'exploit'").shape[0]
    )  # its own state throughout


@pytest.mark.slow
def test_pbt_sweep_tracks_every_member_and_logs_its_exploits(tmp_path: Path) -> None:
    out = _esper("sweep", *_SWEEP, f"cluster.storage_path={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "leaderboard" in out.stdout
    run = _run_dir(tmp_path, "sweep")
    _members_tracked(tmp_path, run)
    log = EventLog.open(run)
    exploits = log.sql("SELECT trial, detail FROM events WHERE action = 'exploit'")
    assert len(exploits) >= 1  # synchronous PBT with 2 members: the worse copies the better
    detail = json.loads(exploits["detail"][0])
    assert detail["source_trial"] != exploits["trial"][0] and detail["changed"]
    assert (run / "tune").is_dir() and log.sql("SELECT count(*) AS n FROM metrics")["n"][0] > 0


def test_run_trains_one_member_of_cohort_replicas_and_saves_it(tmp_path: Path) -> None:
    overrides = ["policy.training.iterations=2", "policy.training.cohort=2"]
    out = _esper("run", *TINY, *overrides, f"cluster.storage_path={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    run = _run_dir(tmp_path, "run")
    assert (run / "member.pt").is_file() and "iteration 2/2" in out.stdout
    replicas = EventLog.open(run).sql("SELECT DISTINCT replica FROM metrics ORDER BY 1")
    assert replicas["replica"].tolist() == [0, 1, 2, 3]  # 2 actors × a cohort of 2
    _no_duplicate_or_missing_steps(run)


@pytest.mark.slow
def test_a_killed_driver_is_resumed_without_lost_or_duplicated_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also damaged checkpoints, spoiled before the resume: member A's every checkpoint but its
    first (it falls back on that one, records a ``restore`` event and completes), member B's
    every one (it fails by name: the sweep exits 1 and its run is marked failed). A killed
    driver never signed its Tune state: it is resumed with ``--trust``, and signed as it stops."""
    monkeypatch.setenv(SECRET_ENV, str(tmp_path / "secret"))
    iterations = 24  # neither member may finish before the kill
    args = [
        *_SWEEP,
        "search=none",
        f"policy.training.iterations={iterations}",
        f"cluster.storage_path={tmp_path}",
    ]
    driver = subprocess.Popen(
        [sys.executable, "-m", "esper", "sweep", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: Ray's processes die with it
        env={**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1"},  # Tune's state follows closely
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            if len(list(tmp_path.glob("*-sweep-*/tune/*/checkpoint_000001"))) == 2:
                break
            time.sleep(1.0)
        else:
            pytest.fail("no checkpoints appeared")
        time.sleep(3.0)  # past the checkpoint, into the next iterations
        os.killpg(driver.pid, signal.SIGKILL)
    finally:
        driver.wait(timeout=60)
    run = _run_dir(tmp_path, "sweep")
    trial_a, trial_b = sorted(p for p in (run / "tune").iterdir() if p.is_dir())
    first, *later = sorted(trial_a.glob("checkpoint_*"))
    for checkpoint in [*later, *trial_b.glob("checkpoint_*")]:
        spoiled = checkpoint / "member.pt"
        spoiled.write_bytes(spoiled.read_bytes()[:1000])  # truncated
    refused = _esper("sweep", "--resume", str(run))
    assert refused.returncode == 2 and "is not signed" in refused.stderr, refused.stderr[-3000:]
    out = _esper("sweep", "--resume", str(run), "--trust")
    assert out.returncode == 1, out.stderr[-3000:]
    verify_sweep(run, trust=False)
    last = out.stderr.strip().splitlines()[-1]  # Tune logs the trial's traceback above it
    assert last.startswith(f"esper: run failed: 1 of 2 members failed: {trial_b.name}")
    assert "no sound checkpoint" in last
    assert json.loads((run / "run.json").read_text())["state"] == "failed"
    log = EventLog.open(run)
    restore = log.sql("SELECT trial, detail FROM events WHERE action = 'restore'")
    assert restore["trial"].nunique() == 1 and f"{first.name}/member.pt" in restore["detail"][0]
    a = restore["trial"][0]
    counts = log.sql("SELECT trial, max(surgery_step) AS last FROM metrics GROUP BY ALL")
    assert counts.set_index("trial")["last"][a] == iterations * 3  # every surgery, once
    _no_duplicate_or_missing_steps(run)


def _processes_titled(needle: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if needle in cmdline:
            found.append(process)
    return found


@pytest.mark.slow
def test_a_killed_learner_restarts_its_trial_from_the_last_checkpoint(tmp_path: Path) -> None:
    """The learner lives in the Tune trial's actor: SIGKILL it, and Tune restarts the trial
    from its last checkpoint (``FailureConfig(max_failures=2)``); the member's replicas are
    rebuilt from it and their logs rolled back, so no row is lost or duplicated."""
    iterations = 8
    args = [*_SWEEP, "search=none", f"policy.training.iterations={iterations}",
            f"cluster.storage_path={tmp_path}"]  # fmt: skip
    driver = subprocess.Popen(
        [sys.executable, "-m", "esper", "sweep", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 300
        while not list(tmp_path.glob("*-sweep-*/tune/*/checkpoint_*")):
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.5)
        time.sleep(2.0)  # into the next iterations
        # One per member: the class is MemberTrainable, which Tune's with_resources wraps.
        learners = [*_processes_titled("ray::MemberTrainable"),
                    *_processes_titled("ray::ResourceTrainable")]  # fmt: skip
        assert len(learners) == 2
        learners[0].kill()
        _, err = driver.communicate(timeout=400)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 0, err[-3000:]
    run = _run_dir(tmp_path, "sweep")
    assert json.loads((run / "run.json").read_text())["state"] == "complete"
    log = EventLog.open(run)
    counts = log.sql("SELECT trial, replica, max(surgery_step) AS last FROM metrics GROUP BY ALL")
    assert (counts["last"] == iterations * 3).all()
    _no_duplicate_or_missing_steps(run)
    assert not log.damage()  # every writer closed with a manifest, sequences without gaps


@pytest.mark.slow
def test_a_sweep_runs_an_agent_workload(tmp_path: Path) -> None:
    """An RL workload (a DQN host on drifting CartPole) through Tune, like any other."""
    agent = [
        "workload=cartpole_drifting", "workload.host.params.hidden=[32,32]",
        "workload.batch_size=16", "workload.schedule.params.task_length=60",
        "workload.dataset.params.exploration_steps=100", "workload.organism.sense_batches=2",
        "workload.organism.spike_window=2", "policy=emrakul", "policy.density=0.2",
        "policy.surgery_interval=20", "policy.training.rollout=2", "policy.training.replicas=1",
        "policy.training.iterations=2", "search=none", "search.num_samples=1",
        "cluster.num_cpus=2", "cluster.replica_cpus=0.5", "cluster.learner_cpus=0.5",
    ]  # fmt: skip
    out = _esper("sweep", *agent, f"cluster.storage_path={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    run = _run_dir(tmp_path, "sweep")
    metrics = EventLog.open(run).sql("SELECT online_accuracy, surgery_step FROM metrics")
    assert metrics["surgery_step"].max() == 4 and metrics["online_accuracy"].between(0, 1).all()
    _no_duplicate_or_missing_steps(run)
