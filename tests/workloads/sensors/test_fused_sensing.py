"""Fused sensing: the organism's reading summed from its own last training steps equals the
full sensing pass over the same batches (at an unmoving network), skips that pass, covers
Linear and Conv weights, and is refused, by name, where it cannot read those steps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import esper.workloads.sensors.nervous_system as nervous_system
from esper.conf import ConfigError, compose
from esper.workloads.factory import build_organism
from esper.workloads.sensors.fused import TrainingTraffic
from esper.workloads.sensors.gradients import gradient_statistics
from tests.organisms import TINY_ORGANISM

_STILL = [*TINY_ORGANISM, "workload.lr=1e-12"]  # trains, but the weights barely move


def test_the_organism_reads_its_training_steps_as_the_full_pass_reads_their_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    full = build_organism(compose(_STILL))
    fused = build_organism(compose([*_STILL, "workload.organism.sensors.fused=true"]))
    assert full.traffic is None and fused.traffic is not None
    expected = [full.reset(), full.step({}), full.step({})]

    def no_second_pass(*args: object, **kwargs: object) -> None:
        raise AssertionError("fused sensing ran the full gradient pass")

    monkeypatch.setattr(nervous_system, "gradient_statistics", no_second_pass)
    got = [fused.reset(), fused.step({}), fused.step({})]
    for ours, ref in zip(got, expected, strict=True):
        for name, obs in ref.observations.items():
            assert torch.allclose(ours.observations[name].values, obs.values, atol=1e-6), name
        assert torch.allclose(ours.global_state.values, ref.global_state.values, atol=1e-6)
        assert torch.equal(ours.reading.gradients.boundary, ref.reading.gradients.boundary)
        for name, stats in ref.reading.gradients.layers.items():
            mine = ours.reading.gradients.layers[name]
            assert torch.allclose(mine.fisher, stats.fisher, rtol=1e-5, atol=1e-10)
            assert torch.allclose(mine.mean, stats.mean, rtol=1e-4, atol=1e-9)  # dense
            assert mine.mean[~fused.scalpel.mask(name)].abs().sum() > 0  # at pruned weights too
            assert mine.contact_fisher is not None and stats.contact_fisher is not None
            assert torch.allclose(mine.contact_fisher, stats.contact_fisher, rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("cleared", [False, True])
@pytest.mark.parametrize("dense_grads", [False, True])
def test_a_conv_and_linear_host_over_several_steps_matches_the_full_pass(
    dense_grads: bool, cleared: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``dense_grads`` the mean gradient is the running sum of the weight gradients
    (where the window began with a ``clear``, as the organism's does), not a product over the
    traffic: the same numbers. A window that slid past older steps, whose gradients are in the
    sum, falls back to the product."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 4)
    )
    names = ["0.weight", "3.weight"]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    traffic = TrainingTraffic(model, names, steps=3)
    xs, ys = torch.randn(5, 8, 1, 6, 6), torch.randint(0, 4, (5, 8))
    for k, (x, y) in enumerate(zip(xs, ys, strict=True)):  # 5 steps, the last 3 kept
        if cleared and k == 2:
            traffic.clear()
        with traffic.record(y, dense_grads=dense_grads):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    assert len(traffic) == 3
    summed = traffic._mean_grad(names[0], 24) is not None
    assert summed == (dense_grads and cleared)
    masks = {n: torch.rand_like(p) < 0.5 for n, p in model.named_parameters() if n in names}
    joined = traffic._joined

    def only_the_conv(name: str) -> object:  # the Linear layer's window is gathered instead
        assert not (summed and name == names[1]), "the Linear layer's window was joined"
        return joined(name)

    monkeypatch.setattr(traffic, "_joined", only_the_conv)
    ours = traffic.report(masks, boundary_quantile=0.25)
    x, y = xs[2:].flatten(0, 1), ys[2:].flatten()
    ref = gradient_statistics(
        model, x, y, params=names, masks=masks, boundary_quantile=0.25, keep_outputs=True
    )
    assert torch.equal(ours.boundary, ref.boundary)
    assert torch.allclose(ours.losses, ref.losses)
    for name in names:
        a, b = ours.layers[name], ref.layers[name]
        for key in ("mean", "fisher", "gsnr", "contact_fisher"):
            assert torch.allclose(getattr(a, key), getattr(b, key), rtol=1e-4, atol=1e-8), key
        for key in ("fisher_trace", "gsnr_mean", "coherence"):
            assert getattr(a, key) == pytest.approx(getattr(b, key), rel=1e-4), key
        assert torch.allclose(ours.outputs[name], ref.outputs[name])
    before = {n: ours.layers[n].fisher.clone() for n in names}
    traffic.clear()  # a new window on other batches: the reused buffers refilled
    new_x, new_y = torch.randn(3, 8, 1, 6, 6), torch.randint(0, 4, (3, 8))
    for x_k, y_k in zip(new_x, new_y, strict=True):
        with traffic.record(y_k, dense_grads=dense_grads):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x_k), y_k).backward()
            optimizer.step()
    again = traffic.report(masks, boundary_quantile=0.25)
    ref = gradient_statistics(model, new_x.flatten(0, 1), new_y.flatten(), params=names,
                              masks=masks, boundary_quantile=0.25)  # fmt: skip
    assert not torch.equal(again.boundary, ours.boundary)
    for name in names:
        a, b = again.layers[name], ref.layers[name]
        for key in ("fisher", "contact_fisher"):
            assert torch.allclose(getattr(a, key), getattr(b, key), rtol=1e-4, atol=1e-8), key
        assert torch.equal(ours.layers[name].fisher, before[name])  # the first report intact


def test_a_layer_that_reshapes_the_batch_is_refused_as_by_the_full_pass() -> None:
    """A Linear layer fed more rows than the step has samples cannot be gathered by sample:
    the report refuses it by name of the method that can, as the joined path always did."""

    class Pairs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Linear(3, 2)
            self.head = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.inner(x.reshape(-1, 3)).reshape(x.shape[0], 4))

    model = Pairs()
    traffic = TrainingTraffic(model, ["inner.weight", "head.weight"], steps=1)
    x, y = torch.randn(8, 6), torch.randint(0, 2, (8,))
    with traffic.record(y, dense_grads=True):
        nn.functional.cross_entropy(model(x), y).backward()
    with pytest.raises(ValueError, match="method='func'"):
        traffic.report(boundary_quantile=0.25)


def test_the_summed_gradient_weighs_batches_by_size_and_skips_what_it_cannot_hold() -> None:
    """Steps of 8, 3 and 5 samples: the running sum is the full batch's mean gradient. A step
    without a backward, or one whose block raised, leaves the sums unusable: the report falls
    back to the product over the traffic."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    names = ["0.weight", "2.weight"]
    xs = [torch.randn(n, 6) for n in (8, 3, 5)]
    ys = [torch.randint(0, 3, (n,)) for n in (8, 3, 5)]

    def window(backward: tuple[bool, ...]) -> TrainingTraffic:
        traffic = TrainingTraffic(model, names, steps=3)
        for x, y, run in zip(xs, ys, backward, strict=False):
            model.zero_grad()
            with traffic.record(y, dense_grads=True):
                loss = nn.functional.cross_entropy(model(x), y)
                if run:
                    loss.backward()
        return traffic

    traffic = window((True, True, True))
    model.zero_grad()
    nn.functional.cross_entropy(model(torch.cat(xs)), torch.cat(ys)).backward()
    for name, p in model.named_parameters():
        if name in names:
            mean = traffic._mean_grad(name, 16)
            assert mean is not None and torch.allclose(mean, p.grad, atol=1e-7)  # type: ignore[arg-type]
    assert window((True, False, True))._mean_grad(names[0], 16) is None
    raising = window((True, True))  # two steps kept; a third raises after its backward
    with pytest.raises(RuntimeError, match="boom"), raising.record(ys[2], dense_grads=True):
        nn.functional.cross_entropy(model(xs[2]), ys[2]).backward()
        raise RuntimeError("boom")
    assert len(raising) == 2 and raising._mean_grad(names[0], 11) is None


def test_too_few_steps_an_inplace_output_or_an_unhookable_weight_is_refused() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(inplace=True), nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"\['0.bias'\] are not"):
        TrainingTraffic(model, ["0.bias"], steps=1)
    traffic = TrainingTraffic(model, ["0.weight", "2.weight"], steps=2)
    with pytest.raises(RuntimeError, match="0 of 2 training steps"):
        traffic.report()
    x, y = torch.randn(6, 4), torch.randint(0, 2, (6,))
    inplace = r"owning '0\.weight' was modified in place"
    with pytest.raises(RuntimeError, match=inplace), traffic.record(y):
        nn.functional.cross_entropy(model(x), y).backward()


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["workload.memory.capacity=50"], "workload.memory.capacity=0"),
        (["policy.training.cohort=2"], "policy.training.cohort=1"),
        (["workload.organism.sense_batches=5"], "sense_batches=5 exceeds"),
    ],
)
def test_settings_fused_sensing_cannot_read_are_refused_by_name(
    overrides: list[str], key: str
) -> None:
    with pytest.raises(ConfigError, match=key):
        compose([*TINY_ORGANISM, "workload.organism.sensors.fused=true", *overrides])
