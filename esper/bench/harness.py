"""Timing harness and registry of performance benchmarks.

Each benchmark measures our implementation and an anchor (a plain training step, BackPACK,
``torch.nn.utils.prune``, rigl-torch, ...) in the same process, alternating the two so that
machine noise affects both alike, and reports the median of repeated runs and their ratio
against a goal. Results are written as JSON with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from esper.files import atomic_write_text, output_problem
from esper.registry import Registry

__all__ = [
    "PERF",
    "BenchResult",
    "SkipBenchmark",
    "Timer",
    "alternating_median_times",
    "cuda_median_times",
    "machine_info",
    "median_time",
    "paired_against",
    "paired_median_times",
    "pooled",
    "script_output",
    "write_report",
    "write_results",
]


class SkipBenchmark(Exception):
    """A benchmark cannot run here (e.g. it needs a CUDA GPU); the message says why."""


@dataclass(frozen=True)
class BenchResult:
    """One benchmark's measurement.

    Attributes:
        ours_s: Median seconds of our implementation (or the measured quantity for
            benchmarks that are not ratios of times, e.g. a fitted exponent).
        anchor: What we compare against, in words.
        anchor_s: Median seconds of the anchor.
        ratio: The number the goal applies to (usually ``ours_s / anchor_s``).
        goal: The target for ``ratio``.
        direction: ``"<="`` if ``ratio`` must be at most ``goal``, ``">="`` if at least.
        notes: Anything a reader needs to interpret the number (sizes, repeats).
        limit: The physical limit of ``ratio``, measured or computed in the same run, where the
            goal is set relative to it (``None`` otherwise): a floor for a ``"<="`` goal (the
            least a ratio of times can be), a ceiling for a ``">="`` one (the most a speed-up
            can be).
    """

    ours_s: float
    anchor: str
    anchor_s: float
    ratio: float
    goal: float
    direction: Literal["<=", ">="]
    notes: str = ""
    limit: float | None = None

    @property
    def met(self) -> bool:
        """Whether ``ratio`` meets ``goal``."""
        return self.ratio <= self.goal if self.direction == "<=" else self.ratio >= self.goal

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["met"] = self.met
        return data


PERF: Registry[Callable[[], BenchResult]] = Registry("benchmark")


def median_time(fn: Callable[[], object], repeats: int = 20, warmup: int = 3) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_median_times(
    ours: Callable[[], object], anchor: Callable[[], object], repeats: int = 20, warmup: int = 3
) -> tuple[float, float]:
    """Median seconds of ``ours`` and ``anchor``, timed alternately in the same process."""
    t_ours, t_anchor = alternating_median_times([ours, anchor], repeats, warmup)
    return t_ours, t_anchor


def alternating_median_times(
    fns: Sequence[Callable[[], object]], repeats: int = 20, warmup: int = 3
) -> list[float]:
    """Median seconds of each of ``fns``, called in turn ``repeats`` times (after ``warmup``
    rounds), so that machine noise affects them alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, seconds in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - start)
    return [statistics.median(seconds) for seconds in times]


Timer = Callable[[list[Callable[[], object]]], list[float]]
"""Median seconds of each of a list of functions (:func:`alternating_median_times`,
:func:`cuda_median_times`)."""


def cuda_median_times(
    fns: list[Callable[[], object]], repeats: int = 10, warmup: int = 3
) -> list[float]:
    """Median seconds of each of ``fns`` on CUDA, called in turn, synchronised around each."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    torch.cuda.synchronize()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, seconds in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            seconds.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def machine_info() -> dict[str, Any]:
    """The machine a result was measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu
            )
    except OSError:
        pass
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **_commit(),
    }
    return info


def _commit() -> dict[str, Any]:
    """The commit the measured code came from, and whether tracked files differed from it."""

    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                                 cwd=Path(__file__).resolve().parent)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""

    head = git("rev-parse", "HEAD")
    changed = bool(git("status", "--porcelain", "--untracked-files=no")) if head else None
    return {"commit": head or "unknown", "uncommitted_changes": changed}


