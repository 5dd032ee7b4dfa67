"""``esper bench held-out``: its streams are held out from the suite, its seeds from every
quality seed, every (stream, host) builds, and the report is one summary per host, checked
with fake evaluation runs and no Ray (the real runs: the slow smoke test at the end)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from esper.bench import held_out
from esper.bench.held_out import (
    HOSTS,
    PRESETS,
    HeldOutPreset,
    HeldOutStream,
    conditions,
    novelty,
    on_host,
    run_held_out,
    suite_seeds,
)
from esper.bench.quality_evaluation import compose_config
from esper.bench.quality_presets import PRESETS as QUALITY_PRESETS
from esper.bench.quality_suite import SMALL_STREAMS, Stream
from esper.cli import main

CHECKPOINT = Path(__file__).resolve().parents[2] / "benchmarks/results/quality-emrakul.pt"
SMALL = PRESETS["small"]
EXPECTED = {
    "rotated_gradual": {"drift": ["rotate"], "schedule": ["gradual"]},
    "affine_recurring": {"drift": ["affine"]},
    "mnist1d_labels_gradual": {"schedule": ["gradual"]},
    "digits_noisy_covariate": {"drift": ["noise_burst"]},
}


def _signature(overrides: tuple[str, ...]) -> tuple[str, tuple[str, ...], str]:
    workload = compose_config(overrides).workload
    drifts = tuple(sorted(d.name for d in workload.drifts))
    return workload.dataset.name, drifts, workload.schedule.name


_DEFAULT_BUILDS = ("rotated_gradual", "mnist1d_labels_gradual")
"""Streams built on every host in the default suite (one per source); the rest with -m slow."""


def test_every_held_out_stream_has_a_drift_or_schedule_no_suite_stream_has() -> None:
    suite = [_signature(s.overrides) for p in QUALITY_PRESETS.values() for s in p.streams]
    drifts = {d for _, ds, _ in suite for d in ds}
    schedules = {schedule for _, _, schedule in suite}
    assert {s.stream.name for s in SMALL.streams} == set(EXPECTED)
    for held in SMALL.streams:
        source, own_drifts, schedule = _signature(held.stream.overrides)
        assert all((source, own_drifts, schedule) != other for other in suite)
        assert source in ("digits", "mnist1d")  # image-shaped: the CNN takes them
        new = {"drift": sorted(set(own_drifts) - drifts)} if set(own_drifts) - drifts else {}
        if schedule not in schedules:
            new["schedule"] = [schedule]
        assert new == EXPECTED[held.stream.name] == novelty(held.stream), held.stream.name
        assert held.stream.steps == 1500 and held.why
    for short, full in zip(PRESETS["tiny"].streams, SMALL.streams, strict=True):
        assert novelty(short.stream) == novelty(full.stream)
    assert novelty(SMALL_STREAMS[0]) == {}


@pytest.mark.parametrize("host", list(HOSTS))
@pytest.mark.parametrize(
    "held",
    [h if h.stream.name in _DEFAULT_BUILDS else pytest.param(h, marks=pytest.mark.slow)
     for h in SMALL.streams],
    ids=lambda h: h.stream.name,
)  # fmt: skip
def test_every_stream_builds_an_organism_on_every_host(held: HeldOutStream, host: str) -> None:
    from torch import nn

    from esper.workloads.factory import build_organism

    cfg = compose_config([*on_host(held.stream, HOSTS[host]).overrides, "policy=static"])
    organism = build_organism(cfg)
    modules = list(organism.host.modules())
    assert any(isinstance(m, (nn.Conv1d, nn.Conv2d)) for m in modules) == (host == "cnn")
    widths = [m.out_features for m in modules if isinstance(m, nn.Linear)]
    assert widths == {"mlp": [128, 128, 10], "cnn": [64, 10], "wide_mlp": [256, 256, 10]}[host]


def test_seeds_are_disjoint_from_every_quality_seed_and_bad_presets_are_refused() -> None:
    used = suite_seeds()
    assert {0, 1, 12, 100, 212, 500, 502, 1000, 1009} <= used
    for preset in PRESETS.values():
        assert not set(preset.seeds) & used
    for seeds, message in (((1003,), "seeds of the quality suite"), ((7,), "quality suite"),
                           ((), "no seeds")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            dataclasses.replace(SMALL, seeds=seeds)
    with pytest.raises(ValueError, match=r"unknown hosts.*valid: mlp, cnn, wide_mlp"):
        dataclasses.replace(SMALL, hosts=("resnet",))
    with pytest.raises(ValueError, match="unknown baselines"):
        dataclasses.replace(SMALL, baselines=("magic",))


def test_conditions_run_dense_once_and_each_surgeon_at_each_density() -> None:
    conds = conditions(SMALL)
    assert [(c.label, c.density) for c in conds] == [("dense", 1.0)] + [
        (label, d) for d in (0.1, 0.05) for label in ("rigl", "rigl_continual", "set", "emrakul")
    ]
    horizons = {c.label: c.horizon for c in conds}
    assert (horizons["rigl"], horizons["rigl_continual"]) == (0.75, 10.0)
    assert {c.policy for c in conds if c.label == "rigl_continual"} == {"rigl"}
    assert [c.variant for c in conds if c.variant] == ["emrakul", "emrakul"]
    assert len(conds) * len(SMALL.hosts) * len(SMALL.streams) * len(SMALL.seeds) == 540


# A small preset for the faked runs: the digits streams only (they build quickly), two hosts.
FAKE = HeldOutPreset("fake", tuple(s for s in PRESETS["tiny"].streams
                                   if not s.stream.name.startswith("mnist1d")),
                     hosts=("mlp", "cnn"), seeds=(2000, 2001, 2002))  # fmt: skip
GAIN = {"mlp": 0.02, "cnn": -0.01}
"""Emrakul's made-up advantage over every baseline, per host."""


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def evaluate(self, stream: Stream, policy: str, density: float, seed: int,
                 checkpoint: str | None = None, switches: tuple[Any, ...] = (),
                 horizon: float = 0.75, allocation: str | None = None
                 ) -> dict[str, Any]:  # fmt: skip
        host = "cnn" if "workload.host.name=cnn" in stream.overrides else "mlp"
        self.calls.append({"stream": stream, "policy": policy, "density": density, "seed": seed,
                           "checkpoint": checkpoint, "horizon": horizon, "host": host})  # fmt: skip
        acc = 0.5 + 0.01 * (seed % 3) + 0.03 * len(stream.name) % 0.1
        acc += GAIN[host] if policy == "emrakul" else 0.0
        metrics = {"online_accuracy": acc, "task_end_accuracy": acc, "recovery_steps": 10.0,
                   "plasticity": 0.0, "final_density": density, "flops": density,
                   "reversal_rate": 0.0}  # fmt: skip
        return {"metrics": metrics, "task_end": [acc, acc], "diverged": seed == 2002}


