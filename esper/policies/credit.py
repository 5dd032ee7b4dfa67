"""Variance-reduced credit: a surgery's accuracy term measured against a control twin.

The reward of one surgery, ``R = α·Acc − …``, takes ``Acc`` as the organism's online accuracy
over the ``K`` steps after the surgery. Most of that number is not the surgery's doing: the
stream's phase (right after a drift every surgeon scores low), the difficulty of the batches
drawn, and how far training has come. A policy-gradient learner sees all three as noise on its
credit.

A *control twin* (``policy.training.control``, e.g. ``rigl``) is built from the same config and
replica id as its organism — the same stream, initial weights, masks and batches — and operated
on by a fixed heuristic surgeon (:class:`esper.policies.reference.ReferenceTwins`). Each
surgery's reward then subtracts ``α`` times the twin's online accuracy over the same ``K`` SGD
steps (:func:`controlled_reward`), so the term becomes *accuracy relative to the twin*.

Why a twin rather than a counterfactual replay of the interval without the surgery: the twin's
accuracy does not depend on the policy's actions at all, so subtracting it is an action-
independent baseline in the sense of Williams (1992) and Greensmith, Bartlett & Baxter (2004,
"Variance reduction techniques for gradient estimates in reinforcement learning"): the policy
gradient's expectation is unchanged, and an episode's return still sums to its accuracy
relative to a fixed reference (a surgery whose regrown weights pay off several intervals later
is still credited with it). A no-surgery replay from each state is a state-dependent control:
its per-surgery differences no longer add up to the run's accuracy, and they reward the short-
sighted (a regrowth costs accuracy in its own interval and pays later). The twin also costs
about half a training step per step when it is batched with its organism, where a replay
doubles the training. What the control buys is measured by ``benchmarks/credit.py``
(:mod:`esper.bench.credit`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from esper.policies.base import POLICIES

__all__ = ["CONTROL_NONE", "CREDIT_FORMS", "Credit", "check_control", "check_credit",
           "control_surgeons",
           "controlled_reward", "mean_control", "twin_controls"]  # fmt: skip

CREDIT_FORMS = ("level", "change")
"""How a control enters the reward (:class:`Credit`)."""

CONTROL_NONE = "none"
"""``policy.training.control`` without a control: raw rewards."""


def control_surgeons() -> list[str]:
    """Registry surgeons a control twin can run: heuristic ones that hold the budget from the
    start (a twin starts at its organism's density)."""
    return [n for n in POLICIES.names() if n != "emrakul" and not POLICIES[n].prunes_from_dense]


def check_control(control: str) -> None:
    """Refuse a ``policy.training.control`` that is neither ``none`` nor a control surgeon.

    Raises:
        ValueError: naming the key, the value and the valid ones.
    """
    if control != CONTROL_NONE and control not in control_surgeons():
        raise ValueError(
            f"unknown policy.training.control {control!r}; valid: none, "
            f"{', '.join(control_surgeons())}"
        )


def twin_controls(accuracies: Sequence[float], surgeries: int, interval: int) -> list[float]:
    """The twin's mean online accuracy over each of ``surgeries`` consecutive intervals of
    ``interval`` SGD steps (the member's surgeries, in order), from the online accuracy of
    each of its steps (:attr:`ReferenceEpisode.accuracies
    <esper.policies.reference.ReferenceEpisode.accuracies>`).

    A twin that diverged part-way has no steps for the later intervals: they take the mean of
    the steps it ran, and ``nan`` when it ran none (the surgery keeps its raw reward).
    """
    if interval < 1:
        raise ValueError(f"interval must be ≥ 1, got {interval}")
    fallback = sum(accuracies) / len(accuracies) if accuracies else math.nan
    out = []
    for j in range(surgeries):
        chunk = accuracies[j * interval : (j + 1) * interval]
        out.append(sum(chunk) / len(chunk) if chunk else fallback)
    return out


def controlled_reward(reward: float, alpha: float, control: float | None) -> float:
    """``reward − α·control``: the surgery's reward with its accuracy term measured against
    the twin's accuracy ``control`` over the same steps (unchanged when ``control`` is
    ``None`` or ``nan``)."""
    if control is None or math.isnan(control):
        return reward
    return reward - alpha * control


def check_credit(form: str) -> None:
    """Refuse a ``policy.training.credit`` that is not one of :data:`CREDIT_FORMS`.

    Raises:
        ValueError: naming the key, the value and the valid ones.
    """
    if form not in CREDIT_FORMS:
        raise ValueError(
            f"unknown policy.training.credit {form!r}; valid: {', '.join(CREDIT_FORMS)}"
        )


class Credit:
    """One organism's credit over one episode: each surgery's raw reward, in order, becomes the
    reward its learners see.

    Two forms (``policy.training.credit``), with ``a_t`` the organism's and ``c_t`` its twin's
    online accuracy over the ``K`` steps after surgery ``t``:

    * ``level``: ``R_t − α·c_t``. The accuracy term is the organism's accuracy relative to the
      twin's. The stream's phase and the batches' difficulty cancel; what remains besides the
      surgery is the gap the two histories have built up, which moves slowly.
    * ``change``: ``R_t − α·c_t − α·(a_{t−1} − c_{t−1})``: the relative accuracy's change since
      the interval before the surgery, which takes that slow gap out too. The subtracted
      ``a_{t−1} − c_{t−1}`` is known before the surgery is chosen, so it is a baseline, and the
      discounted return of the changes is ``(1 − γ)`` times that of the levels minus that
      baseline: the same policy gradient, scaled, with less variance.

    ``benchmarks/credit.py`` measures both against each surgery's own effect.

    Args:
        controls: The twin's accuracy over each surgery's steps (:func:`twin_controls`).
        alpha: The reward's accuracy weight ``α``.
        form: ``level`` or ``change``.
        before: ``(a, c)`` over the interval before the episode's first surgery (``change``
            needs it).

    Raises:
        ValueError: an unknown form, or ``change`` without ``before``.
    """

    def __init__(
        self,
        controls: Sequence[float],
        alpha: float,
        form: str = "level",
        before: tuple[float, float] | None = None,
    ) -> None:
        check_credit(form)
        if form == "change" and before is None:
            raise ValueError("the change form needs the accuracies before the episode")
        self.controls = list(controls)
        self.alpha = alpha
        self.form = form
        self._previous = None if before is None else before[0] - before[1]
        self._next = 0

    def __len__(self) -> int:
        return len(self.controls)

    def __call__(self, reward: float, accuracy: float) -> float:
        """The learned reward of the next surgery, whose raw reward is ``reward`` and online
        accuracy ``accuracy``."""
        control = self.controls[self._next]
        self._next += 1
        learned = controlled_reward(reward, self.alpha, control)
        if self.form == "change" and math.isfinite(control):
            previous, self._previous = self._previous, accuracy - control
            if previous is not None and math.isfinite(previous):
                learned -= self.alpha * previous
        return learned

    @property
    def used(self) -> list[float]:
        """The controls of the surgeries credited so far."""
        return self.controls[: self._next]


def mean_control(controls: Sequence[float]) -> float:
    """The mean of the finite controls (``nan`` when there is none)."""
    finite = [c for c in controls if math.isfinite(c)]
    return sum(finite) / len(finite) if finite else math.nan
