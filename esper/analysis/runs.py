"""Run directories as analysis reads them: metadata, the composed config, and the event log.

A run directory (what :class:`esper.platform.recorder.RunRecorder` writes) holds ``run.json`` (run
id, command, workload, policy, seed, reward weights and the composed config), ``config.yaml``,
and the ``events`` and ``metrics`` tables as Parquet parts under
``RUN/<table>/trial=T/replica=R/`` (read by :class:`~esper.analysis.event_log.EventLog`).
This module decides, once, what counts as a run: a directory with a ``run.json`` holding a JSON
object and at least one table directory. Comparisons, reports, the ``esper events``,
``strategies``, ``compare`` and ``report`` commands and the example notebook load runs here.

Example:
    >>> run = load_run("runs/r1")  # doctest: +SKIP
    >>> run.meta["policy"], run.config["workload"]["lr"], len(run.events)
    >>> with run.open_log() as log:
    ...     log.sql("SELECT layer, count(*) FROM events GROUP BY ALL")
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeAlias

import pandas as pd

from esper.analysis.event_log import EventLog
from esper.events.learning import read_learning_curves
from esper.events.schema import TABLES

__all__ = [
    "RUN_JSON",
    "IncompleteRunWarning",
    "Run",
    "RunError",
    "RunLike",
    "load_run",
    "load_runs",
]

RUN_JSON = "run.json"
"""Name of a run's metadata file."""

_UNIT_KEYS = ["run_id", "trial_id", "replica_id"]


class RunError(ValueError):
    """A path that is not a readable run directory; the message names it and what is wrong."""


class IncompleteRunWarning(UserWarning):
    """A run's tables were read although it did not complete or its log misses rows (the
    message names what); the command-line readers refuse such a run unless told
    ``--allow-incomplete``."""


@dataclass(frozen=True)
class Run:
    """One run directory: its metadata, and its tables read on first use.

    Build it with :func:`load_run`. The tables are read once, when first asked for, as pandas
    frames with the schema's columns (empty when the run has no parts for a table).

    Attributes:
        path: The run directory.
        meta: Contents of ``run.json`` (``run_id``, ``command``, ``workload``, ``policy``,
            ``seed``, ``reward``, ``density``, ``config``).
    """

    path: Path
    meta: dict[str, Any] = field(repr=False)
    excluded: set[Path] = field(default_factory=set, repr=False, compare=False)
    """Unreadable parts left out of the tables (filled by :meth:`damage`)."""
    _checked: list[list[str]] = field(default_factory=list, repr=False, compare=False)

    @property
    def state(self) -> str:
        """How the run ended, from ``run.json``: ``complete``, ``failed``, ``interrupted``, or
        ``running`` (still going, or killed); ``unrecorded`` for runs written before Esper
        recorded it."""
        return str(self.meta.get("state", "unrecorded"))

    @property
    def finished(self) -> bool:
        """Whether the run is known to have completed (or predates state records)."""
        return self.state in ("complete", "unrecorded")

    @property
    def run_id(self) -> str:
        """The run's id (``run.json``'s ``run_id``, else the directory name)."""
        return str(self.meta.get("run_id") or self.path.name)

    @property
    def config(self) -> dict[str, Any]:
        """The composed config saved in ``run.json`` (``{}`` if the run recorded none)."""
        config = self.meta.get("config")
        return config if isinstance(config, dict) else {}

    def open_log(self) -> EventLog:
        """The run's :class:`EventLog` (SQL and filtered reads); close it, or use ``with``."""
        log = EventLog.open(self.path)
        log.excluded |= self.excluded
        return log

    def damage(self) -> list[str]:
        """What is missing or broken in the run's tables, one sentence each (``[]``: whole;
        :meth:`esper.analysis.event_log.EventLog.damage`). Call it before reading the tables:
        unreadable parts are then left out of them."""
        with self.open_log() as log:
            problems = log.damage()
            self.excluded.update(log.excluded)
        self._checked[:] = [problems]
        return problems

    @cached_property
    def events(self) -> pd.DataFrame:
        """The ``events`` table: one row per surgery, layer and action."""
        return self._read("events")

    @cached_property
    def metrics(self) -> pd.DataFrame:
        """The ``metrics`` table: one row per surgery step of a replica.

        For a run that logged events only, a coarse one derived from them (accuracy is the
        events' ``acc_before``), so comparisons and plots still have a series.
        """
        metrics = self._read("metrics")
        if metrics.empty and not self.events.empty:
            return _metrics_from_events(self.events)
        return metrics

    @cached_property
    def learning_curve(self) -> pd.DataFrame:
        """Learner iterations of the run's population members (:mod:`esper.events.learning`):
        one row per trial and iteration; empty for runs without a learner."""
        return pd.DataFrame(read_learning_curves(self.path))

    def _read(self, table: str) -> pd.DataFrame:
        if not self._checked:  # a notebook reading a run: say what is wrong with it, once
            problems = self.damage()
            if not self.finished:
                problems.insert(0, f"run.json says the run is {self.state!r}, not complete")
            if problems:
                warnings.warn(
                    IncompleteRunWarning(f"{self.path}: " + "; ".join(problems)), stacklevel=3
                )
        with self.open_log() as log:
            frame = log.to_pandas(table)
        if "run_id" in frame.columns:  # rows written before their run id was known
            frame["run_id"] = frame["run_id"].fillna(self.run_id)
        return frame


