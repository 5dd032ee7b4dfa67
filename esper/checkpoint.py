"""Checkpoint files that are safe to open and say when they are damaged.

A checkpoint holds tensors and plain data only (dicts, lists, numbers, strings), never pickled
objects, so it loads with ``torch.load(weights_only=True)``: opening a file cannot run code.
The file wraps its payload with a format tag, a kind (``policy``, ``organism``, ...) and a
BLAKE2b checksum of the payload's bytes, verified on load: a truncated or altered file is
refused with :class:`CheckpointError` instead of yielding silently wrong state.

What could not be loaded safely is refused at save time: the payload is walked before it is
serialized, and anything but tensors, plain containers and scalars is named by its key path
(a walk, where re-loading the serialized bytes with ``weights_only=True`` costs more than the
save itself: 9 ms of a replica's 23 ms restart checkpoint, measured).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from esper.errors import CheckpointError
from esper.files import atomic_write

__all__ = [
    "FORMAT",
    "CheckpointError",
    "load_checkpoint",
    "load_first_sound",
    "previous_path",
    "save_checkpoint",
]

FORMAT = "esper.checkpoint/1"
"""Format tag of the wrapper (bumped when the wrapper itself changes)."""


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=32).hexdigest()


_SCALARS = (str, bytes, int, float, complex, bool, type(None), torch.dtype, torch.device)


def _refuse_objects(value: Any, where: str, kind: str) -> None:
    """Raise unless ``value`` is tensors, dicts (string or number keys), lists, tuples and
    scalars all the way down: a subset of what ``torch.load(weights_only=True)`` accepts."""
    if isinstance(value, torch.Tensor):
        if type(value) not in (torch.Tensor, torch.nn.Parameter):
            raise CheckpointError(
                f"a {kind} checkpoint must hold only tensors and plain data: {where} is a "
                f"{type(value).__name__} (a tensor subclass)"
            )
    elif type(value) in (dict, OrderedDict):
        for key, item in value.items():
            if not isinstance(key, str | int | float | bool | type(None)):
                raise CheckpointError(
                    f"a {kind} checkpoint must hold only tensors and plain data: {where} has a "
                    f"key of type {type(key).__name__}"
                )
            _refuse_objects(item, f"{where}[{key!r}]", kind)
    elif isinstance(value, list | tuple) and type(value) in (list, tuple, torch.Size):
        for i, item in enumerate(value):
            _refuse_objects(item, f"{where}[{i}]", kind)
    elif type(value) not in _SCALARS:
        raise CheckpointError(
            f"a {kind} checkpoint must hold only tensors and plain data: {where} is a "
            f"{type(value).__module__}.{type(value).__qualname__}"
        )


def previous_path(path: str | os.PathLike[str]) -> Path:
    """Where :func:`save_checkpoint` keeps the checkpoint it replaced (``keep_previous``):
    ``replica-0.pt`` → ``replica-0.prev.pt``."""
    target = Path(path)
    return target.with_name(f"{target.stem}.prev{target.suffix}")


def _keep_previous(target: Path) -> None:
    """Hard-link ``target`` as its previous version (a copy where links are not possible),
    atomically, so that the latest checkpoint exists at every moment."""
    if not target.is_file():
        return
    keep = previous_path(target)
    staging = keep.with_name(f".{keep.name}.{os.getpid()}.tmp")
    staging.unlink(missing_ok=True)
    try:
        os.link(target, staging)
    except OSError:
        shutil.copyfile(target, staging)
    os.replace(staging, keep)


def save_checkpoint(
    path: str | os.PathLike[str],
    kind: str,
    payload: Mapping[str, Any],
    keep_previous: bool = False,
) -> Path:
    """Write ``payload`` (tensors and plain data) as a checkpoint of ``kind``, atomically.

    With ``keep_previous`` the checkpoint it replaces stays at :func:`previous_path`, for
    :func:`load_first_sound` to fall back on if the new one is found damaged.

    Raises:
        CheckpointError: the payload holds something other than tensors and plain data (the
            message names where); nothing is written.
    """
    _refuse_objects(dict(payload), "payload", kind)
    buffer = io.BytesIO()
    torch.save(dict(payload), buffer)
    blob = buffer.getvalue()
    wrapper = {
        "format": FORMAT,
        "kind": kind,
        "checksum": _digest(blob),
        "payload": torch.frombuffer(bytearray(blob), dtype=torch.uint8),
    }
    target = Path(path)
    if keep_previous:
        _keep_previous(target)
    atomic_write(target, lambda tmp: torch.save(wrapper, tmp))
    return target


def load_first_sound(
    paths: Sequence[str | os.PathLike[str]], kind: str, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any], Path, list[str]]:
    """The first checkpoint of ``paths`` (newest first) that loads and verifies.

    Returns:
        Its payload, its path, and why each newer one was refused (empty when the first was
        sound): the caller says that it fell back, and on what.

    Raises:
        CheckpointError: none of them is sound (each reason named).
        FileNotFoundError: none of them exists.
    """
    refused: list[str] = []
    existing = [Path(p) for p in paths if Path(p).is_file()]
    if not existing:
        raise FileNotFoundError(f"no checkpoint at {', '.join(str(p) for p in paths)}")
    for path in existing:
        try:
            return load_checkpoint(path, kind, map_location), path, refused
        except CheckpointError as err:
            refused.append(str(err))
    raise CheckpointError("no sound checkpoint: " + "; ".join(refused))


def load_checkpoint(
    path: str | os.PathLike[str], kind: str, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """The payload of the checkpoint of ``kind`` at ``path``, its checksum verified.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: not an Esper checkpoint (or one holding pickled objects), another kind,
            or a checksum mismatch (the file is damaged).
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"no checkpoint at {source}")
    try:
        wrapper = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as err:
        # torch's first sentence only: the rest advises loading without the weights-only
        # guard, which would run whatever code the file carries.
        first = str(err).split(". ", 1)[0].splitlines()[0] if str(err) else ""
        raise CheckpointError(
            f"{source} is not a safe Esper checkpoint (it cannot be loaded as tensors and plain "
            f"data): {type(err).__name__}: {first}"
        ) from err
    if not isinstance(wrapper, dict) or wrapper.get("format") != FORMAT:
        raise CheckpointError(f"{source} is not an Esper checkpoint (format {FORMAT})")
    if wrapper.get("kind") != kind:
        raise CheckpointError(f"{source} is a {wrapper.get('kind')!r} checkpoint, not {kind!r}")
    payload = wrapper.get("payload")
    if not isinstance(payload, torch.Tensor) or payload.dtype != torch.uint8:
        raise CheckpointError(f"{source} has no payload")
    blob = payload.numpy().tobytes()
    if _digest(blob) != wrapper.get("checksum"):
        raise CheckpointError(
            f"{source} is damaged: its payload does not match the checksum it was saved with"
        )
    state = torch.load(io.BytesIO(blob), map_location=map_location, weights_only=True)
    if not isinstance(state, dict):
        raise CheckpointError(f"{source} holds no checkpoint dictionary")
    return state
