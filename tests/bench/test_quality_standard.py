"""The ``standard`` quality preset: UPGD's input-permuted MNIST protocol on MNIST-1D."""

from __future__ import annotations

import dataclasses

import pytest

from esper.bench.quality_evaluation import compose_config, evaluate_run, policy_overrides
from esper.bench.quality_presets import PRESETS, STANDARD, STANDARD_PART
from esper.bench.quality_selection import _candidates
from esper.bench.quality_streams import (
    STANDARD_PART_STREAM,
    STANDARD_STREAM,
    standard_stream,
)
from esper.bench.quality_suite import QualityPreset, Stream, conditions
from esper.cli import _parser
from esper.workloads.datasets import mnist1d

MNIST_TRAIN_SIZE = 60_000
"""MNIST's training set: the pool the field's permuted-MNIST protocols draw from."""


def test_the_stream_follows_upgd_input_permuted_mnist() -> None:
    assert STANDARD_STREAM.steps == 200 * 5000 == 1_000_000
    assert STANDARD_PART_STREAM.steps == 10 * 5000
    cfg = compose_config(policy_overrides(STANDARD_STREAM, "rigl", 0.1, allocation="erk"))
    w = cfg.workload
    assert w.dataset.name == "mnist1d" and w.dataset.params["num_samples"] >= MNIST_TRAIN_SIZE
    assert [d.name for d in w.drifts] == ["permute_inputs"]
    assert w.drifts[0].params["first_identity"] is False  # every task its own permutation
    assert (w.num_tasks, w.schedule.name, w.schedule.params["task_length"]) == (200, "abrupt", 5000)
    assert w.batch_size == 1 and list(w.host.params["hidden"]) == [300, 150]
    assert w.host.name == "mlp" and w.momentum == 0.0


@pytest.mark.parametrize("preset", [STANDARD, STANDARD_PART], ids=lambda p: p.name)
def test_the_presets_score_a_given_checkpoint_against_rigl_upgd_and_cbp(
    preset: QualityPreset,
) -> None:
    assert PRESETS[preset.name] is preset
    assert (preset.ablations, preset.allocations, preset.credit_surgeries) == ((), ("erk",), 0)
    assert preset.densities == (0.1, 0.05) and preset.validation_seeds == (500,)
    assert preset.plasticity_stream == preset.streams[0].name
    labels = {c.label for c in conditions(preset)}
    assert labels == {"dense", "dense_upgd", "rigl", "rigl_continual", "upgd", "rigl_upgd",
                      "emrakul", "cbp"}  # fmt: skip
    candidates = sum(len(g) for g in _candidates(preset).values() if len(g) > 1)
    assert candidates == 15  # UPGD's 3 step sizes × (2 densities × 2 surgeons + dense)


def test_seeds_are_disjoint_and_the_part_is_the_streams_opening() -> None:
    for preset in (STANDARD, STANDARD_PART):
        runs = enumerate(preset.train_seeds)
        train = {s for r, t in runs for s in (t, *preset.organism_seeds(r))}
        held = [set(preset.seeds), set(preset.validation_seeds), train]
        assert all(not (a & b) for i, a in enumerate(held) for b in held[i + 1 :])
    assert STANDARD.seeds == (1000, 1001, 1002) and STANDARD_PART.seeds == (1000,)
    part = dataclasses.replace(
        STANDARD, name="standard_part", streams=(standard_stream(10),), seeds=(1000,)
    )
    assert part == STANDARD_PART
    assert STANDARD_PART_STREAM.overrides[0] == STANDARD_STREAM.overrides[0]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_the_cli_accepts_every_quality_preset(name: str) -> None:
    args = _parser().parse_args(["bench", "quality", "--preset", name, "--checkpoint", "p.pt"])
    assert args.preset == name


def test_mnist1d_pools_are_generated_once_per_process() -> None:
    first, again = mnist1d(num_samples=300, seed=7), mnist1d(num_samples=300, seed=7)
    assert first.x is again.x and first is not again
    assert len(first) == 300 and first.input_shape == (1, 40)
    assert len(mnist1d(num_samples=310, seed=7)) == 310  # a new size, a new pool


@pytest.mark.parametrize(("policy", "density"), [("rigl", 0.1), ("cbp", 1.0)])
def test_a_tiny_run_of_the_standard_workload_is_scored(policy: str, density: float) -> None:
    # 2 tasks × 100 steps, from a small pool (the 60,000-sample one takes seconds to make)
    tiny = Stream("tiny", (*STANDARD_STREAM.overrides, "workload.num_tasks=2",
                           "workload.schedule.params.task_length=100",
                           "workload.dataset.params.num_samples=500"), 200)  # fmt: skip
    result = evaluate_run(tiny, policy, density, seed=1000)
    assert not result["diverged"] and len(result["task_end"]) == 2
    assert 0.0 <= result["metrics"]["online_accuracy"] <= 1.0