RunLike: TypeAlias = str | os.PathLike[str] | Run
"""A run directory's path, or a run already loaded."""


def _read_meta(path: Path) -> dict[str, Any]:
    meta_path = path / RUN_JSON
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RunError(f"{meta_path} is not valid JSON: {err}") from err
    if not isinstance(meta, dict):
        raise RunError(f"{meta_path} must hold a JSON object, got {type(meta).__name__}")
    return meta


def load_run(path: str | os.PathLike[str]) -> Run:
    """Load a run directory's metadata (its tables are read when first used).

    Raises:
        RunError: ``path`` does not exist or is not a directory, has no ``run.json`` or no
            table directory (``events/``, ``metrics/``), or its ``run.json`` is not a JSON
            object. The message names the path.
    """
    run_dir = Path(path)
    if not run_dir.exists():
        raise RunError(f"run directory {str(run_dir)!r} does not exist")
    if not run_dir.is_dir():
        raise RunError(f"{str(run_dir)!r} is not a run directory: it is a file")
    missing = []
    if not (run_dir / RUN_JSON).is_file():
        missing.append(f"no {RUN_JSON}")
    if not any((run_dir / table).is_dir() for table in TABLES):
        missing.append(f"no table directory ({', '.join(f'{t}/' for t in TABLES)})")
    if missing:
        raise RunError(f"{str(run_dir)!r} is not a run directory: it has {' and '.join(missing)}")
    return Run(path=run_dir, meta=_read_meta(run_dir))


def load_runs(paths: Iterable[RunLike]) -> list[Run]:
    """:func:`load_run` on each path, in order; already loaded runs pass through.

    Raises:
        RunError: on the first path that is not a run directory (the message names it).
    """
    return [p if isinstance(p, Run) else load_run(p) for p in paths]


def _metrics_from_events(events: pd.DataFrame) -> pd.DataFrame:
    """A coarse ``metrics`` table for runs that logged only events (accuracy = ``acc_before``)."""
    keys = [*_UNIT_KEYS, "surgery_step"]
    grouped = events.groupby(keys, sort=True)
    out = grouped.agg(
        drift=("drift", "first"),
        task_index=("task_index", "first"),
        sgd_step=("sgd_step", "first"),
        online_accuracy=("acc_before", "first"),
        online_loss=("loss_before", "first"),
        density=("density_after", "mean"),
        reward=("reward", "first"),
        r_accuracy=("r_accuracy", "first"),
        r_flops=("r_flops", "first"),
        r_oscillation=("r_oscillation", "first"),
        r_gsnr=("r_gsnr", "first"),
        r_spike=("r_spike", "first"),
    )
    return out.reset_index()
