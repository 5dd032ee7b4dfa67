"""Each drift primitive does what it claims."""

from __future__ import annotations

import itertools

import pytest
import torch

from esper.workloads import (
    DRIFTS,
    SCHEDULES,
    Affine,
    ClassIncremental,
    CovariateShift,
    DriftStream,
    Gradual,
    NoiseBurst,
    PermuteInputs,
    PermuteLabels,
    PoolSource,
    Recurring,
    Rotate,
    make_drift,
    make_schedule,
    make_source,
)
from esper.workloads.schedules import Abrupt


def _bound(drift_name: str, source: PoolSource, seed: int = 0, **params: object):  # type: ignore[no-untyped-def]
    drift = make_drift(drift_name, **params)
    drift.bind(source, seed)
    return drift


@pytest.mark.parametrize("name", DRIFTS.names())
def test_every_drift_builds_binds_and_transforms(name: str, digits: PoolSource) -> None:
    drift = _bound(name, digits)
    x, y = digits.x[:16], digits.y[:16]
    x2, y2 = drift.apply(x, y, 1, 150, torch.Generator().manual_seed(0))
    assert x2.shape == x.shape and y2.shape == y.shape and x2.dtype == x.dtype


def test_permutation_keeps_each_images_pixel_multiset(digits: PoolSource) -> None:
    drift = _bound("permute_inputs", digits)
    x = digits.x[:64]
    xp, _ = drift.apply(x, digits.y[:64], 3, 0, torch.Generator())
    flat, flat_p = x.flatten(1), xp.flatten(1)
    assert torch.equal(flat.sort(dim=1).values, flat_p.sort(dim=1).values)
    assert not torch.equal(flat, flat_p)
    # one permutation per distribution, shared by all images of it
    perm = drift.permutation(3)
    assert torch.equal(flat[:, perm], flat_p)
    assert not torch.equal(perm, drift.permutation(4))


def test_first_distribution_is_unpermuted_by_default(digits: PoolSource) -> None:
    assert torch.equal(_bound("permute_inputs", digits).permutation(0), torch.arange(64))
    assert not torch.equal(
        _bound("permute_inputs", digits, first_identity=False).permutation(0), torch.arange(64)
    )


def test_class_incremental_tasks_contain_only_their_classes(digits: PoolSource) -> None:
    stream = DriftStream(
        digits,
        [ClassIncremental(classes_per_task=2)],
        Abrupt(task_length=10),
        64,
        seed=0,
        num_tasks=6,
    )
    seen: dict[int, set[int]] = {}
    for batch in stream:
        seen.setdefault(batch.task_index, set()).update(batch.y.tolist())
    assert seen[0] == {0, 1} and seen[1] == {2, 3} and seen[4] == {8, 9}
    assert seen[5] == {0, 1}  # after the last group the splits start again


def test_class_incremental_shuffle_and_bad_size(digits: PoolSource) -> None:
    groups = _bound("class_incremental", digits, classes_per_task=3, shuffle=True).groups()
    assert len(groups) == 3 and all(len(g) == 3 for g in groups)
    assert len({c for g in groups for c in g}) == 9
    with pytest.raises(ValueError, match="exceeds the 10 classes"):
        _bound("class_incremental", digits, classes_per_task=11).groups()


def test_recurring_returns_exactly_to_the_first_distribution(digits: PoolSource) -> None:
    drift = PermuteInputs()
    schedule = Recurring(task_length=50, pattern=(0, 1))
    stream = DriftStream(digits, [drift], schedule, 64, seed=0, num_tasks=3)
    batches = list(stream)
    a, b, a2 = (batches[k * 50 : (k + 1) * 50] for k in range(3))
    assert {x.distribution for x in a} == {x.distribution for x in a2} == {0}
    assert {x.distribution for x in b} == {1}
    # Every batch of task 2 consists of unpermuted pool images, exactly as task 0.
    pool = {tuple(row.tolist()) for row in digits.x.flatten(1)}
    assert all(tuple(row.tolist()) in pool for x in a2 for row in x.x.flatten(1))
    assert not any(tuple(row.tolist()) in pool for row in b[0].x.flatten(1) if row.abs().sum() > 0)
    # Same mean image in A and A again, a different one in B.
    mean = [torch.cat([x.x for x in part]).mean(0) for part in (a, b, a2)]
    assert (mean[0] - mean[2]).abs().max() < 0.1 < (mean[0] - mean[1]).abs().max()


