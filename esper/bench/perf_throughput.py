"""Throughput of the surgery loop: the organism's training steps and the vectorized cohort.

- ``organism_train_vs_plain``: the organism's ``K = 100`` training steps
  (:meth:`Organism.train_steps <esper.workloads.organism.Organism.train_steps>`: it draws its
  own batches from its drifting stream, masks, records online accuracy and loss) ÷ a plain
  PyTorch loop (``zero_grad``, forward, cross-entropy, backward, ``SGD.step``) over a copy of
  the same host with the same weights, on batches drawn beforehand. Goal ≤ 1.15.
- ``population_speedup_16``: surgery steps per second of a 16-member
  :class:`~esper.workloads.cohort.Cohort` ÷ the same 16 organisms stepped one after another in
  this process (each step: an empty surgery, ``K = 100`` training steps, sensing, scoring).
  Its bound, measured in the same run, is the speed-up of a cohort that only did the
  arithmetic of its batched steps (forward and backward of the 16 stacked hosts alone); goal
  ≥ 0.8 × the bound. The notes give the training steps' own speed-up.
  ``population_speedup_16_cuda``: the same with the organisms on CUDA (run by
  :mod:`esper.bench.gpu` on a GPU machine; skipped elsewhere), goal ≥ 8.

- ``cohort_rollout_speedup_8``: what a cohort gains where ``esper run`` uses it: episodes of 3
  surgeries of 8 organisms acted on by Emrakul (an untrained policy copy per member, as in a
  replica actor) rolled out as one cohort (:func:`~esper.policies.rollout.cohort_rollout`) ÷
  one after another (:func:`~esper.policies.rollout.rollout`), at the demo's sizes (``K = 25``,
  as ``esper.bench.perf_platform.OVERRIDES``). Goal ≥ 3 (issue 27's). Its bound, measured in
  the same run and defined as ``population_speedup_16``'s, is the speed-up of a cohort that
  only did the arithmetic of its batched steps. The notes give the batched training's share of the
  cohort's time: the rest (Emrakul's decisions, sensing, scoring) stays per member.
  ``cohort_rollout_speedup_8_cuda``: the same on CUDA (run by :mod:`esper.bench.gpu`).

- ``emrakul_decision_vs_interval``: one Emrakul decision (``act``: the General's budgets, every
  Specialist's action decoded into pruned and regrown indices) ÷ the organism's ``K = 25``
  training steps that follow it, at the demo's sizes; the notes give RigL's decision on the
  same organism. Record only (the issue set no goal; ≤ 1 marks a decision that costs less than
  the training interval it precedes).

Digits MLP (64-128-128-10, 26k parameters), batch 32, 10% density, one torch thread (as in a
replica actor). Importing this module registers the benchmarks in
:data:`~esper.bench.harness.PERF`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

from esper.bench.harness import (
    PERF,
    BenchResult,
    SkipBenchmark,
    Timer,
    alternating_median_times,
    cuda_median_times,
)
from esper.conf import compose
from esper.config import EsperConfig
from esper.policies.base import make_policy
from esper.policies.baselines.drop_and_grow import DropAndGrow
from esper.policies.emrakul.policy import EmrakulPolicy
from esper.policies.rollout import cohort_rollout, rollout
from esper.seeding import small_seed
from esper.threads import one_thread
from esper.workloads.cohort import Cohort
from esper.workloads.factory import build_host, build_organism
from esper.workloads.organism import Organism, OrganismStep
from esper.workloads.prequential import stacked_batch_loss

__all__ = [
    "cohort_rollout_speedup_8",
    "cohort_rollout_speedup_8_cuda",
    "emrakul_decision_vs_interval",
    "organism_train_vs_plain",
    "population_speedup_16",
    "population_speedup_16_cuda",
]

_K = 100
_MEMBERS = 16
_OVERRIDES = (f"policy.surgery_interval={_K}", "policy.density=0.1")


def _config() -> EsperConfig:
    return compose(list(_OVERRIDES))


@PERF.register("organism_train_vs_plain")
def organism_train_vs_plain() -> BenchResult:
    """The organism's K training steps ÷ a plain PyTorch loop; goal ≤ 1.15."""
    cfg = _config()
    with one_thread():
        organism = build_organism(cfg, 0)
        organism.reset()
        w = cfg.workload
        host = build_host(w, organism.stream, 0)
        host.load_state_dict(organism.host.state_dict())
        optimizer = torch.optim.SGD(host.parameters(), lr=w.lr, momentum=w.momentum)
        batches = [organism.stream.next_batch() for _ in range(_K)]

        def plain() -> None:
            for batch in batches:
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(host(batch.x), batch.y).backward()
                optimizer.step()

        def ours() -> None:
            organism.train_steps()

        def draws() -> None:
            for _ in range(_K):
                organism.stream.next_batch()

        t_ours, t_plain, t_draws = alternating_median_times([ours, plain, draws], 15, 3)
    return BenchResult(
        ours_s=t_ours,
        anchor="plain PyTorch loop, same host and weights, batches drawn beforehand",
        anchor_s=t_plain,
        ratio=t_ours / t_plain,
        goal=1.15,
        direction="<=",
        notes=(
            f"digits MLP 64-128-128-10, batch {w.batch_size}, K={_K}, density 0.1 (masked), "
            f"SGD lr={w.lr} momentum={w.momentum}, one torch thread; medians of 15 timed in "
            f"turn: {1000 * t_ours:.1f} ms vs {1000 * t_plain:.1f} ms per {_K} steps; of the "
            f"organism's time, drawing its {_K} batches from the drifting stream takes "
            f"{1000 * t_draws:.1f} ms (the plain loop's batches are drawn beforehand)"
        ),
    )


