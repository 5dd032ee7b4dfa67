"""The plasticity anchors of ``esper bench quality`` and ``--checkpoint``: the anchors preset's
conditions, their overrides in the composed config, options chosen on validation seeds only, and
evaluating a given checkpoint instead of training (fake runs: ``test_quality_protocol.py``)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pytest

from esper.bench.quality import run_quality
from esper.bench.quality_anchors import ANCHORS, UPGD_REFERENCE, Anchor
from esper.bench.quality_evaluation import compose_config, policy_overrides
from esper.bench.quality_presets import ANCHOR_PRESET, LEARNING, PRESETS
from esper.bench.quality_suite import SMALL_STREAMS, Condition, conditions
from esper.cli import main
from tests.bench.test_quality_protocol import FAKE, _Recorder, _report, fake_runs

SPARSE_ANCHORS = ("upgd", "l2_init", "ln_wd", "rigl_upgd")
DENSE_ANCHORS = ("dense_upgd", "dense_l2_init", "dense_ln_wd")


@pytest.fixture
def faked(monkeypatch: pytest.MonkeyPatch) -> _Recorder:
    return fake_runs(monkeypatch)


def test_the_anchors_preset_runs_the_new_baselines_and_every_anchor_without_ablations() -> None:
    preset = PRESETS["anchors"]
    assert preset is ANCHOR_PRESET and preset.streams == SMALL_STREAMS
    assert (preset.densities, preset.allocations, preset.validation_seeds) == (
        (0.1, 0.05), ("erk",), (500,)
    )  # fmt: skip
    assert preset.seeds == (1000, 1001, 1002, 1003, 1004)
    assert preset.ablations == () and preset.credit_surgeries == 0 and preset.train_seeds == (0,)
    conds = conditions(preset)
    rows: dict[tuple[str, float], list[Condition]] = {}
    for c in conds:
        rows.setdefault((c.label, c.density), []).append(c)
    sparse = ("rigl", "rigl_continual", "shrink_perturb", "swr", *SPARSE_ANCHORS, "emrakul")
    assert set(rows) == {
        ("dense", 1.0), ("cbp", 1.0), *((d, 1.0) for d in DENSE_ANCHORS),
        *((label, density) for label in sparse for density in (0.1, 0.05)),
    }  # fmt: skip
    assert len(rows) == 22 + 1  # the 22 conditions of the cost estimate and dense CBP
    # 30 option candidates: UPGD's 3 step sizes, L2 Init's 3 λ, 2 weight decays, at each place
    assert sum(len(g) for g in rows.values() if len(g) > 1) == 30
    for density in (0.1, 0.05):
        upgd, rigl_upgd = rows[("upgd", density)], rows[("rigl_upgd", density)]
        assert {c.policy for c in upgd} == {"static"} and {c.policy for c in rigl_upgd} == {"rigl"}
        assert all(c.allocation == "erk" and c.overrides == UPGD_REFERENCE for c in upgd)
        assert [c.options for c in upgd] == [
            ("workload.lr=0.02",), ("workload.lr=0.06",), ("workload.lr=0.2",)
        ]  # fmt: skip
        assert rigl_upgd[0].horizon == 0.75
        assert [c.options for c in rows[("l2_init", density)]] == [
            ("workload.l2_init=0.01",), ("workload.l2_init=0.001",), ("workload.l2_init=0.0001",)
        ]  # fmt: skip
        ln_wd = rows[("ln_wd", density)]
        assert all(c.overrides == ("workload.host.params.layer_norm=true",) for c in ln_wd)
        assert [c.options for c in ln_wd] == [
            ("workload.weight_decay=0.0001",), ("workload.weight_decay=0.001",)
        ]  # fmt: skip
        for surgeon in ("shrink_perturb", "swr", "rigl"):
            (only,) = rows[(surgeon, density)]
            assert (only.policy, only.allocation, only.config_overrides) == (surgeon, "erk", ())
        (emrakul,) = rows[("emrakul", density)]
        assert (emrakul.variant, emrakul.allocation, emrakul.config_overrides) == (
            "emrakul", None, ()
        )  # fmt: skip
    for name in DENSE_ANCHORS:
        group = rows[(name, 1.0)]
        assert {(c.policy, c.allocation) for c in group} == {("dense", None)}
        assert {c.overrides for c in group} == {ANCHORS[name].overrides}
    # the existing presets keep their conditions: no anchor, no options
    for name in ("learning", "elastic", "full"):
        assert not any(c.config_overrides for c in conditions(PRESETS[name]))


@pytest.mark.parametrize("name", sorted(ANCHORS))
def test_an_anchors_overrides_and_options_reach_the_composed_config(name: str) -> None:
    anchor = ANCHORS[name]
    density = 1.0 if anchor.dense else 0.05
    allocation = None if anchor.dense else "erk"
    stream = SMALL_STREAMS[0]
    for options in anchor.options():
        cond = Condition(name, anchor.policy, density, ("permuted50",), allocation=allocation,
                         overrides=anchor.overrides, options=options)  # fmt: skip
        cfg = compose_config(policy_overrides(stream, cond.policy, cond.density, cond.horizon,
                                              cond.allocation, cond.config_overrides))  # fmt: skip
        assert (cfg.policy.name, cfg.policy.density) == (anchor.policy, density)
        for override in cond.config_overrides:
            key, value = override.split("=", 1)
            assert _plain(_lookup(cfg, key)) == _plain(value), override
        if anchor.policy == "rigl":
            assert cfg.policy.params["t_end"] == int(0.75 * stream.steps)
        if allocation is not None:
            assert cfg.workload.scalpel.distribution == allocation
    cfg = compose_config(policy_overrides(stream, "static", 0.1, overrides=UPGD_REFERENCE))
    assert cfg.workload.optimizer.value == "upgd" and cfg.workload.weight_decay == 0.001
    assert dict(cfg.workload.optimizer_params) == {"sigma": 0.001, "beta_utility": 0.999}
    plain = compose_config(policy_overrides(stream, "static", 0.1))
    assert plain.workload.optimizer.value == "sgd" and not plain.workload.host.params


def _lookup(cfg: Any, dotted: str) -> Any:
    value = cfg
    for part in dotted.split("."):
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    return value


def _plain(value: Any) -> Any:
    value = getattr(value, "value", value)  # an enum's name
    if isinstance(value, bool) or value in ("true", "false"):
        return value in (True, "true")
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def test_anchors_and_their_grids_are_checked() -> None:
    with pytest.raises(ValueError, match=r"unknown anchors \['bogus'\]; valid: upgd"):
        dataclasses.replace(FAKE, anchors=("upgd", "bogus"))
    with pytest.raises(ValueError, match="fixed in overrides"):
        Anchor("static", ("workload.lr=0.1",), (("workload.lr", (0.02,)),))
    with pytest.raises(ValueError, match="needs values"):
        Anchor("static", (), (("workload.lr", ()),))
    assert Anchor("static").options() == [()]
    grid = Anchor("static", (), (("a", (1.0, 2.0)), ("b", (0.5,))))
    assert grid.options() == [("a=1", "b=0.5"), ("a=2", "b=0.5")]


ANCHORED = dataclasses.replace(FAKE, anchors=("upgd", "dense_upgd"), allocations=("uniform", "erk"))


def test_options_are_chosen_on_validation_seeds_only_and_reported(
    faked: _Recorder, tmp_path: Path
) -> None:
    report, markdown = _report(tmp_path, ANCHORED)
    upgd = [c for c in faked.calls if c["overrides"] and c["policy"] == "static"]
    evaluation = [c for c in upgd if c["seed"] in ANCHORED.seeds]
    validation = [c for c in upgd if c["seed"] not in ANCHORED.seeds]
    assert {c["seed"] for c in validation} == set(ANCHORED.validation_seeds)
    # every candidate (2 allocations × 3 step sizes) on every stream and validation seed
    tried = {(c["allocation"], c["overrides"][-1]) for c in validation}
    assert len(tried) == 6 and len(validation) == 6 * 2 * 2
    # the evaluation seeds run the validation's choice only (they would favour lr = 0.2, erk)
    assert {(c["allocation"], c["overrides"]) for c in evaluation} == {
        ("uniform", (*UPGD_REFERENCE, "workload.lr=0.06"))
    }  # fmt: skip
    assert len(evaluation) == len(ANCHORED.seeds) * 2
    options = {(r["policy"], r["density"]): r for r in report["options"]}
    assert set(options) == {("upgd", 0.2), ("dense_upgd", 1.0)}
    row = options[("upgd", 0.2)]
    assert row["chosen"] == ["workload.lr=0.06"] and row["surgeon"] == "static"
    assert row["overrides"] == list(UPGD_REFERENCE) and len(row["validation"]) == 6
    best = max(row["validation"], key=lambda r: r["online_accuracy"])
    assert (best["allocation"], best["options"]) == ("uniform", ["workload.lr=0.06"])
    assert options[("dense_upgd", 1.0)]["chosen"] == ["workload.lr=0.06"]
    allocation = {(r["policy"], r["density"]): r for r in report["allocation"]}
    assert allocation[("upgd", 0.2)]["chosen"] == "uniform"
    assert set(allocation[("upgd", 0.2)]["validation"]) == {"uniform", "erk"}
    assert ("dense_upgd", 1.0) not in allocation
    # the baselines' rows are as before: an allocation, no options
    assert set(allocation[("rigl", 0.2)]) == {"policy", "density", "validation", "chosen"}
    suite = {(r["policy"], r["density"]): r for r in report["results"] if r["stream"] == "suite"}
    assert suite[("upgd", 0.2)]["options"] == ["workload.lr=0.06"]
    assert "options" not in suite[("rigl", 0.2)] and "options" not in suite[("emrakul", 0.2)]
    vs = {(p["vs"], p["vs_density"]) for p in report["paired"] if p["stream"] == "suite"}
    assert {("upgd", 0.2), ("dense_upgd", 1.0)} <= vs
    assert "| allocation | options |" in markdown
    assert "| upgd | 0.2 | uniform | workload.lr=0.06 |" in markdown
    assert "| dense_upgd | 1 | — | workload.lr=0.06 |" in markdown
    assert "| rigl | 0.2 | uniform | — |" in markdown
    assert "| upgd (uniform; workload.lr=0.06) | 0.2 |" in markdown


def _checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "given" / "emrakul-000008.pt"
    path.parent.mkdir()
    path.write_bytes(b"a trained policy")
    return path


SINGLE = dataclasses.replace(FAKE, train_seeds=(0,), ablations=(), anchors=("upgd",),
                             allocations=("erk",))  # fmt: skip


def test_a_given_checkpoint_is_evaluated_without_training(faked: _Recorder, tmp_path: Path) -> None:
    path = _checkpoint(tmp_path)
    report, markdown = _report(tmp_path, SINGLE, path)
    assert faked.trained == []
    loaded = {c["checkpoint"] for c in faked.calls if c["checkpoint"]}
    assert loaded == {str(path.resolve())}
    assert all(c["seed"] in SINGLE.seeds for c in faked.calls if c["checkpoint"])  # no choice
    assert report["training"] == {
        "trained": False, "checkpoint": str(path),
        "sha256": hashlib.sha256(b"a trained policy").hexdigest(),
    }  # fmt: skip
    assert report["chosen"] == {"emrakul": str(path.resolve())} and report["selection"] == []
    assert f"--checkpoint {path} " in report["command"]
    assert report["options"][0]["chosen"] == ["workload.lr=0.06"]  # still chosen on validation
    assert "| emrakul | 0.2 |" in markdown


def test_a_checkpoint_is_refused_where_the_preset_trains_several_policies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _checkpoint(tmp_path)
    out = tmp_path / "q.json"
    with pytest.raises(ValueError, match=r"--checkpoint.*ablations.*3 training runs"):
        run_quality(LEARNING, out, checkpoint=path)
    several = dataclasses.replace(SINGLE, train_seeds=(0, 10))
    with pytest.raises(ValueError, match=r"--checkpoint .* has 2 training runs"):
        run_quality(several, out, checkpoint=path)
    with pytest.raises(ValueError, match="is not a file"):
        run_quality(SINGLE, out, checkpoint=tmp_path / "missing.pt")
    args = ["bench", "quality", "--json", str(out), "--checkpoint", str(path)]
    assert main([*args, "--preset", "small"]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    missing = ["bench", "quality", "--json", str(out), "--checkpoint", str(tmp_path / "no.pt")]
    assert main([*missing, "--preset", "anchors"]) == 2
    assert "is not a file" in capsys.readouterr().err
    assert not out.exists()


def test_a_preset_without_anchors_reports_no_options(faked: _Recorder, tmp_path: Path) -> None:
    report, markdown = _report(tmp_path)
    assert report["options"] == [] and "options" not in markdown
    assert all(c["overrides"] == () for c in faked.calls)
