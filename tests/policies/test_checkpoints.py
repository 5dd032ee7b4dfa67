"""Checkpoints: a policy and its organism restored mid-stream act exactly as the originals.

Every baseline and Emrakul (with the MAPPO and the QMIX learner) is rolled out for a few
surgeries, saved (through ``torch.save`` and ``torch.load(weights_only=True)``: tensors and plain
data only), rolled on, then restored into freshly built objects and rolled on again: the
actions must be identical. Also: the checksummed checkpoint file refuses damage and pickles.
"""

from __future__ import annotations

import io
import os
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch

from esper.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from esper.conf import compose
from esper.policies.base import Policy, make_policy
from esper.policies.baselines import BASELINES
from esper.policies.emrakul import EmrakulPolicy
from esper.policies.learners import SpecialistLearner, make_learner
from esper.workloads.actions import LayerAction
from esper.workloads.factory import build_organism
from esper.workloads.organism import Organism, OrganismStep


class Point(NamedTuple):
    x: int
    y: int


_BASE = [
    "policy.surgery_interval=4",
    "workload.batch_size=16",
    "workload.host.params.hidden=[16,8]",
    "workload.organism.sense_batches=2",
    "workload.organism.spike_window=2",
]
_QMIX = {"batch_size": 2, "buffer_size": 16, "epsilon_anneal": 4}
_PARAMS = {  # settings under which each baseline operates within a few surgeries of K = 4
    "cbp": ["policy.params.replacement_rate=0.05", "policy.params.maturity_threshold=2"],
    "gmp": ["policy.params.final_density=0.1", "policy.params.frequency=4",
            "policy.params.steps=24"],
    "periodic_reset": ["policy.params.interval=4"],
    "random": ["policy.params.delta_t=4"],
    "redo": ["policy.params.threshold=1.0", "policy.params.interval=4"],
    "rigl": ["policy.params.delta_t=4"],
    "rigl_elastic": ["policy.params.delta_t=4"],
    "set": ["policy.params.delta_t=4"],
    "shrink_perturb": ["policy.params.interval=4"],
    "swr": ["policy.params.interval=4", "policy.params.factor=0.5"],
}  # fmt: skip
_IDLE = ("dense", "static", "fgsf")  # they act at reset only (fgsf also when its trigger fires)


def _plain(actions: dict[str, LayerAction]) -> list[tuple[Any, ...]]:
    out = []
    for name, a in sorted(actions.items()):
        out.append(
            (
                name,
                torch.as_tensor(a.prune, dtype=torch.int64).tolist(),
                torch.as_tensor(a.regrow, dtype=torch.int64).tolist(),
                torch.as_tensor(a.reset_units, dtype=torch.int64).tolist(),
                a.regrow_init, a.tau, a.sedation, a.sedation_steps, a.target_density,
                torch.as_tensor(a.forget, dtype=torch.int64).tolist(),
                a.forget_shrink, a.forget_perturb,
            )
        )  # fmt: skip
    return out


def _roll(
    organism: Organism,
    policy: Policy,
    step: OrganismStep,
    surgeries: int,
    learner: SpecialistLearner | None = None,
) -> tuple[OrganismStep, list[list[tuple[Any, ...]]]]:
    seen = []
    for _ in range(surgeries):
        actions = policy.act(organism, step)
        seen.append(_plain(actions))
        step = organism.step(actions)
        policy.observe(organism, step)
    return step, seen


def _round_trip(state: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("name", [*BASELINES, "emrakul-mappo", "emrakul-qmix"])
def test_policy_restored_mid_stream_acts_as_the_original(name: str) -> None:
    policy_name, _, learner_name = name.partition("-")
    params = _PARAMS.get(policy_name, [])
    cfg = compose([*_BASE, f"policy={policy_name}", "policy.density=0.2", *params])
    if policy_name == "emrakul":
        cfg.policy.params = {"general_interval": 2, "amplitude": 0.05, "seed": 3}

    def build() -> tuple[Organism, Policy, SpecialistLearner | None, OrganismStep]:
        organism = build_organism(cfg)
        policy = make_policy(policy_name, **dict(cfg.policy.params))
        first = organism.reset()
        policy.reset(organism, first)
        learner = None
        if learner_name == "qmix":
            assert isinstance(policy, EmrakulPolicy)
            learner = make_learner("qmix", policy, _QMIX)
        return organism, policy, learner, first

    organism, policy, learner, step = build()
    step, _ = _roll(organism, policy, step, 3)
    saved = _round_trip(
        {
            "organism": organism.state_dict(),
            "policy": policy.state_dict(),
            "learner": None if learner is None else learner.state_dict(),
        }
    )
    _, expected = _roll(organism, policy, step, 3)

    organism, policy, learner, _ = build()  # fresh objects, then the saved state
    organism.load_state_dict(saved["organism"])
    policy.load_state_dict(saved["policy"])
    if learner is not None:
        learner.load_state_dict(saved["learner"])
    # the step the original acted on next is rebuilt from the restored organism's last reading
    assert organism._last is not None
    last = organism._last
    restored = OrganismStep(last.observations, last.global_state, 0.0, None, [], last)
    _, got = _roll(organism, policy, restored, 3)
    assert got == expected
    if policy_name not in _IDLE:
        assert any(any(a[1] or a[2] or a[3] or a[9] for a in surgery) for surgery in expected), (
            "the policy should have operated, or this test proves nothing"
        )


def test_checkpoint_file_is_checksummed_and_refuses_pickles(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.pt", "organism", {"w": torch.arange(4), "n": 1})
    assert load_checkpoint(path, "organism")["n"] == 1
    with pytest.raises(CheckpointError, match="'organism' checkpoint, not 'policy'"):
        load_checkpoint(path, "policy")
    data = bytearray(path.read_bytes())
    payload = torch.load(path, weights_only=True)["payload"]
    blob = payload.numpy().tobytes()
    at = bytes(data).index(blob) + len(blob) // 2  # flip one byte inside the payload
    data[at] ^= 0xFF
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(damaged, "organism")

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "esper.checkpoint/1", "payload": Evil()}, evil)
    with pytest.raises(CheckpointError, match="not a safe Esper checkpoint"):
        load_checkpoint(evil, "organism")
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(CheckpointError, match="only tensors and plain data"):
        save_checkpoint(tmp_path / "bad.pt", "organism", {"x": Evil()})
    assert not (tmp_path / "bad.pt").exists()


