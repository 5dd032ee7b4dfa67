"""Running a benchmark's independent runs as Ray tasks, with progress.

The experiment benchmarks (``quality``, ``primacy``, ``double-loss``) are many independent
runs: each is a Ray task of one CPU, on the local machine or on a cluster
(:func:`ray_session`), and :func:`gather` waits for them with a progress bar (a line per
tenth without a terminal).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import ray
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["gather", "ray_map", "ray_session", "remote"]


@contextmanager
def ray_session(address: str | None, num_cpus: int | None) -> Iterator[None]:
    """Ray for the block: joins ``address`` (a cluster) or starts a local one of ``num_cpus``;
    an already-initialised Ray is used as it is and left running."""
    owns = not ray.is_initialized()
    if owns:
        ray.init(address=address, num_cpus=None if address else num_cpus,
                 include_dashboard=False, log_to_driver=False)  # fmt: skip
    try:
        yield
    finally:
        if owns:
            ray.shutdown()


def remote(fn: Callable[..., Any]) -> Any:
    """``fn`` as a Ray task of one CPU, retried once if its worker dies."""
    return ray.remote(num_cpus=1, max_retries=1)(fn)


def gather(refs: list[Any], keys: list[Any], label: str, console: Console) -> dict[Any, Any]:
    """Wait for every task with a progress bar; returns ``{key: result}``."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    index = {ref: key for ref, key in zip(refs, keys, strict=True)}
    out: dict[Any, Any] = {}
    pending = list(refs)
    step = max(1, len(refs) // 10)
    started = time.perf_counter()
    with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
        bar = progress.add_task(label, total=len(refs))
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            out[index[done[0]]] = ray.get(done[0])
            progress.update(bar, advance=1)
            if not console.is_terminal and (len(out) % step == 0 or not pending):
                elapsed = time.perf_counter() - started
                console.print(f"{label}: {len(out)}/{len(refs)} done ({elapsed:.0f} s)")
    return out


def ray_map(
    fn: Callable[..., Any],
    jobs: Sequence[tuple[Any, ...]],
    label: str,
    address: str | None,
    num_cpus: int | None,
    console: Console,
) -> list[Any]:
    """``[fn(*job) for job in jobs]``, each a Ray task, results in the order of ``jobs``."""
    with ray_session(address, num_cpus):
        task = remote(fn)
        refs = [task.remote(*job) for job in jobs]
        out = gather(refs, list(range(len(refs))), label, console)
    return [out[i] for i in range(len(refs))]
