"""The surgery-impact predictor: the loss change a surgery will cause, learned online.

A linear model of ``features → observed loss change`` fitted by recursive least squares with
exponential forgetting (Haykin, "Adaptive Filter Theory", ch. 10; forgetting lets it follow
a drifting host): each observed surgery updates the exact minimiser of
``Σ_t λ^{T−t} (y_t − θᵀx_t)² + λ^T δ‖θ‖²`` in ``O(d²)``, without storing the past. Features
are the layer's topology embedding, its sensor summaries and the candidate action (arch2vec's
idea of predicting a change's functional effect from a structural embedding: Yan et al.
2020, "Does Unsupervised Architecture Representation Learning Help Neural Architecture
Search?", NeurIPS, arXiv 2006.06936), plus a constant for the intercept. Computed in double
precision. What it learns from is a surgery's loss change credited layer by layer
(:class:`ImpactCredit`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["IMPACT_BASELINE_RATE", "ImpactCredit", "ImpactPredictor", "train_encoder_on_impact"]

IMPACT_BASELINE_RATE = 0.1
"""Rate of the running baseline of surgery-interval loss changes (about the last 10)."""


class ImpactPredictor:
    """Online ridge regression of surgery impact by recursive least squares.

    Args:
        features: Input width ``d`` (the intercept is added internally).
        forgetting: λ in ``(0, 1]``; 1 never forgets, 0.99 weighs the last ~100 surgeries.
        prior: Initial ``P = prior · I`` (inverse ridge strength ``1/δ``); larger learns
            faster from the first surgeries.
    """

    def __init__(self, features: int, forgetting: float = 0.99, prior: float = 100.0) -> None:
        if features < 1:
            raise ValueError(f"the impact predictor needs at least one feature, got {features}")
        if not 0.0 < forgetting <= 1.0:
            raise ValueError(f"forgetting must be in (0, 1], got {forgetting}")
        if prior <= 0:
            raise ValueError(f"prior must be positive, got {prior}")
        self.features = features
        self.forgetting = forgetting
        self.prior = prior
        self.theta = torch.zeros(features + 1, dtype=torch.float64)
        self.p = torch.eye(features + 1, dtype=torch.float64) * prior
        self.updates = 0
        self.mean_abs_error = 0.0

    def _augment(self, x: Tensor) -> Tensor:
        x = torch.as_tensor(x, dtype=torch.float64)
        if x.shape[-1] != self.features:
            raise ValueError(f"expected {self.features} impact features, got {x.shape[-1]}")
        return torch.cat([x, torch.ones(*x.shape[:-1], 1, dtype=torch.float64)], dim=-1)

    def predict(self, features: Tensor) -> Tensor:
        """Predicted loss change for features ``(d,)`` or ``(n, d)`` (float64)."""
        return self._augment(features) @ self.theta

    def update(self, features: Tensor, observed_delta: Tensor | float) -> None:
        """Learn from observed surgeries: features ``(d,)`` or ``(n, d)``, in order."""
        x = self._augment(features).reshape(-1, self.features + 1)
        y = torch.as_tensor(observed_delta, dtype=torch.float64).reshape(-1)
        if y.numel() != x.shape[0]:
            raise ValueError(f"{x.shape[0]} feature rows but {y.numel()} observed deltas")
        lam = self.forgetting
        for row, target in zip(x, y, strict=True):
            px = self.p @ row
            gain = px / (lam + row @ px)
            error = float(target - row @ self.theta)
            self.theta += gain * error
            self.p = (self.p - torch.outer(gain, px)) / lam
            self.p = 0.5 * (self.p + self.p.t())  # keep it symmetric against round-off
            self.updates += 1
            self.mean_abs_error += (abs(error) - self.mean_abs_error) / min(self.updates, 100)

    def state_dict(self) -> dict[str, Any]:
        """Coefficients, inverse correlation matrix and counters."""
        return {
            "features": self.features,
            "forgetting": self.forgetting,
            "prior": self.prior,
            "theta": self.theta.clone(),
            "p": self.p.clone(),
            "updates": self.updates,
            "mean_abs_error": self.mean_abs_error,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (the feature width must match)."""
        if state["features"] != self.features:
            raise ValueError(
                f"state has {state['features']} impact features, this predictor {self.features}"
            )
        self.forgetting = float(state["forgetting"])
        self.prior = float(state["prior"])
        self.theta = state["theta"].clone().to(torch.float64)
        self.p = state["p"].clone().to(torch.float64)
        self.updates = int(state["updates"])
        self.mean_abs_error = float(state["mean_abs_error"])