def write_results(path: Path, results: dict[str, BenchResult], skipped: dict[str, str]) -> None:
    """Record ``results`` and ``skipped`` in ``path`` atomically, keeping the other benchmarks'.

    The file is ``{"machine": ..., "results": ..., "skipped": ...}``. ``machine`` is this run's;
    every result carries the machine it was measured on (an entry of an earlier file without
    one gets that file's ``machine``), so results of runs on different days or machines can
    share a file. A benchmark measured now replaces its entry and leaves ``skipped``; one
    skipped now keeps an earlier result (measured where it could run) and is listed as skipped.

    Raises:
        ValueError: ``path`` exists but is not a results file (fix or remove it).
    """
    machine = machine_info()
    earlier = _read_results(path)
    recorded: dict[str, Any] = {
        name: {**entry, "machine": entry.get("machine", earlier.get("machine", {}))}
        for name, entry in earlier.get("results", {}).items()
    }
    recorded.update({name: {**r.to_json(), "machine": machine} for name, r in results.items()})
    still_skipped = {k: v for k, v in earlier.get("skipped", {}).items() if k not in results}
    payload = {
        "machine": machine,
        "results": dict(sorted(recorded.items())),
        "skipped": dict(sorted({**still_skipped, **skipped}.items())),
    }
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def _read_results(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{path} is not a benchmark results file ({err}); fix or remove it"
        ) from err
    if not isinstance(data, dict) or not isinstance(data.get("results", {}), dict):
        raise ValueError(f"{path} is not a benchmark results file (no results object)")
    return data


def processes_at_once(
    target: Callable[..., None], args: Sequence[tuple[Any, ...]], timeout: float
) -> list[Any]:
    """Run ``target(*a, start, out)`` for each ``a`` of ``args`` in its own spawned process and
    return what each put on ``out``, in the order they finished. ``start`` is a barrier of all
    the processes: each times its work after it, so they all work at once (one per core is how
    the benchmarks measure what the machine itself gives)."""
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(len(args)), ctx.Queue()
    workers = [ctx.Process(target=target, args=(*a, start, out)) for a in args]
    for worker in workers:
        worker.start()
    try:
        return [out.get(timeout=timeout) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=60)


def pooled(
    run: Callable[[Any], tuple[Any, ...]], jobs: Sequence[Any], workers: int, every: int = 12
) -> Iterator[tuple[Any, ...]]:
    """``run(job)`` for every job in a pool of ``workers`` forked processes, yielded as they
    finish, with a progress line every ``every`` jobs (the benchmark scripts' paired runs)."""
    started = time.perf_counter()
    with mp.get_context("fork").Pool(workers) as pool:
        for n, result in enumerate(pool.imap_unordered(run, jobs), 1):
            if n % every == 0:
                print(f"{n}/{len(jobs)} runs ({time.perf_counter() - started:.0f} s)", flush=True)
            yield result


def paired_against(
    scores: Mapping[str, Mapping[Any, float]], reference: str
) -> dict[str, dict[str, Any]]:
    """Per condition of ``scores`` (condition → unit → score), its mean over the reference's
    units and its paired difference from ``reference`` with a BCa interval
    (:func:`esper.analysis.intervals.paired_interval`), printed a line each."""
    from esper.analysis.intervals import paired_interval

    units = sorted(scores[reference])
    base = [scores[reference][u] for u in units]
    rows = {}
    for label, by_unit in scores.items():
        values = [by_unit[u] for u in units]
        diff = paired_interval(values, base)
        rows[label] = {"mean": sum(values) / len(values),
                       "diff": {"mean": diff.mean, "low": diff.low, "high": diff.high}}  # fmt: skip
        print(f"{label:34s} {rows[label]['mean']:.4f}  Δ {reference} {diff.mean:+.4f} "
              f"[{diff.low:+.4f}, {diff.high:+.4f}]")  # fmt: skip
    return rows


def script_output(description: str) -> tuple[Path, dict[str, Any]]:
    """A benchmark script's one argument, the JSON path it writes, refused before any work when
    it cannot be written (exit with the reason); and the machine measured on, taken now, before
    the output exists (so its commit state is the code's)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("out", help="where the JSON goes")
    out = parser.parse_args().out
    if (problem := output_problem(out)) is not None:
        raise SystemExit(f"{out}: {problem}")
    return Path(out), machine_info()


def write_report(path: Path, machine: Mapping[str, Any], report: Mapping[str, Any]) -> None:
    """Write ``report`` with the ``machine`` it was measured on to ``path`` atomically, and
    print it without the machine."""
    atomic_write_text(path, json.dumps({"machine": dict(machine), **report}, indent=2) + "\n")
    print(json.dumps(dict(report), indent=1))