def _batched_arithmetic(cohort: Cohort, sync: Callable[[], None]) -> float:
    """Median seconds of one forward and backward of the stacked hosts alone (the host's
    ``stacked_forward`` and the members' losses; no optimizer, no bookkeeping): the arithmetic
    of one batched training step."""
    members = cohort.members
    params = [
        torch.stack([dict(m.host.named_parameters())[n].detach() for m in members])
        for n, _ in members[0].host.named_parameters()
    ]
    batches = [m.stream.next_batch().to(m.device) for m in members]
    x = torch.stack([b.x for b in batches])
    y = torch.stack([b.y for b in batches])
    template = cohort.template
    times = []
    for _ in range(30):
        leaves = tuple(p.clone().requires_grad_() for p in params)
        sync()
        start = time.perf_counter()
        out = template.stacked_forward(leaves, x)
        torch.autograd.grad(stacked_batch_loss(out, y, members[0].kind).sum(), leaves)
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times[5:])


def _population_speedup(
    device: str, timer: Timer, where: str, goal: float | None = None
) -> BenchResult:
    """The speed-up and its bound; the goal is 0.8 × the bound unless ``goal`` is given."""
    cfg = compose([*_OVERRIDES, f"experiment.device={device}"])
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    with one_thread():
        alone = [build_organism(cfg, r) for r in range(_MEMBERS)]
        cohort = Cohort([build_organism(cfg, r) for r in range(_MEMBERS)])
        for organism in alone:
            organism.reset()
        cohort.reset()
        empty: list[dict[str, object]] = [{} for _ in range(_MEMBERS)]

        def one_by_one() -> None:
            for organism in alone:
                organism.step({})

        def together() -> None:
            cohort.step(empty)  # type: ignore[arg-type]

        def train_one_by_one() -> None:
            for organism in alone:
                organism.train_steps()

        def draws() -> None:  # per-member work of the batched steps: each its own stream
            for member in cohort.members:
                for _ in range(_K):
                    member.stream.next_batch()

        t_alone, t_cohort, t_train_alone, t_train_cohort, t_draws = timer(
            [one_by_one, together, train_one_by_one, cohort.train_steps, draws]
        )
        arithmetic = _batched_arithmetic(cohort, sync)
    sense = (t_alone - t_train_alone) / _MEMBERS
    bound = t_alone / (arithmetic * _K)
    today = t_alone / (arithmetic * _K + t_draws + sense * _MEMBERS)
    return BenchResult(
        ours_s=t_cohort / _MEMBERS,
        anchor=f"{_MEMBERS} organisms stepped one after another (s per surgery step)",
        anchor_s=t_alone / _MEMBERS,
        ratio=t_alone / t_cohort,
        goal=0.8 * bound if goal is None else goal,
        direction=">=",
        limit=bound,
        notes=(
            f"{where}; digits MLP 64-128-128-10, batch 32, K={_K}, density 0.1, {_MEMBERS} "
            f"members, one torch thread, one process; medians of 5 timed in turn: a surgery "
            f"step of all members {1000 * t_cohort:.0f} ms as a cohort vs {1000 * t_alone:.0f} "
            f"ms one by one. Bound {bound:.2f}: the members' steps one by one over the "
            f"arithmetic of the cohort's {_K} batched steps alone (forward + backward of the "
            f"{_MEMBERS} stacked hosts, {1000 * arithmetic:.2f} ms a step, "
            f"{1000 * arithmetic * _K:.0f} ms), i.e. a cohort whose sensing, scoring and "
            f"bookkeeping cost nothing. Training alone ({_K} steps): "
            f"{1000 * t_train_cohort:.0f} ms vs {1000 * t_train_alone:.0f} ms "
            f"({t_train_alone / t_train_cohort:.2f}x, at most "
            f"{t_train_alone / (arithmetic * _K):.1f}x); of the cohort's training, drawing "
            f"the members' batches from their own drifting streams takes "
            f"{1000 * t_draws:.0f} ms; sensing and scoring stay per member "
            f"({1000 * sense:.1f} ms each, {1000 * sense * _MEMBERS:.0f} ms of the cohort's "
            f"step). With its training at that arithmetic plus those draws and today's "
            f"per-member sensing and scoring, a cohort would reach {today:.2f}: the goal needs "
            f"the readings themselves faster, which batching barely makes them "
            f"(benchmarks/cohort_stages.py)"
        ),
    )


