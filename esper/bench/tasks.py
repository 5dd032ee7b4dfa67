"""Running a benchmark's independent runs as Ray tasks, with progress, and writing its results.

The experiment benchmarks (``quality``, ``primacy``, ``double-loss``) are many independent
runs: each is a Ray task of one CPU, on the local machine or on a cluster
(:func:`ray_session`), and :func:`gather` waits for them with a progress bar (a line per
tenth without a terminal). :func:`pick_preset`, :func:`interval_cell` and
:func:`write_experiment` are what ``primacy`` and ``double-loss`` share around their runs.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import ray
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from esper.files import atomic_write_bytes, atomic_write_text
from esper.platform.ray_runtime import join_ray, start_local_ray

__all__ = [
    "gather",
    "interval_cell",
    "pick_preset",
    "ray_map",
    "ray_session",
    "remote",
    "write_experiment",
]

P = TypeVar("P")


@contextmanager
def ray_session(address: str | None, num_cpus: int | None) -> Iterator[None]:
    """Ray for the block: joins ``address`` (a cluster) or starts a local one of ``num_cpus``;
    an already-initialised Ray is used as it is and left running."""
    owns = not ray.is_initialized()
    if owns:
        if address:
            join_ray(address)
        else:
            start_local_ray(num_cpus)
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


def pick_preset(name: str | P, presets: Mapping[str, P], kind: str) -> P:
    """The preset called ``name`` (or ``name`` itself when it is one).

    Raises:
        ValueError: an unknown name, listing the valid ones.
    """
    if not isinstance(name, str):
        return name
    if name not in presets:
        raise ValueError(f"unknown {kind} preset {name!r}; valid: {', '.join(presets)}")
    return presets[name]


def interval_cell(cell: Mapping[str, Any] | None, fmt: str = "{:.3f}") -> str:
    """A table cell ``mean [low, high]`` of an interval's JSON (empty when there is none)."""
    if cell is None or cell.get("mean") is None:
        return ""
    low, high = cell["ci"]
    ci = "" if low is None else f" [{fmt.format(low)}, {fmt.format(high)}]"
    return str(fmt.format(cell["mean"])) + ci


def write_experiment(
    json_path: Path, result: Mapping[str, Any], table: str, plot_suffix: str, figure: Any
) -> None:
    """Write ``PATH`` (the JSON), ``PATH.md`` (the table) and ``PATH-<suffix>.png`` (the
    matplotlib ``figure``, closed here)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    atomic_write_text(json_path, json.dumps(result, indent=1, default=float))
    atomic_write_text(json_path.with_suffix(".md"), table)
    atomic_write_bytes(
        json_path.with_name(f"{json_path.stem}-{plot_suffix}.png"), buffer.getvalue()
    )
