"""Comparisons: confidence intervals, recovery after drift, paired differences, plots, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy import stats

from esper.analysis.compare import (
    CompareError,
    compare_runs,
    group_label,
    mean_ci,
    paired_run_differences,
    recovery_steps,
)
from esper.analysis.compare_cli import add_compare_parser, add_report_parser
from esper.analysis.plots import (
    accuracy_flops_pareto,
    accuracy_over_time,
    density_per_layer,
    pareto_front,
    surgery_raster,
)
from esper.analysis.runs import RunError, load_run
from tests.analysis._synthetic_runs import LAYERS, REWARD, write_run


def _xs(line: Line2D) -> list[float]:
    return [float(v) for v in np.asarray(line.get_xdata(), dtype=float)]


def _flat(level: float) -> list[list[float]]:
    return [[level] * 12, [level + 0.1] * 12]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Two reward shapings × three seeds × two replicas with known constant accuracies."""
    root = tmp_path_factory.mktemp("runs")
    cheap = {**REWARD, "beta": 0.5}
    out: dict[str, list[Path]] = {"base": [], "cheap": []}
    for seed in range(3):
        out["base"].append(
            write_run(
                root / f"base{seed}",
                seed=seed,
                steps=12,
                drift_every=4,
                accuracy=_flat(0.5 + 0.1 * seed),
                flops=0.5,
            )
        )
        out["cheap"].append(
            write_run(
                root / f"cheap{seed}",
                seed=seed,
                steps=12,
                drift_every=4,
                reward=cheap,
                accuracy=_flat(0.45 + 0.1 * seed),
                flops=0.25,
                policy="other",
            )
        )
    return out


def test_mean_ci_matches_t_interval() -> None:
    values = [1.0, 2.0, 4.0, float("nan")]
    mean, half, n = mean_ci(values)
    sample = np.array([1.0, 2.0, 4.0])
    assert n == 3 and mean == pytest.approx(7 / 3)
    expected = stats.t.ppf(0.975, 2) * sample.std(ddof=1) / math.sqrt(3)
    assert half == pytest.approx(expected)


def test_mean_ci_single_and_empty() -> None:
    mean, half, n = mean_ci([0.7])
    assert (mean, n) == (0.7, 1) and math.isnan(half)
    mean, half, n = mean_ci([])
    assert n == 0 and math.isnan(mean) and math.isnan(half)


def test_recovery_steps_on_scripted_series() -> None:
    acc = [0.5, 0.7, 0.8, 0.3, 0.6, 0.8, 0.9, 0.2, 0.4, 0.5, 0.95, 0.1]
    task = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3]
    metrics = pd.DataFrame(
        {"surgery_step": range(len(acc)), "task_index": task, "online_accuracy": acc}
    )
    out = recovery_steps(metrics.sample(frac=1.0, random_state=0))  # order must not matter
    assert out["surgery_step"].tolist() == [3, 7, 11]
    assert out["pre_accuracy"].tolist() == pytest.approx([0.8, 0.9, 0.95])
    # 0.8 is regained at the 3rd surgery of task 1, 0.9 at the 4th of task 2; the last never.
    assert out["recovery_steps"].iloc[:2].tolist() == [3.0, 4.0]
    assert math.isnan(out["recovery_steps"].iloc[2])


def test_recovery_before_next_drift_only() -> None:
    metrics = pd.DataFrame(
        {
            "surgery_step": range(6),
            "task_index": [0, 0, 1, 1, 2, 2],
            "online_accuracy": [0.9, 0.9, 0.5, 0.6, 0.95, 0.95],
        }
    )
    out = recovery_steps(metrics)
    assert math.isnan(out["recovery_steps"].iloc[0])  # 0.95 came only after the next drift
    assert out["recovery_steps"].iloc[1] == 1.0  # back above 0.6 at the first surgery


def test_compare_runs_by_reward(runs: dict[str, list[Path]]) -> None:
    table = compare_runs(runs["base"] + runs["cheap"], by="reward")
    assert table.index.name == "reward" and len(table) == 2
    base = table.loc[group_label(load_run(runs["base"][0]).meta, "reward")]
    assert base["runs"] == 3 and base["units"] == 6
    # Units: seeds 0..2 × replicas (level, level + 0.1): 0.5, 0.6, 0.6, 0.7, 0.7, 0.8.
    sample = np.array([0.5, 0.6, 0.6, 0.7, 0.7, 0.8])
    assert base["online_accuracy"] == pytest.approx(sample.mean())
    expected = stats.t.ppf(0.975, 5) * sample.std(ddof=1) / math.sqrt(6)
    assert base["online_accuracy_ci"] == pytest.approx(expected)
    assert base["flops"] == pytest.approx(0.5) and base["flops_ci"] == pytest.approx(0.0)
    assert base["recovery_steps"] == 1.0  # flat accuracy recovers at the first surgery
    for metric in ("density", "oscillation", "r_accuracy", "r_gsnr", "r_spike", "reward"):
        assert np.isfinite(base[metric]) and np.isfinite(base[f"{metric}_ci"])
    cheap = table.iloc[1]
    assert cheap["flops"] == pytest.approx(0.25)
    assert cheap["online_accuracy"] == pytest.approx(sample.mean() - 0.05)