@pytest.mark.parametrize(
    "change", [{"lr": 1e-3}, {"gamma": 0.9}, {"epsilon_start": 0.5}, {"epsilon_anneal": 10}]
)
def test_qmix_continues_a_state_with_its_own_learning_settings(change: dict[str, Any]) -> None:
    """A PBT member explores lr, γ and ε and continues another member's state with them."""
    from esper.policies.learners import QMIXLearner

    saved = QMIXLearner(2, 2, 2, 2, batch_size=2, buffer_size=8).state_dict()
    other = QMIXLearner(2, 2, 2, 2, batch_size=2, buffer_size=8, **change)
    other.load_state_dict(saved)
    ((key, value),) = change.items()
    assert (other.optimizer.param_groups[0]["lr"] if key == "lr" else getattr(other, key)) == value


@pytest.mark.parametrize("change", [{"hidden": 8}, {"buffer_size": 16}, {"seed": 3}])
def test_qmix_refuses_a_state_of_other_shapes_or_seed(change: dict[str, Any]) -> None:
    from esper.policies.learners import QMIXLearner

    saved = QMIXLearner(2, 2, 2, 2, batch_size=2, buffer_size=8).state_dict()
    other = QMIXLearner(2, 2, 2, 2, **{"batch_size": 2, "buffer_size": 8, **change})
    with pytest.raises(ValueError, match="does not match"):
        other.load_state_dict(saved)


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        (
            {"a": {"b": [1, {"c": object()}]}},
            r"payload\['a'\]\['b'\]\[1\]\['c'\] is a builtins.object",
        ),
        ({"d": defaultdict(int)}, r"payload\['d'\] is a collections.defaultdict"),
        ({"n": Point(1, 2)}, r"payload\['n'\] is a .*Point"),
        ({(1, 2): 3}, "has a key of type tuple"),
    ],
)
def test_save_names_what_could_not_be_loaded_safely(
    tmp_path: Path, payload: dict[str, Any], where: str
) -> None:
    # each of these would fail torch.load(weights_only=True) later; refused now, nothing written
    with pytest.raises(CheckpointError, match=where):
        save_checkpoint(tmp_path / "x.pt", "organism", payload)
    assert not list(tmp_path.iterdir())


def test_plain_payloads_round_trip(tmp_path: Path) -> None:
    payload = {
        "t": torch.arange(3), "p": torch.nn.Parameter(torch.ones(2)), "s": torch.Size([2, 3]),
        "o": OrderedDict(w=torch.zeros(1)), "x": [1, 2.5, "s", None, True, (1, 2)],
        "dtype": torch.float16, "k": {0: b"raw"},
    }  # fmt: skip
    state = load_checkpoint(save_checkpoint(tmp_path / "ok.pt", "organism", payload), "organism")
    assert state["s"] == torch.Size([2, 3]) and state["dtype"] == torch.float16
    assert torch.equal(state["o"]["w"], torch.zeros(1)) and state["k"] == {0: b"raw"}


def test_a_policy_saved_with_other_network_shapes_is_refused_by_name(tmp_path: Path) -> None:
    from esper.policies.checkpoints import KIND, load_policy

    organism = build_organism(compose(_BASE))
    step = organism.reset()
    policy = EmrakulPolicy(seed=0)
    policy.reset(organism, step)
    state = policy.state_dict()
    assert state["specialist"] is not None
    head = state["specialist"]["head.bias"]
    state["specialist"]["head.bias"] = head[:-1]  # an older action layout: one bit fewer
    payload = {"policy": {"name": "emrakul", "params": policy.params, "state": state}}
    save_checkpoint(tmp_path / "old.pt", KIND, payload)
    with pytest.raises(CheckpointError, match="other network shapes"):
        load_policy(tmp_path / "old.pt")


def test_the_previous_checkpoint_is_kept_and_used_when_the_latest_is_damaged(
    tmp_path: Path,
) -> None:
    from esper.checkpoint import load_first_sound, previous_path

    path = tmp_path / "replica-0.pt"
    save_checkpoint(path, "replica", {"step": 1}, keep_previous=True)
    assert not previous_path(path).exists()  # nothing to keep yet
    save_checkpoint(path, "replica", {"step": 2}, keep_previous=True)
    assert previous_path(path).name == "replica-0.prev.pt"
    state, used, refused = load_first_sound([path, previous_path(path)], "replica")
    assert (state["step"], used, refused) == (2, path, [])
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one flipped byte
    path.write_bytes(bytes(blob))
    state, used, refused = load_first_sound([path, previous_path(path)], "replica")
    assert (state["step"], used) == (1, previous_path(path))
    assert len(refused) == 1 and str(path) in refused[0]
    previous_path(path).write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="no sound checkpoint"):
        load_first_sound([path, previous_path(path)], "replica")
    with pytest.raises(FileNotFoundError):
        load_first_sound([tmp_path / "none.pt"], "replica")
