"""The host's optimizers by ``workload.optimizer`` name, and UPGD.

:data:`OPTIMIZERS` maps each name to an :class:`OptimizerEntry`: the optimizer class and the
arguments it takes from the workload config. ``workload.optimizer_params`` adds the class's own
keyword arguments (UPGD's ``beta_utility`` and ``sigma``, Adam's ``betas``); a name the class
does not take is refused with the ones it does (:func:`esper.registry.build`).

* ``sgd``: ``torch.optim.SGD`` with ``workload.momentum`` and coupled weight decay
  (``g + wd·θ``), the organism's default;
* ``adam``: ``torch.optim.Adam`` with *decoupled* weight decay (AdamW, Loshchilov & Hutter 2019,
  ``θ·(1 − lr·wd)``), so that decay is not rescaled by the second moment; identical to plain
  Adam at ``weight_decay=0``;
* ``upgd``: :class:`UPGD`, utility-based perturbed gradient descent (Elsayed & Mahmood 2024).

Every one composes with any surgeon: SGD and Adam keep a pruned weight (zero, zero gradient,
zero state) exactly at zero; UPGD is told the Scalpel's supports and perturbs only active
weights (:class:`UPGD`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from esper.config import WorkloadConfig
from esper.registry import Registry, build
from esper.seeding import derive_seed

__all__ = ["OPTIMIZERS", "UPGD", "OptimizerEntry", "make_optimizer"]

Supports = Mapping[torch.Tensor, torch.Tensor]
"""Boolean support of each masked parameter, keyed by the parameter (live views)."""


class UPGD(torch.optim.Optimizer):
    """Utility-based Perturbed Gradient Descent (Elsayed & Mahmood, ICLR 2024, "Addressing Loss
    of Plasticity and Catastrophic Forgetting in Continual Learning", openreview sKPzAXoylB).

    The first-order, *global*-utility variant, as in the authors' reference implementation
    (the ``UPGD`` class of github.com/mohmdelsayed/upgd's README). Per weight ``w`` with
    gradient ``g``, at the tensor's ``t``-th step:

    * utility trace ``u ← β_u·u + (1 − β_u)·(−g·w)`` (first-order estimate of the loss
      increase if ``w`` were removed, taken before the update);
    * scaled utility ``ū = sigmoid((u / (1 − β_u^t)) / m)``, with ``m`` the largest raw trace
      over every gated tensor (the global max, as in the reference);
    * ``w ← w·(1 − lr·wd) − 2·lr·(g + σ·ε)·(1 − ū)``, ``ε ~ N(0, 1)`` per weight.

    Useful weights (``ū → 1``) are protected from both gradient and noise; useless ones
    (``ū → 0``) take a perturbed step, which keeps them plastic. The factor 2 is the
    reference's: at zero utility (``ū = ½``) the step is a plain SGD step plus noise. Where
    ``m`` is 0 (no utility anywhere yet) or not finite, ``ū = ½`` (the reference would divide
    0 by 0).

    On a sparse host the factory binds the Scalpel's supports (:meth:`bind_supports`): the
    noise is drawn for every weight (so the stream of draws does not depend on the masks) but
    applied only on the support, and ``m`` is the max over supported weights, so the update is
    UPGD's at the sparse budget over active weights. A pruned weight of an in-place mask (zero,
    with a masked zero gradient and a zero trace) then stays exactly zero; the ``masked``
    mechanism also re-zeroes pruned weights after every step of an optimizer that is not on its
    zero-preserving list, UPGD included. Hidden-weight mechanisms (``straight_through``,
    ``atm``) keep training their pruned weights on the gradient, without noise.

    Args:
        params: Parameters or parameter groups. A group with ``gated=False`` (the mask
            mechanism's learnable logits, which are not weights of the network) takes plain
            ``w·(1 − lr·wd) − lr·g`` steps: no trace, no noise, not in the global max.
        lr: Step size.
        weight_decay: Decoupled weight decay ``wd``.
        beta_utility: ``β_u``, decay of the utility trace, in ``[0, 1)``.
        sigma: ``σ``, standard deviation of the perturbation, ``≥ 0``.
        supports: Boolean support per masked parameter (see above); others are dense.
        seed: Seed of the noise's CPU generator (draws are moved to the parameter's device, so
            CPU and CUDA runs perturb alike). Its state is part of :meth:`state_dict`.

    The defaults are the reference's (``lr=1e-5``, ``weight_decay=0.001``,
    ``beta_utility=0.999``, ``sigma=0.001``); the workload sets ``lr`` and ``weight_decay``.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-5,
        weight_decay: float = 0.001,
        beta_utility: float = 0.999,
        sigma: float = 0.001,
        supports: Supports | None = None,
        seed: int = 0,
    ) -> None:
        checks = {
            "lr": (lr, lr >= 0, "≥ 0"),
            "weight_decay": (weight_decay, weight_decay >= 0, "≥ 0"),
            "beta_utility": (beta_utility, 0 <= beta_utility < 1, "in [0, 1)"),
            "sigma": (sigma, sigma >= 0, "≥ 0"),
        }
        for name, (value, ok, valid) in checks.items():
            if not (math.isfinite(value) and ok):
                raise ValueError(f"UPGD: {name}={value} must be a finite number {valid}")
        defaults = {"lr": lr, "weight_decay": weight_decay, "beta_utility": beta_utility,
                    "sigma": sigma, "gated": True}  # fmt: skip
        super().__init__(params, defaults)
        self.supports: dict[torch.Tensor, torch.Tensor] = {}
        self.bind_supports(supports or {})
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)

    def bind_supports(self, supports: Supports) -> None:
        """Perturb and rank only the weights in ``supports[p]`` (live boolean views, updated
        in place by surgery, such as :meth:`Scalpel.mask`) of each parameter ``p``."""
        for p, support in supports.items():
            if support.shape != p.shape or support.dtype != torch.bool:
                raise ValueError(
                    f"UPGD: a support must be a boolean tensor shaped like its parameter "
                    f"{tuple(p.shape)}, got {support.dtype} {tuple(support.shape)}"
                )
        self.supports = dict(supports)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One UPGD update of every parameter with a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        gated: list[tuple[dict[str, Any], torch.Tensor, torch.Tensor]] = []
        maxima: list[torch.Tensor] = []
        for group in self.param_groups:
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if not group["gated"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"]).add_(grad, alpha=-group["lr"])
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["avg_utility"] = torch.zeros_like(p)
                state["step"] += 1
                trace = state["avg_utility"]
                beta = group["beta_utility"]
                trace.mul_(beta).add_(-grad * p, alpha=1 - beta)
                support = self.supports.get(p)
                ranked = trace if support is None else trace.masked_fill(~support, -math.inf)
                maxima.append(ranked.max())
                gated.append((group, p, grad))
        if not gated:
            return loss
        top = torch.stack(maxima).max()
        top = torch.where(torch.isfinite(top) & (top != 0), top, math.inf)
        for group, p, grad in gated:
            state = self.state[p]
            noise = torch.randn(p.shape, generator=self.generator, dtype=p.dtype).to(p.device)
            noise.mul_(group["sigma"])
            support = self.supports.get(p)
            if support is not None:
                noise.masked_fill_(~support, 0.0)
            bias_correction = 1 - group["beta_utility"] ** state["step"]
            scaled = torch.sigmoid(state["avg_utility"] / bias_correction / top)
            p.mul_(1 - group["lr"] * group["weight_decay"]).add_(
                (grad + noise) * (1 - scaled), alpha=-2.0 * group["lr"]
            )
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state (utility traces, step counts, groups) and the noise
        generator's, so that a resumed run draws the same perturbations."""
        state = super().state_dict()
        state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        rest = dict(state_dict)
        generator = rest.pop("generator")
        super().load_state_dict(rest)
        self.generator.set_state(generator.cpu())


@dataclass(frozen=True)
class OptimizerEntry:
    """How a ``workload.optimizer`` name is built.

    Attributes:
        cls: The optimizer class.
        settings: Its arguments taken from the workload config, the seed and the Scalpel's
            supports (the user's ``workload.optimizer_params`` come on top).
        mechanism_group: Options of the parameter group of the mask mechanism's learnable
            parts (which never decay), beyond ``weight_decay=0``.
    """

    cls: type[torch.optim.Optimizer]
    settings: Callable[[WorkloadConfig, int, Supports], dict[str, Any]]
    mechanism_group: Mapping[str, Any] = field(default_factory=dict)


OPTIMIZERS: Registry[OptimizerEntry] = Registry("optimizer")

OPTIMIZERS.register("sgd")(OptimizerEntry(
    torch.optim.SGD,
    lambda w, seed, supports: {"lr": w.lr, "momentum": w.momentum, "weight_decay": w.weight_decay},
))  # fmt: skip
OPTIMIZERS.register("adam")(OptimizerEntry(
    torch.optim.Adam,
    lambda w, seed, supports: {"lr": w.lr, "weight_decay": w.weight_decay,
                               "decoupled_weight_decay": True},
))  # fmt: skip
OPTIMIZERS.register("upgd")(OptimizerEntry(
    UPGD,
    lambda w, seed, supports: {"lr": w.lr, "weight_decay": w.weight_decay, "supports": supports,
                               "seed": derive_seed(seed, "upgd")},
    mechanism_group={"gated": False},
))  # fmt: skip


def make_optimizer(
    cfg: WorkloadConfig,
    groups: list[dict[str, Any]],
    mechanism_params: Sequence[torch.Tensor] = (),
    seed: int = 0,
    supports: Supports | None = None,
) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` over the host's parameter ``groups``, plus one group for
    the mask mechanism's learnable parts (``mechanism_params``, never decayed).

    Raises:
        esper.registry.UnknownNameError: an optimizer name that is not registered.
        esper.registry.InvalidParameterError: a ``workload.optimizer_params`` key the optimizer
            does not take (the message lists the ones it does).
        ValueError: a value the optimizer refuses.
    """
    entry = OPTIMIZERS[cfg.optimizer.value]
    groups = list(groups)
    if mechanism_params:
        groups.append({"params": list(mechanism_params), "weight_decay": 0.0,
                       **entry.mechanism_group})  # fmt: skip
    fixed = {"params": groups, **entry.settings(cfg, seed, supports or {})}
    what = f"workload.optimizer_params of optimizer {cfg.optimizer.value!r}"
    return build(entry.cls, dict(cfg.optimizer_params), what, fixed=fixed)
