"""Intra-op thread control for small networks.

The host networks Esper operates on are small: their matrix products finish faster on one
thread than on two that synchronise (and on a loaded machine two OpenMP threads can be many
times slower). A Ray replica also holds one CPU. Training loops and benchmarks run inside
:func:`one_thread`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["one_thread"]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(1)``, restoring the previous setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
