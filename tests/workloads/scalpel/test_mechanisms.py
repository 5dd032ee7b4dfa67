"""Invariants every mask mechanism must keep, and each mechanism's own behaviour."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from esper.workloads.scalpel import MECHANISMS
from tests.workloads.scalpel._helpers import HOSTS, batch, cut_and_grow, forward_weights, make

ALL = MECHANISMS.names()


@pytest.mark.parametrize("host", sorted(HOSTS))
@pytest.mark.parametrize("mechanism", ALL)
@pytest.mark.parametrize("optim", ["sgd", "adamw"])
def test_pruned_weights_never_reach_the_forward_pass(mechanism: str, host: str, optim: str) -> None:
    model, scalpel, shape = make(mechanism, host)
    params = [*model.parameters(), *scalpel.parameters()]
    opt: torch.optim.Optimizer
    if optim == "sgd":
        opt = torch.optim.SGD(params, lr=0.2, momentum=0.9, weight_decay=0.01)
    else:
        opt = torch.optim.AdamW(params, lr=0.05, weight_decay=0.01)
    scalpel.bind_optimizer(opt)
    moved = False
    for step in range(4):
        x, y = batch(shape, step)
        with forward_weights(model, scalpel.names) as used:
            loss = F.cross_entropy(model(x), y)
        assert set(used) == set(scalpel.names)
        for name in scalpel.names:
            pruned = ~scalpel.mask(name)
            for weight in used[name]:
                assert torch.count_nonzero(weight[pruned]) == 0, (name, step)
            moved |= bool(torch.count_nonzero(model.get_parameter(name)[pruned]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        scalpel.after_step()
        cut_and_grow(scalpel, step)
    hidden = scalpel.mechanism.hidden_weights
    # Hidden-weight mechanisms train pruned weights behind the mask; the others keep them zero.
    assert moved == hidden


@pytest.mark.parametrize("mechanism", ["masked", "gumbel_softmax", "hard_concrete", "nm"])
def test_in_place_masks_stay_exact_without_after_step(mechanism: str) -> None:
    model, scalpel, shape = make(mechanism)
    opt = torch.optim.Adam([*model.parameters(), *scalpel.parameters()], lr=0.05)
    scalpel.bind_optimizer(opt)
    for step in range(3):
        x, y = batch(shape, step)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        cut_and_grow(scalpel, step)
    for name in scalpel.names:
        assert torch.count_nonzero(model.get_parameter(name)[~scalpel.mask(name)]) == 0


def test_unbound_optimizer_momentum_is_cleaned_by_after_step() -> None:
    model, scalpel, shape = make("masked")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = batch(shape, 0)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        scalpel.after_step()
    name = scalpel.names[0]
    kept = scalpel.mask(name).view(-1).nonzero().view(-1)[:10]
    scalpel.prune(name, kept)  # momentum at these weights is not reset: no optimizer bound
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    assert torch.count_nonzero(model.get_parameter(name).view(-1)[kept]) > 0
    scalpel.after_step()
    assert torch.count_nonzero(model.get_parameter(name).view(-1)[kept]) == 0


@pytest.mark.parametrize("mechanism", ["masked", "straight_through"])
def test_gradient_modes(mechanism: str) -> None:
    model, scalpel, shape = make(mechanism, density=0.3)
    x, y = batch(shape, 0)
    F.cross_entropy(model(x), y).backward()
    for name in scalpel.names:
        grad = model.get_parameter(name).grad
        assert grad is not None
        off = grad[~scalpel.mask(name)]
        if mechanism == "masked":
            assert torch.count_nonzero(off) == 0
        else:
            assert torch.count_nonzero(off) > off.numel() // 2


class _Substitute(TorchFunctionMode):
    """Replaces the weight one module passes to F.linear/F.conv by a leaf we can read."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module
        self.active = False
        self.leaf: torch.Tensor | None = None

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        if self.active and func in (F.linear, F.conv1d, F.conv2d):
            self.active = False
            self.leaf = args[1].detach().clone().requires_grad_(True)
            args = (args[0], self.leaf, *args[2:])
        return func(*args, **kwargs)


