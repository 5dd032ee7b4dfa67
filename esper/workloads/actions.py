"""What a surgeon can do to one layer at a surgery: :class:`LayerAction`.

Every policy, heuristic or learned, returns one :class:`LayerAction` per layer it operates on;
:meth:`esper.workloads.organism.Organism.step` validates all of them before applying any, so a
bad action changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from esper.workloads.forgetting import PERTURB, SHRINK
from esper.workloads.scalpel import REGROW_INITS, Scalpel

__all__ = ["InvalidActionError", "LayerAction", "cut"]


class InvalidActionError(ValueError):
    """A :class:`LayerAction` field is out of range; the message names the layer and field."""


def _flat(indices: torch.Tensor | Sequence[int]) -> torch.Tensor:
    return torch.as_tensor(indices, dtype=torch.int64).reshape(-1)


@dataclass
class LayerAction:
    """One layer's part of a surgery.

    Attributes:
        prune: Flat indices to remove from the support.
        regrow: Flat indices to add to the support.
        regrow_init: How regrown weights start (a name in ``REGROW_INITS``: ``zero`` as RigL,
            ``kaiming``, ...).
        tau: New Gumbel temperature of the layer (``None``: unchanged; else ``> 0``).
        tau_factor: Heat the layer's mechanism temperature: its configured (scheduled)
            temperature times this factor, until a later action's factor is 1 (``None``:
            unchanged; else ``> 0``, and not with ``tau``; a ``temperature`` event is recorded
            when the temperature changes).
        sedation: Learning-rate multiplier of the layer, in ``(0, 1]``, for ``sedation_steps``
            SGD steps (:class:`esper.workloads.anesthesia.Sedation`).
        sedation_steps: How long the sedation lasts (``≥ 0``; 0: none).
        reset_units: Output units (rows of the weight: neurons or channels) to re-initialise,
            as CBP and ReDo do: fresh incoming weights on the unit's support, zero outgoing
            weights in the consuming layer, optimizer state reset
            (:func:`esper.workloads.units.reset_units`).
        forget: Flat indices of weights to shrink and perturb (Fisher-guided selective
            forgetting, :func:`esper.workloads.forgetting.shrink_perturb`); their mask state
            does not change.
        forget_shrink: ``λ`` of the forget, the fraction of each forgotten weight kept, in
            ``[0, 1]`` (default :data:`~esper.workloads.forgetting.SHRINK`).
        forget_perturb: Scale of the fresh initial-distribution draw the forget adds, in
            ``[0, 1]`` (default :data:`~esper.workloads.forgetting.PERTURB`).
        target_density: The layer density the surgeon now aims for (the Surgeon General's
            allocation, in ``[0, 1]``), recorded as a ``budget`` event; the prune/regrow
            indices enact it.
        policy_tau: The surgeon's selection temperature for the layer, recorded on its events
            (``None``: none); it changes nothing by itself (``tau`` sets the mechanism's).
        heat: Whether the surgeon has the layer in a heat burst, recorded on its events
            (``None``: the surgeon has no heat decision).
        protect: Refuse this surgery's prunes of the layer's weights that serve tail classes,
            and keep the samples they serve in the buffer (synchronized retention on demand,
            :mod:`esper.workloads.memory.retention`; needs a data side, else it does nothing).
    """

    prune: torch.Tensor | Sequence[int] = ()
    regrow: torch.Tensor | Sequence[int] = ()
    regrow_init: str = "zero"
    tau: float | None = None
    tau_factor: float | None = None
    sedation: float = 1.0
    sedation_steps: int = 0
    reset_units: torch.Tensor | Sequence[int] = ()
    target_density: float | None = None
    forget: torch.Tensor | Sequence[int] = ()
    forget_shrink: float = SHRINK
    forget_perturb: float = PERTURB
    protect: bool = False
    policy_tau: float | None = None
    heat: bool | None = None

    def __post_init__(self) -> None:
        self._check_fields("")

    def validate(self, layer: str, numel: int, units: int) -> None:
        """Check every field, and that the indices address a tensor of ``numel`` weights with
        ``units`` output units (rows).

        Raises:
            InvalidActionError: naming ``layer``, the field and the allowed range.
        """
        self._check_fields(layer)
        bounds = (("prune", numel), ("regrow", numel), ("reset_units", units), ("forget", numel))
        for field_name, bound in bounds:
            value = getattr(self, field_name)
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                raise InvalidActionError(
                    f"{self._where(layer)}{field_name} must hold integer indices, got {value.dtype}"
                )
            idx = _flat(value)
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= bound):
                raise InvalidActionError(
                    f"{self._where(layer)}{field_name} indices must lie in [0, {bound}), got "
                    f"min {int(idx.min())}, max {int(idx.max())}"
                )

    @staticmethod
    def _where(layer: str) -> str:
        return f"LayerAction for {layer!r}: " if layer else "LayerAction: "

    def _check_fields(self, layer: str) -> None:
        where = self._where(layer)
        if not (isinstance(self.sedation, int | float) and 0.0 < self.sedation <= 1.0):
            raise InvalidActionError(f"{where}sedation={self.sedation} must lie in (0, 1]")
        steps = self.sedation_steps
        if not (math.isfinite(steps) and int(steps) == steps >= 0):
            raise InvalidActionError(
                f"{where}sedation_steps={self.sedation_steps} must be an integer ≥ 0"
            )
        for field_name in ("tau", "tau_factor"):
            value = getattr(self, field_name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InvalidActionError(f"{where}{field_name}={value} must be a finite number > 0")
        if self.tau is not None and self.tau_factor is not None:
            raise InvalidActionError(
                f"{where}tau={self.tau} pins the temperature and tau_factor={self.tau_factor} "
                "heats it: give one"
            )
        if self.policy_tau is not None and not (
            math.isfinite(self.policy_tau) and self.policy_tau >= 0
        ):
            raise InvalidActionError(f"{where}policy_tau={self.policy_tau} must be finite, ≥ 0")
        if self.target_density is not None and not 0.0 <= self.target_density <= 1.0:
            raise InvalidActionError(
                f"{where}target_density={self.target_density} must lie in [0, 1]"
            )
        for field_name in ("forget_shrink", "forget_perturb"):
            value = getattr(self, field_name)
            if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
                raise InvalidActionError(f"{where}{field_name}={value} must lie in [0, 1]")
        if self.regrow_init not in REGROW_INITS:
            raise InvalidActionError(
                f"{where}regrow_init={self.regrow_init!r} is unknown; valid: "
                f"{', '.join(REGROW_INITS.names())}"
            )


def cut(scalpel: Scalpel, name: str, act: LayerAction) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune, then regrow ``act``'s indices of ``name``; returns the flat indices that actually
    changed state (pruned, regrown), on the mask's device."""
    device = scalpel.mask(name).device
    prune = _flat(act.prune).to(device)
    regrow = _flat(act.regrow).to(device)
    before = scalpel.mask(name).view(-1).clone()
    if prune.numel():
        scalpel.prune(name, prune)
    middle = scalpel.mask(name).view(-1).clone()
    if regrow.numel():
        scalpel.regrow(name, regrow, init=act.regrow_init)
    after = scalpel.mask(name).view(-1)
    return (before & ~middle).nonzero().view(-1), (~middle & after).nonzero().view(-1)
