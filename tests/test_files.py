"""Atomic writes: the target holds the old content or the new, and no temporary is left."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from esper.files import (
    atomic_directory,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
)


class _Boom(Exception):
    pass


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_text_and_bytes_replace_the_target_leaving_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "report.json"  # parents are created
    assert atomic_write_text(target, "first ✓") == target
    assert target.read_text(encoding="utf-8") == "first ✓"
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert os.listdir(target.parent) == ["report.json"]


def test_written_files_are_world_readable(tmp_path: Path) -> None:
    # mkstemp makes its file 0o600; a report or run file must be readable by others.
    text = atomic_write_text(tmp_path / "a.txt", "x")
    assert _mode(text) == 0o644
    via_callback = atomic_write(tmp_path / "b.csv", lambda tmp: tmp.write_text("x"))
    assert _mode(via_callback) == 0o644
    assert _mode(atomic_write_text(tmp_path / "c.txt", "x", mode=0o600)) == 0o600


def test_callback_gets_a_fresh_temporary_beside_the_target(tmp_path: Path) -> None:
    seen: list[Path] = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        assert tmp.parent == tmp_path and tmp.exists()
        tmp.write_bytes(b"data")

    atomic_write(tmp_path / "out.bin", write)
    atomic_write(tmp_path / "out.bin", write)  # over an existing target
    assert seen[0] != seen[1]  # unique per call: concurrent writers never share a temporary
    assert all(p.name.startswith(".out.bin.") and p.name.endswith(".tmp") for p in seen)
    assert (tmp_path / "out.bin").read_bytes() == b"data"
    assert os.listdir(tmp_path) == ["out.bin"]


@pytest.mark.parametrize("error", [_Boom, KeyboardInterrupt])
def test_failure_leaves_the_target_unchanged_and_no_temporary(
    tmp_path: Path, error: type[BaseException]
) -> None:
    target = tmp_path / "run.json"
    target.write_text("old")

    def write(tmp: Path) -> None:
        tmp.write_text("half a new fi")
        raise error

    with pytest.raises(error):
        atomic_write(target, write)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["run.json"]


def test_failure_without_a_previous_target_leaves_nothing(tmp_path: Path) -> None:
    def write(tmp: Path) -> None:
        raise _Boom

    with pytest.raises(_Boom):
        atomic_write(tmp_path / "new.txt", write)
    assert os.listdir(tmp_path) == []


def test_a_directory_target_is_refused_before_writing(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    calls: list[Path] = []
    with pytest.raises(IsADirectoryError, match=str(target)):
        atomic_write(target, calls.append)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        atomic_write_text(target, "x")
    assert calls == []
    assert os.listdir(tmp_path) == ["out"] and os.listdir(target) == []


def test_fsync_writes_the_same(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "durable.txt", "kept", fsync=True)
    assert target.read_text() == "kept" and os.listdir(tmp_path) == ["durable.txt"]


def test_directory_appears_complete_and_shared(tmp_path: Path) -> None:
    target = tmp_path / "runs" / "r1"
    with atomic_directory(target) as tmp:
        assert tmp.parent == target.parent and not target.exists()
        (tmp / "config.yaml").write_text("a: 1")
        (tmp / "demo.json").write_text("{}")
    assert sorted(os.listdir(target)) == ["config.yaml", "demo.json"]
    assert os.listdir(target.parent) == ["r1"]
    assert _mode(target) == 0o755


def test_directory_failure_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "r1"
    with pytest.raises(_Boom), atomic_directory(target) as tmp:
        (tmp / "config.yaml").write_text("a: 1")
        raise _Boom
    assert os.listdir(tmp_path) == []


def test_existing_directory_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "r1"
    target.mkdir()
    (target / "keep").write_text("mine")
    with pytest.raises(FileExistsError, match=str(target)), atomic_directory(target):
        pytest.fail("the block must not run")
    assert os.listdir(target) == ["keep"] and os.listdir(tmp_path) == ["r1"]


def test_output_problem_names_what_would_fail(tmp_path: Path) -> None:
    from esper.files import output_problem

    assert output_problem(tmp_path / "new" / "deep" / "r.json") is None  # folders are created
    assert output_problem(tmp_path) == "it is a directory; give a file path"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert output_problem(blocker / "r.json") == f"{blocker} is a file, not a folder"
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root writes anywhere: nothing to check then
            assert output_problem(locked / "r.json") == f"the folder {locked} is not writable"
    finally:
        locked.chmod(0o700)
