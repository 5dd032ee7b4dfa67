"""The GPU check driver runs without a GPU too: its benchmarks are skipped by reason, its
profile names the reading's operators, and its scripts parse."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from esper.bench.gpu import GPU_BENCHMARKS, main, profile_sense

_ROOT = Path(__file__).resolve().parents[2]


def test_the_profile_names_the_readings_operators(tmp_path: Path) -> None:
    path = tmp_path / "profile.txt"
    profile_sense(path, torch.device("cpu"), hidden=(32, 16))
    text = path.read_text()
    assert text.startswith("one sense() of the 784-32-16-10 MLP at batch 128 on cpu")
    assert "-- by self_cpu_time_total --" in text and "aten::addmm" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the benchmarks run")
def test_without_a_gpu_the_benchmarks_are_recorded_as_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = lambda path, device: profile_sense(path, device, hidden=(8,))  # noqa: E731
    monkeypatch.setattr("esper.bench.gpu.profile_sense", small)
    results = tmp_path / "perf-gpu.json"
    assert main(["--json", str(results), "--profile", str(tmp_path / "p.txt")]) == 0
    recorded = json.loads(results.read_text())
    assert recorded["results"] == {}
    assert set(recorded["skipped"]) == set(GPU_BENCHMARKS)
    assert all("CUDA" in why for why in recorded["skipped"].values())


@pytest.mark.parametrize("script", ["gpu-checks.sh", "gpu-wheels.sh"])
def test_the_scripts_parse(script: str) -> None:
    subprocess.run(["bash", "-n", str(_ROOT / "benchmarks" / script)], check=True)