@PERF.register("population_speedup_16")
def population_speedup_16() -> BenchResult:
    """Surgery steps/s of a 16-member cohort ÷ 16 organisms stepped in turn; goal ≥ 0.8 × the
    bound of batched arithmetic alone."""
    timer: Timer = lambda fns: alternating_median_times(fns, 5, 1)  # noqa: E731
    return _population_speedup("cpu", timer, "CPU")


@PERF.register("population_speedup_16_cuda")
def population_speedup_16_cuda() -> BenchResult:
    """``population_speedup_16`` with the organisms on CUDA, where launches and host syncs
    rather than arithmetic bound small hosts; the same goal (the issue set it for the CPU)."""
    if not torch.cuda.is_available():
        raise SkipBenchmark("needs a CUDA device")
    timer: Timer = lambda fns: cuda_median_times(fns, 5, 1)  # noqa: E731
    return _population_speedup("cuda", timer, torch.cuda.get_device_name(), goal=8.0)


_ROLLOUT_OVERRIDES = ("policy=emrakul", "policy.density=0.1", "policy.surgery_interval=25")
_ROLLOUT_MEMBERS = 8
_EPISODE = 3


def _emrakul(cfg: EsperConfig, index: int, organism: Organism, step: OrganismStep) -> EmrakulPolicy:
    params = dict(cfg.policy.params)
    params["seed"] = small_seed(cfg.experiment.seed, "bench", index)
    policy = make_policy("emrakul", **params)
    assert isinstance(policy, EmrakulPolicy)
    policy.reset(organism, step)
    return policy


@PERF.register("cohort_rollout_speedup_8")
def cohort_rollout_speedup_8() -> BenchResult:
    """Emrakul episodes of 8 organisms as a cohort ÷ one after another; goal ≥ 3 (the issue's),
    against the bound of a cohort whose only cost is its batched arithmetic."""
    timer: Timer = lambda fns: alternating_median_times(fns, 5, 1)  # noqa: E731
    return _cohort_rollout("cpu", timer, "CPU")


@PERF.register("cohort_rollout_speedup_8_cuda")
def cohort_rollout_speedup_8_cuda() -> BenchResult:
    """``cohort_rollout_speedup_8`` with the organisms on CUDA, where each member's small
    kernels are launch-bound and batching them over the members should pay more than on a CPU;
    the same goal."""
    if not torch.cuda.is_available():
        raise SkipBenchmark("needs a CUDA device")
    timer: Timer = lambda fns: cuda_median_times(fns, 5, 1)  # noqa: E731
    return _cohort_rollout("cuda", timer, torch.cuda.get_device_name())


