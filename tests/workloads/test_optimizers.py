"""The host's optimizers: UPGD by hand, the registry, the groups the factory builds, and the
config's refusals."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from esper.conf import ConfigError, compose
from esper.config import Optimizer, WorkloadConfig
from esper.workloads.factory import build_optimizer
from esper.workloads.hosts import make_host
from esper.workloads.optimizers import OPTIMIZERS, UPGD, make_optimizer
from esper.workloads.scalpel import Scalpel


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_upgd_steps_follow_the_reference_formula_by_hand() -> None:
    """Two steps on a 2-element tensor, written out: trace, bias correction, global max,
    sigmoid, noise from the seeded generator, decoupled decay and the factor 2."""
    lr, wd, beta, sigma, seed = 0.1, 0.01, 0.9, 0.5, 7
    w = torch.nn.Parameter(torch.tensor([0.5, -1.0], dtype=torch.float64))
    opt = UPGD([w], lr=lr, weight_decay=wd, beta_utility=beta, sigma=sigma, seed=seed)
    noise = torch.Generator().manual_seed(seed)
    expected, trace = [0.5, -1.0], [0.0, 0.0]
    for t, grad in enumerate(([0.2, 0.4], [-0.3, 0.1]), start=1):
        w.grad = torch.tensor(grad, dtype=torch.float64)
        opt.step()
        eps = torch.randn(2, generator=noise, dtype=torch.float64).tolist()
        pairs = zip(trace, grad, expected, strict=True)
        trace = [beta * u + (1 - beta) * (-g * v) for u, g, v in pairs]
        top = max(trace)
        correction = 1 - beta**t
        expected = [
            v * (1 - lr * wd) - 2 * lr * (g + sigma * e) * (1 - _sigmoid(u / correction / top))
            for v, g, e, u in zip(expected, grad, eps, trace, strict=True)
        ]
        assert w.tolist() == pytest.approx(expected, rel=1e-12)
        assert opt.state[w]["step"] == t
        assert opt.state[w]["avg_utility"].tolist() == pytest.approx(trace, rel=1e-12)


def test_upgd_perturbs_and_ranks_the_support_only() -> None:
    """Hidden weight 2 (off the support) has the largest utility: it neither sets the global
    max nor gets noise, but still takes its gradient step (the hidden-weight mechanisms')."""
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    support = torch.tensor([True, True, False])
    opt = UPGD([w], lr=0.1, weight_decay=0.0, beta_utility=0.0, sigma=0.3,
               supports={w: support}, seed=3)  # fmt: skip
    grad = [-1.0, -0.1, -10.0]
    w.grad = torch.tensor(grad, dtype=torch.float64)
    opt.step()
    eps = torch.randn(3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    eps = (eps * support).tolist()
    utility = [-g * v for g, v in zip(grad, [1.0, 2.0, 3.0], strict=True)]  # 1, 0.2, 30
    top = max(utility[:2])
    rows = zip([1.0, 2.0, 3.0], grad, eps, utility, strict=True)
    expected = [v - 2 * 0.1 * (g + 0.3 * e) * (1 - _sigmoid(u / top)) for v, g, e, u in rows]
    assert w.tolist() == pytest.approx(expected, rel=1e-12)


def test_upgd_keeps_a_pruned_zero_weight_exactly_zero() -> None:
    w = torch.nn.Parameter(torch.tensor([0.5, 0.0, -0.2, 0.0]))
    support = w.detach() != 0
    opt = UPGD([w], lr=0.05, weight_decay=0.01, sigma=1.0, supports={w: support})
    for _ in range(5):
        w.grad = torch.randn(4) * support  # a masked gradient, as the Scalpel leaves it
        opt.step()
    assert torch.all(w.detach()[~support] == 0) and torch.all(w.detach()[support] != 0)


def test_upgd_plain_group_and_zero_utility_and_refusals() -> None:
    w, logit = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.ones(2))
    opt = UPGD([{"params": [w]}, {"params": [logit], "gated": False}], lr=0.1, sigma=0.0)
    w.grad, logit.grad = torch.zeros(2), torch.tensor([1.0, -1.0])
    opt.step()  # all utilities 0: no 0/0, a zero step
    assert w.tolist() == [0.0, 0.0] and logit not in opt.state
    assert logit.tolist() == pytest.approx([(1 - 0.1 * 0.001) - 0.1, (1 - 0.1 * 0.001) + 0.1])
    for bad, match in (({"beta_utility": 1.0}, "beta_utility=1.0"), ({"sigma": -1.0}, "sigma"),
                       ({"weight_decay": -0.1}, "weight_decay")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            UPGD([w], **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="boolean tensor shaped like"):
        UPGD([w], supports={w: torch.ones(3, dtype=torch.bool)})


def test_upgd_state_dict_resumes_the_same_noise_and_traces() -> None:
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(5))
    opt_a = UPGD([a], lr=0.1, sigma=0.5, seed=1)
    grads = [torch.randn(5) for _ in range(4)]
    for g in grads[:2]:
        a.grad = g.clone()
        opt_a.step()
    b = torch.nn.Parameter(a.detach().clone())
    opt_b = UPGD([b], lr=0.1, sigma=0.5, seed=99)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    for g in grads[2:]:
        for p, opt in ((a, opt_a), (b, opt_b)):
            p.grad = g.clone()
            opt.step()
    assert torch.equal(a, b)


def test_the_registry_names_every_config_optimizer() -> None:
    assert OPTIMIZERS.names() == sorted(o.value for o in Optimizer)


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_weight_decay_reaches_every_host_group_but_the_mechanism_logits(name: str) -> None:
    torch.manual_seed(0)
    host = make_host("mlp", (12,), 3, hidden=[8])
    scalpel = Scalpel(host, "gumbel_softmax", density=0.5, seed=0)  # learnable gate logits
    cfg = WorkloadConfig(optimizer=Optimizer(name), weight_decay=1e-3, lr=0.05)
    opt = build_optimizer(cfg, host, scalpel, seed=0)
    assert type(opt) is OPTIMIZERS[name].cls
    *host_groups, logits = opt.param_groups
    assert [g["layer"] for g in host_groups if "layer" in g] == scalpel.names
    assert all(g["weight_decay"] == 1e-3 and g["lr"] == 0.05 for g in host_groups)
    assert logits["weight_decay"] == 0.0 and logits["params"] == scalpel.parameters()
    if name == "adam":
        assert all(g["decoupled_weight_decay"] for g in opt.param_groups)
    if name == "upgd":
        assert isinstance(opt, UPGD) and logits["gated"] is False
        assert set(opt.supports) == {dict(host.named_parameters())[n] for n in scalpel.names}


def test_optimizer_params_reach_the_optimizer_and_unknown_ones_are_refused() -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    cfg = WorkloadConfig(optimizer=Optimizer.upgd, optimizer_params={"sigma": 0.1})
    opt = make_optimizer(cfg, [{"params": [w]}])
    assert opt.param_groups[0]["sigma"] == 0.1 and opt.param_groups[0]["beta_utility"] == 0.999
    bad = WorkloadConfig(optimizer=Optimizer.upgd, optimizer_params={"momentum": 0.9})
    with pytest.raises(ValueError, match="no parameter 'momentum'; allowed: beta_utility, sigma"):
        make_optimizer(bad, [{"params": [w]}])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("workload.weight_decay=-0.1", r"workload\.weight_decay must be a finite number ≥ 0"),
        ("workload.l2_init=-1e-3", r"workload\.l2_init must be a finite number ≥ 0"),
        ("workload.optimizer_params.lr=0.1", r"set workload\.lr, not workload\.optimizer_par"),
        ("workload.optimizer_params.sigma=-1", r"workload\.optimizer=upgd: UPGD: sigma=-1"),
        ("workload.optimizer_params.beta=0.5", "no parameter 'beta'; allowed: beta_utility, sig"),
        ("workload.optimizer=rmsprop", "workload.optimizer"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        compose(["workload.optimizer=upgd", override])


def test_good_settings_compose_and_l2_init_is_searchable() -> None:
    cfg = compose(["workload.optimizer=upgd", "workload.optimizer_params.sigma=0.01",
                   "workload.weight_decay=1e-4", "workload.l2_init=1e-3",
                   "search.bounds.workload.l2_init=[1e-5,1e-2]"])  # fmt: skip
    w = cfg.workload
    assert (w.optimizer, w.weight_decay, w.l2_init) == (Optimizer.upgd, 1e-4, 1e-3)
    assert w.optimizer_params == {"sigma": 0.01}
    with pytest.raises(ConfigError, match=r"workload\.l2_init=\[0.0, 0.01\] leaves the key's"):
        compose(["search.bounds.workload.l2_init=[0,1e-2]"])  # λ = 0 has no anchors to copy
    with pytest.raises(ConfigError, match=r"cohort=2 .* needs workload\.l2_init=0\.0"):
        compose(["workload.l2_init=1e-3", "policy.training.cohort=2"])
