"""The replica's own code in this process (no Ray): a diverged organism is quarantined and
continues from its last healthy restart checkpoint, with nothing duplicated in its log; the
reference twin trains on the organism's batches and resumes with it exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from esper.analysis import EventLog
from esper.conf import compose
from esper.config import to_plain
from esper.platform.replica import ReplicaSpec, ReplicaWorker
from esper.platform.runs import create_run
from esper.policies.base import make_policy
from esper.policies.central import CentralLearner
from esper.policies.emrakul.policy import EmrakulPolicy
from tests.platform.conftest import TINY
from tests.platform.test_population import _no_duplicate_or_missing_steps


def _worker(tmp_path: Path, *overrides: str) -> tuple[ReplicaWorker, CentralLearner]:
    cfg = compose(
        [*TINY, "policy.training.replicas=1", f"cluster.storage_path={tmp_path}", *overrides]
    )
    run = tmp_path / "run"
    create_run(run, cfg, "run", "digits_permuted", "emrakul")
    spec = ReplicaSpec(str(run), "t0", 0, 1, to_plain(cfg), str(run / "state" / "replica-0.pt"))
    worker = ReplicaWorker(spec)
    policy = make_policy("emrakul", seed=0)
    assert isinstance(policy, EmrakulPolicy)
    policy.build(*worker.dims())
    return worker, CentralLearner(policy, cfg.policy.training, 0)


def _diverge(worker: ReplicaWorker) -> None:
    for group in worker.organisms[0].optimizer.param_groups:
        group["lr"] = 1e12


def test_a_diverged_organism_resumes_from_its_last_healthy_checkpoint(tmp_path: Path) -> None:
    worker, learner = _worker(tmp_path)
    worker.rollout(learner.acting_state(), 3)
    worker.checkpoint()  # healthy at surgery 3
    lr = worker.organisms[0].optimizer.param_groups[0]["lr"]
    _diverge(worker)
    (episode,) = worker.rollout(learner.acting_state(), 3)
    assert episode.metrics["diverged"]
    organism = worker.organisms[0]
    assert organism.surgery_step == 3 and worker.ids == [0]  # the same organism, restored
    assert organism.optimizer.param_groups[0]["lr"] == lr  # its healthy optimizer state too
    worker.checkpoint()
    (healthy,) = worker.rollout(learner.acting_state(), 3)  # the trial goes on
    assert not healthy.metrics["diverged"] and organism.surgery_step == 6
    worker.close()
    run = tmp_path / "run"
    _no_duplicate_or_missing_steps(run)  # the diverged stretch was rolled back, once
    query = "SELECT count, detail FROM events WHERE action='quarantine'"
    quarantine = EventLog.open(run).sql(query)
    detail = json.loads(quarantine["detail"][0])
    assert detail["restored_to"] == 3 and detail["diverged_at"] > 3
    assert quarantine["count"][0] == detail["diverged_at"] - 3


def test_an_organism_that_diverges_again_from_the_same_state_is_rebuilt(tmp_path: Path) -> None:
    worker, learner = _worker(tmp_path)
    worker.rollout(learner.acting_state(), 2)
    worker.checkpoint()
    _diverge(worker)
    worker.rollout(learner.acting_state(), 2)  # restored to surgery 2
    _diverge(worker)
    worker.rollout(learner.acting_state(), 2)  # again from the same state: a new organism
    assert worker.ids != [0] and worker.organisms[0].surgery_step == 0
    worker.close()
    details = EventLog.open(tmp_path / "run").sql(
        "SELECT detail FROM events WHERE action='quarantine' ORDER BY wall_time"
    )["detail"]
    assert [sorted(json.loads(d)) for d in details] == [
        ["checkpoint", "diverged_at", "restored_to"],
        ["rebuilt_as"],
    ]


def test_the_reference_twin_sees_the_organisms_batches_and_resumes_exactly(tmp_path: Path) -> None:
    worker, learner = _worker(tmp_path, "search.reference=rigl")
    assert worker.twins is not None
    twin, organism = worker.twins.organisms[0], worker.organisms[0]
    # the same first K batches on the same initial weights and masks, before any surgery
    assert worker.twins.steps[0].info["accuracies"] == worker.steps[0].info["accuracies"]
    worker.rollout(learner.acting_state(), 3)
    worker.checkpoint()
    (episode,) = worker.rollout(learner.acting_state(), 3)
    metrics = episode.metrics
    assert twin.sgd_step == organism.sgd_step == 7 * 10 and 0 < metrics["reference_accuracy"] < 1
    assert metrics["relative_accuracy"] == pytest.approx(
        metrics["episode_accuracy"] - metrics["reference_accuracy"]
    )
    worker.close()
    restarted = ReplicaWorker(worker.spec)  # Ray's restart: back to the checkpoint, both of them
    assert restarted.twins is not None and restarted.twins.organisms[0].sgd_step == 4 * 10
    (again,) = restarted.rollout(learner.acting_state(), 3)
    restarted.close()
    assert again.accuracies == episode.accuracies
    for key in ("reference_accuracy", "relative_accuracy"):
        assert again.metrics[key] == metrics[key], key
    _no_duplicate_or_missing_steps(tmp_path / "run")  # the twin wrote no row of its own


def test_a_diverged_twin_takes_its_organism_back_to_the_checkpoint(tmp_path: Path) -> None:
    worker, learner = _worker(tmp_path, "search.reference=rigl")
    assert worker.twins is not None
    worker.rollout(learner.acting_state(), 3)
    worker.checkpoint()
    for group in worker.twins.organisms[0].optimizer.param_groups:
        group["lr"] = 1e12
    (episode,) = worker.rollout(learner.acting_state(), 3)
    assert not episode.metrics["diverged"] and math.isnan(episode.metrics["relative_accuracy"])
    assert worker.organisms[0].surgery_step == worker.twins.organisms[0].surgery_step == 3
    worker.close()
    _no_duplicate_or_missing_steps(tmp_path / "run")
    (detail,) = EventLog.open(tmp_path / "run").sql(
        "SELECT detail FROM events WHERE action='quarantine'"
    )["detail"]
    assert json.loads(detail)["twin"] is True and json.loads(detail)["restored_to"] == 3
