"""SWR: Selective Weight Reinitialization (Hernandez-Garcia, Dohare, Luo & Sutton, CoLLAs 2025,
"Reinitializing weights vs units for maintaining plasticity in neural networks"; reference code
``JFernando4/collas_2025_swr_paper``, ``src/swr_functions/selective_weight_reinitialization.py``).

CBP and ReDo reset whole units; SWR resets single weights, those of lowest *utility*: the
gradient utility ``u = |w · ∂L/∂w|`` (a first-order estimate of the loss change if the weight
were removed, the paper's choice) or the magnitude utility ``u = |w|``. Every ``interval`` SGD
steps, in every prunable layer, the chosen weights are re-initialised in place:

- ``threshold`` (the method of the paper's main results): every weight with
  ``u ≤ ρ · mean(u)``;
- ``proportional``: the ``ρ · n`` weights of lowest utility, the fractional part of the count
  rounded up with that probability (stochastic rounding, as the reference code).

The paper's ``resample`` draws fresh values from the layer's initial distribution, which for our
hosts (torch's default init) is ``REGROW_INITS``' ``kaiming``, ``U(±1/√fan_in)``; its ``mean``
sets the initial mean, ``zero``. On our masked networks a re-initialisation is
``LayerAction(prune=i, regrow=i, regrow_init=init)``, as :mod:`.periodic_reset` does: the
candidates, and the mean of the threshold, are the layer's active weights, and masks and
density do not change.

Defaults: the paper's setting for its MLP on permuted MNIST trained by SGD (the host family of
our ``digits_*`` workloads): ``threshold``, ``ρ = 10⁻⁵``, every 2048 steps, gradient utility,
``resample``. Its setting for the ViT on incremental CIFAR-100 is ``ρ = 5·10⁻⁴`` every 128
steps (the ``policy=swr`` preset, sized to the default stream).

Differences from the reference code:

- it re-initialises every parameter tensor (biases and norm gains to their initial values);
  here only the weights the Scalpel masks, and only active ones;
- the utility is read at the surgery: the weights after the interval's last SGD step times the
  dense gradient of that step's batch, which is what the reference computes after its optimizer
  step on the steps where it re-initialises;
- it can average the utility over steps (``decay_rate``), but its experiments run with
  ``decay_rate = 0``, the instantaneous utility used here; it has no maturity age, nor here;
- the optimizer's per-weight state at re-initialised weights is cleared (the Scalpel's
  regrowth does; the reference keeps momentum), and their mask age restarts;
- a re-initialisation due at SGD step ``t`` happens at the first surgery at or after ``t``
  (:class:`~esper.policies.baselines.schedules.UpdateClock`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from esper.policies.base import POLICIES, Policy
from esper.policies.baselines.schedules import UpdateClock
from esper.policies.scores import weight_scores
from esper.seeding import derive_seed
from esper.workloads.actions import LayerAction
from esper.workloads.organism import Organism, OrganismStep
from esper.workloads.scalpel import REGROW_INITS

__all__ = ["METHODS", "SWR", "UTILITIES", "chosen_weights"]

METHODS = ("threshold", "proportional")
"""How SWR picks weights: below ``ρ ·`` the mean utility, or the ``ρ`` share of lowest."""

UTILITIES = ("gradient", "magnitude")
"""SWR's weight utilities: ``|w · ∂L/∂w|`` and ``|w|``."""


