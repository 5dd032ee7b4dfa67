"""Strategy effects: accuracy after an episode against matched quiet windows of the same run."""

from __future__ import annotations

import pandas as pd
import pytest

from esper.analysis.strategy_effects import episode_effects, task_phase


def _metrics(accuracy: list[float], task_length: int) -> pd.DataFrame:
    steps = range(len(accuracy))
    tasks = [i // task_length for i in steps]
    return pd.DataFrame({"surgery_step": steps, "task_index": tasks, "online_accuracy": accuracy})


def test_task_phase_restarts_at_each_task() -> None:
    assert task_phase(_metrics([0.0] * 7, 3)).tolist() == [0, 1, 2, 0, 1, 2, 0]


def test_an_episode_followed_by_a_rise_beats_its_matched_windows() -> None:
    # Four tasks of 10 surgeries at accuracy 0.5; after the episode at phase 2 of task 1
    # (surgery 12) the next 2 surgeries reach 0.8; the matched windows (phase 2 of tasks 0, 2
    # and 3, starting at 2, 22 and 32) stay at 0.5.
    acc = [0.5] * 40
    acc[13], acc[14] = 0.8, 0.8
    effect = episode_effects([(_metrics(acc, 10), [12])], k=2)
    assert effect["episodes"] == 1 and effect["unmatched"] == 0
    assert effect["mean_diff"] == pytest.approx(0.3)
    assert effect["after"] == pytest.approx(0.8) and effect["matched"] == pytest.approx(0.5)


def test_windows_near_another_episode_are_not_controls_and_lonely_episodes_are_counted() -> None:
    acc = [0.5] * 20
    acc[3] = 0.9  # right after the first episode
    effect = episode_effects([(_metrics(acc, 10), [2, 12])], k=1)
    # each episode's only same-phase window is the other's start: no control for either
    assert effect["unmatched"] == 2 and effect["episodes"] == 0
    with pytest.raises(ValueError, match="k=0"):
        episode_effects([], k=0)
