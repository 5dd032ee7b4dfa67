"""The member trainable's checkpoints: a damaged latest one falls back on the trial's previous
one, and says which file it refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from esper.checkpoint import CheckpointError, save_checkpoint
from esper.platform.trainable import CHECKPOINT_FILE, KIND, load_member_checkpoint


def _trial(tmp_path: Path) -> list[Path]:
    dirs = []
    for i in range(3):
        directory = tmp_path / "member_trainable_x" / f"checkpoint_{i:06d}"
        directory.mkdir(parents=True)
        save_checkpoint(directory / CHECKPOINT_FILE, KIND, {"iteration": i})
        dirs.append(directory)
    return dirs


def test_the_latest_sound_checkpoint_is_used(tmp_path: Path) -> None:
    dirs = _trial(tmp_path)
    state, used, refused = load_member_checkpoint(dirs[2])
    assert (state["iteration"], used.parent, refused) == (2, dirs[2], [])


def test_a_damaged_checkpoint_falls_back_on_the_previous_one(tmp_path: Path) -> None:
    dirs = _trial(tmp_path)
    (dirs[2] / CHECKPOINT_FILE).write_bytes(b"damaged")
    state, used, refused = load_member_checkpoint(dirs[2])
    assert (state["iteration"], used.parent) == (1, dirs[1])
    assert len(refused) == 1 and "checkpoint_000002" in refused[0]
    # never a later one than Tune asked for, and an error when nothing is sound
    state, _, _ = load_member_checkpoint(dirs[1])
    assert state["iteration"] == 1
    for d in dirs[:2]:
        (d / CHECKPOINT_FILE).write_bytes(b"damaged")
    with pytest.raises(CheckpointError, match="no sound checkpoint"):
        load_member_checkpoint(dirs[2])
