"""The winner's-curse read-out over committed quality JSONs (``benchmarks/selection_noise.py``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

_PATH = Path(__file__).parents[2] / "benchmarks" / "selection_noise.py"
_SPEC = importlib.util.spec_from_file_location("selection_noise", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
noise = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(noise)


def _report(
    chosen: str, paths: list[tuple[int, str, float]], with_paths: bool = True
) -> dict[str, Any]:
    selection = [
        {"run": 0, "variant": "emrakul", "surgeries": s, "validation": v,
         **({"path": p} if with_paths else {})}
        for s, p, v in paths
    ]  # fmt: skip
    gain = {"mean_diff": 0.001, "ci": [-0.001, 0.003]}
    return {
        "chosen": {"emrakul": chosen},
        "selection": selection,
        "between_runs": {"runs": [{"run": 0, "rl_over_imitation": gain}]},
    }


def test_an_in_process_pick_is_matched_by_its_surgeries_and_a_sweeps_by_its_path() -> None:
    in_process = _report(
        "/r/run0/emrakul/surgery-000608.pt",
        [
            (0, "/r/run0/emrakul/surgery-000000.pt", 0.70),
            (304, "/r/run0/emrakul/surgery-000304.pt", 0.71),
            (608, "/r/run0/emrakul/surgery-000608.pt", 0.72),
        ],
        with_paths=False,
    )  # fmt: skip  (older JSONs record no candidate paths)
    (row,) = noise.trainings(in_process, "a.json")
    assert row["chosen_surgeries"] == 608 and row["validation_gain"] == pytest.approx(0.02)
    # a sweep's members share surgery counts: only the path tells its candidates apart
    sweep = _report("/r/run0/emrakul/t_00002-00028.pt", [
        (0, "/r/run0/emrakul/imitation.pt", 0.70),
        (2688, "/r/run0/emrakul/t_00002-00028.pt", 0.73),
        (5088, "/r/run0/emrakul/t_00002-00053.pt", 0.69),
        (5088, "/r/run0/emrakul/t_00001-00053.pt", 0.71),
    ])  # fmt: skip
    (row,) = noise.trainings(sweep, "b.json")
    assert (row["chosen_surgeries"], row["candidates"]) == (2688, 4)
    assert row["validation_gain"] == pytest.approx(0.03)
    with pytest.raises(ValueError, match=r"cannot match the chosen /r/run0/emrakul/gone\.pt"):
        noise.trainings(
            _report("/r/run0/emrakul/gone.pt", [(0, "/r/i.pt", 0.7), (304, "/r/s.pt", 0.71)]),
            "c.json",
        )
