"""Atomic file and directory writes: a reader sees the old content or the new, never a half.

Every writer of a file that someone else may read while it is written (run metadata, reports,
checkpoints, event-log parts) goes through here. The content is written to a temporary name in
the target's own directory (``.NAME.<random>.tmp``, unique per call, so concurrent writers never
share one), then renamed over the target with :func:`os.replace`, which is atomic on POSIX
within one filesystem. On any failure, an interrupt included, the temporary is removed and the
target is left as it was.

Files are made ``0o644`` (a temporary from :func:`tempfile.mkstemp` is private, ``0o600``;
reports and run files are meant to be shared) and directories ``0o755``. With ``fsync=True``
the file is flushed to disk before the rename and its directory after it, so the write also
survives a power loss, not only a crash of the process.

This module imports only the standard library: the torch-free and Hydra-free packages
(:mod:`esper.events`, :mod:`esper.analysis`) use it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "DIRECTORY_MODE",
    "FILE_MODE",
    "add_force_flag",
    "atomic_directory",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "directory_problem",
    "fsync_directory",
    "output_problem",
]

FILE_MODE = 0o644
"""Permissions of a file written here: the owner writes, everyone reads."""
DIRECTORY_MODE = 0o755
"""Permissions of a directory written here: the owner writes, everyone reads and enters."""

_TMP_SUFFIX = ".tmp"


def _refuse_directory(target: Path) -> None:
    if target.is_dir():
        raise IsADirectoryError(f"cannot write {target}: it is a directory; give a file path")


def output_problem(path: str | os.PathLike[str], replace: bool = True) -> str | None:
    """Why a file could not be written at ``path`` (``None`` if it could): checked before a
    command works for minutes and then fails to save. Missing parent folders are fine (writers
    create them); the nearest existing ancestor must be a writable folder. With ``replace``
    false, an existing file is a problem too (the command line's ``--force`` sets it)."""
    target = Path(path)
    if target.is_dir():
        return "it is a directory; give a file path"
    if target.exists() and not replace:
        return "it exists; pass --force to replace it"
    if target.exists() and not os.access(target, os.W_OK):
        return "the file exists and is not writable"
    return _ancestor_problem(target.parent)


def _ancestor_problem(folder: Path) -> str | None:
    """Why ``folder`` could not be created or written: its nearest existing ancestor must be a
    writable folder."""
    ancestor = folder
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is a file, not a folder"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"the folder {ancestor} is not writable"
    return None


def directory_problem(path: str | os.PathLike[str]) -> str | None:
    """Why a folder could not be made or written at ``path`` (``None`` if it could): the path
    is a folder or can be created, and the folder that would hold it is writable."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        return "it is a file, not a folder"
    return _ancestor_problem(target)


def add_force_flag(parser: argparse.ArgumentParser) -> None:
    """Give a command that writes files a ``--force`` flag: without it an existing output file
    is refused before any work (:func:`output_problem` with ``replace=False``)."""
    parser.add_argument(
        "--force", action="store_true", help="replace output files that exist already"
    )


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Flush ``directory``'s entries (a rename in it) to disk."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: str | os.PathLike[str],
    write: Callable[[Path], object],
    *,
    mode: int = FILE_MODE,
    fsync: bool = False,
) -> Path:
    """Write a file atomically through ``write``, which writes to the temporary path it is given.

    For writers that take a path: ``atomic_write(p, lambda tmp: frame.to_csv(tmp))``,
    ``pq.write_table(table, tmp)``, ``torch.save(obj, tmp)``. The temporary exists (empty) when
    ``write`` is called; ``write`` may overwrite it but must leave a file at that path. Parent
    directories of ``path`` are created.

    Args:
        path: The file to write.
        write: Called once with the temporary path; its return value is ignored.
        mode: Permissions of the written file.
        fsync: Flush the file and its directory to disk (slower; survives a power loss).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        IsADirectoryError: ``path`` is an existing directory (checked before ``write`` runs).
        Exception: whatever ``write`` raises; the target is then unchanged and no temporary is
            left.
    """
    target = Path(path)
    _refuse_directory(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=_TMP_SUFFIX, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        if fsync:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_directory(target.parent)
    return target


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, mode: int = FILE_MODE, fsync: bool = False
) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), mode=mode, fsync=fsync)


def atomic_write_text(
    path: str | os.PathLike[str],
    text: str,
    *,
    encoding: str = "utf-8",
    mode: int = FILE_MODE,
    fsync: bool = False,
) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write_bytes(path, text.encode(encoding), mode=mode, fsync=fsync)


@contextmanager
def atomic_directory(path: str | os.PathLike[str], *, mode: int = DIRECTORY_MODE) -> Iterator[Path]:
    """Build a new directory under a temporary name and rename it into place when done.

    Fill the directory yielded; when the ``with`` block ends normally it is renamed to
    ``path``, so ``path`` appears complete or not at all. If the block raises, the temporary
    directory and everything in it are removed. Parent directories of ``path`` are created.

    Example:
        >>> with atomic_directory("runs/r1") as tmp:  # doctest: +SKIP
        ...     (tmp / "summary.json").write_text("{}")

    Args:
        path: The directory to create; it must not exist.
        mode: Permissions of the directory (``mkdtemp`` makes it private, ``0o700``).

    Raises:
        FileExistsError: ``path`` exists already (checked before the block runs).
    """
    target = Path(path)
    if target.exists():
        raise FileExistsError(f"cannot create {target}: it exists already")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=_TMP_SUFFIX, dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
