"""``esper bench double-loss``: one run of an arm measures tail accuracy and double-loss
cases; the whole experiment (tiny preset, real Ray tasks) writes its table, JSON and plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from esper.bench.double_loss import ARMS, PRESETS, run_arm
from esper.cli import main

TINY = PRESETS["tiny"]


@pytest.mark.parametrize("arm", ["both, independent", "both, synchronized"])
def test_a_run_measures_the_tail_and_the_double_losses(arm: str) -> None:
    run = run_arm(TINY, arm, seed=0)
    assert run["arm"] == arm and 0.0 <= run["online"] <= 1.0
    assert len(run["tail_curve"]) == TINY.tasks and 0.0 <= run["tail"] <= 1.0
    assert run["density"] == pytest.approx(TINY.density, abs=0.02)
    assert run["double_loss_cases"] >= 0 and run["served_weights_pruned"] >= 0
    if arm == "both, synchronized":
        assert run["served_weights_pruned"] == 0  # refused, every time
    else:
        assert run["protected_weights"] == 0


@pytest.mark.slow
def test_the_experiment_writes_its_table_json_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "double-loss.json"
    args = ["bench", "double-loss", "--preset", "tiny", "--json", str(out), "--num-cpus", "2"]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert set(ARMS) < set(result["summary"]) and result["machine"]
    assert len(result["runs"]) == len(ARMS) * len(TINY.seeds)
    assert result["summary"]["synchronized minus independent"]["tail"]["n"] == len(TINY.seeds)
    assert "| both, synchronized | 0.10 |" in out.with_suffix(".md").read_text()
    assert (tmp_path / "double-loss-tail.png").stat().st_size > 1000
    assert main(args) == 2  # the outputs exist now: refused without --force


def test_an_unknown_selection_rule_is_refused_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "d.json"
    args = ["bench", "double-loss", "--preset", "tiny", "--json", str(out), "--strategy", "newest"]
    assert main(args) == 2
    assert "valid selections" in capsys.readouterr().err and not out.exists()


def test_a_bad_override_is_refused_before_any_run_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "d.json"
    args = ["bench", "double-loss", "--preset", "tiny", "--json", str(out),
            "--override", "workload.memory.retention.serve_fraction=2.0"]  # fmt: skip
    assert main(args) == 2
    assert "serve_fraction" in capsys.readouterr().err and not out.exists()


def test_overrides_reach_every_run() -> None:
    from dataclasses import replace

    preset = replace(TINY, overrides=("workload.memory.retention.serve_fraction=0.2",))
    run = run_arm(preset, "both, synchronized", seed=0)
    assert run["protected_weights"] > 0 and run["served_weights_pruned"] == 0


def _trained_emrakul(tmp_path: Path, option: str) -> str:
    """A checkpoint of Emrakul trained for two surgeries on the bench's stream, with
    ``+policy.params.<option>=true``."""
    import dataclasses

    from esper.bench.double_loss import arm_overrides
    from esper.conf import compose
    from esper.policies.checkpoints import save_policy
    from esper.policies.training import train_policy

    overrides = [o for o in arm_overrides(TINY, "both, independent", 0) if o != "policy=rigl"]
    cfg = compose(["policy=emrakul", *overrides, f"+policy.params.{option}=true"])
    training = dataclasses.replace(cfg.policy.training, surgeries=2, rollout=2)
    cfg = dataclasses.replace(cfg, policy=dataclasses.replace(cfg.policy, training=training))
    return str(save_policy(tmp_path / "emrakul.pt", train_policy(cfg)))


def test_a_trained_emrakul_can_be_the_weight_surgeon(tmp_path: Path) -> None:
    path = _trained_emrakul(tmp_path, "protect")
    run = run_arm(TINY, "both, independent", seed=0, checkpoint=path)
    assert 0.0 <= run["tail"] <= 1.0 and 0.0 <= run["protect_rate"] <= 1.0
    assert run["density"] == pytest.approx(TINY.density, abs=0.02)
    assert run_arm(TINY, "both, independent", seed=0)["protect_rate"] == 0.0  # RigL never asks


def test_a_trained_emrakuls_data_action_can_be_withheld(tmp_path: Path) -> None:
    path = _trained_emrakul(tmp_path, "data_action")
    assert run_arm(TINY, "both, independent", seed=0, checkpoint=path)["data_actions"]
    withheld = run_arm(TINY, "both, independent", seed=0, checkpoint=path, data_action=False)
    assert withheld["data_actions"] == []  # the memory's own refresh and rule applied
