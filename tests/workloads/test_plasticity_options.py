"""The plasticity baselines that are optimizer and host options (UPGD, L2 Init, weight decay,
LayerNorm) composed with sparse surgeons on living organisms: masks stay exact, unit resets
and sensors still work, checkpoints resume exactly, and the CLI runs them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from esper.cli import main
from esper.policies import make_policy
from esper.policies.evaluation import evaluate_policy
from esper.workloads.hosts import MLP
from esper.workloads.l2_init import STATE_KEY
from esper.workloads.optimizers import UPGD
from esper.workloads.organism import Organism
from esper.workloads.scalpel import Scalpel
from esper.workloads.units import reset_units, unit_wiring
from tests.workloads.test_organism import _organism, _rigl_like

_LN = ("workload.host.params.layer_norm=true",)


def _assert_pruned_are_zero(org: Organism) -> None:
    weights = dict(org.host.named_parameters())
    for name in org.scalpel.names:
        mask = org.scalpel.mask(name)
        assert torch.all(weights[name].detach()[~mask] == 0), name
        assert torch.any(weights[name].detach()[mask] != 0), name


@pytest.mark.parametrize(
    "overrides",
    [
        ("workload.optimizer=upgd", "workload.optimizer_params.sigma=0.05"),
        ("workload.l2_init=1e-2",),
        ("workload.optimizer=upgd", "workload.l2_init=1e-2", "workload.weight_decay=1e-3"),
        ("workload.optimizer=adam", "workload.lr=0.003", "workload.weight_decay=1e-2",
         "workload.l2_init=1e-3", *_LN),
    ],
)  # fmt: skip
def test_pruned_weights_stay_zero_under_rigl_surgery(overrides: tuple[str, ...]) -> None:
    org = _organism(*overrides)
    density = org.scalpel.global_density()
    org.reset()
    for _ in range(3):
        out = org.step(_rigl_like(org))
        assert {"prune", "regrow"} <= {e.action for e in out.events}
        _assert_pruned_are_zero(org)
    assert org.scalpel.global_density() == pytest.approx(density)
    if isinstance(org.optimizer, UPGD):
        for name, p in org.host.named_parameters():
            if name in org.scalpel.names:  # no utility builds up at a pruned weight
                trace = org.optimizer.state[p]["avg_utility"]
                assert torch.all(trace[~org.scalpel.mask(name)] == 0)


def test_upgd_and_l2_init_resume_bit_exactly_from_an_organism_checkpoint() -> None:
    overrides = ("workload.optimizer=upgd", "workload.l2_init=1e-2", *_LN)
    org = _organism(*overrides)
    org.reset()
    org.step(_rigl_like(org))
    state = org.state_dict()
    anchors = state["optimizer"][STATE_KEY]["anchors"]
    assert list(anchors) == [n for n, _ in org.host.named_parameters()]
    buffer = io.BytesIO()
    torch.save(state, buffer)
    expected = [org.step(_rigl_like(org)) for _ in range(2)]
    fresh = _organism(*overrides)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    got = [fresh.step(_rigl_like(fresh)) for _ in range(2)]
    for a, b in zip(expected, got, strict=True):
        assert a.reward == b.reward and a.info["online_loss"] == b.info["online_loss"]
    for (name, v), w in zip(org.host.state_dict().items(), fresh.host.state_dict().values(),
                            strict=True):  # fmt: skip
        assert torch.equal(v, w), name


def test_layer_norm_sits_between_each_hidden_linear_and_its_activation() -> None:
    torch.manual_seed(0)
    host = MLP((12,), 3, hidden=(8, 6), layer_norm=True)
    assert list(host.prunable_parameters()) == [f"layers.{i}.weight" for i in range(3)]
    assert host.norms is not None and [n.normalized_shape for n in host.norms] == [(8,), (6,)]
    x = torch.randn(4, 12)
    h = host.act(host.norms[0](host.layers[0](x)))
    h = host.act(host.norms[1](host.layers[1](h)))
    torch.testing.assert_close(host(x), host.layers[2](h))
    members = [MLP((12,), 3, hidden=(8, 6), layer_norm=True) for _ in range(2)]
    params = [torch.stack(ts) for ts in zip(*(m.parameters() for m in members), strict=True)]
    xs = torch.randn(2, 4, 12)
    stacked = members[0].stacked_forward(params, xs)  # the cohort's form
    for i, member in enumerate(members):
        torch.testing.assert_close(stacked[i], member(xs[i]))
    plain = MLP((12,), 3, hidden=(8, 6))
    assert plain.norms is None and "norms" not in dict(plain.named_modules())


def test_sensors_take_activity_after_the_layer_norm() -> None:
    org = _organism(*_LN)
    graph = org.nervous.graph
    assert graph.norms == ("norms.0", "norms.1", "")
    assert graph.activations == ("relu", "relu", "identity")
    step = org.reset()
    name = "layers.0.weight"
    pre = step.reading.gradients.outputs[name]
    emitted = torch.relu(org.host.get_submodule("norms.0")(pre))
    torch.testing.assert_close(graph.unit_output(org.host, 0, pre), emitted)
    assert step.reading.activity[name].scores.shape == (32,)


def test_a_unit_reset_also_resets_its_layer_norm_scale_and_shift() -> None:
    torch.manual_seed(0)
    host = MLP((12,), 3, hidden=(8, 6), layer_norm=True)
    scalpel = Scalpel(host, density=0.5, distribution="uniform", seed=0)
    opt = torch.optim.SGD(host.parameters(), lr=0.1, momentum=0.9)
    scalpel.bind_optimizer(opt)
    for _ in range(3):
        opt.zero_grad()
        host(torch.randn(5, 12)).pow(2).mean().backward()
        opt.step()
    assert unit_wiring(host, "layers.1.weight").norm == "norms.1"
    norm = host.norms[1]  # type: ignore[index]
    before = norm.weight.detach().clone()
    assert reset_units(host, scalpel, opt, "layers.1.weight", [2, 4], torch.Generator()) == 2
    assert norm.weight[[2, 4]].tolist() == [1.0, 1.0] and norm.bias[[2, 4]].tolist() == [0, 0]
    assert torch.equal(norm.weight.detach()[[0, 1, 3, 5]], before[[0, 1, 3, 5]])
    assert torch.all(opt.state[norm.weight]["momentum_buffer"][[2, 4]] == 0)


@pytest.mark.parametrize(
    ("policy", "params"),
    [
        ("redo", {"threshold": 0.5, "interval": 6}),
        ("cbp", {"replacement_rate": 0.05, "maturity_threshold": 6}),
        ("rigl", {"delta_t": 6}),
    ],
)
def test_surgeons_run_on_a_layer_norm_host_with_upgd_and_l2_init(
    policy: str, params: dict[str, float]
) -> None:
    org = _organism(*_LN, "workload.optimizer=upgd", "workload.l2_init=1e-3",
                    "workload.weight_decay=1e-4")  # fmt: skip
    events: list[str] = []
    report = evaluate_policy(org, make_policy(policy, **params), surgeries=3,
                             on_events=lambda es: events.extend(e.action for e in es))  # fmt: skip
    assert report.surgeries == 3 and 0.0 <= report.online_accuracy <= 1.0
    assert ("reset" if policy != "rigl" else "regrow") in events
    _assert_pruned_are_zero(org)


def test_evaluate_composes_a_surgeon_with_the_plasticity_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "out.json"
    argv = ["evaluate", "policy=rigl", "policy.density=0.2", "policy.params.delta_t=10",
            "workload.optimizer=upgd", "workload.l2_init=1e-3", "workload.weight_decay=1e-4",
            "workload.host.params.layer_norm=true", "workload.num_tasks=1",
            "policy.surgery_interval=10", "workload.schedule.params.task_length=60",
            "--surgeries", "2", f"cluster.storage_path={tmp_path / 'runs'}",
            "--json", str(path)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err[-3000:]
    (report,) = json.loads(path.read_text())["reports"]
    assert report["surgeries"] == 2 and report["density"] == pytest.approx(0.2, abs=0.01)
