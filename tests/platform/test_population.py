"""A population member on real Ray actors: broadcast, rollouts, learning, checkpoints, a
replica killed mid-rollout, and the asynchronous learner."""

from __future__ import annotations

import copy
import json
import os
import signal
import time
from pathlib import Path

import pytest
import ray

from esper.analysis import EventLog
from esper.conf import compose
from esper.events.learning import read_learning_curves
from esper.platform.population import Population
from esper.platform.runs import create_run
from tests.platform.conftest import TINY

pytestmark = pytest.mark.usefixtures("ray_cluster")


def _member(tmp_path: Path, *overrides: str, trial: str = "t0") -> Population:
    cfg = compose([*TINY, f"cluster.storage_path={tmp_path}", *overrides])
    run = tmp_path / "run"
    if not run.exists():
        create_run(run, cfg, "run", "digits_permuted", "emrakul")
    return Population(cfg, run, trial, run / "state" / trial)


def _no_duplicate_or_missing_steps(run: Path) -> None:
    """No surgery step twice or missing per partition, and the writers' sequence numbers
    and manifests agree: no row lost or duplicated."""
    log = EventLog.open(run)
    assert not log.damage(), log.damage()
    steps = log.sql(
        "SELECT trial, replica, surgery_step, count(*) AS n FROM metrics GROUP BY ALL ORDER BY ALL"
    )
    assert (steps["n"] == 1).all(), steps[steps["n"] > 1]
    for (_, _), unit in steps.groupby(["trial", "replica"]):
        assert unit["surgery_step"].tolist() == list(range(len(unit)))
    events = log.sql(
        "SELECT trial, replica, surgery_step, layer, action, count(*) AS n FROM events "
        "WHERE action IN ('prune', 'regrow', 'budget') GROUP BY ALL HAVING n > 1"
    )
    assert events.empty, events


def test_iterations_learn_from_every_replica_and_stamp_the_policy_version(tmp_path: Path) -> None:
    member = _member(tmp_path)
    try:
        first = member.step()
        second = member.step()
    finally:
        member.close()
    assert (first["episodes"], first["surgeries"], first["policy_version"]) == (2, 6, 1)
    assert second["policy_version"] == 2 and 0.0 < second["density"] <= 0.21
    assert "specialists/policy_loss" in second and "general/value_loss" in second
    log = EventLog.open(tmp_path / "run")
    versions = log.sql("SELECT DISTINCT policy_version AS v FROM metrics ORDER BY v")["v"]
    assert versions.tolist() == [0, 1]  # the first reading, then acting on the first update
    assert log.sql("SELECT count(DISTINCT node_id) AS n FROM metrics")["n"][0] == 1
    _no_duplicate_or_missing_steps(tmp_path / "run")


@pytest.mark.slow
def test_a_replica_killed_mid_rollout_restarts_from_its_checkpoint(tmp_path: Path) -> None:
    member = _member(tmp_path, "policy.surgery_interval=30", "cluster.max_restarts=1")
    try:
        member.step()
        replica = member.replicas[1]
        pid = ray.get(replica.pid.remote())
        acting = ray.put(member.learner.acting_state())
        future = replica.rollout.remote(acting, 40)  # long enough to be killed in the middle
        time.sleep(2.0)
        os.kill(pid, signal.SIGKILL)
        (episode,) = ray.get(future, timeout=300)  # retried on the restarted actor
        assert episode.metrics["surgeries"] == 40
        assert ray.get(replica.pid.remote()) != pid
        member.step()  # the member goes on
    finally:
        member.close()
    _no_duplicate_or_missing_steps(tmp_path / "run")


def test_member_state_round_trip_and_exploit(tmp_path: Path) -> None:
    member = _member(tmp_path)
    try:
        member.step()
        state = member.state_dict()
        after = member.step()
        member.load_state_dict(state)  # its own checkpoint: the event log rolls back to it
        again = member.step()
        assert again["iteration"] == after["iteration"] == 2
        assert again["policy_version"] == after["policy_version"]
    finally:
        member.close()
    _no_duplicate_or_missing_steps(tmp_path / "run")
    curve = read_learning_curves(tmp_path / "run")  # iteration 2 once: the replay replaced it
    assert [(r["trial"], r["iteration"]) for r in curve] == [("t0", 1), ("t0", 2)]
    assert curve[1]["online_accuracy"] == again["online_accuracy"]
    other = _member(tmp_path, trial="t1")
    try:
        other.load_state_dict(state)  # another member's state: t1's history is kept
        assert other.iteration == 1 and other.step()["policy_version"] == 2
    finally:
        other.close()


def test_asynchronous_learner_never_waits_for_every_replica(tmp_path: Path) -> None:
    member = _member(tmp_path, "policy.training.asynchronous=true")
    try:
        results = [member.step() for _ in range(4)]
        state = member.state_dict()  # settles the rollouts still in flight
    finally:
        member.close()
    assert [r["policy_version"] for r in results] == [1, 2, 3, 4]
    assert all(1 <= r["episodes"] <= 2 for r in results)
    assert state["iteration"] == 4