@pytest.mark.parametrize("mechanism", ALL)
def test_dense_grad_is_the_gradient_of_the_effective_weight(mechanism: str) -> None:
    model, scalpel, shape = make(mechanism, density=0.3)
    model.eval()  # deterministic gates: both forward passes below see the same weights
    x, y = batch(shape, 0)
    name = scalpel.names[0]
    with pytest.raises(RuntimeError, match="dense_grads"):
        scalpel.dense_grad(name)
    with scalpel.dense_grads():
        F.cross_entropy(model(x), y).backward()
    assert not scalpel.capture_dense_grad
    dense = scalpel.dense_grad(name)
    module = model.get_submodule(name.rpartition(".")[0])
    probe = _Substitute(module)
    module.register_forward_pre_hook(lambda m, a: setattr(probe, "active", True))
    with probe:
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    assert probe.leaf is not None and probe.leaf.grad is not None
    torch.testing.assert_close(dense, probe.leaf.grad)
    assert torch.count_nonzero(dense[~scalpel.mask(name)]) > 0


def test_straight_through_threshold_regrowth_keeps_the_hidden_value() -> None:
    model, scalpel, shape = make("straight_through", density=0.3)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    scalpel.bind_optimizer(opt)
    name = scalpel.names[1]
    weight = model.get_parameter(name)
    threshold = float(weight.detach().abs().max()) * 0.9
    scalpel.mechanism.set_regrow_threshold(name, threshold)
    with pytest.raises(KeyError, match="unknown layer"):
        scalpel.mechanism.set_regrow_threshold("nope", 1.0)
    x, y = batch(shape, 0)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    before = scalpel.density(name)
    big = (~scalpel.mask(name) & (weight.abs() >= threshold)).view(-1).nonzero().view(-1)
    assert big.numel() > 0
    values = weight.detach().view(-1)[big].clone()
    changes = scalpel.after_step()
    assert [c.name for c in changes] == [name]
    assert torch.equal(changes[0].regrown.sort().values, big)
    assert scalpel.density(name) > before
    assert torch.equal(weight.detach().view(-1)[big], values)


def test_gumbel_softmax_forward_is_hard_and_gradient_soft() -> None:
    model, scalpel, shape = make(
        "gumbel_softmax", density=1.0, mechanism_params={"init_logit": 0.0}
    )
    name = scalpel.names[0]
    mech = scalpel.mechanism
    gate = mech.gate(name, training=True)
    assert set(gate.unique().tolist()) == {0.0, 1.0}
    frac = float(gate.detach().mean())
    assert 0.4 < frac < 0.6  # P(keep) = σ(0) = 0.5
    x, y = batch(shape, 0)
    F.cross_entropy(model(x), y).backward()
    logits = scalpel.parameters()[0]
    assert logits.grad is not None and torch.count_nonzero(logits.grad) > 0
    assert torch.equal(mech.gate(name), (logits > 0).float())  # test-time gate


def test_gumbel_keep_probability_follows_logits() -> None:
    _, scalpel, _ = make("gumbel_softmax", density=1.0)
    name = scalpel.names[0]
    logits = scalpel.parameters()[0]
    with torch.no_grad():
        logits.copy_(torch.linspace(-3, 3, logits.numel()).view_as(logits))
    draws = torch.stack([scalpel.mechanism.gate(name, training=True) for _ in range(200)])
    error = (draws.mean(0) - torch.sigmoid(logits.detach())).abs()
    assert float(error.detach().mean()) < 0.03  # binomial sd at 200 draws is ≤ 0.035


def test_temperatures_per_layer_and_schedules() -> None:
    _, scalpel, _ = make(
        "gumbel_softmax",
        mechanism_params={"schedule": "exponential", "schedule_params": {"tau0": 2.0, "rate": 0.5}},
    )
    a, b = scalpel.names[:2]
    assert scalpel.temperature(a) == 2.0
    scalpel.set_temperature(b, 0.3)
    scalpel.after_step()
    assert scalpel.temperature(a) == pytest.approx(2.0 * torch.exp(torch.tensor(-0.5)).item())
    assert scalpel.temperature(b) == 0.3
    with pytest.raises(ValueError, match="must be > 0"):
        scalpel.set_temperature(a, 0.0)
    _, hard, _ = make("masked")
    with pytest.raises(ValueError, match="no temperature"):
        hard.set_temperature(a, 1.0)
    with pytest.raises(ValueError, match="no temperature"):
        hard.heat_temperature(a, 2.0)


