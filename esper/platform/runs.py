"""Run directories: what a command leaves behind for analysis, and what it is called.

Every command names its run with :func:`run_name`:
``<experiment>-<command>-<workload>[-<policy>]-s<seed>-<UTC time>``. The workload part is
:func:`workload_label`: the preset's name, or, when overrides changed the preset
(``workload=digits_permuted workload.drifts=[{name: rotate}]``), the name plus a short digest
of the composed workload config (``digits_permuted+3f9a2c``), so a name never claims a preset
that was overridden. The digest is BLAKE2b over canonical JSON, the same in every process.

A run directory holds ``run.json`` (identity, command, workload, policy, seed, reward weights,
the composed config), ``config.yaml``, and the ``events`` and ``metrics`` tables written as
crash-safe Parquet parts by :class:`~esper.events.writer.EventWriter`
(``RUN/<table>/trial=T/replica=R/part-NNNNNN.parquet``), by the recorders of
:mod:`esper.platform.recorder`, which turn organism steps into rows.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from esper.conf import ConfigError
from esper.config import EsperConfig, WorkloadConfig, to_plain
from esper.files import atomic_write_text, directory_problem

__all__ = [
    "RUN_STATES",
    "RunOutcome",
    "config_digest",
    "create_run",
    "mark_run",
    "new_run_dir",
    "run_name",
    "run_state",
    "runs_root",
    "workload_label",
]

_DIGEST_BYTES = 3
"""Bytes of a config digest in a run name: six hex digits."""


def config_digest(config: Any) -> str:
    """A short digest of a dataclass config, the same in every process and on every machine.

    BLAKE2b of the config as canonical JSON (``dataclasses.asdict``, keys sorted, enums as their
    values); never Python's ``hash``, which is salted per process.

    Raises:
        TypeError: ``config`` is not a dataclass instance.
    """
    if not is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"config_digest takes a dataclass instance, got {type(config).__name__}")
    text = json.dumps(to_plain(config), sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=_DIGEST_BYTES).hexdigest()


def workload_label(preset: str, preset_config: WorkloadConfig, workload: WorkloadConfig) -> str:
    """``preset`` if ``workload`` is that preset's config, else ``<preset>+<digest>``.

    Args:
        preset: Name of the chosen workload option.
        preset_config: That option's config as composed with no other workload overrides.
        workload: The run's composed workload config.
    """
    return preset if workload == preset_config else f"{preset}+{config_digest(workload)}"


def run_name(
    cfg: EsperConfig,
    kind: str,
    workload: str,
    policy: str | None = None,
    when: float | None = None,
) -> str:
    """``<experiment>-<kind>-<workload>[-<policy>]-s<seed>-<UTC time>``: unique, self-describing.

    Args:
        cfg: The composed config (experiment name and seed).
        kind: The command (``demo``, ``train``, ``evaluate``).
        workload: The workload label (:func:`workload_label`).
        policy: The acting policy's name; ``None`` for a command without one (``demo``).
        when: Seconds since the epoch (default: now).
    """
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(when if when is not None else time.time()))
    parts = [cfg.experiment.name, kind, workload, *([policy] if policy else [])]
    return "-".join([*parts, f"s{cfg.experiment.seed}", stamp])


def runs_root(cfg: EsperConfig) -> Path:
    """Where run directories go: ``cluster.storage_path``, absolute.

    Raises:
        ConfigError: no folder can be made or written there (checked before any work).
    """
    root = Path(cfg.cluster.storage_path).expanduser().resolve()
    if (problem := directory_problem(root)) is not None:
        raise ConfigError(f"cluster.storage_path={cfg.cluster.storage_path}: {problem}")
    return root


def new_run_dir(cfg: EsperConfig, kind: str, workload: str) -> Path:
    """``<storage>/<run name>`` of a command running ``cfg.policy``, not yet created."""
    return runs_root(cfg) / run_name(cfg, kind, workload, cfg.policy.name)


def create_run(
    run_dir: Path, cfg: EsperConfig, command: str, workload: str, policy: str, **extra: Any
) -> None:
    """Create ``run_dir`` with ``run.json`` (identity, command, workload, policy, seed, reward
    weights, density, the composed config and ``extra``) and ``config.yaml``.

    Raises:
        FileExistsError: the directory exists already.
    """
    run_dir.mkdir(parents=True, exist_ok=False)
    meta: dict[str, Any] = {
        "run_id": run_dir.name,
        "state": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command,
        "workload": workload,
        "policy": policy,
        "seed": cfg.experiment.seed,
        "reward": asdict(cfg.reward),
        "density": cfg.policy.density,
        "config": to_plain(cfg),
        **extra,
    }
    atomic_write_text(run_dir / "run.json", json.dumps(meta, indent=2, default=str))
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)))


RUN_STATES = ("running", "complete", "failed", "interrupted")
"""What ``run.json``'s ``state`` says: ``running`` until the command ends (and for ever if the
process was killed), then ``complete``, ``failed`` (an error; its message in ``error``) or
``interrupted`` (Ctrl-C)."""


def mark_run(run_dir: Path, state: str, error: str | None = None) -> None:
    """Record how the run ended in its ``run.json`` (atomically; the rest is kept).

    Raises:
        ValueError: an unknown state.
    """
    if state not in RUN_STATES:
        raise ValueError(f"unknown run state {state!r}; valid: {', '.join(RUN_STATES)}")
    path = run_dir / "run.json"
    meta = json.loads(path.read_text())
    meta["state"] = state
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if error is not None:
        meta["error"] = error
    atomic_write_text(path, json.dumps(meta, indent=2, default=str))


class RunOutcome:
    """How a run is ending; :func:`run_state` records it in ``run.json``.

    A block that ends normally leaves the run ``complete`` unless it called :meth:`fail`:
    a run that stopped for a reason it can state (the host diverged) keeps everything it wrote
    and is marked ``failed`` with that reason, without an exception.
    """

    def __init__(self) -> None:
        self.error: str | None = None

    def fail(self, reason: str) -> None:
        """Mark the run ``failed`` with ``reason`` when the block ends."""
        self.error = reason


def _mark_quietly(run_dir: Path, state: str, error: str | None = None) -> None:
    """:func:`mark_run`, unless ``run.json`` is gone or cannot be written (a full disk): the
    error that is ending the run is the one to report, not this one."""
    if not (run_dir / "run.json").exists():
        return
    with suppress(OSError):
        mark_run(run_dir, state, error)


@contextmanager
def run_state(run_dir: Path) -> Iterator[RunOutcome]:
    """Mark the run ``complete`` when the block ends normally (``failed`` if it called
    :meth:`RunOutcome.fail`), ``interrupted`` on Ctrl-C and ``failed`` (with the error's
    message) on any other exception, which propagates."""
    outcome = RunOutcome()
    try:
        yield outcome
    except KeyboardInterrupt:
        _mark_quietly(run_dir, "interrupted")
        raise
    except BaseException as err:
        _mark_quietly(run_dir, "failed", f"{type(err).__name__}: {err}")
        raise
    if outcome.error is None:
        mark_run(run_dir, "complete")
    else:
        mark_run(run_dir, "failed", outcome.error)
