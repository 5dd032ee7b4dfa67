"""The example notebook runs top to bottom on a small synthetic run (executed with nbclient)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.analysis._synthetic_runs import write_run

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "explore_events.ipynb"


def _text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def test_notebook_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = write_run(tmp_path / "run", replicas=2, steps=24, drift_every=8)
    monkeypatch.setenv("ESPER_RUN", str(run))
    # The kernel must import this checkout's esper with this interpreter ("python" in the
    # kernelspec is replaced by sys.executable by jupyter_client).
    paths = [str(NOTEBOOK.parents[1]), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    text = _text(nb)
    assert f"run: {run}" in text
    assert f"kernel: {sys.executable} prefix: {sys.prefix}" in text
    # 2 replicas × 24 surgeries × 3 layers × (prune, regrow); one metric row per surgery.
    assert f"{2 * 24 * 3 * 2} events, {2 * 24} metric rows" in text
    assert "Traceback" not in text
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 4  # accuracy, density, raster, Pareto