def test_replicas_hosting_cohorts_learn_from_every_organism(tmp_path: Path) -> None:
    member = _member(tmp_path, "policy.training.cohort=2")
    try:
        first = member.step()
        state = member.state_dict()
        member.step()
        member.load_state_dict(state)  # rolls every organism's partition back
        again = member.step()
    finally:
        member.close()
    assert (first["episodes"], first["surgeries"]) == (4, 12)  # 2 replicas × 2 organisms
    assert again["iteration"] == 2
    log = EventLog.open(tmp_path / "run")
    replicas = log.sql("SELECT DISTINCT replica FROM metrics ORDER BY replica")["replica"]
    assert replicas.tolist() == [0, 1, 2, 3]  # each organism its own partition
    _no_duplicate_or_missing_steps(tmp_path / "run")


@pytest.mark.slow
def test_a_restarted_replica_falls_back_on_its_previous_checkpoint_and_says_so(
    tmp_path: Path,
) -> None:
    member = _member(tmp_path, "policy.surgery_interval=30", "cluster.max_restarts=1")
    try:
        member.step()
        member.step()
        member.state_dict()  # settles: both restart checkpoints of replica 1 are on disk
        latest = tmp_path / "run" / "state" / "t0" / "replica-1.pt"
        assert (tmp_path / "run" / "state" / "t0" / "replica-1.prev.pt").is_file()
        blob = bytearray(latest.read_bytes())
        blob[len(blob) // 2] ^= 0xFF  # the latest is damaged
        latest.write_bytes(bytes(blob))
        replica = member.replicas[1]
        pid = ray.get(replica.pid.remote())
        future = replica.rollout.remote(ray.put(member.learner.acting_state()), 40)
        time.sleep(2.0)
        os.kill(pid, signal.SIGKILL)
        ray.get(future, timeout=300)  # retried on the restarted actor, from the previous one
        member.step()
    finally:
        member.close()
    _no_duplicate_or_missing_steps(tmp_path / "run")  # rolled back to the previous marks
    log = EventLog.open(tmp_path / "run")
    restore = log.sql("SELECT replica, surgery_step, detail FROM events WHERE action='restore'")
    assert restore["replica"].tolist() == [1] and restore["surgery_step"][0] == 3
    detail = json.loads(restore["detail"][0])
    assert detail["checkpoint"] == "replica-1.prev.pt" and "replica-1.pt" in detail["refused"][0]


def test_fitness_is_relative_accuracy_smoothed_and_travels_with_the_state(tmp_path: Path) -> None:
    twins = ("search.reference=rigl", "search.metric=fitness", "search.fitness_window=2",
             "policy.training.replicas=1")  # fmt: skip
    member = _member(tmp_path, *twins)
    try:
        rows = [member.step() for _ in range(2)]
        state = member.state_dict()
        third = member.step()
        member.load_state_dict(state)  # a restart: the history is the state's again
        again = member.step()
    finally:
        member.close()
    relative = [r["relative_accuracy"] for r in rows]
    assert state["fitness"]["history"] == relative
    assert rows[1]["fitness"] == pytest.approx(sum(relative) / 2)
    assert third["fitness"] == pytest.approx((relative[1] + third["relative_accuracy"]) / 2)
    assert again["reference_accuracy"] == third["reference_accuracy"]  # the twins resumed exactly
    assert again["fitness"] == pytest.approx((relative[1] + again["relative_accuracy"]) / 2)
    other = _member(tmp_path, *twins, trial="t1")
    try:
        other.load_state_dict(state)  # an exploit copies the history with the rest
        assert list(other.fitness.history) == relative
    finally:
        other.close()


def test_replicas_take_their_stream_from_a_preset_and_the_scalpel_from_the_member() -> None:
    from esper.conf import compose
    from esper.platform.population import replica_configs

    cfg = compose(
        [
            "policy=emrakul",
            "workload.scalpel.mechanism.name=gumbel_softmax",
            "workload.scalpel.mechanism.params.tau=0.7",
            "policy.training.replicas=2",
            "policy.training.workloads=[digits_permuted,digits_rotated]",
        ]
    )
    first, second = replica_configs(cfg)
    assert first.workload.drifts != second.workload.drifts  # two streams
    for replica in (first, second):
        assert replica.workload.scalpel.mechanism.name == "gumbel_softmax"
        assert replica.workload.scalpel.mechanism.params["tau"] == 0.7


def test_a_fresh_member_starts_from_the_imitation_warm_start_on_its_replicas_organisms(
    tmp_path: Path,
) -> None:
    import torch

    from esper.platform.export import imitation_policy
    from esper.platform.population import replica_configs
    from esper.policies.imitation import warm_start
    from esper.workloads.factory import build_organism

    member = _member(tmp_path, "policy.training.imitation=2", "policy.training.iterations=4")
    cfg, t = member.cfg, member.cfg.policy.training
    policy = member.learner.policy
    assert policy.specialist is not None
    before = {k: v.clone() for k, v in policy.specialist.state_dict().items()}
    assert policy.general is not None
    general = {k: v.clone() for k, v in policy.general.state_dict().items()}
    # The clone the member must start from: the same twins, cloned here by the public function.
    twins = [build_organism(c, r) for r, c in enumerate(replica_configs(cfg))]
    expected = copy.deepcopy(policy)
    warm_start(expected, twins, [o.reset() for o in twins], 2, t.iterations * t.rollout,
               cfg.experiment.seed)  # fmt: skip
    assert expected.specialist is not None
    try:
        logged = member._warm_start()
        cloned = {k: v.clone() for k, v in policy.specialist.state_dict().items()}
        member._warmed = False  # as fresh: step() warms up once, then never again
        member.learner.policy.specialist.load_state_dict(before)
        first, second = member.step(), member.step()
        state = member.state_dict()
    finally:
        member.close()
    layers = len(twins[0].scalpel.names)
    assert logged["imitation_samples"] == t.replicas * 2 * layers
    exported = imitation_policy(cfg)["policy"]["state"]  # the sweep's imitation candidate
    for key, value in expected.specialist.state_dict().items():
        assert torch.equal(cloned[key], value), key
        assert torch.equal(exported["specialist"][key], value), key
    assert all(torch.equal(exported["general"][k], v) for k, v in general.items())
    assert any(not torch.equal(cloned[k], before[k]) for k in before)  # the clone moved it
    assert first["imitation_samples"] == logged["imitation_samples"]
    assert "imitation_samples" not in second
    # a member that continues another's state (an exploit, a restore) never clones again
    other = _member(tmp_path, "policy.training.imitation=2", "policy.training.iterations=4",
                    trial="t1")  # fmt: skip
    try:
        other.load_state_dict(state)
        resumed = other.step()
    finally:
        other.close()
    assert "imitation_samples" not in resumed and resumed["iteration"] == 3
    assert (first["policy_version"], second["policy_version"]) == (3, 4)  # 2 clones, 2 updates


def test_imitation_needs_a_learner_of_the_continuous_actor() -> None:
    from esper.conf import ConfigError

    with pytest.raises(ConfigError, match=r"policy.training.imitation=2.*learner=qmix"):
        compose(["policy=emrakul", "policy.training.learner=qmix", "policy.training.imitation=2"])
    with pytest.raises(ConfigError, match=r"policy.training.imitation=-1"):
        compose(["policy=emrakul", "policy.training.imitation=-1"])


def test_the_warm_start_clones_on_every_organism_of_every_replicas_cohort() -> None:
    import torch

    from esper.platform.population import imitation_warm_start, replica_configs
    from esper.policies.base import make_policy
    from esper.policies.emrakul.policy import EmrakulPolicy
    from esper.policies.imitation import warm_start
    from esper.workloads.factory import build_organism

    cfg = compose([*TINY, "policy.training.cohort=2", "policy.training.imitation=1",
                   "policy.training.workloads=[digits_permuted,digits_rotated]"])  # fmt: skip
    policy = make_policy("emrakul", seed=0)
    assert isinstance(policy, EmrakulPolicy) and policy.specialist is None
    logged = imitation_warm_start(cfg, policy)  # builds the policy on the twins' widths
    assert policy.specialist is not None and logged["policy_version"] == 1
    layers = 3  # the tiny MLP's masked layers
    assert logged["imitation_samples"] == 2 * 2 * 1 * layers  # replicas × cohort × surgeries
    # the twins are the organisms the replicas host: replica r's are r × cohort + i, on r's
    # workload (a clone on organisms of other ids, hence seeds, differs)
    configs = replica_configs(cfg)
    twins = [build_organism(configs[r], r * 2 + i) for r in range(2) for i in range(2)]
    expected = make_policy("emrakul", seed=0)
    assert isinstance(expected, EmrakulPolicy) and policy.specialist is not None
    step = twins[0].reset()
    expected.build(step.observations[twins[0].scalpel.names[0]].width, step.global_state.width)
    warm_start(expected, twins, [step, *(o.reset() for o in twins[1:])], 1,
               cfg.policy.training.iterations * cfg.policy.training.rollout,
               cfg.experiment.seed)  # fmt: skip
    assert expected.specialist is not None
    got, want = policy.specialist.state_dict(), expected.specialist.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    shifted = make_policy("emrakul", seed=0)  # the same workloads, other organism ids
    assert isinstance(shifted, EmrakulPolicy)
    shifted.build(step.observations[twins[0].scalpel.names[0]].width, step.global_state.width)
    others = [build_organism(configs[r], 10 + r * 2 + i) for r in range(2) for i in range(2)]
    warm_start(shifted, others, [o.reset() for o in others], 1,
               cfg.policy.training.iterations * cfg.policy.training.rollout,
               cfg.experiment.seed)  # fmt: skip
    assert shifted.specialist is not None
    assert any(not torch.equal(got[k], v) for k, v in shifted.specialist.state_dict().items())
