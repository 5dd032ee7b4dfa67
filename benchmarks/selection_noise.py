"""How much of a chosen checkpoint's validation gain survives on the evaluation seeds?

Every ``esper bench quality`` training keeps a candidate every few hundred surgeries and picks
the RL snapshot that scores best on the validation seeds (the imitation, surgery 0, is scored
too but kept apart). The pick's validation gain over its imitation is therefore the maximum of
several noisy differences: a winner's curse (in model selection, Cawley & Talbot 2010, JMLR
11) that the evaluation seeds, never seen by the selection, correct. This script reads every
committed quality JSON that records its selection (``benchmarks/results/quality*.json``) and,
per training run, sets the chosen candidate's validation gain against the RL-over-imitation
difference measured on the evaluation seeds. It runs nothing: it only reads results.

Reported: per training, both gains, the spread of its candidates' validation scores and their
count; over all trainings, the mean of each gain with a BCa interval (trainings as units), the
shrinkage (validation gain − evaluation gain) and the correlation between the two gains.

Usage: ``.venv/bin/python benchmarks/selection_noise.py benchmarks/results/selection-noise.json``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from esper.analysis.intervals import bootstrap_interval
from esper.bench.harness import machine_info

RESULTS = Path(__file__).parent / "results"


def _chosen_key(run: int) -> str:
    return "emrakul" if run == 0 else f"emrakul_run{run}"


def trainings(report: dict[str, Any], source: str) -> list[dict[str, Any]]:
    """One row per training run of ``report`` whose selection and RL-over-imitation it
    records (the ``emrakul`` variant; ablations are left out)."""
    rows = []
    chosen = report.get("chosen") or {}
    for run in (report.get("between_runs") or {}).get("runs") or []:
        index, path = int(run["run"]), chosen.get(_chosen_key(int(run["run"])))
        candidates = [
            s for s in report.get("selection") or []
            if s["run"] == index and s["variant"] == "emrakul"
        ]  # fmt: skip
        if path is None or not candidates or not run.get("rl_over_imitation"):
            continue  # no selection recorded, or no imitation to compare with
        picked = [s for s in candidates if s.get("path") == path] or [  # a sweep's: by path
            s for s in candidates if str(path).endswith(f"surgery-{s['surgeries']:06d}.pt")
        ]
        start = [s for s in candidates if s["surgeries"] == 0]
        if len(picked) != 1 or len(start) != 1:
            raise ValueError(f"{source} run {index}: cannot match the chosen {path}")
        scores = [s["validation"] for s in candidates]
        rows.append({
            "source": source,
            "run": index,
            "overrides": report.get("train_overrides") or [],
            "chosen_surgeries": picked[0]["surgeries"],
            "candidates": len(candidates),
            "candidates_sd": statistics.pstdev(scores),
            "validation_gain": picked[0]["validation"] - start[0]["validation"],
            "evaluation_gain": run["rl_over_imitation"]["mean_diff"],
            "evaluation_ci": run["rl_over_imitation"]["ci"],
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("out", type=Path, help="where the JSON goes")
    args = parser.parse_args()
    rows = []
    for path in sorted(RESULTS.glob("quality*.json")):
        rows += trainings(json.loads(path.read_text()), path.name)
    if len(rows) < 3:
        raise SystemExit(f"only {len(rows)} trainings with a recorded selection under {RESULTS}")
    val = np.array([r["validation_gain"] for r in rows])
    ev = np.array([r["evaluation_gain"] for r in rows])
    summary: dict[str, Any] = {}
    for label, values in (("validation_gain", val), ("evaluation_gain", ev),
                          ("shrinkage", val - ev)):  # fmt: skip
        interval = bootstrap_interval(values.tolist())
        summary[label] = {"mean": interval.mean, "low": interval.low, "high": interval.high}
    summary["correlation"] = float(np.corrcoef(val, ev)[0, 1])
    summary["evaluation_interval_above_0"] = sum(r["evaluation_ci"][0] > 0 for r in rows)
    summary["trainings"] = len(rows)
    for r in rows:
        print(f"{r['source'][:38]:38s} run {r['run']} @{r['chosen_surgeries']:5d}  validation "
              f"{r['validation_gain']:+.4f}  evaluation {r['evaluation_gain']:+.4f}")  # fmt: skip
    print(json.dumps(summary, indent=2))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    report = {
        "machine": {**machine_info(), "commit": commit.strip()},
        "what": "the chosen checkpoints' validation gain over their imitation against their "
        "RL-over-imitation on the evaluation seeds, over every committed quality training",
        "summary": summary,
        "trainings": rows,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
