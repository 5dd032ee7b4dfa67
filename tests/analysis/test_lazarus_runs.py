"""The Lazarus detector on real runs: a scripted heat burst is found, RigL and static are not.

Each run is a real organism whose events and metrics go through the real recorder into Parquet
and are read back by :func:`esper.analysis.runs.load_run`, so the heat bit and ``policy_tau``
columns are tested end to end (schema 3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from esper.analysis.detectors.lazarus import heat_bursts, lazarus
from esper.analysis.runs import load_run
from esper.conf import compose
from esper.policies.base import Policy, make_policy
from esper.workloads.actions import LayerAction
from esper.workloads.factory import build_organism
from esper.workloads.organism import Organism, OrganismStep
from tests.analysis._real_runs import baseline_run, scripted_run
from tests.organisms import TINY_ORGANISM

# One 400-step task (no drift to confound a drop), K = 10: 39 surgeries; lr 0.1 so the tiny
# host learns within the run.
_ONE_TASK = ["workload.num_tasks=1", "workload.schedule.params.task_length=400",
             "policy.surgery_interval=10", "workload.lr=0.1"]  # fmt: skip
_DRIFTING = ["workload=digits_permuted", "workload.num_tasks=4",
             "workload.schedule.params.task_length=100", "policy.surgery_interval=10",
             "workload.lr=0.1"]  # fmt: skip
_SURGERIES = 39


class ScriptedLazarus(Policy):
    """Random 2% swaps at ``τ = 1``; at surgery ``burst`` a heat burst: half of every layer's
    active weights swapped at random for fresh ones, ``τ = 10``, heat bit set."""

    name: ClassVar[str] = "scripted_lazarus"

    def __init__(self, burst: int | None) -> None:
        self.burst = burst
        self.generator = torch.Generator().manual_seed(0)
        self.surgery = 0

    def reset(self, organism: Organism, first: OrganismStep) -> None:
        self.surgery = 0

    def act(self, organism: Organism, step: OrganismStep) -> dict[str, LayerAction]:
        hot = self.surgery == self.burst
        self.surgery += 1
        actions = {}
        for name in organism.scalpel.names:
            mask = organism.scalpel.mask(name).reshape(-1).cpu()
            active, empty = mask.nonzero().view(-1), (~mask).nonzero().view(-1)
            k = min(len(empty), max(1, int(len(active) * (0.5 if hot else 0.02))))
            prune = active[torch.randperm(len(active), generator=self.generator)[:k]]
            regrow = empty[torch.randperm(len(empty), generator=self.generator)[:k]]
            actions[name] = LayerAction(prune=prune, regrow=regrow, regrow_init="kaiming",
                                        policy_tau=10.0 if hot else 1.0, heat=hot)  # fmt: skip
        return actions


def _recorded(tmp: Path, overrides: list[str], policy: Policy) -> tuple[pd.DataFrame, Any]:
    """A real run of ``policy`` (:mod:`tests.analysis._real_runs`): its events and metrics."""
    if isinstance(policy, ScriptedLazarus):
        run = scripted_run(tmp, policy, overrides)
    else:
        run = baseline_run(tmp, policy.name, [*overrides, *_params(policy)])
    return run.events, run.metrics


def _params(policy: Policy) -> list[str]:
    return (
        ["policy.params.delta_t=10", "policy.params.t_end=10000"] if policy.name == "rigl" else []
    )


def test_a_planted_heat_burst_is_found_with_its_decision(tmp_path: Path) -> None:
    events, metrics = _recorded(tmp_path, _ONE_TASK, ScriptedLazarus(burst=12))
    assert events["heat"].notna().all() and set(events["policy_tau"]) == {1.0, 10.0}
    found = lazarus(events, metrics)
    assert len(found) == 1
    episode = found.iloc[0]
    assert episode["burst_by"] == "heat" and episode["burst_tau"] == 10.0
    assert episode["burst_step"] == 12  # surgery_step counts surgeries from 0
    assert episode["net_gain"] > 0 and episode["pre_level"] - episode["trough"] >= 0.02


def test_the_same_swaps_without_the_burst_show_no_episode(tmp_path: Path) -> None:
    events, metrics = _recorded(tmp_path, _ONE_TASK, ScriptedLazarus(burst=None))
    assert not events["heat"].astype(bool).any()
    assert lazarus(events, metrics).empty
    assert heat_bursts(events) == []


def test_heat_bursts_date_every_burst_tunnelling_or_not() -> None:
    """Heat steps 3, 4 (one burst: within ``merge_gap``) and 9, whatever follows them."""
    steps = list(range(12))
    heat = [step in (3, 4, 9) for step in steps]
    events = pd.DataFrame(
        {"surgery_step": steps, "action": "prune", "count": 1, "heat": heat, "policy_tau": 0.01}
    )
    assert heat_bursts(events) == [3, 9]
    assert heat_bursts(events, merge_gap=10) == [3]


@pytest.mark.parametrize("name", ["rigl", "static"])
def test_null_runs_of_rigl_and_static_have_under_5_percent_false_positives(
    tmp_path: Path, name: str
) -> None:
    """Window = a surgery step where an episode could start; RigL's scheduled swaps and a
    static mask on a drifting stream carry no heat decision, so none may be reported (the
    criterion before schema 3, top-decile turnover, counted RigL's updates as bursts)."""
    events, metrics = _recorded(tmp_path, _DRIFTING, make_policy(name))
    assert events["heat"].isna().all()
    windows = metrics["surgery_step"].nunique()
    assert len(lazarus(events, metrics)) <= 0.05 * windows


def test_a_log_written_before_schema_3_still_reads_and_falls_back_to_the_scalpel_tau(
    tmp_path: Path,
) -> None:
    events, metrics = _recorded(tmp_path, _ONE_TASK, ScriptedLazarus(burst=12))
    (run_dir,) = tmp_path.iterdir()
    for part in (run_dir / "events").rglob("*.parquet"):
        table = pq.read_table(part)
        older = table.drop_columns(["policy_tau", "heat"])
        pq.write_table(older.replace_schema_metadata(
            {**table.schema.metadata, b"esper.schema_version": b"2"}), part)  # fmt: skip
    old = load_run(run_dir).events
    assert len(old) == len(events) and old["heat"].isna().all()
    assert old["policy_tau"].isna().all()
    assert lazarus(old, metrics).empty  # masked: no temperature events, and turnover is not heat
    assert len(lazarus(old, metrics, turnover_quantile=0.9)) == 1  # the criterion of old, asked


def test_emrakul_records_its_tau_and_heat_on_every_row() -> None:
    cfg = compose([*TINY_ORGANISM, *_ONE_TASK])
    organism = build_organism(cfg)
    policy = make_policy("emrakul", budget=0.2, seed=1)
    step = organism.reset()
    policy.reset(organism, step)
    rows = []
    for _ in range(3):
        step = organism.step(policy.act(organism, step))
        rows += [e for e in step.events if e.action in ("prune", "regrow")]
    assert rows and all(e.heat in (True, False) and e.policy_tau >= 0 for e in rows)
