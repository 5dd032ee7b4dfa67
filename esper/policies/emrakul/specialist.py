"""The Specialists: one shared-parameter actor applied to each layer on its own observation.

Every layer's Specialist is the same network, fed with that layer's local observation and a
learned embedding of its layer index (the observation's topology code already locates the layer
in the graph; the embedding lets the shared actor specialise further). Execution is
decentralized: the action distribution of layer ``i`` is computed from row ``i`` alone, so
other layers' observations cannot change it (CTDE, as in MAPPO and QMIX: only the critic or
the mixer sees the global state during training).

The raw action is ``[turnover logit, 5 pruning-criterion logits, 3 regrowth-criterion logits,
log τ, sedation logit | heat, forget(, protect)]``: a diagonal Gaussian over the first eleven
entries and Bernoullis for the heat burst, FGSF's forget and, when the policy has it, the
protection of the layer's tail-serving weights (synchronized retention on demand, for an
organism with a data side). :class:`ActionCodec` maps raw actions to
:class:`~esper.policies.emrakul.actions.SpecialistAction` and back.

The hidden representation the action head reads is :meth:`SpecialistActor.features` (the
trunk); MAPPO's auxiliary effect prediction (``aux_coef`` of
:class:`~esper.policies.learners.mappo.MAPPOLearner`) trains a second, linear head on it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from esper.policies.emrakul.actions import PRUNE_CRITERIA, REGROW_CRITERIA, SpecialistAction
from esper.policies.emrakul.distribution import GaussianBernoulli

__all__ = ["ActionCodec", "SpecialistActor"]

_P = len(PRUNE_CRITERIA)
_R = len(REGROW_CRITERIA)
_LOG_TAU = (math.log(1e-4), math.log(10.0))
_NO_SEDATION = 0.95


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


class ActionCodec:
    """Raw actor outputs ↔ :class:`SpecialistAction`.

    Args:
        max_turnover: Turnover at a saturated turnover logit.
        sedation_steps: SGD steps a sedation lasts.
        min_sedation: Lowest learning-rate multiplier; a multiplier above 0.95 means none.
        protect: Raw actions carry a third bit, the protect bit.
    """

    CONTINUOUS = 1 + _P + _R + 2
    """Gaussian entries of a raw action."""
    WIDTH = CONTINUOUS + 2
    """Columns of a raw action without the protect bit (the heat and forget bits last)."""

    def __init__(
        self,
        max_turnover: float = 0.5,
        sedation_steps: int = 10,
        min_sedation: float = 0.05,
        protect: bool = False,
    ) -> None:
        if not 0.0 < max_turnover <= 1.0:
            raise ValueError(f"max_turnover={max_turnover} must lie in (0, 1]")
        if sedation_steps < 0:
            raise ValueError(f"sedation_steps={sedation_steps} must be ≥ 0")
        if not 0.0 < min_sedation < _NO_SEDATION:
            raise ValueError(f"min_sedation={min_sedation} must lie in (0, {_NO_SEDATION})")
        self.max_turnover = max_turnover
        self.sedation_steps = sedation_steps
        self.min_sedation = min_sedation
        self.protect = protect
        self.bits = 3 if protect else 2
        self.width = self.CONTINUOUS + self.bits

    def decode(self, raw: torch.Tensor) -> SpecialistAction:
        """The :class:`SpecialistAction` of one raw action (a ``[width]`` vector)."""
        if raw.shape != (self.width,):
            raise ValueError(f"a raw action has shape ({self.width},), got {tuple(raw.shape)}")
        r = raw.detach().double()
        turnover = self.max_turnover * float(torch.sigmoid(r[0]))
        prune = torch.softmax(r[1 : 1 + _P], 0).tolist()
        regrow = torch.softmax(r[1 + _P : 1 + _P + _R], 0).tolist()
        tau = math.exp(float(r[1 + _P + _R].clamp(*_LOG_TAU)))
        s = self.min_sedation + (1 - self.min_sedation) * float(torch.sigmoid(r[2 + _P + _R]))
        sedation = 1.0 if s > _NO_SEDATION else s
        return SpecialistAction(
            turnover=min(turnover, 1.0),
            prune_mix=tuple(prune),
            regrow_mix=tuple(regrow),
            tau=tau,
            heat=bool(r[self.CONTINUOUS] > 0.5),
            sedation=sedation,
            sedation_steps=self.sedation_steps if sedation < 1.0 else 0,
            forget=bool(r[self.CONTINUOUS + 1] > 0.5),
            protect=self.protect and bool(r[self.CONTINUOUS + 2] > 0.5),
        )

    def encode(self, action: SpecialistAction, sharpness: float = 4.0) -> torch.Tensor:
        """A raw action decoding to (approximately) ``action``: the behaviour-cloning target.

        Mixes are encoded as ``sharpness · π`` logits shifted by ``log π`` where finite, so a
        one-hot mix decodes to a mix dominated by its criterion.
        """
        if action.protect and not self.protect:
            raise ValueError("a protecting action needs a codec with the protect bit")
        out = torch.zeros(self.width)
        out[0] = _logit(action.turnover / self.max_turnover)
        for offset, mix in ((1, action.prune_mix), (1 + _P, action.regrow_mix)):
            for i, p in enumerate(mix):
                out[offset + i] = sharpness * p
        out[1 + _P + _R] = math.log(min(max(action.tau, 1e-4), 10.0))
        fraction = (action.sedation - self.min_sedation) / (1 - self.min_sedation)
        out[2 + _P + _R] = _logit(fraction if action.sedation < 1.0 else 0.99)
        out[self.CONTINUOUS] = float(action.heat)
        out[self.CONTINUOUS + 1] = float(action.forget)
        if self.protect:
            out[self.CONTINUOUS + 2] = float(action.protect)
        return out


class SpecialistActor(nn.Module):
    """The shared Specialist network: ``(o_i, e_i) → π(a_i | o_i)``.

    Args:
        obs_dim: Width of a layer observation.
        max_layers: Layer slots (size of the layer-index embedding).
        hidden: Hidden width.
        embed_dim: Width of the layer embedding (0: none).
        init_turnover: Mean turnover of the untrained actor, as a fraction of ``max_turnover``.
        init_tau: Mean Gumbel temperature of the untrained actor.
        init_log_std: Initial log standard deviation of the Gaussian part.
        bits: Bernoulli entries of an action (:attr:`ActionCodec.bits`: 2, or 3 with protect).
    """

    def __init__(
        self,
        obs_dim: int,
        max_layers: int = 16,
        hidden: int = 64,
        embed_dim: int = 8,
        init_turnover: float = 0.2,
        init_tau: float = 0.05,
        init_log_std: float = -0.5,
        bits: int = 2,
    ) -> None:
        super().__init__()
        if bits not in (2, 3):
            raise ValueError(f"bits={bits}: a Specialist has 2 Bernoulli entries, 3 with protect")
        if obs_dim < 1 or max_layers < 1 or hidden < 1 or embed_dim < 0:
            raise ValueError(
                f"obs_dim={obs_dim}, max_layers={max_layers}, hidden={hidden} must be ≥ 1 and "
                f"embed_dim={embed_dim} ≥ 0"
            )
        self.obs_dim = obs_dim
        self.max_layers = max_layers
        self.hidden_dim = hidden
        self.embed = nn.Embedding(max_layers, embed_dim) if embed_dim else None
        self.body = nn.Sequential(
            nn.Linear(obs_dim + embed_dim, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
        )
        self.head = nn.Linear(hidden, ActionCodec.CONTINUOUS + bits)
        with torch.no_grad():
            self.head.weight.mul_(0.01)
            self.head.bias.zero_()
            self.head.bias[0] = _logit(init_turnover)
            self.head.bias[1 + _P + _R] = math.log(init_tau)
            self.head.bias[2 + _P + _R] = 3.0  # no sedation at first
            self.head.bias[ActionCodec.CONTINUOUS :] = -3.0  # rare heat, forgetting, protection
        self.log_std = nn.Parameter(torch.full((ActionCodec.CONTINUOUS,), init_log_std))

    def features(self, obs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The trunk's hidden representation ``[n, hidden_dim]`` that the action head reads.

        Raises:
            ValueError: wrong observation width or a layer index beyond ``max_layers``.
        """
        if obs.dim() != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"observations must be [n, {self.obs_dim}], got {tuple(obs.shape)}")
        if ids.numel() and int(ids.max()) >= self.max_layers:
            raise ValueError(f"layer index {int(ids.max())} ≥ max_layers={self.max_layers}")
        x = obs.float().clamp(-10.0, 10.0)
        if self.embed is not None:
            x = torch.cat([x, self.embed(ids.long())], dim=1)
        return self.body(x)

    def distribution(self, obs: torch.Tensor, ids: torch.Tensor) -> GaussianBernoulli:
        """Per-agent action distributions for ``obs`` ``[n, obs_dim]`` and layer ``ids`` ``[n]``.

        Raises:
            ValueError: wrong observation width or a layer index beyond ``max_layers``.
        """
        out = self.head(self.features(obs, ids))
        mean = out[:, : ActionCodec.CONTINUOUS]
        heat = out[:, ActionCodec.CONTINUOUS :]
        return GaussianBernoulli(mean, self.log_std.expand_as(mean), heat)
