"""The cross-validated stream oracle (``benchmarks/headroom_oracle.py``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_PATH = Path(__file__).parents[2] / "benchmarks" / "headroom_oracle.py"
_SPEC = importlib.util.spec_from_file_location("headroom_oracle", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
oracle = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(oracle)

UNITS = [("a", 0.1), ("b", 0.1)]


def _table(scores: dict[tuple[str, str, int], float]) -> dict[tuple[str, str, float, int], float]:
    return {(c, s, 0.1, seed): v for (c, s, seed), v in scores.items()}


def test_a_pick_is_scored_on_the_seed_that_did_not_choose_it() -> None:
    # "lucky" wins on seed 1 only and "steady" on seed 2: a pick made on one seed is scored on
    # the other.
    acc = _table({
        ("imitation_erk", u, seed): 0.5 for u in "ab" for seed in (1, 2)
    } | {
        ("lucky", u, 1): 0.9 for u in "ab"
    } | {
        ("lucky", u, 2): 0.1 for u in "ab"
    } | {
        ("steady", u, seed): 0.6 for u in "ab" for seed in (1, 2)
    })  # fmt: skip
    picked, reference, picks = oracle.cross_validated(
        acc, ["imitation_erk", "lucky", "steady"], UNITS, (1, 2), per_unit=False
    )
    assert [(p["pick"], p["chosen_on"]) for p in picks] == [("steady", [2]), ("lucky", [1])]
    assert picked == [0.6, 0.6, 0.1, 0.1] and reference == [0.5] * 4


def test_with_more_seeds_each_is_left_out_once() -> None:
    acc = _table({
        (c, u, seed): (0.5 if c == "imitation_erk" else 0.4 + 0.1 * seed)
        for c in ("imitation_erk", "other") for u in "ab" for seed in (1, 2, 3)
    })  # fmt: skip
    picked, _, picks = oracle.cross_validated(
        acc, ["imitation_erk", "other"], UNITS, (1, 2, 3), per_unit=False
    )
    assert [p["chosen_on"] for p in picks] == [[2, 3], [1, 3], [1, 2]]
    # "other" averages 0.65, 0.6 and 0.55 on the seeds that choose: it is picked every time.
    assert [p["pick"] for p in picks] == ["other"] * 3 and picked[0] == 0.5


def test_a_pick_per_stream_follows_each_stream() -> None:
    acc = _table({
        ("imitation_erk", u, seed): 0.5 for u in "ab" for seed in (1, 2)
    } | {
        ("first", "a", seed): 0.7 for seed in (1, 2)
    } | {
        ("first", "b", seed): 0.3 for seed in (1, 2)
    } | {
        ("second", "a", seed): 0.3 for seed in (1, 2)
    } | {
        ("second", "b", seed): 0.7 for seed in (1, 2)
    })  # fmt: skip
    conditions = ["imitation_erk", "first", "second"]
    per, _, picks = oracle.cross_validated(acc, conditions, UNITS, (1, 2), per_unit=True)
    one, _, _ = oracle.cross_validated(acc, conditions, UNITS, (1, 2), per_unit=False)
    assert [p["pick"] for p in picks] == ["first", "second"] * 2
    assert sum(per) / len(per) == 0.7 and sum(one) / len(one) == 0.5