def chosen_weights(
    utility: torch.Tensor,
    mask: torch.Tensor,
    method: str,
    factor: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Flat indices (ascending) of the active weights SWR re-initialises.

    Args:
        utility: Per-weight utility of the layer, any shape with ``mask.numel()`` entries.
        mask: The layer's support; only active weights are candidates.
        method: ``threshold`` (``u ≤ factor · mean of the active u``) or ``proportional``
            (the ``factor · n_active`` lowest, stochastically rounded).
        factor: ``ρ``.
        generator: Draws the rounding of ``proportional`` (one draw per call).
    """
    active = mask.reshape(-1).nonzero().view(-1).cpu()
    u = utility.reshape(-1).cpu().to(torch.float64)[active]
    if method == "threshold":
        if active.numel() == 0:
            return active
        return active[u <= factor * u.mean()]
    expected = factor * active.numel()
    count = int(expected) + int(float(torch.rand((), generator=generator)) < expected % 1.0)
    order = torch.argsort(u, stable=True)
    return active[order[:count]].sort().values


@POLICIES.register("swr")
class SWR(Policy):
    """Re-initialise every layer's active weights of lowest utility every ``interval`` steps.

    Args:
        interval: SGD steps between re-initialisations, ≥ 1 (paper: 2048 on permuted MNIST,
            128 on incremental CIFAR-100).
        factor: ``ρ``: the threshold's multiple of the mean utility (≥ 0; paper: 10⁻⁵ and
            5·10⁻⁴), or the share of active weights re-initialised (``proportional``, in
            ``[0, 1]``).
        method: ``threshold`` (paper's main results) or ``proportional``.
        utility: ``gradient`` (``|w · ∂L/∂w|``, paper) or ``magnitude`` (``|w|``).
        init: Fresh values (a name in ``REGROW_INITS``; ``kaiming`` is the paper's
            ``resample`` for torch-initialised hosts, ``zero`` its ``mean``).
        seed: Seed of the stochastic rounding of ``proportional``.
    """

    name: ClassVar[str] = "swr"

    def __init__(
        self,
        interval: int = 2048,
        factor: float = 1e-5,
        method: str = "threshold",
        utility: str = "gradient",
        init: str = "kaiming",
        seed: int = 0,
    ) -> None:
        if interval < 1:
            raise ValueError(f"interval={interval} must be ≥ 1 SGD step (paper: 2048)")
        if method not in METHODS:
            raise ValueError(f"method={method!r} is unknown; valid: {', '.join(METHODS)}")
        if utility not in UTILITIES:
            raise ValueError(f"utility={utility!r} is unknown; valid: {', '.join(UTILITIES)}")
        if method == "threshold" and not factor >= 0.0:
            raise ValueError(f"factor={factor} must be ≥ 0 for method='threshold' (paper: 1e-5)")
        if method == "proportional" and not 0.0 <= factor <= 1.0:
            raise ValueError(f"factor={factor} must lie in [0, 1] for method='proportional'")
        if init not in REGROW_INITS:
            raise ValueError(f"init={init!r} is unknown; valid: {', '.join(REGROW_INITS.names())}")
        self.clock = UpdateClock(interval)
        self.factor = factor
        self.method = method
        self.utility = utility
        self.init = init
        self.seed = seed
        self.generator = torch.Generator()
        self.generator.manual_seed(derive_seed(seed, "policy", self.name))
        self.replaced = 0

    def reset(self, organism: Organism, first: OrganismStep) -> None:
        """Reseed the rounding stream and start the clock."""
        self.generator.manual_seed(derive_seed(self.seed, "policy", self.name))
        self.clock.reset()

    def utilities(self, organism: Organism, step: OrganismStep, name: str) -> torch.Tensor:
        """Flat per-weight utility of layer ``name`` (float64, on the CPU)."""
        scores = weight_scores(organism, step, name, self.generator, ("magnitude", "gradient"))
        u = scores["magnitude"].to(torch.float64)
        return u * scores["gradient"].to(torch.float64) if self.utility == "gradient" else u

    def act(self, organism: Organism, step: OrganismStep) -> dict[str, LayerAction]:
        """When due, fresh values for each layer's chosen weights, masks unchanged."""
        if not self.clock.due(organism.sgd_step):
            return {}
        actions: dict[str, LayerAction] = {}
        for name in organism.scalpel.names:
            mask = organism.scalpel.mask(name)
            u = self.utilities(organism, step, name)
            chosen = chosen_weights(u, mask, self.method, self.factor, self.generator)
            if chosen.numel():
                actions[name] = LayerAction(prune=chosen, regrow=chosen, regrow_init=self.init)
                self.replaced += int(chosen.numel())
        return actions

    def state_dict(self) -> dict[str, Any]:
        """The clock, the rounding stream and the weights re-initialised so far."""
        return {
            "clock": self.clock.state_dict(),
            "generator": self.generator.get_state(),
            "replaced": self.replaced,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.clock.load_state_dict(state["clock"])
        self.generator.set_state(state["generator"])
        self.replaced = int(state["replaced"])
