"""Errors that the command line turns into a message and exit status 2.

Torch-free and Hydra-free, so that ``esper.cli`` can catch them without loading either.
"""

from __future__ import annotations

__all__ = ["CheckpointError"]


class CheckpointError(ValueError):
    """A checkpoint file is not an Esper checkpoint of the expected kind, or is damaged."""