def test_heat_scales_the_scheduled_temperature_until_it_returns_to_one() -> None:
    """A heated layer follows its schedule times the factor; a factor of 1 returns it to the
    schedule; the factor is checkpointed (a state saved before heat factors loads as none)."""
    _model, scalpel, _shape = make(
        "gumbel_softmax",
        mechanism_params={"schedule": "exponential", "schedule_params": {"tau0": 2.0, "rate": 0.5}},
    )
    a, b = scalpel.names[:2]
    assert scalpel.heat_temperature(a, 10.0) and not scalpel.heat_temperature(a, 10.0)
    assert scalpel.temperature(a) == pytest.approx(20.0) and scalpel.temperature(b) == 2.0
    scalpel.after_step()
    decayed = 2.0 * math.exp(-0.5)
    assert scalpel.temperature(a) == pytest.approx(10 * decayed)  # the schedule goes on
    state = scalpel.mechanism.state_dict()
    assert scalpel.heat_temperature(a, 1.0)
    assert scalpel.temperature(a) == pytest.approx(decayed)
    scalpel.mechanism.load_state_dict(state)
    assert scalpel.temperature(a) == pytest.approx(10 * decayed)
    before = {k: v for k, v in state["temperatures"].items() if k != "factor"}
    old = {**state, "temperatures": before}
    scalpel.mechanism.load_state_dict(old)
    assert scalpel.temperature(a) == pytest.approx(decayed)
    scalpel.set_temperature(b, 0.3)  # a pin wins over a heat: nothing changes, nothing said
    assert not scalpel.heat_temperature(b, 5.0)
    assert scalpel.temperature(b) == 0.3
    with pytest.raises(ValueError, match="factor"):
        scalpel.heat_temperature(a, 0.0)


def test_hard_concrete_gates_reach_exact_zero_and_one() -> None:
    _model, scalpel, _shape = make("hard_concrete", density=1.0)
    name = scalpel.names[0]
    mech = scalpel.mechanism
    log_alpha = scalpel.parameters()[0]
    with torch.no_grad():
        log_alpha.copy_(torch.linspace(-6, 6, log_alpha.numel()).view_as(log_alpha))
    z = mech.gate(name, training=True)
    assert (z == 0).any() and (z == 1).any() and ((z > 0) & (z < 1)).any()
    test = mech.gate(name)
    assert (test == 0).any() and (test == 1).any()
    # test-time gate: clamp(σ(log α)(ζ − γ) + γ, 0, 1)
    expected = (torch.sigmoid(log_alpha.detach()) * 1.2 - 0.1).clamp(0, 1)
    torch.testing.assert_close(test, expected)
    # expected L0 = Σ σ(log α − β log(−γ/ζ)), differentiable
    beta = 2.0 / 3.0
    shift = beta * torch.log(torch.tensor(0.1 / 1.1))
    manual = sum(torch.sigmoid(p.detach() - shift).sum() for p in scalpel.parameters())
    penalty = scalpel.penalty()
    torch.testing.assert_close(penalty.detach(), manual)
    penalty.backward()
    assert log_alpha.grad is not None and torch.count_nonzero(log_alpha.grad) > 0
    # a pruned weight has no L0 cost and no gate
    kept = scalpel.mask(name).view(-1).nonzero().view(-1)[-5:]
    scalpel.prune(name, kept)
    assert torch.count_nonzero(mech.gate(name, training=True).view(-1)[kept]) == 0


def test_hard_concrete_sample_statistics() -> None:
    _, scalpel, _ = make("hard_concrete", density=1.0)
    name = scalpel.names[0]
    log_alpha = scalpel.parameters()[0]
    with torch.no_grad():
        log_alpha.fill_(0.5)
    z = torch.stack([scalpel.mechanism.gate(name, training=True) for _ in range(20)])
    # P(z > 0) = σ(log α − β log(−γ/ζ)), the per-gate term of the L0 penalty
    p_nonzero = torch.sigmoid(torch.tensor(0.5) - (2 / 3) * torch.log(torch.tensor(0.1 / 1.1)))
    assert abs(float((z > 0).float().mean()) - float(p_nonzero)) < 0.02


