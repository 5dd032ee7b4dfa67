"""Comparing a sweep by what its members ran: stretches between perturbations, grouped by
reward weights, a searched key or member; the CLI's table, JSON and plots."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from esper.analysis.compare import CompareError, compare_runs
from esper.analysis.compare_cli import add_compare_parser
from esper.analysis.plots import fitness_by_value
from esper.analysis.runs import load_run
from esper.analysis.stretches import (
    by_stretch,
    compare_sweep,
    stretch_summary,
    stretches,
)
from tests.analysis._synthetic_runs import write_run, write_sweep

BOUNDS = {"reward.beta": [0.0, 0.5], "policy.params.heat_tau": [0.5, 4.0]}
BASE_LABEL = "α=1 β=0.1 γ=0.1 δ=0 ε=0.5"  # run.json's reward: no member ran it
EXPLORED = 0.25371  # t1's β after its perturbation at iteration 3


def _row(accuracy: float, beta: float, tau: float, **more: float) -> dict[str, Any]:
    return {
        "online_accuracy": accuracy,
        "density": 0.3,
        "r_flops": 0.3,
        "hp/reward.beta": beta,
        "hp/policy.params.heat_tau": tau,
        **more,
    }


def _curves(fitness: bool = False) -> dict[str, list[dict[str, Any]]]:
    """t0 keeps β=0.2, τ=1; t1 runs β=0.3, τ=2 for two iterations, then (exploit and
    explore) β=0.25371 with the same τ: three stretches, three shapings."""
    extra = (lambda a: {"fitness": a - 0.5}) if fitness else (lambda a: {})
    t0 = [_row(a, 0.2, 1.0, **extra(a)) for a in (0.50, 0.52, 0.54, 0.56)]
    t1 = [_row(a, 0.3, 2.0, **extra(a)) for a in (0.40, 0.42)]
    t1 += [_row(a, EXPLORED, 2.0, **extra(a)) for a in (0.60, 0.64)]
    return {"t0": t0, "t1": t1}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sweep(tmp_path_factory.mktemp("sweep") / "sweep", _curves(), bounds=BOUNDS)


def _ci(values: list[float]) -> float:
    sample = np.asarray(values)
    return float(stats.t.ppf(0.975, sample.size - 1) * sample.std(ddof=1) / math.sqrt(sample.size))


def test_stretches_split_at_changed_values_and_skipped_iterations() -> None:
    curve = pd.DataFrame(
        {
            "trial": ["b", "a", "a", "a", "a", "a", "b"],
            "iteration": [2, 1, 2, 4, 5, 6, 1],
            "hp/reward.beta": [0.1, 0.1, 0.1, 0.1, 0.3, 0.1, 0.1],
        }
    )
    out = stretches(curve)
    assert out[["trial", "iteration"]].values.tolist() == [
        ["a", 1], ["a", 2], ["a", 4], ["a", 5], ["a", 6], ["b", 1], ["b", 2],
    ]  # fmt: skip
    # a skipped iteration 3 and changed β at 5 and back at 6; b is one stretch
    assert out["stretch"].tolist() == [0, 0, 1, 2, 3, 0, 0]


def test_by_reward_groups_the_shapings_members_ran(sweep: Path) -> None:
    table = compare_sweep([sweep], by="reward")
    assert table.index.name == "reward"
    assert table.index.tolist() == [
        "α=1 β=0.2 γ=0.1 δ=0 ε=0.5",
        "α=1 β=0.3 γ=0.1 δ=0 ε=0.5",
        "α=1 β=0.254 γ=0.1 δ=0 ε=0.5",
    ]
    assert BASE_LABEL not in table.index
    assert table["stretches"].tolist() == [1, 1, 1]
    assert table["iterations"].tolist() == [4, 2, 2]
    assert table["hp/reward.beta"].tolist() == [0.2, 0.3, EXPLORED]
    assert table.attrs["fitness"] == "online_accuracy"
    assert table.columns[3] == "online_accuracy"  # the fitness comes first
    explored = table.iloc[2]
    assert explored["online_accuracy"] == pytest.approx(0.62)
    assert explored["online_accuracy_ci"] == pytest.approx(_ci([0.60, 0.64]))
    assert explored["online_accuracy_n"] == 2
    assert table.iloc[0]["online_accuracy"] == pytest.approx(0.53)
    assert table["r_flops"].tolist() == pytest.approx([0.3] * 3)


def test_by_member_and_by_searched_key(sweep: Path) -> None:
    members = compare_sweep([sweep], by="member")
    assert members.index.tolist() == ["t0", "t1"]
    assert members["stretches"].tolist() == [1, 2]
    assert members.loc["t1", "online_accuracy"] == pytest.approx(np.mean([0.4, 0.42, 0.6, 0.64]))
    assert members.loc["t1", "online_accuracy_ci"] == pytest.approx(_ci([0.4, 0.42, 0.6, 0.64]))
    assert math.isnan(members.loc["t1", "hp/reward.beta"])  # it ran two values
    assert members.loc["t1", "hp/policy.params.heat_tau"] == 2.0

    beta = compare_sweep([sweep], by="reward.beta")
    assert beta.index.tolist() == ["0.2", "0.3", "0.254"]
    assert compare_sweep([sweep], by="config.reward.beta").index.tolist() == ["0.2", "0.3", "0.254"]

    tau = compare_sweep([sweep], by="policy.params.heat_tau")
    assert tau.index.tolist() == ["1", "2"]  # t1's two stretches ran the same τ
    assert tau.loc["2", "stretches"] == 2 and tau.loc["2", "members"] == 1
    assert tau.loc["2", "iterations"] == 4


def test_labels_get_the_digits_that_tell_values_apart(tmp_path: Path) -> None:
    curves = {"t0": [_row(0.5, 0.25371, 1.0)], "t1": [_row(0.6, 0.25374, 1.0)]}
    run = write_sweep(tmp_path / "close", curves, bounds=BOUNDS, steps=3)
    assert compare_sweep([run], by="reward.beta").index.tolist() == ["0.25371", "0.25374"]
    assert len(compare_sweep([run], by="reward")) == 2


def test_fitness_column_is_chosen_or_asked_for(sweep: Path, tmp_path: Path) -> None:
    run = write_sweep(tmp_path / "fit", _curves(fitness=True), bounds=BOUNDS)
    table = compare_sweep([run], by="member")
    assert table.attrs["fitness"] == "fitness" and table.columns[3] == "fitness"
    assert table.loc["t0", "fitness"] == pytest.approx(0.03)
    # the sweep ranked by raw accuracy: that is its fitness, although it recorded ``fitness``
    raw = write_sweep(
        tmp_path / "raw", _curves(fitness=True), bounds=BOUNDS, metric="online_accuracy"
    )
    assert compare_sweep([raw]).attrs["fitness"] == "online_accuracy"
    assert compare_sweep([sweep]).attrs["fitness"] == "online_accuracy"  # no fitness recorded
    asked = compare_sweep([run], by="member", metric="density")
    assert asked.attrs["fitness"] == "density" and asked.columns[3] == "density"
    with pytest.raises(CompareError, match="no column 'speed'"):
        compare_sweep([run], metric="speed")


def test_runs_that_are_not_sweeps_are_compared_as_before(sweep: Path, tmp_path: Path) -> None:
    plain = write_run(tmp_path / "plain", steps=6, drift_every=3)
    assert not by_stretch([load_run(plain)], "reward")
    assert compare_runs([plain], by="reward").index.tolist() == [BASE_LABEL]
    with pytest.raises(CompareError, match="is not a sweep"):
        compare_sweep([sweep, plain])
    runs = [load_run(sweep)]
    assert by_stretch(runs, "reward") and by_stretch(runs, "member")
    assert by_stretch(runs, "policy.params") and not by_stretch(runs, "seed")
    with pytest.raises(CompareError, match="no config key 'nonsense'"):
        compare_sweep([sweep], by="nonsense")


def test_plot_of_fitness_against_each_searched_value(sweep: Path) -> None:
    summary = stretch_summary([sweep])
    assert summary[["trial", "stretch", "iterations"]].values.tolist() == [
        ["t0", 0, 4], ["t1", 0, 2], ["t1", 1, 2],
    ]  # fmt: skip
    keys = list(BOUNDS)
    fig = fitness_by_value(summary, keys, metric=summary.attrs["fitness"])
    assert [ax.get_xlabel() for ax in fig.axes] == keys
    offsets = [np.asarray(c.get_offsets(), dtype=float) for c in fig.axes[0].collections]
    points = np.concatenate(offsets)
    points = points[np.argsort(points[:, 0])]
    assert points[:, 0].tolist() == [0.2, EXPLORED, 0.3]  # one point per stretch
    assert points[:, 1].tolist() == pytest.approx([0.53, 0.62, 0.41])
    assert [c.get_label() for c in fig.axes[1].collections] == ["t0", "t1"]


def _compare(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="esper")
    add_compare_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["compare", *argv])
    return int(args.func(args))


def test_cli_compares_a_sweep_by_reward(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json, plots = tmp_path / "cmp.json", tmp_path / "plots"
    argv = [str(sweep), "--by", "reward", "--json", str(out_json), "--plots", str(plots)]
    assert _compare(argv) == 0
    printed = capsys.readouterr().out
    assert "β=0.254" in printed and "β=0.3" in printed and "β=0.2" in printed
    assert "β=0.1 γ" not in printed and "stretches" in printed and "±" in printed
    payload = json.loads(out_json.read_text())
    assert payload["by"] == "reward" and payload["fitness"] == "online_accuracy"
    groups = payload["groups"]
    assert [g["reward"] for g in groups] == [
        "α=1 β=0.2 γ=0.1 δ=0 ε=0.5",
        "α=1 β=0.3 γ=0.1 δ=0 ε=0.5",
        "α=1 β=0.254 γ=0.1 δ=0 ε=0.5",
    ]
    assert [g["hp/reward.beta"] for g in groups] == [0.2, 0.3, EXPLORED]
    assert groups[2]["online_accuracy"] == pytest.approx(0.62) and groups[2]["iterations"] == 2
    names = sorted(p.name for p in plots.iterdir())
    assert "fitness_by_value.png" in names and "sweep_learning.png" in names
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in plots.iterdir())


def test_cli_by_member_and_key(sweep: Path, tmp_path: Path) -> None:
    out_json = tmp_path / "members.json"
    assert _compare([str(sweep), "--by", "member", "--json", str(out_json)]) == 0
    groups = json.loads(out_json.read_text())["groups"]
    assert [(g["member"], g["stretches"]) for g in groups] == [("t0", 1), ("t1", 2)]
    assert groups[1]["hp/reward.beta"] is None  # t1 ran two values
    assert _compare([str(sweep), "--by", "reward.beta", "--json", str(out_json)]) == 0
    assert [g["reward.beta"] for g in json.loads(out_json.read_text())["groups"]] == [
        "0.2", "0.3", "0.254",
    ]  # fmt: skip
    assert _compare([str(sweep), "--by", "seed"]) == 0  # a run.json key: as before


def test_cli_refusals_exit_2(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = write_run(tmp_path / "plain", steps=6, drift_every=3)
    assert _compare([str(sweep), str(plain)]) == 2
    assert "is not a sweep" in capsys.readouterr().err
    assert _compare([str(plain), "--metric", "fitness"]) == 2
    assert "--metric" in capsys.readouterr().err
    assert _compare([str(sweep), "--metric", "speed"]) == 2
    assert "no column 'speed'" in capsys.readouterr().err


def test_report_on_a_sweep_compares_what_members_ran(sweep: Path) -> None:
    from esper.analysis.report import render_report

    page = render_report([sweep], by="reward")
    assert "as the members ran it" in page
    assert "β=0.3" in page and "β=0.1 " not in page  # the stretches' values, not the base's
