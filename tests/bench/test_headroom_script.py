"""The headroom script's allocation family (``benchmarks/headroom.py``)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from esper.workloads.scalpel.allocation import erk_densities

_PATH = Path(__file__).parents[2] / "benchmarks" / "headroom.py"
_SPEC = importlib.util.spec_from_file_location("headroom_script", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
headroom = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(headroom)

SHAPES = {"l1": (128, 64), "l2": (128, 128), "l3": (10, 128)}


@pytest.mark.parametrize("m", [0.75, 1.0, 1.5, 2.0])
@pytest.mark.parametrize("density", [0.1, 0.05])
def test_first_scaled_moves_the_first_layer_and_keeps_the_budget(m: float, density: float) -> None:
    got = headroom.first_scaled(m)(SHAPES, density, frozenset())
    erk = erk_densities(SHAPES, density, frozenset())
    sizes = {n: math.prod(s) for n, s in SHAPES.items()}
    assert got["l1"] == pytest.approx(erk["l1"] * m)
    assert sum(got[n] * sizes[n] for n in SHAPES) == pytest.approx(density * sum(sizes.values()))
    ratio = got["l2"] / erk["l2"]  # the others share one factor
    assert got["l3"] / erk["l3"] == pytest.approx(ratio)


def test_headroom_seeds_never_touch_a_reported_seed() -> None:
    assert headroom.headroom_seeds("500,501") == (500, 501)  # the validation seeds
    assert headroom.headroom_seeds("510, 511") == (510, 511)
    for bad in ("1000", "510,2000", "0", "", "five"):  # evaluation, held-out, training seeds
        with pytest.raises(SystemExit):
            headroom.headroom_seeds(bad)