def test_compare_runs_other_keys(runs: dict[str, list[Path]]) -> None:
    all_runs = runs["base"] + runs["cheap"]
    assert compare_runs(all_runs, by="policy").index.tolist() == ["emrakul", "other"]
    per_run = compare_runs(all_runs[:1], by="run_id")
    assert per_run["units"].iloc[0] == 2
    nested = compare_runs(all_runs, by="config.workload.name")
    assert nested.index.tolist() == ["digits_permuted"] and nested["units"].iloc[0] == 12


def test_single_unit_has_nan_interval(tmp_path: Path) -> None:
    run = write_run(tmp_path / "solo", replicas=1, steps=12, drift_every=4)
    table = compare_runs([run], by="seed")
    assert table["units"].iloc[0] == 1
    assert math.isnan(table["online_accuracy_ci"].iloc[0])
    assert np.isfinite(table["online_accuracy"].iloc[0])


def test_compare_errors(runs: dict[str, list[Path]], tmp_path: Path) -> None:
    with pytest.raises(CompareError, match="no key 'nonsense'"):
        compare_runs(runs["base"], by="nonsense")
    with pytest.raises(RunError, match="does not exist"):
        compare_runs([tmp_path / "missing"])
    with pytest.raises(RunError, match=r"no run\.json"):
        compare_runs([tmp_path])
    with pytest.raises(CompareError, match="no runs"):
        compare_runs([])


def test_paired_run_differences(runs: dict[str, list[Path]]) -> None:
    # Reversed order on one side: pairs match on (workload, seed, replica), not position.
    diffs = paired_run_differences(runs["base"], runs["cheap"][::-1], "online_accuracy")
    assert len(diffs) == 6
    assert diffs[["seed", "replica_id"]].values.tolist() == [
        [s, r] for s in range(3) for r in range(2)
    ]
    assert diffs["diff"].to_numpy() == pytest.approx(np.full(6, 0.05))
    assert diffs.attrs["mean"] == pytest.approx(0.05) and diffs.attrs["n"] == 6
    assert diffs.attrs["ci"] == pytest.approx([0.05, 0.05])  # no spread: the point
    assert diffs.attrs["interval"].n == 6
    unmatched = paired_run_differences(runs["base"][:1], runs["cheap"][1:], "flops")
    assert unmatched.empty
    with pytest.raises(CompareError, match="unknown metric"):
        paired_run_differences(runs["base"], runs["cheap"], "speed")


def test_accuracy_plot_has_lines_and_drift_markers(runs: dict[str, list[Path]]) -> None:
    run = load_run(runs["base"][0])
    fig = accuracy_over_time(run.metrics)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    vertical = [ln for ln in ax.lines if len(set(_xs(ln))) == 1]
    assert sorted(_xs(ln)[0] for ln in vertical) == [4, 8]
    assert len(ax.lines) - len(vertical) == 2  # one line per replica


def test_density_plot_one_line_per_layer(runs: dict[str, list[Path]]) -> None:
    fig = density_per_layer(load_run(runs["base"][0]).events)
    ax = fig.axes[0]
    assert sorted(str(ln.get_label()) for ln in ax.lines) == sorted(LAYERS)
    assert all(len(_xs(ln)) == 12 for ln in ax.lines)


def test_surgery_raster_two_colours(runs: dict[str, list[Path]]) -> None:
    events = load_run(runs["base"][0]).events
    fig = surgery_raster(events)
    collections = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    assert [c.get_label() for c in collections] == ["prune", "regrow"]
    prune, regrow = (c.get_facecolor()[0] for c in collections)
    assert not np.allclose(prune, regrow)
    nonzero = events[(events["count"] > 0) & (events["action"] == "prune")]
    assert (
        np.asarray(collections[0].get_offsets()).shape[0]
        == nonzero.groupby(["layer", "surgery_step"]).ngroups
    )
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == sorted(LAYERS)


