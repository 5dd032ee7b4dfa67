"""Composition's checks: values out of range, parameters a component refuses, and a host too
large for the machine, each refused at composition naming the key."""

from __future__ import annotations

import pytest

from esper.conf import ConfigError, compose


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        (["reward.alpha=nan"], "reward.alpha must lie in [0, 1000], got nan"),
        (["reward.beta=-1e300"], "reward.beta must lie in [0, 1000]"),
        (["workload.lr=inf"], "workload.lr must be a finite number > 0"),
        (["workload.momentum=-3"], "workload.momentum must lie in [0, 1)"),
        (["workload.scalpel.mechanism.name=nm", "+workload.scalpel.mechanism.params.n=5",
          "+workload.scalpel.mechanism.params.m=3"], "workload.scalpel.mechanism ('nm')"),
        (["workload.scalpel.mechanism.name=gumbel_softmax",
          "+workload.scalpel.mechanism.params.tau=-1"], "tau=-1 must be > 0"),
        (["workload.schedule.params.task_length=0"], "workload.schedule ('abrupt')"),
        (["workload.drifts=[{name: class_incremental, params: {classes_per_task: 0}}]"],
         "workload.drifts[0] ('class_incremental')"),
    ],
)  # fmt: skip
def test_out_of_range_values_are_refused_at_composition(override: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        compose(override)
    assert needle in str(err.value)


def test_a_host_larger_than_the_machine_is_refused_before_allocating() -> None:
    with pytest.raises(ConfigError, match=r"workload.host \('mlp'.*40,015,200,010 parameters"):
        compose(["workload.host.params.hidden=[200000,200000]"])