@pytest.mark.parametrize("hard", [True, False])
def test_gumbel_topk_heads_keep_exactly_k(hard: bool) -> None:
    model, scalpel, shape = make(
        "gumbel_topk", "transformer", density=1.0, mechanism_params={"keep": 0.5, "hard": hard}
    )
    mech = scalpel.mechanism
    group = "blocks.0.attn"
    attn = model.get_submodule(group)
    x, y = batch(shape, 0)
    seen = set()
    for _ in range(8):
        loss = F.cross_entropy(model(x), y)
        gate = attn.head_gate
        assert float(gate.sum()) == pytest.approx(2.0)
        if hard:
            assert set(gate.tolist()) <= {0.0, 1.0} and int((gate == 1).sum()) == 2
            seen.add(tuple(gate.tolist()))
    loss.backward()
    scores = scalpel.parameters()[0]
    assert scores.grad is not None and torch.count_nonzero(scores.grad) > 0
    if hard:
        assert len(seen) > 1  # Gumbel noise explores different subsets
    mech.set_k(group, 3)
    model.eval()
    model(x)
    assert torch.equal(attn.head_gate, mech.unit_gate(group))
    assert int(attn.head_gate.sum()) == 3
    with pytest.raises(ValueError, match="must lie in"):
        mech.set_k(group, 5)
    # the dropped head's q rows are outside the effective mask
    dropped = int((attn.head_gate == 0).nonzero())
    eff = scalpel.effective_mask(f"{group}.q.weight")
    assert not eff[dropped * 4 : dropped * 4 + 4].any() and eff.sum() == 3 * 4 * 16


def test_gumbel_topk_neurons_gate_rows_and_bias() -> None:
    model, scalpel, shape = make("gumbel_topk", "mlp", density=1.0)
    mech = scalpel.mechanism
    assert list(mech.groups) == ["layers.0", "layers.1"]  # the output layer is never gated
    layer = model.get_submodule("layers.0")
    x, _ = batch(shape, 0)
    out = {}
    layer.register_forward_hook(lambda m, a, o: out.update(h=o))
    model(x)
    active = (out["h"] != 0).any(0)
    assert int(active.sum()) == 16  # 32 neurons, keep 0.5, exactly K nonzero outputs


def test_atm_flips_far_fewer_bits_than_fresh_topk() -> None:
    _, scalpel, _ = make("atm", density=0.3, mechanism_params={"update_interval": 1})
    mech = scalpel.mechanism
    name = scalpel.names[0]
    n, k = scalpel.numel(name), scalpel.mask(name).sum().item()
    gen = torch.Generator().manual_seed(0)
    truth = torch.rand(n, generator=gen).view_as(scalpel.mask(name)) + 0.1
    previous = None
    topk_flips, atm_flips = [], []
    for t in range(40):
        noisy = truth * torch.exp(0.5 * torch.randn(truth.shape, generator=gen))
        fresh = torch.zeros(n, dtype=torch.bool)
        fresh[torch.topk(noisy.view(-1), int(k)).indices] = True
        if previous is not None and t >= 20:
            topk_flips.append(int((fresh != previous).sum()))
        previous = fresh
        mech.observe(name, noisy)
        change = mech.update(name)
        if t >= 20:
            atm_flips.append(change.pruned.numel() + change.regrown.numel())
    assert sum(atm_flips) * 5 < sum(topk_flips)
    # the budget is held exactly: the band is shifted, not the count
    assert scalpel.mask(name).sum().item() == k
    # and the surviving weights are the important ones
    assert truth[scalpel.mask(name)].mean() > truth[~scalpel.mask(name)].mean() + 0.3


def test_atm_updates_from_training_after_warmup() -> None:
    model, scalpel, shape = make("atm", density=0.5, mechanism_params={"update_interval": 2})
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scalpel.bind_optimizer(opt)
    changed = []
    for step in range(6):
        x, y = batch(shape, step)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        changed.append(scalpel.after_step())
    assert changed[0] == []  # no update before the first interval
    assert any(changed[1:])
