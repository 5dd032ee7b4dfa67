"""Freed memory kept for the next reading (opt-in): after ``keep_freed_memory`` a reading of a
large host reuses the pages of the last one's buffers instead of faulting fresh ones in; the
environment switch is honoured and refused by name when malformed. The reading cases run in
fresh interpreters (the setting is per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from esper.allocator import ENV, from_environment, keep_freed_memory
from esper.cli import main

_READINGS = """
import json, resource, sys
import torch
from esper import allocator
from esper.workloads.hosts import make_host
from esper.workloads.sensors import NervousSystem
kept = allocator.from_environment()
torch.manual_seed(0)
model = make_host("mlp", (784,), 10, hidden=(1536, 1536))  # readings' blocks above 32 MiB
x, y = torch.randn(32, 784), torch.randint(0, 10, (32,))
system = NervousSystem()
system.prepare(model, x)
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    system.sense(model, x, y)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": faults}))
"""


def _readings(setting: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _READINGS],
        capture_output=True,
        text=True,
        check=True,
        env={  # glibc's own malloc, as it comes
            **{
                k: v
                for k, v in os.environ.items()
                if k != "LD_PRELOAD" and not k.startswith("MALLOC_")
            },
            ENV: setting,
        },
    )
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_reading_reuses_the_last_readings_pages_when_asked() -> None:
    kept = _readings("1")
    if not kept["kept"]:
        pytest.skip("not glibc")
    plain = _readings("0")
    assert not plain["kept"]
    assert plain["faults"][2] > 5_000  # every reading maps its large buffers afresh
    assert kept["faults"][2] < plain["faults"][2] / 5


def test_a_malformed_switch_or_threshold_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV, "yes")
    with pytest.raises(ValueError, match=f"{ENV}='yes'"):
        from_environment()
    assert main(["config", "groups"]) == 2  # refused before any work
    assert f"{ENV}='yes'" in capsys.readouterr().err
    monkeypatch.setenv(ENV, "0")
    assert not from_environment()
    monkeypatch.setenv(ENV, "1")
    monkeypatch.setattr("esper.allocator.keep_freed_memory", lambda: False)  # not glibc
    with pytest.warns(RuntimeWarning, match="did not take the thresholds"):
        assert not from_environment()
    with pytest.raises(ValueError, match="threshold=0"):
        keep_freed_memory(0)
    with pytest.raises(ValueError, match="2\\*\\*31"):
        keep_freed_memory(2**31)
