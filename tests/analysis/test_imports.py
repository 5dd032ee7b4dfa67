"""Analysis, the event contract and the file helpers import neither torch nor Hydra nor Ray.

Checked in a fresh interpreter: this test process has torch loaded already (``conftest``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = (
    "esper.analysis",
    "esper.analysis.compare",
    "esper.analysis.detectors",
    "esper.analysis.runs",
    "esper.analysis.stretches",
    "esper.events",
    "esper.files",
)
FORBIDDEN = ("torch", "hydra", "omegaconf", "ray")


def test_light_packages_import_no_heavy_dependency() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for name in {MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in {FORBIDDEN!r} if m in sys.modules)))\n"
    )
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
