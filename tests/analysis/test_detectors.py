"""Strategy detectors on synthetic logs built to contain each pattern, and built not to."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from esper import measures
from esper.analysis.detectors import (
    DETECTORS,
    breathing,
    detect_all,
    flipflop,
    flipflop_offenders,
    ghost,
    lazarus,
    retention,
)
from esper.analysis.strategies_cli import add_strategies_parser
from esper.events.record import SurgicalEvent
from esper.events.schema import EVENTS, METRIC_FIELDS, METRICS
from esper.registry import InvalidParameterError, UnknownNameError

_ID: dict[str, Any] = {"run_id": "run", "trial_id": "t0", "replica_id": 0, "drift": "recurring"}


def _event(step: int, layer: str, action: str, count: int = 0, task: int = 0, **kw: Any) -> dict:
    indices = list(kw.pop("indices", []))
    row = SurgicalEvent(
        **_ID,
        task_index=task,
        sgd_step=10 * step,
        surgery_step=step,
        layer=layer,
        action=action,
        count=count or len(indices),
        indices=indices,
        **kw,
    ).to_row()
    return {**row, "writer_id": "w0", "seq": 0}


def _events(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["seq"] = np.arange(len(df))
    return df


def _metrics(n: int, **columns: Any) -> pd.DataFrame:
    base: dict[str, Any] = {f: np.nan for f in METRIC_FIELDS}
    base.update(_ID, policy="emrakul", wall_time=0.0)
    df = pd.DataFrame([base] * n)
    df["surgery_step"] = np.arange(n)
    df["sgd_step"] = 10 * np.arange(n)
    df["task_index"] = 0
    df["active_params"] = 1000
    df["policy_version"], df["node_id"] = 0, "node-a"
    for name, values in columns.items():
        df[name] = values
    df["writer_id"], df["seq"] = "w1", np.arange(n)
    return df


# --- Lazarus --------------------------------------------------------------------------------


def _lazarus_log(recovered: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    n, burst = 60, 20
    rows = []
    for s in range(n):
        rows.append(_event(s, "fc1", "temperature", 1, tau=5.0 if s == burst else 1.0))
        rows.append(_event(s, "fc1", "prune", 250 if s == burst else 5))
        rows.append(_event(s, "fc1", "regrow", 250 if s == burst else 5))
    wiggle = 0.005 * np.sin(np.arange(n))
    acc = np.where(np.arange(n) <= burst, 0.7, recovered) + wiggle
    acc[burst + 1 : burst + 5] = [0.55, 0.5, 0.55, 0.62]
    return _events(rows), _metrics(n, online_accuracy=acc)


def test_lazarus_detects_burst_drop_and_better_recovery() -> None:
    events, metrics = _lazarus_log(recovered=0.8)
    found = lazarus(events, metrics)
    assert len(found) == 1
    ep = found.iloc[0]
    assert ep["burst_step"] == 20 and ep["trough_step"] == 22
    assert ep["pre_level"] == pytest.approx(0.7, abs=0.01)
    assert ep["trough"] == pytest.approx(0.5, abs=0.01)
    assert ep["recovery_step"] == 25 and ep["steps_to_recover"] == 5
    assert ep["net_gain"] == pytest.approx(0.1, abs=0.01)
    assert ep["burst_tau"] == 5.0 and ep["burst_turnover"] == 500


def test_lazarus_ignores_recovery_below_the_old_level_and_quiet_runs() -> None:
    events, metrics = _lazarus_log(recovered=0.68)
    assert lazarus(events, metrics).empty
    quiet = events[events["surgery_step"] != 20]
    assert lazarus(quiet, _lazarus_log(recovered=0.8)[1]).empty
    with pytest.raises(ValueError, match="tau_factor"):
        lazarus(events, metrics, tau_factor=0.5)


# --- Breathing ------------------------------------------------------------------------------


def test_breathing_finds_the_period_and_novelty_coupling() -> None:
    t = np.arange(120)
    rng = np.random.default_rng(0)
    wave = np.sin(2 * np.pi * t / 20)
    active = (1000 + 200 * wave + rng.normal(0, 10, t.size)).astype(int)
    found = breathing(pd.DataFrame(), _metrics(120, active_params=active, novelty=0.5 + 0.5 * wave))
    assert len(found) == 1
    ep = found.iloc[0]
    assert ep["period"] == pytest.approx(20) and ep["strength"] > 0.8 and ep["acf"] > 0.7
    assert ep["pearson_r"] > 0.9 and ep["pearson_p"] < 1e-6 and ep["spearman_r"] > 0.9
    assert bool(ep["novelty_coupled"]) and ep["source"] == "active_params"


def test_breathing_from_event_densities_when_metrics_lack_active_params() -> None:
    rows = [
        _event(s, layer, "prune", 1, density_after=0.5 + 0.3 * np.sin(2 * np.pi * s / 10))
        for s in range(60)
        for layer in ("fc1", "fc2")
    ]
    found = breathing(_events(rows), _metrics(60).drop(columns="active_params"))
    assert len(found) == 1 and found.iloc[0]["source"] == "density"
    assert found.iloc[0]["period"] == pytest.approx(10)


def test_breathing_no_false_positive_on_noise_or_trend() -> None:
    rng = np.random.default_rng(1)
    noise = (1000 + rng.normal(0, 50, 200)).astype(int)
    novelty = rng.random(200)
    assert breathing(pd.DataFrame(), _metrics(200, active_params=noise, novelty=novelty)).empty
    walk = (1000 + np.cumsum(rng.normal(0, 5, 200))).astype(int)
    assert breathing(pd.DataFrame(), _metrics(200, active_params=walk)).empty


# --- Ghost circuits -------------------------------------------------------------------------


def _ghost_log(return_indices: range) -> pd.DataFrame:
    """Task 0 (weights 0..49), task 1 (weights 500..549), then task 2 ≡ task 0 (period 2)."""
    old, new = list(range(50)), list(range(500, 550))
    rows = [
        _event(1, "fc1", "regrow", task=0, indices=old, density_before=0.05, density_after=0.1),
        _event(10, "fc1", "prune", task=1, indices=old, density_before=0.1, density_after=0.05),
        _event(10, "fc1", "regrow", task=1, indices=new, density_before=0.05, density_after=0.1),
        _event(20, "fc1", "prune", task=2, indices=new, density_before=0.1, density_after=0.05),
        _event(
            20,
            "fc1",
            "regrow",
            task=2,
            indices=list(return_indices),
            density_before=0.05,
            density_after=0.1,
        ),
    ]
    rows += [_event(s, "", "budget", 0, task=s // 10, value=0.1) for s in range(30)]
    return _events(rows)


def test_ghost_detects_regrowth_of_the_circuit_active_last_time() -> None:
    events = _ghost_log(range(50))
    metrics = _metrics(30, task_index=np.arange(30) // 10)
    found = ghost(events, metrics, period=2)
    assert len(found) == 1
    ep = found.iloc[0]
    assert ep["layer"] == "fc1" and ep["distribution"] == "0"
    assert ep["last_seen_step"] == 9 and ep["return_step"] == 20
    assert ep["reactivated"] == 50 and ep["overlap_fraction"] == 1.0
    assert ep["chance"] == pytest.approx(50 / 950) and ep["lift"] > 10 and ep["p_value"] < 1e-10
    mapped = ghost(events, metrics, mapping={0: "A", 1: "B", 2: "A"})
    assert list(mapped["distribution"]) == ["A"]


def test_ghost_no_false_positive_on_fresh_regrowth_or_without_recurrence() -> None:
    metrics = _metrics(30, task_index=np.arange(30) // 10)
    assert ghost(_ghost_log(range(700, 750)), metrics, period=2).empty
    assert ghost(_ghost_log(range(50)), metrics).empty  # tasks 0, 1, 2 never recur
    with pytest.raises(ValueError, match="mapping has no entry"):
        ghost(_ghost_log(range(50)), metrics, mapping={0: "A"})


# --- Flip-flop ------------------------------------------------------------------------------


def _flipflop_log(second_prune: int) -> pd.DataFrame:
    rows = [
        _event(1, "fc1", "prune", indices=range(100)),
        _event(2, "fc1", "regrow", indices=range(10)),
        _event(second_prune, "fc1", "prune", indices=range(10)),
        _event(1, "fc2", "prune", indices=range(50)),
        _event(30, "fc2", "regrow", indices=range(50)),
    ]
    if second_prune == 3:
        rows += [_event(4, "fc1", "regrow", indices=[5]), _event(5, "fc1", "prune", indices=[5])]
    return _events(rows)


def test_flip_rates_per_layer_and_worst_offender() -> None:
    found = flipflop(_flipflop_log(second_prune=3), pd.DataFrame())
    assert list(found["layer"]) == ["fc1"]
    ep = found.iloc[0]
    assert ep["flips"] == 11 and ep["flipping_weights"] == 10 and ep["touched_weights"] == 100
    assert ep["regrow_reprune_share"] == pytest.approx(0.1) and ep["surgeries"] == 5
    assert ep["worst_index"] == 5 and ep["worst_flips"] == 2
    top = flipflop_offenders(_flipflop_log(second_prune=3), top=3)
    assert top["index"].iloc[0] == 5 and list(top["flips"]) == [2, 1, 1]


@pytest.mark.parametrize("seed", range(5))
def test_the_detector_counts_what_the_sensors_measure_defines(seed: int) -> None:
    """From a dense start, within one window, the weights the detector finds flipping in the
    event log are those :func:`esper.measures.regrow_repruned` finds in the mask history."""
    rng = np.random.default_rng(seed)
    history = np.vstack([np.ones((1, 40), bool), rng.random((6, 40)) < 0.5])
    rows = []
    for t in range(1, len(history)):
        was, now = history[t - 1], history[t]
        for action, moved in (("prune", was & ~now), ("regrow", ~was & now)):
            if moved.any():
                rows.append(_event(t, "fc1", action, indices=np.flatnonzero(moved).tolist()))
    flips = flipflop_offenders(_events(rows), window=len(history), top=40)
    assert sorted(flips["index"]) == np.flatnonzero(measures.regrow_repruned(history)).tolist()


def test_flipflop_no_false_positive_outside_the_window() -> None:
    assert flipflop(_flipflop_log(second_prune=40), pd.DataFrame(), window=10).empty
    assert len(flipflop(_flipflop_log(second_prune=40), pd.DataFrame(), window=50)) == 1


# --- Synchronized retention -----------------------------------------------------------------


def _retention_log(tail_fisher: float) -> pd.DataFrame:
    rows = [_event(0, "tail", "regrow", indices=range(20), density_before=0.18, density_after=0.2)]
    for s in range(1, 10):
        rows.append(
            _event(
                s,
                "tail",
                "prune",
                1,
                density_before=0.2,
                density_after=0.198,
                fisher_trace=tail_fisher,
            )
        )
        for layer in ("x", "y"):
            rows.append(
                _event(
                    s, layer, "prune", 100, density_before=0.5, density_after=0.4, fisher_trace=1.0
                )
            )
    return _events(rows)


def test_retention_flags_the_high_fisher_layer_spared_under_pressure() -> None:
    found = retention(_retention_log(tail_fisher=10.0), pd.DataFrame())
    assert list(found["layer"]) == ["tail"]
    ep = found.iloc[0]
    assert ep["pressure_steps"] == 9
    # sizes from the resizing prunes: tail 1 ÷ 0.002 = 500 weights, x and y 100 ÷ 0.1 = 1,000
    assert ep["fisher_per_weight"] == pytest.approx(10.0 / (0.2 * 500))
    assert ep["fisher_ratio"] == pytest.approx(50.0)
    assert ep["rate_ratio"] == pytest.approx(0.05)
    assert ep["kept_weights"] == 20


def test_retention_no_false_positive_when_fisher_is_ordinary() -> None:
    # 0.4 over 100 active weights is twice the others' Fisher per weight; 0.2 is theirs
    assert retention(_retention_log(tail_fisher=0.2), pd.DataFrame()).empty
    assert len(retention(_retention_log(tail_fisher=0.4), pd.DataFrame())) == 1
    # A spared layer ten times larger holds ten times the trace at the same Fisher per weight:
    # not retention (trace ÷ density, the former measure, made it 5× the others)
    sizes = {"tail": 5000, "x": 1000, "y": 1000}
    assert retention(_retention_log(tail_fisher=2.0), pd.DataFrame(), layer_sizes=sizes).empty
    with pytest.raises(ValueError, match="rate_factor"):
        retention(_retention_log(tail_fisher=10.0), pd.DataFrame(), rate_factor=2.0)


# --- Registry and detect_all ----------------------------------------------------------------


def test_detect_all_runs_every_detector_and_validates_parameters() -> None:
    events, metrics = _lazarus_log(recovered=0.8)
    results = detect_all(events, metrics, lazarus={"window": 15})
    assert (
        list(results)
        == DETECTORS.names()
        == [
            "breathing",
            "double_loss",
            "flipflop",
            "ghost",
            "lazarus",
            "retention",
        ]
    )
    assert len(results["lazarus"]) == 1
    assert all(isinstance(df, pd.DataFrame) for df in results.values())
    with pytest.raises(UnknownNameError, match="valid detectors"):
        detect_all(events, metrics, lazarous={})
    with pytest.raises(InvalidParameterError, match="no parameter 'windw'"):
        detect_all(events, metrics, lazarus={"windw": 3})
    empty = detect_all(pd.DataFrame(), pd.DataFrame())
    assert all(df.empty for df in empty.values())


def test_detectors_name_missing_columns() -> None:
    events, metrics = _lazarus_log(recovered=0.8)
    with pytest.raises(ValueError, match="online_accuracy"):
        lazarus(events, metrics.drop(columns="online_accuracy"))


# --- CLI ------------------------------------------------------------------------------------


def _write_run(run: Path) -> None:
    events, metrics = _lazarus_log(recovered=0.8)
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"run_id": run.name}))
    for table, frame, schema in (("events", events, EVENTS), ("metrics", metrics, METRICS)):
        part = run / table / "trial=t0" / "replica=0" / "part-000000.parquet"
        part.parent.mkdir(parents=True)
        records = frame[schema.names].to_dict("records")
        pq.write_table(pa.Table.from_pylist(records, schema=schema), part)


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="esper")
    add_strategies_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


def test_strategies_cli_summarises_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "runs" / "demo"
    _write_run(run)
    out = tmp_path / "strategies.json"
    assert _cli(["strategies", str(run), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in DETECTORS.names():
        assert name in printed
    assert "net gain" in printed
    payload = json.loads(out.read_text())
    assert len(payload["detectors"]["lazarus"]) == 1
    assert payload["detectors"]["lazarus"][0]["burst_step"] == 20


def test_strategies_cli_missing_run_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli(["strategies", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "bare").mkdir()
    assert _cli(["strategies", str(tmp_path / "bare")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_lazarus_ignores_a_drop_explained_by_drift() -> None:
    events, metrics = _lazarus_log(recovered=0.8)
    metrics["task_index"] = (metrics["surgery_step"] >= 21).astype(int)
    assert lazarus(events, metrics).empty
    assert len(lazarus(events, metrics, allow_drift=True)) == 1