def _cohort_rollout(device: str, timer: Timer, where: str) -> BenchResult:
    """The cohort's Emrakul episodes against the same episodes one after another."""
    cfg = compose([*_ROLLOUT_OVERRIDES, f"experiment.device={device}"])
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    n = _ROLLOUT_MEMBERS
    with one_thread():
        alone = [build_organism(cfg, r) for r in range(n)]
        steps = [o.reset() for o in alone]
        acting = [_emrakul(cfg, r, o, s) for r, (o, s) in enumerate(zip(alone, steps, strict=True))]
        cohort = Cohort([build_organism(cfg, r) for r in range(n)])
        latest = cohort.reset()
        copies = [_emrakul(cfg, r, o, s) for r, (o, s) in
                  enumerate(zip(cohort.members, latest, strict=True))]  # fmt: skip

        def one_by_one() -> None:
            for i in range(n):
                _, steps[i] = rollout(alone[i], steps[i], acting[i], _EPISODE)

        def together() -> None:
            done = cohort_rollout(cohort, latest, copies, _EPISODE)
            latest[:] = [step for _, step in done]

        t_alone, t_cohort, t_train = timer([one_by_one, together, cohort.train_steps])
        arithmetic = _batched_arithmetic(cohort, sync)
    k = cfg.policy.surgery_interval
    bound = t_alone / (arithmetic * k * _EPISODE)
    rest = (t_cohort - t_train * _EPISODE) / (n * _EPISODE)
    return BenchResult(
        ours_s=t_cohort,
        anchor=f"{n} Emrakul episodes rolled out one after another (s per round of episodes)",
        anchor_s=t_alone,
        ratio=t_alone / t_cohort,
        goal=3.0,
        direction=">=",
        limit=bound,
        notes=(
            f"{where}; digits MLP 64-128-128-10, batch 32, K={k}, density 0.1, {n} members, "
            f"episodes of {_EPISODE} surgeries, untrained Emrakul copies, one torch thread; "
            f"medians of 5 timed in turn: {1000 * t_cohort:.0f} ms as a cohort vs "
            f"{1000 * t_alone:.0f} ms one after another. Bound {bound:.1f}: the episodes one "
            f"after another over the arithmetic of the cohort's batched steps alone "
            f"({1000 * arithmetic:.2f} ms a step, {k * _EPISODE} steps), a cohort whose "
            f"decisions, sensing and scoring cost nothing. The cohort's batched training is "
            f"{1000 * t_train * _EPISODE:.0f} ms of its time ({k} steps of all members per "
            f"surgery: {1000 * t_train:.0f} ms); the rest, {1000 * rest:.1f} ms per member and "
            f"surgery (Emrakul's decision, the surgery, sensing, scoring; the spike control is "
            f"batched), stays per member: benchmarks/cohort_stages.py measures which of its "
            f"stages pay to batch"
        ),
    )


@PERF.register("emrakul_decision_vs_interval")
def emrakul_decision_vs_interval() -> BenchResult:
    """One Emrakul decision ÷ the K training steps it precedes; record (marker ≤ 1)."""
    cfg = compose(list(_ROLLOUT_OVERRIDES))
    with one_thread():
        organism = build_organism(cfg, 0)
        step = organism.reset()
        emrakul = _emrakul(cfg, 0, organism, step)
        step = organism.step(emrakul.act(organism, step))  # a reading after a surgery
        rigl = make_policy("rigl", delta_t=1)
        assert isinstance(rigl, DropAndGrow)

        def rigl_decides() -> None:
            rigl.clock.reset()  # an update is due again: RigL decides at every call
            if not rigl.act(organism, step):
                raise RuntimeError("RigL made no decision: the timing would be of nothing")

        t_emrakul, t_rigl, t_train = alternating_median_times(
            [lambda: emrakul.act(organism, step), rigl_decides, organism.train_steps], 20, 3
        )
    k, layers = cfg.policy.surgery_interval, len(organism.scalpel.names)
    return BenchResult(
        ours_s=t_emrakul,
        anchor=f"the organism's K = {k} training steps that follow a decision",
        anchor_s=t_train,
        ratio=t_emrakul / t_train,
        goal=1.0,
        direction="<=",
        notes=(
            f"record only (the issue set no goal; 1: deciding should cost less than the "
            f"training interval it precedes); digits MLP 64-128-128-10 ({layers} masked "
            f"layers), density 0.1, K={k}, an untrained Emrakul, one torch thread; "
            f"medians of 20 timed in turn: a decision {1000 * t_emrakul:.1f} ms, RigL's "
            f"{1000 * t_rigl:.1f} ms, {k} training steps {1000 * t_train:.1f} ms. Emrakul ranks "
            f"six scores of every weight (magnitude, gradient, Fisher, GSNR, age, random) where "
            f"RigL ranks two"
        ),
    )