@pytest.mark.parametrize("name", [n for n in DRIFTS.names() if n != "noise_burst"])
def test_a_distribution_is_a_pure_function_of_seed_and_index(name: str, digits: PoolSource) -> None:
    x, y = digits.x[:32], digits.y[:32]
    first = _bound(name, digits, seed=5)
    again = _bound(name, digits, seed=5)
    for d in (0, 1, 2):
        x1, y1 = first.apply(x, y, d, 0, torch.Generator())
        x2, y2 = again.apply(x, y, d, 0, torch.Generator())
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
        assert first.classes(d) == again.classes(d)


def test_gradual_drift_blends_the_two_distributions(digits: PoolSource) -> None:
    schedule = Gradual(task_length=100, window=40)
    stream = DriftStream(digits, [PermuteInputs()], schedule, 200, seed=0, num_tasks=2)
    pool = {tuple(row.tolist()) for row in digits.x.flatten(1)}
    fractions = {}
    for batch in stream:
        from_new = sum(tuple(row.tolist()) not in pool for row in batch.x.flatten(1)) / 200
        fractions[batch.step] = from_new
        if 80 <= batch.step < 120:
            assert from_new == batch.incoming_fraction
    # Before the window: only A; after it: only B; across it, B's share rises through 1/2.
    assert max(fractions[s] for s in range(0, 80)) == 0.0
    assert min(fractions[s] for s in range(120, 200)) == 1.0
    ramp = [fractions[s] for s in range(80, 120)]
    assert ramp[2] < 0.2 and ramp[-3] > 0.8
    assert 0.35 < sum(ramp) / len(ramp) < 0.65
    early, late = sum(ramp[:20]) / 20, sum(ramp[20:]) / 20
    assert early < 0.5 < late


def test_gradual_phase_weights_ramp_linearly() -> None:
    schedule = Gradual(task_length=100, window=40)
    weights = [schedule.phase(s).weight for s in range(80, 120)]
    assert (
        schedule.phase(79).weight == 0.0
        and schedule.phase(120).incoming == schedule.phase(120).current
    )
    assert all(b > a for a, b in itertools.pairwise(weights))
    assert weights[0] == pytest.approx(0.5 / 40) and weights[-1] == pytest.approx(39.5 / 40)


def test_label_permutation_is_a_bijection_per_distribution(digits: PoolSource) -> None:
    drift = _bound("permute_labels", digits)
    assert torch.equal(drift.mapping(0), torch.arange(10))
    m = drift.mapping(2)
    assert sorted(m.tolist()) == list(range(10)) and not torch.equal(m, torch.arange(10))
    x, y = digits.x[:50], digits.y[:50]
    x2, y2 = drift.apply(x, y, 2, 0, torch.Generator())
    assert torch.equal(x2, x) and torch.equal(y2, m[y])


def test_covariate_shift_moves_mean_and_scale(gaussian: PoolSource) -> None:
    drift = CovariateShift(shift=2.0, max_log_scale=0.5)
    drift.bind(gaussian, 0)
    scale, offset = drift.parameters_for(1)
    x, y = gaussian.x, gaussian.y
    x2, _ = drift.apply(x, y, 1, 0, torch.Generator())
    torch.testing.assert_close(x2.mean(0), x.mean(0) * scale + offset)
    torch.testing.assert_close(x2.std(0), x.std(0) * scale)
    assert offset.abs().max() > 0.5 and drift.parameters_for(0)[0] == 1.0