def test_pareto_front_and_plot() -> None:
    acc = np.array([0.7, 0.8, 0.75, 0.9, np.nan])
    flops = np.array([0.2, 0.4, 0.5, 0.9, 0.1])
    assert pareto_front(acc, flops).tolist() == [0, 1, 3]  # (0.75, 0.5) is dominated
    table = pd.DataFrame({"online_accuracy": acc, "flops": flops}, index=list("abcde"))
    fig = accuracy_flops_pareto(table)
    ax = fig.axes[0]
    assert np.asarray(ax.collections[0].get_offsets()).shape[0] == 5
    (front,) = [ln for ln in ax.lines if ln.get_label() == "pareto front"]
    assert _xs(front) == [0.2, 0.4, 0.9]


def _parse(argv: list[str]) -> object:
    import argparse

    parser = argparse.ArgumentParser(prog="esper")
    sub = parser.add_subparsers(dest="command", required=True)
    add_compare_parser(sub)
    add_report_parser(sub)
    return parser.parse_args(argv)


def test_compare_cli(
    runs: dict[str, list[Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [str(runs["base"][0]), str(runs["cheap"][0])]  # few runs: plots take time
    out_json = tmp_path / "cmp.json"
    args = _parse(
        [
            "compare",
            *paths,
            "--by",
            "reward",
            "--json",
            str(out_json),
            "--plots",
            str(tmp_path / "plots"),
        ]
    )
    assert args.func(args) == 0  # type: ignore[attr-defined]
    printed = capsys.readouterr().out
    assert "β=0.5" in printed and "±" in printed
    payload = json.loads(out_json.read_text())
    assert payload["by"] == "reward" and len(payload["groups"]) == 2
    assert payload["groups"][0]["units"] == 2
    assert (tmp_path / "plots" / "pareto_by_group.png").stat().st_size > 0
    plots = list((tmp_path / "plots").iterdir())
    assert len(plots) == 2 + 3 * 2  # no temporary left behind
    assert all(p.suffix == ".png" and p.read_bytes()[:4] == b"\x89PNG" for p in plots)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "{missing}"], "does not exist"),
        (["compare", "{run}", "--by", "nonsense"], "no key 'nonsense'"),
        (["report", "{missing}", "--out", "{out}"], "does not exist"),
    ],
)
def test_cli_errors_exit_2(
    runs: dict[str, list[Path]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    fields = {
        "missing": str(tmp_path / "nope"),
        "run": str(runs["base"][0]),
        "out": str(tmp_path / "r.html"),
    }
    args = _parse([a.format(**fields) for a in argv])
    assert args.func(args) == 2  # type: ignore[attr-defined]
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_surgery_raster_without_prune_or_regrow(runs: dict[str, list[Path]]) -> None:
    events = load_run(runs["base"][0]).events.assign(action="reset")
    fig = surgery_raster(events)
    ax = fig.axes[0]
    assert any(t.get_text() == "no prune or regrow events" for t in ax.texts)
    assert [t.get_text() for t in ax.get_yticklabels()] == sorted(LAYERS)


def test_pareto_limits_ignore_wide_error_bars() -> None:
    table = pd.DataFrame(
        {"online_accuracy": [0.5, 0.8], "online_accuracy_ci": [3.0, 0.01], "flops": [0.1, 1.0]},
        index=["wide", "narrow"],
    )
    low, high = accuracy_flops_pareto(table).axes[0].get_ylim()
    assert 0.3 < low < 0.5 and 0.8 < high < 1.0


def test_compare_refuses_to_pool_incomplete_runs_unless_allowed(
    runs: dict[str, list[Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse
    import json

    from esper.analysis.compare_cli import add_compare_parser

    parser = argparse.ArgumentParser(prog="esper")
    add_compare_parser(parser.add_subparsers(dest="command", required=True))
    killed = runs["base"][0]
    meta = json.loads((killed / "run.json").read_text())
    (killed / "run.json").write_text(json.dumps({**meta, "state": "running"}))
    paths = [str(p) for group in runs.values() for p in group]
    args = parser.parse_args(["compare", *paths])
    assert args.func(args) == 2
    assert f"{killed} did not complete (running)" in capsys.readouterr().err
    args = parser.parse_args(["compare", *paths, "--allow-incomplete"])
    assert args.func(args) == 0
    assert "warning" in capsys.readouterr().out
    assert load_run(killed).state == "running" and not load_run(killed).finished
    assert load_run(runs["base"][1]).state == "unrecorded"  # written before states existed
