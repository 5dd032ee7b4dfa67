"""The data side inside an organism: replayed rows train but are not scored, checkpoints
continue exactly, and what cannot have a data side is refused by name."""

from __future__ import annotations

import io

import pytest
import torch

from esper.conf import ConfigError, compose
from esper.workloads.actions import LayerAction
from esper.workloads.factory import build_organism
from esper.workloads.organism import Organism

_BASE = ("workload=digits_long_tail", "workload.schedule.params.task_length=100",
         "policy.density=0.3", "policy.surgery_interval=10")  # fmt: skip


def _organism(*overrides: str) -> Organism:
    return build_organism(compose([*_BASE, *overrides]))


def _swap(org: Organism) -> dict[str, LayerAction]:
    """Prune the 5 smallest active weights of each layer and regrow 5 inactive ones."""
    out = {}
    for name in org.scalpel.names:
        mask = org.scalpel.mask(name).view(-1)
        weight = dict(org.host.named_parameters())[name].detach().view(-1).abs()
        active, inactive = mask.nonzero().view(-1), (~mask).nonzero().view(-1)
        if inactive.numel() >= 5:
            smallest = active[torch.topk(weight[active], 5, largest=False).indices]
            out[name] = LayerAction(prune=smallest, regrow=inactive[:5])
    return out


def test_only_the_stream_rows_are_scored_online():
    org = _organism("workload.memory.replay_ratio=2.0", "workload.batch_size=8")
    org.reset()
    step = org.step({})
    assert len(step.info["accuracies"]) == 10
    assert all(a * 8 == round(a * 8) for a in step.info["accuracies"])  # out of 8, not 24
    assert len(org.data_side.memory) == 80  # the first K steps, admitted at the surgery
    assert int(org.data_side.memory.seen.sum()) == 160


def test_the_stream_is_the_same_with_and_without_a_buffer():
    with_buffer, without = _organism(), _organism("workload.memory.capacity=0")
    assert without.data_side is None
    for org in (with_buffer, without):
        org.reset()
    assert [b.step for b in with_buffer._recent] == [b.step for b in without._recent]
    assert all(torch.equal(a.x, b.x) for a, b in zip(with_buffer._recent, without._recent,
                                                        strict=True))  # fmt: skip


@pytest.mark.parametrize(("strategy", "synchronized"), [("reservoir", False), ("gradient", True)])
def test_a_checkpoint_continues_bit_exactly(strategy: str, synchronized: bool):
    overrides = (f"workload.memory.strategy={strategy}",
                 f"workload.memory.synchronized={str(synchronized).lower()}")  # fmt: skip
    org = _organism(*overrides)
    org.reset()
    org.step(_swap(org))
    buffer = io.BytesIO()
    torch.save(org.state_dict(), buffer)
    expected = [org.step(_swap(org)) for _ in range(2)]
    fresh = _organism(*overrides)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    got = [fresh.step(_swap(fresh)) for _ in range(2)]
    for a, b in zip(expected, got, strict=True):
        assert a.info["accuracies"] == b.info["accuracies"]
        assert [(e.layer, e.action, e.count, e.indices, e.value) for e in a.events] == [
            (e.layer, e.action, e.count, e.indices, e.value) for e in b.events
        ]
    assert {e.action for e in expected[0].events} >= {"serve", "retain", "evict"}
    assert torch.equal(org.data_side.memory.buf["x"], fresh.data_side.memory.buf["x"])


def test_a_memory_on_an_agent_or_a_regression_stream_is_refused_by_name():
    with pytest.raises(ValueError, match=r"workload\.memory needs a classification stream"):
        build_organism(compose(["workload=cartpole_drifting", "workload.memory.capacity=10"]))
    with pytest.raises(ConfigError, match=r"workload\.memory\.capacity must be ≥ 0"):
        _organism("workload.memory.capacity=-1")
    with pytest.raises(ConfigError, match=r"at workload\.memory\.strategy; valid selections"):
        _organism("workload.memory.strategy=newest")
    with pytest.raises(ConfigError, match=r"workload\.memory\.retention tail_fraction must"):
        _organism("workload.memory.retention.tail_fraction=2.0")
    with pytest.raises(ConfigError, match=r"unknown key workload\.memory\.retention\.tail;"):
        _organism("workload.memory.retention.tail=0.1")
    with pytest.raises(ConfigError, match=r"workload\.memory\.refresh must lie in \[0, 1\]"):
        _organism("workload.memory.refresh=1.5")
    org = _organism("workload.memory.retention.serve_fraction=0.1")  # a free key is accepted
    assert org.data_side is not None and org.data_side.retention.serve_fraction == 0.1


def test_the_imbalanced_stream_has_its_long_tail():
    org = _organism("workload.memory.capacity=0")
    y = torch.cat([org.stream.next_batch().y for _ in range(400)])
    share = torch.bincount(y, minlength=10).double() / y.numel()
    assert share[[7, 8, 9]].tolist() == pytest.approx([0.02] * 3, abs=0.006)
    assert share[:7].tolist() == pytest.approx([0.94 / 7] * 7, abs=0.015)


def test_an_evaluated_run_logs_the_data_side_and_strategies_reads_it(
    tmp_path, capsys: pytest.CaptureFixture[str]
):
    """``esper evaluate`` with a synchronized data side, then ``esper strategies`` on its log:
    the double_loss detector reports the refused prunes and the kept tail samples."""
    import json

    from esper.cli import main

    args = ["evaluate", *_BASE, "policy=rigl", "policy.density=0.1",
            "workload.memory.synchronized=true", "--surgeries", "6",
            f"cluster.storage_path={tmp_path}"]  # fmt: skip
    assert main(args) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir() and "-evaluate-" in p.name]
    out = tmp_path / "strategies.json"
    assert main(["strategies", str(run), "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["detectors"]["double_loss"]
    assert row["tail_classes"] == 3 and row["surgeries"] >= 4
    assert row["tail_samples_kept"] > 0 and row["double_loss_cases"] == 0
    assert "double_loss" in capsys.readouterr().out
