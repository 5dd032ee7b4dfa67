"""Where a sweep's time goes: the demo's PBT sweep with a timeline of Tune's trial events.

Prints, per trial event (start, result, save, restore, complete), the seconds since the
Tuner started, then the total, and writes them as JSON. The README's "Where a sweep's time
goes" reads the start-up (first ``start``), the members running one at a time after the first
perturbation, and the gaps where paused members resume on new processes from it.

Usage: ``.venv/bin/python benchmarks/sweep_timeline.py --json PATH [OVERRIDE ...]`` (about
3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune
from rich.console import Console

import esper.platform.sweep as sweep
from esper.bench.harness import machine_info
from esper.conf import compose
from esper.files import atomic_write_text
from esper.platform.demo import DEMO_OVERRIDES
from esper.platform.ray_runtime import quiet_ray, start_local_ray
from esper.platform.runs import create_run


class Timeline(tune.Callback):
    """Tune's trial events with their time since ``origin``."""

    def __init__(self) -> None:
        self.origin = time.perf_counter()
        self.events: list[dict[str, Any]] = []

    def _add(self, event: str, trial: Any, iteration: int | None = None) -> None:
        row = {"t": round(time.perf_counter() - self.origin, 2), "event": event,
               "trial": trial.trial_id, "iteration": iteration}  # fmt: skip
        self.events.append(row)
        print(f"{row['t']:7.2f} {event:9s} {trial.trial_id} {iteration or ''}", flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._add("start", trial)

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._add("restore", trial)

    def on_trial_save(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._add("save", trial)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        self._add("result", trial, int(result["training_iteration"]))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._add("complete", trial)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("overrides", nargs="*", help="after the demo's own overrides")
    args = parser.parse_args()
    quiet_ray()
    cfg = compose([*DEMO_OVERRIDES, *args.overrides])
    timeline = Timeline()
    plain_config = sweep.run_config

    def with_timeline(*a: Any) -> tune.RunConfig:
        config = plain_config(*a)
        config.callbacks = [*(config.callbacks or []), timeline]
        return config

    sweep.run_config = with_timeline  # type: ignore[assignment]
    run_dir = Path(tempfile.mkdtemp(prefix="esper-sweep-timeline-")) / "sweep"
    create_run(run_dir, cfg, "sweep", "digits_permuted", "emrakul")
    start_local_ray(cfg.cluster.num_cpus)
    try:
        timeline.origin = time.perf_counter()
        sweep.run_sweep(cfg, run_dir, Console(quiet=True), resume=False)
        total = time.perf_counter() - timeline.origin
    finally:
        ray.shutdown()
    print(f"total {total:.1f} s")
    payload = {"machine": machine_info(), "overrides": [*DEMO_OVERRIDES, *args.overrides],
               "total_s": total, "events": timeline.events}  # fmt: skip
    atomic_write_text(args.json, json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
