"""Freed memory kept for the next reading: glibc's ``malloc`` tuned for living networks.

An organism's reading allocates buffers the size of its network several times over (the
per-weight sums, the per-sample products), reads them once and frees them, every surgery.
glibc serves a block above its mmap threshold (128 KiB at start, raised on its own to at most
32 MiB) with a fresh mapping and gives it back to the kernel when freed, and it trims the top
of its heap once more than its trim threshold is free there: so each reading of a large host
faults its buffers' pages in again, one by one. On this project's CPU that was over a quarter
of a reading of the 784-4096-4096-10 MLP at batch 128 (``sense_vs_step_cpu``: 2.00 training
steps, 1.43 with freed memory kept; ``benchmarks/results/perf-cpu.json`` and
``perf-cpu-kept-memory.json``).

:func:`keep_freed_memory` raises both thresholds (``mallopt``'s ``M_MMAP_THRESHOLD`` and
``M_TRIM_THRESHOLD``), so that freed blocks stay in the process's heap for the next reading.
Measured by ``benchmarks/kept_memory.py`` (``benchmarks/results/kept-memory.json``): the third
and fourth readings of a 784-2048-2048-10 MLP fault 3 and 1 pages in instead of 33,000 and
18,000 (a smaller host's case is tested) and take 0.10 s instead of 0.13, at a peak of 551 MiB
instead of 543. It is opt-in, because a heap that keeps large blocks can fragment: a loop
freeing a 64 MiB buffer while it keeps a small tensor per round ends at 1,500 MiB resident
instead of 220. With ``ESPER_KEEP_FREED_MEMORY=1`` in their environment, Esper's processes that
run organisms (the ``esper`` command, replica actors, the benchmark runner) call it once at
start (:func:`from_environment`); on a Ray cluster, pass the variable in the job's
``runtime_env``. Elsewhere than on glibc it does nothing; an allocator preloaded instead
(jemalloc or tcmalloc, which PyTorch's CPU performance guide recommends) keeps freed memory
while limiting fragmentation on its own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import warnings

__all__ = ["ENV", "from_environment", "keep_freed_memory"]

ENV = "ESPER_KEEP_FREED_MEMORY"
"""Set to ``1`` for Esper's processes to keep freed memory (:func:`from_environment`)."""

_M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 1 << 30  # 1 GiB: larger blocks are rare enough to map afresh


def keep_freed_memory(threshold: int = _THRESHOLD) -> bool:
    """Keep freed blocks up to ``threshold`` bytes in the heap (glibc only); returns whether
    both thresholds were set (``False`` off glibc).

    Raises:
        ValueError: ``threshold`` not in ``[1, 2**31 - 1]`` (a C ``int``).
    """
    if not 1 <= threshold < 2**31:
        raise ValueError(f"threshold={threshold} must be in [1, 2**31 - 1] bytes")
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc's, absent from musl and others
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, threshold)
    )


def from_environment() -> bool:
    """:func:`keep_freed_memory` where ``ESPER_KEEP_FREED_MEMORY=1``; returns whether it ran
    and took effect (a :class:`RuntimeWarning` says so where it was asked for and did not).

    Raises:
        ValueError: the variable is set to anything but ``0`` or ``1``.
    """
    value = os.environ.get(ENV, "0").strip() or "0"
    if value not in ("0", "1"):
        raise ValueError(f"{ENV}={value!r}: set it to 1 (keep freed memory) or 0 (do not)")
    if value == "0":
        return False
    if not keep_freed_memory():
        warnings.warn(
            f"{ENV}=1, but this C library's malloc did not take the thresholds (not glibc?): "
            "freed memory is returned as usual",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True
