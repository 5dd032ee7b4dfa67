"""Errors that the command line turns into a message and a non-zero exit status.

Torch-free and Hydra-free, so that ``esper.cli`` can catch them without loading either.
Bad input (:class:`CheckpointError`, and :class:`esper.conf.ConfigError`) exits 2 before any
work; a run that started and could not go on (:class:`RunError`) exits 1, with its run
directory marked ``failed`` and everything written until then kept.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "DivergedError", "EventLogWriteError", "RunError"]


class CheckpointError(ValueError):
    """A checkpoint file is not an Esper checkpoint of the expected kind, or is damaged."""


class RunError(RuntimeError):
    """A run stopped before its end for a reason the message names (exit status 1)."""


class DivergedError(RunError, FloatingPointError):
    """The host's loss became NaN or infinite: training cannot go on."""


class EventLogWriteError(RunError, OSError):
    """An event-log part or manifest could not be written (a full disk, an unwritable
    folder); the rows not written are named, and the writer keeps them buffered."""
