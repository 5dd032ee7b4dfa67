"""The action distribution of Emrakul's actors: a diagonal Gaussian plus optional Bernoullis.

Continuous parts (turnover logit, criterion logits, ``log τ``, sedation logit, the General's
density logits) are Gaussian; binary parts (the heat burst) are Bernoulli. Log-probabilities and
entropies sum over the dimensions, one value per agent, as PPO's ratio needs.
"""

from __future__ import annotations

import math

import torch

__all__ = ["GaussianBernoulli"]

_LOG_2PI = math.log(2.0 * math.pi)


class GaussianBernoulli:
    """``N(mean, diag(σ²)) × Π Bernoulli(sigmoid(logit))`` per agent.

    Args:
        mean: ``[n, d]`` Gaussian means.
        log_std: ``[n, d]`` log standard deviations.
        logits: ``[n, b]`` Bernoulli logits, or ``None`` for none.

    An action is a ``[n, d + b]`` tensor: the Gaussian sample, then the 0/1 Bernoulli draws.
    """

    def __init__(
        self, mean: torch.Tensor, log_std: torch.Tensor, logits: torch.Tensor | None
    ) -> None:
        if mean.shape != log_std.shape or mean.dim() != 2:
            raise ValueError(f"mean {tuple(mean.shape)} and log_std must be equal [n, d] shapes")
        if logits is not None and (logits.dim() != 2 or logits.shape[0] != mean.shape[0]):
            raise ValueError(f"logits must be [n, b] with n={mean.shape[0]}")
        self.mean = mean
        self.log_std = log_std.clamp(-5.0, 2.0)
        self.logits = logits
        self.d = mean.shape[1]

    @property
    def width(self) -> int:
        """Columns of an action."""
        return self.d + (0 if self.logits is None else self.logits.shape[1])

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random action ``[n, width]`` (no gradient)."""
        with torch.no_grad():
            noise = torch.randn(self.mean.shape, generator=generator)
            parts = [self.mean + noise * self.log_std.exp()]
            if self.logits is not None:
                u = torch.rand(self.logits.shape, generator=generator)
                parts.append((u < torch.sigmoid(self.logits)).float())
            return torch.cat(parts, dim=1)

    def mode(self) -> torch.Tensor:
        """The most likely action ``[n, width]``."""
        with torch.no_grad():
            parts = [self.mean]
            if self.logits is not None:
                parts.append((self.logits > 0).float())
            return torch.cat(parts, dim=1)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        """``log p(action)`` per agent, ``[n]``."""
        x = action[:, : self.d]
        z = (x - self.mean) / self.log_std.exp()
        out = (-0.5 * z.pow(2) - self.log_std - 0.5 * _LOG_2PI).sum(dim=1)
        if self.logits is not None:
            b = action[:, self.d :]
            out = out - torch.nn.functional.binary_cross_entropy_with_logits(
                self.logits, b, reduction="none"
            ).sum(dim=1)
        return out

    def entropy(self) -> torch.Tensor:
        """Entropy per agent, ``[n]``."""
        out = (self.log_std + 0.5 * (1.0 + _LOG_2PI)).sum(dim=1)
        if self.logits is not None:
            p = torch.sigmoid(self.logits)
            out = out + torch.nn.functional.binary_cross_entropy_with_logits(
                self.logits, p, reduction="none"
            ).sum(dim=1)
        return out
