"""The replica's own code in this process (no Ray): a diverged organism is quarantined and
continues from its last healthy restart checkpoint, with nothing duplicated in its log."""

from __future__ import annotations

import json
from pathlib import Path

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


def _worker(tmp_path: Path) -> tuple[ReplicaWorker, CentralLearner]:
    cfg = compose([*TINY, "policy.training.replicas=1", f"cluster.storage_path={tmp_path}"])
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
