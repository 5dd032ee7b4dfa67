"""Live progress of a sweep in the driver: one row per member, updated as results arrive."""

from __future__ import annotations

import math
from typing import Any

from ray import tune
from rich.console import Console
from rich.live import Live
from rich.table import Table

__all__ = ["SweepProgress", "member_table"]

_COLUMNS = ("iteration", "online_accuracy", "density", "mean_reward", "policy_version")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def member_table(rows: dict[str, dict[str, Any]], title: str, sampled: list[str]) -> Table:
    """A table of members: their last iteration's fitness, density, reward and values."""
    table = Table(title=title)
    table.add_column("member")
    for column in (*_COLUMNS, *sampled):
        table.add_column(column, justify="right")
    for trial, row in rows.items():
        table.add_row(trial, *(_fmt(row.get(c, "")) for c in (*_COLUMNS, *sampled)))
    return table


class SweepProgress(tune.Callback):
    """Shows every member's latest result: a live table on a terminal, a line per result
    otherwise (logs, CI)."""

    def __init__(self, console: Console, sampled: list[str], total: int) -> None:
        self.console = console
        self.sampled = sampled
        self.total = total
        self.rows: dict[str, dict[str, Any]] = {}
        self._live: Live | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment (for --resume): no terminal handles.
        return {k: v for k, v in self.__dict__.items() if k not in ("console", "_live")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.console = Console()
        self._live = None

    def _render(self) -> Table:
        return member_table(self.rows, f"members (of {self.total} iterations each)", self.sampled)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        """Update the member's row."""
        row = {k: result.get(k) for k in _COLUMNS}
        row["iteration"] = result.get("training_iteration")
        row.update({k: trial.config.get(k) for k in self.sampled})
        self.rows[trial.trial_id] = row
        if self.console.is_terminal:
            if self._live is None:
                self._live = Live(self._render(), console=self.console, refresh_per_second=2)
                self._live.start()
            self._live.update(self._render())
        else:
            values = " ".join(f"{k}={_fmt(row[k])}" for k in (*_COLUMNS, *self.sampled))
            self.console.print(f"{trial.trial_id}: {values}")

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        """Stop the live display."""
        if self._live is not None:
            self._live.stop()
            self._live = None
