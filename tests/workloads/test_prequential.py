"""Prequential learning: accuracy drops at a drift, per-task summaries, the one online-accuracy
definition, and a mechanism penalty that trains but is not recorded."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from esper.conf import compose
from esper.workloads.factory import build_host, build_optimizer, build_stream
from esper.workloads.prequential import (
    StepRecord,
    batch_loss,
    online_accuracy,
    prequential_step,
    stacked_batch_loss,
    summarize_tasks,
)
from esper.workloads.stream import Batch


def test_dense_mlp_accuracy_drops_right_after_a_permutation_drift() -> None:
    cfg = compose(
        ["workload.num_tasks=2", "workload.schedule.params.task_length=250", "experiment.seed=0"]
    )
    stream = build_stream(cfg.workload, seed=0)
    model = build_host(cfg.workload, stream, seed=0)
    optimizer = build_optimizer(cfg.workload, model)
    records = [prequential_step(model, optimizer, batch, "classification") for batch in stream]
    before = sum(r.accuracy for r in records[230:250]) / 20
    after = sum(r.accuracy for r in records[250:270]) / 20
    assert before > 0.75, f"the network should have learned task 0 (got {before:.3f})"
    assert after < before - 0.3, (
        f"accuracy right after the drift {after:.3f} vs before {before:.3f}"
    )
    summaries = summarize_tasks(records, window=20)
    assert summaries[1].first_accuracy == pytest.approx(after)
    assert summaries[0].last_accuracy == pytest.approx(before)


def test_summaries_measure_drop_and_recovery_on_scripted_records() -> None:
    accuracy = [0.2] * 5 + [0.9] * 5 + [0.1] * 4 + [0.95] * 6
    records = [StepRecord(i, i // 10, 1.0 - a, a, 0.0) for i, a in enumerate(accuracy)]
    first, second = summarize_tasks(records, window=2)
    assert (first.first_accuracy, first.last_accuracy, first.recovery_steps) == (0.2, 0.9, None)
    assert second.first_accuracy == pytest.approx(0.1)
    # running mean over 2 steps first reaches 0.9 at offsets 4..5 → recovered after 6 steps
    assert second.recovery_steps == 6
    assert second.accuracy == pytest.approx((0.4 + 5.7) / 10)


def _batch(x: torch.Tensor, y: torch.Tensor) -> Batch:
    return Batch(
        x, y, step=3, task_index=1, distribution=0, drift="", novelty=0.25, incoming_fraction=0.0
    )


def test_regression_online_accuracy_is_one_over_one_plus_mse() -> None:
    out, y = torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 1.0])
    loss = batch_loss(out, y, "regression")
    assert float(loss) == pytest.approx((1.0 + 4.0) / 2)
    assert online_accuracy(out, y, loss, "regression") == pytest.approx(1 / (1 + 2.5))


def test_classification_online_accuracy_is_the_fraction_of_correct_argmax() -> None:
    out = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 4.0], [1.0, 0.0]])
    y = torch.tensor([0, 1, 1, 1])
    loss = batch_loss(out, y, "classification")
    assert online_accuracy(out, y, loss, "classification") == 0.5


def _linear() -> tuple[nn.Linear, torch.optim.SGD]:
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -1.0]]))
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_a_regression_step_scores_before_training() -> None:
    model, optimizer = _linear()
    batch = _batch(torch.tensor([[1.0, 1.0], [2.0, 0.0]]), torch.tensor([0.5, 0.0]))
    record = prequential_step(model, optimizer, batch, "regression")
    # predictions before the update: -0.5 and 1.0 → MSE (1 + 1) / 2
    assert record.loss == pytest.approx(1.0)
    assert record.accuracy == pytest.approx(1 / (1 + 1.0))
    assert (record.step, record.task_index, record.novelty) == (3, 1, 0.25)
    assert not torch.equal(model.weight.detach(), torch.tensor([[0.5, -1.0]]))


def test_a_penalty_enters_the_update_but_not_the_recorded_loss() -> None:
    batch = _batch(torch.tensor([[1.0, 1.0], [2.0, 0.0]]), torch.tensor([0.5, 0.0]))
    plain_model, plain_optimizer = _linear()
    plain = prequential_step(plain_model, plain_optimizer, batch, "regression")
    model, optimizer = _linear()
    w0 = model.weight.detach().clone()
    record = prequential_step(
        model, optimizer, batch, "regression", penalty=lambda: 3.0 * (model.weight**2).sum()
    )
    assert (record.loss, record.accuracy) == (plain.loss, plain.accuracy)
    # the penalty's gradient 6·w0 adds −lr·6·w0 to the plain update
    torch.testing.assert_close(model.weight.detach(), plain_model.weight.detach() - 0.1 * 6.0 * w0)


@pytest.mark.parametrize(
    ("kind", "out_shape", "y_shape"),
    [
        ("classification", (3, 5, 4), (3, 5)),
        ("regression", (3, 5, 1), (3, 5)),
        ("regression", (3, 5, 2), (3, 5, 2)),
    ],
)
def test_stacked_batch_loss_is_each_member_batch_loss(
    kind: str, out_shape: tuple[int, ...], y_shape: tuple[int, ...]
) -> None:
    gen = torch.Generator().manual_seed(0)
    out = torch.randn(out_shape, generator=gen)
    if kind == "classification":
        y = torch.randint(0, out_shape[-1], y_shape, generator=gen)
    else:
        y = torch.randn(y_shape, generator=gen)
    stacked = stacked_batch_loss(out, y, kind)
    assert stacked.shape == (3,)
    for i in range(3):
        torch.testing.assert_close(stacked[i], batch_loss(out[i], y[i], kind))


def test_stacked_losses_refuse_agents_and_targets_that_would_broadcast() -> None:
    with pytest.raises(ValueError, match="agents train alone"):
        stacked_batch_loss(torch.zeros(2, 5, 4), torch.zeros(2, 5, 3), "q_learning")
    with pytest.raises(
        ValueError, match=r"outputs \(5, 5, 1\) do not match targets \(5, 5, 1, 1\)"
    ):
        stacked_batch_loss(torch.zeros(5, 5, 1), torch.zeros(5, 5, 1, 1), "regression")