class ImpactCredit:
    """Which share of a surgery interval's loss change each layer operated on is credited with.

    The surgery is credited with the change's excess over a running baseline of past
    intervals' changes (rate :data:`IMPACT_BASELINE_RATE`, REINFORCE's variance-reducing
    baseline, Williams 1992: drifts and ordinary learning are in both), and each touched layer
    with the share of it that its changed weights are of all changed weights, instead of every
    layer with the whole change.

    Attributes:
        baseline: The running baseline of interval loss changes.
    """

    def __init__(self) -> None:
        self.baseline = 0.0

    def credit(
        self, touched: Iterable[str], changed: Mapping[str, int], observed_delta: float
    ) -> dict[str, float]:
        """Each touched layer's credited loss change, for layers whose weights changed (``{}``
        for a non-finite change, a diverged interval, which leaves the baseline as it was).

        Args:
            touched: The layers the surgery acted on.
            changed: Per layer, how many of its weights changed mask state.
            observed_delta: The interval's loss change.
        """
        if not math.isfinite(observed_delta):
            return {}
        excess = observed_delta - self.baseline
        self.baseline += IMPACT_BASELINE_RATE * excess
        layers = list(touched)
        total = sum(changed.get(name, 0) for name in layers)
        return {name: excess * changed[name] / total
                for name in layers if total and changed.get(name, 0)}  # fmt: skip


def train_encoder_on_impact(
    encoder: nn.Module,
    embed: Callable[[], Tensor],
    rows: Sequence[tuple[int, Tensor, float]],
    theta: Tensor,
    lr: float,
    max_norm: float = 1.0,
) -> float:
    """One gradient step on the topology encoder toward predicting observed surgery impacts.

    The embedding is the first block of the impact predictor's input, so the encoder is
    trained, as arch2vec's idea has it, to make a layer's structural embedding predictive of
    the functional effect of changing it: the squared error of the linear predictor's current
    coefficients ``theta`` (held fixed; recursive least squares keeps refitting them) is
    back-propagated into the encoder and one clipped SGD step taken.

    Args:
        encoder: The topology encoder (its parameters are updated in place).
        embed: Recomputes the embeddings ``(nodes, e)`` with gradients.
        rows: ``(node index, the rest of the predictor's input, credited loss change)``.
        theta: The predictor's coefficients (embedding, rest, intercept).
        lr: SGD step size.
        max_norm: Gradient-norm clip.

    Returns:
        The mean squared error before the step.
    """
    params = [p for p in encoder.parameters() if p.requires_grad]
    with torch.enable_grad():
        embeddings = embed()
        width = embeddings.shape[1]
        coef = theta.to(embeddings)
        errors = []
        for index, rest, target in rows:
            rest = rest.to(embeddings)
            pred = embeddings[index] @ coef[:width] + rest @ coef[width:-1] + coef[-1]
            errors.append((pred - target) ** 2)
        loss = torch.stack(errors).mean()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    pairs = [(p, g) for p, g in zip(params, grads, strict=True) if g is not None]
    norm = float(torch.stack([g.detach().norm() for _, g in pairs]).norm()) if pairs else 0.0
    scale = min(1.0, max_norm / (norm + 1e-12))
    with torch.no_grad():
        for p, g in pairs:
            p.sub_(lr * scale * g)
    return float(loss.detach())