@pytest.fixture
def faked(monkeypatch: pytest.MonkeyPatch) -> _Recorder:
    recorder = _Recorder()
    monkeypatch.setattr(held_out, "ray_session", lambda *_: contextlib.nullcontext())
    monkeypatch.setattr(held_out, "remote", lambda fn: SimpleNamespace(remote=fn))
    monkeypatch.setattr(
        held_out, "gather", lambda refs, keys, *_: dict(zip(keys, refs, strict=True))
    )
    monkeypatch.setattr(held_out, "evaluate_run", recorder.evaluate)
    return recorder


def test_the_report_has_one_summary_per_host_paired_by_stream_and_seed(
    faked: _Recorder, tmp_path: Path
) -> None:
    out = tmp_path / "held-out.json"
    with (tmp_path / "log.txt").open("w") as log:
        report = run_held_out(FAKE, CHECKPOINT, out, console=Console(file=log))
    assert json.loads(out.read_text()) == report
    streams = {s.stream.name: s.stream for s in FAKE.streams}
    names = list(streams)
    per_host = len(conditions(FAKE)) * len(names) * len(FAKE.seeds)
    assert len(faked.calls) == len(report["runs"]) == 2 * per_host
    for call in faked.calls:
        assert call["seed"] in FAKE.seeds
        assert call["checkpoint"] == (str(CHECKPOINT) if call["policy"] == "emrakul" else None)
        own = streams[call["stream"].name].overrides
        assert call["stream"].overrides == (*own, *HOSTS[call["host"]].overrides)
    assert {c["horizon"] for c in faked.calls if c["policy"] == "rigl"} == {0.75, 10.0}
    assert report["checkpoint"] == str(CHECKPOINT) and report["seeds"] == [2000, 2001, 2002]
    assert {"machine", "command", "wall_s"} <= set(report)
    assert "--checkpoint" in report["command"]
    assert [s["held_out"] for s in report["streams"]] == [EXPECTED[n] for n in names]
    assert set(report["hosts"]) == {"mlp", "cnn"}
    for host, summary in report["hosts"].items():
        rows = {(r["policy"], r["density"], r["stream"]) for r in summary["results"]}
        assert {("emrakul", 0.05, n) for n in [*names, "suite"]} <= rows
        assert ("dense", 1.0, "suite") in rows
        suite = [p for p in summary["paired"] if p["stream"] == "suite" and
                 p["metric"] == "online_accuracy" and p["vs_density"] == p["density"]]  # fmt: skip
        assert {(p["vs"], p["density"]) for p in suite} == {
            (b, d) for b in FAKE.baselines for d in FAKE.densities
        }
        for p in suite:  # this host's own runs only: n = streams × seeds
            assert p["mean_diff"] == pytest.approx(GAIN[host]) and p["n"] == len(names) * 3
    assert len(report["diverged"]) == 2 * per_host // 3
    markdown = out.with_suffix(".md").read_text()
    assert "## mlp: the training host" in markdown and "## cnn: a CNN" in markdown
    assert markdown.count("| emrakul − vs |") == 2 and "rotated_gradual" in markdown


def test_a_missing_checkpoint_or_unwritable_output_is_refused_before_any_work(
    faked: _Recorder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.pt"
    out = tmp_path / "h.json"
    with pytest.raises(ValueError, match=f"--checkpoint {missing} does not exist"):
        run_held_out(FAKE, missing, out)
    assert main(["bench", "held-out", "--checkpoint", str(missing), "--json", str(out)]) == 2
    assert "nowhere.pt does not exist" in capsys.readouterr().err
    with pytest.raises(ValueError, match="cannot write"):
        run_held_out(FAKE, CHECKPOINT, tmp_path)  # a folder
    suite_only = dataclasses.replace(FAKE, streams=(HeldOutStream(SMALL_STREAMS[0], "none"),))
    with pytest.raises(ValueError, match="nothing about it is held out"):
        run_held_out(suite_only, CHECKPOINT, out)
    assert not faked.calls and sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_tiny_preset_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "held-out.json"
    argv = ["bench", "held-out", "--preset", "tiny", "--checkpoint", str(CHECKPOINT),
            "--json", str(out), "--num-cpus", "2"]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "esper", *argv], capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert len(report["runs"]) == 3 * len(HOSTS) * 4 * 2  # dense, rigl, emrakul
    assert set(report["hosts"]) == set(HOSTS) and out.with_suffix(".md").is_file()
