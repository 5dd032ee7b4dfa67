"""The flip-flop detector on scripted mask sequences."""

from __future__ import annotations

import itertools

import pytest
import torch

from esper.workloads.sensors import FlipFlopDetector


def _masks(rows: list[list[int]]) -> list[dict[str, torch.Tensor]]:
    return [{"w": torch.tensor(r, dtype=torch.bool).view(2, 3)} for r in rows]


SCRIPT = [
    # weight: 0  1  2  3  4  5
    [1, 1, 0, 0, 1, 0],
    [0, 1, 1, 0, 1, 0],  # 0 pruned, 2 regrown
    [1, 1, 0, 0, 1, 1],  # 0 regrown, 2 pruned again, 5 regrown
    [0, 1, 0, 1, 0, 1],  # 0 pruned again, 3 regrown, 4 pruned
    [0, 1, 1, 1, 0, 1],  # 2 regrown
]


def test_counts_over_full_history() -> None:
    det = FlipFlopDetector(window=8)
    for m in _masks(SCRIPT):
        det.update(m)
    st = det.layer("w")
    assert st.updates == 5
    assert st.flips.view(-1).tolist() == [3, 0, 3, 1, 1, 1]
    assert st.flip_rate == pytest.approx(9 / (6 * 4))
    # pruned → regrown → pruned: weight 0 (1,0,1,0) and weight 2 (0,1,0,1: regrown then
    # pruned after having been pruned at the start).
    assert st.regrow_repruned.tolist() == [0, 2]
    assert st.regrow_reprune_share == pytest.approx(2 / 6)


def test_window_forgets_old_updates() -> None:
    det = FlipFlopDetector(window=3)
    for m in _masks(SCRIPT):
        det.update(m)
    st = det.layer("w")  # keeps the last three masks
    assert st.updates == 3
    assert st.flips.view(-1).tolist() == [1, 0, 1, 1, 1, 0]
    assert st.regrow_repruned.tolist() == []  # weight 2 is 0,0,1 in the window


def test_single_update_and_errors() -> None:
    det = FlipFlopDetector(window=4)
    det.update(_masks(SCRIPT)[0])
    st = det.layer("w")
    assert st.flip_rate == 0.0 and st.regrow_repruned.numel() == 0
    with pytest.raises(ValueError, match="changed shape"):
        det.update({"w": torch.ones(6, dtype=torch.bool)})
    with pytest.raises(ValueError, match="bool"):
        det.update({"w": torch.ones(2, 3)})
    with pytest.raises(KeyError, match="no mask recorded"):
        det.layer("other")
    with pytest.raises(ValueError, match="at least 3"):
        FlipFlopDetector(window=2)


def test_state_dict_round_trip_continues_exactly() -> None:
    masks = _masks(SCRIPT)
    a = FlipFlopDetector(window=4)
    for m in masks[:3]:
        a.update(m)
    b = FlipFlopDetector(window=4)
    b.load_state_dict(a.state_dict())
    for m in masks[3:]:
        a.update(m)
        b.update(m)
    sa, sb = a.layer("w"), b.layer("w")
    assert torch.equal(sa.flips, sb.flips) and torch.equal(sa.regrow_repruned, sb.regrow_repruned)
    assert sa.flip_rate == sb.flip_rate


def test_reversals_count_changes_undone_within_the_window_not_turnover() -> None:
    det = FlipFlopDetector(window=8)
    seen = []
    for m in _masks(SCRIPT):
        det.update(m)
        seen.append(det.layer("w").reversal_rate)
    # update 3 re-prunes weight 0 (regrown at update 2); update 4 regrows weight 2 (pruned at 2)
    assert seen == [0.0, 0.0, pytest.approx(2 / 6), pytest.approx(1 / 6), pytest.approx(1 / 6)]
    turnover = FlipFlopDetector(window=8)  # each update prunes an old weight, grows a new one
    for row in ([1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1]):
        turnover.update(_masks([row])[0])
    stats = turnover.layer("w")
    assert stats.flip_rate > 0 and stats.reversal_rate == 0.0


def _reference(history: list[torch.Tensor]) -> tuple[list[int], list[int], float]:
    """The definition, mask after mask: flips, oscillating indices, reversal rate."""
    flips = torch.zeros(history[0].numel(), dtype=torch.int64)
    seen_inactive, regrown = ~history[0], torch.zeros_like(history[0])
    oscillating = torch.zeros_like(history[0])
    for previous, mask in itertools.pairwise(history):
        flips += previous != mask
        oscillating |= regrown & ~mask
        regrown |= mask & seen_inactive
        seen_inactive |= ~mask
    reversal = 0.0
    if len(history) > 2:
        now = history[-2] != history[-1]
        reversal = float((now & (flips > now.long())).sum()) / flips.numel()
    return flips.tolist(), oscillating.nonzero().view(-1).tolist(), reversal


@pytest.mark.parametrize("updates", [1, 2, 3, 6])
def test_statistics_equal_the_mask_by_mask_definition_on_random_histories(updates: int) -> None:
    gen = torch.Generator().manual_seed(updates)
    for density in (0.1, 0.5, 0.9):
        history = [torch.rand(200, generator=gen) < density for _ in range(updates)]
        det = FlipFlopDetector(window=8)
        for mask in history:
            det.update({"w": mask.view(10, 20)})
        st = det.layer("w")
        flips, oscillating, reversal = _reference(history)
        assert st.flips.view(-1).tolist() == flips and st.flips.dtype == torch.int64
        assert st.regrow_repruned.tolist() == oscillating
        assert st.reversal_rate == reversal