def test_noise_bursts_follow_stream_time(gaussian: PoolSource) -> None:
    drift = NoiseBurst(sigma=1.0, period=50, length=5, phase=10)
    drift.bind(gaussian, 0)
    active = [s for s in range(120) if drift.active(s)]
    assert active == [10, 11, 12, 13, 14, 60, 61, 62, 63, 64, 110, 111, 112, 113, 114]
    x, y = gaussian.x[:100], gaussian.y[:100]
    quiet, _ = drift.apply(x, y, 0, 9, torch.Generator().manual_seed(0))
    noisy, _ = drift.apply(x, y, 0, 10, torch.Generator().manual_seed(0))
    assert torch.equal(quiet, x)
    assert 0.8 < float((noisy - x).std()) < 1.2
    with pytest.raises(ValueError, match="length"):
        NoiseBurst(period=5, length=6)


def test_rotation_by_90_degrees_matches_rot90(digits: PoolSource) -> None:
    drift = Rotate(degrees_per_task=90.0)
    drift.bind(digits, 0)
    x = digits.x[:8]
    rotated, _ = drift.apply(x, digits.y[:8], 1, 0, torch.Generator())
    candidates = [torch.rot90(x, k, dims=(2, 3)) for k in (1, -1)]
    assert min(float((rotated - c).abs().max()) for c in candidates) < 1e-5
    assert torch.equal(drift.apply(x, digits.y[:8], 0, 0, torch.Generator())[0], x)


def test_affine_is_identity_on_first_distribution_and_changes_later(digits: PoolSource) -> None:
    drift = Affine()
    drift.bind(digits, 0)
    x = digits.x[:8]
    assert torch.equal(drift.apply(x, digits.y[:8], 0, 0, torch.Generator())[0], x)
    moved = drift.apply(x, digits.y[:8], 1, 0, torch.Generator())[0]
    assert float((moved - x).abs().mean()) > 0.05
    assert not torch.equal(drift.matrix(1), drift.matrix(2))


def test_image_drifts_reject_non_image_data(gaussian: PoolSource) -> None:
    for name in ("rotate", "affine"):
        with pytest.raises(ValueError, match="needs 2-D image data"):
            make_drift(name).bind(gaussian, 0)


def test_label_drifts_reject_regression() -> None:
    regression = make_source("slowly_changing_regression")
    for name in ("permute_labels", "class_incremental"):
        with pytest.raises(ValueError, match="needs a classification dataset"):
            make_drift(name).bind(regression, 0)


def test_primitives_compose_in_order(digits: PoolSource) -> None:
    stream = DriftStream(
        digits,
        [ClassIncremental(2), PermuteLabels()],
        Abrupt(task_length=5),
        32,
        seed=1,
        num_tasks=2,
    )
    labels = {int(v) for batch in stream for v in batch.y if batch.task_index == 1}
    mapping = stream.drifts[1].mapping(1)  # type: ignore[attr-defined]
    assert labels == {int(mapping[2]), int(mapping[3])}


_SCHEDULE_PARAMS: dict[str, dict[str, object]] = {
    "abrupt": {"task_length": 40},
    "gradual": {"task_length": 40, "window": 20},
    "recurring": {"task_length": 40, "window": 20},
}


@pytest.mark.parametrize(
    ("drift", "schedule"), list(itertools.product(DRIFTS.names(), SCHEDULES.names()))
)
def test_every_drift_runs_under_every_schedule(
    drift: str, schedule: str, digits: PoolSource
) -> None:
    """Through the transitions too, where a gradual schedule draws a batch from two
    distributions and one share can be empty (image transforms once failed on it)."""
    stream = DriftStream(
        digits, [make_drift(drift)], make_schedule(schedule, **_SCHEDULE_PARAMS[schedule]), 16,
        seed=0, num_tasks=3,
    )  # fmt: skip
    batches = list(stream)
    assert len(batches) == 120 and all(b.x.shape == (16, *digits.x.shape[1:]) for b in batches)
