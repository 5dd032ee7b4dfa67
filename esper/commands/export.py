"""``esper export-policy``: a sweep member's policy as a checkpoint that ``esper evaluate
checkpoint=PATH`` and the benchmarks open (:mod:`esper.platform.export`)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from esper.platform.export import best_member, export_member_policy, member_checkpoint

__all__ = ["export_command"]


def export_command(run: Path, trial: str | None, out: Path, console: Console) -> Path:
    """Export member ``trial`` of the run ``run`` (the best by fitness when ``None``) to
    ``out``; returns the path written.

    Raises:
        ConfigError: ``run`` is not a run directory, or ``trial`` is not one of its members.
        CheckpointError: the member left no checkpoint, or none of its checkpoints is sound.
    """
    if trial is None:
        trial, checkpoint = best_member(run)
        chosen = f"best member {trial} by fitness"
    else:
        checkpoint = member_checkpoint(run, trial)
        chosen = f"member {trial}"
    path = export_member_policy(checkpoint, out)
    console.print(f"{chosen} ({checkpoint.name}) → {path}", soft_wrap=True)
    console.print(f"evaluate it: esper evaluate checkpoint={path}", soft_wrap=True)
    return path
