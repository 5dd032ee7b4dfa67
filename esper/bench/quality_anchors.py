"""The plasticity anchors of ``esper bench quality``: optimizer and host options as conditions.

UPGD, L2 Init and layer norm with weight decay change how the host learns, not which weights
it has, so each composes with any surgeon: an :class:`Anchor` is a surgeon (``policy``) plus
the config overrides of the method (``overrides``), and a condition of the table like any
other. With ``static`` (a fixed mask under the preset's ERK or uniform allocation) it is the
method at the sparse budget over active weights (UPGD perturbs and ranks only active weights,
L2 Init pulls only them, a pruned weight stays at zero: README, "Plasticity baselines that are
optimizer and host options"); with ``rigl`` (``rigl_upgd``) it is the method under a surgeon
that moves the mask, which is how any optimizer option composes with any surgeon (append its
overrides to the surgeon's: ``policy=rigl workload.optimizer=upgd``); with ``dense`` it is the
method as its paper ran it, once at density 1.

Settings are the papers' where they transfer (:attr:`Anchor.overrides`). A step size or
strength that does not transfer to our hosts (SGD with momentum 0.9 at ``lr = 0.02`` on the
digit streams) is a small grid (:attr:`Anchor.grid`) whose candidate is chosen on the
validation seeds, with the layer allocation (:mod:`esper.bench.quality_selection`), never on
the evaluation seeds; the report records the choice (``options``).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

__all__ = [
    "ANCHORS", "L2_INIT", "LAYER_NORM", "UPGD_LR", "UPGD_REFERENCE", "WEIGHT_DECAY", "Anchor",
]  # fmt: skip


@dataclass(frozen=True)
class Anchor:
    """A plasticity method that is an optimizer or host option, run as a condition.

    Attributes:
        policy: The surgeon it composes with (``dense``: once at density 1, like ``dense``;
            any other: at every density of the preset, under each allocation it tries).
        overrides: The method's fixed config overrides, appended after the surgeon's.
        grid: ``(key, values)`` pairs whose product gives the candidate option sets, each
            appended after ``overrides`` and chosen on the validation seeds (empty: one
            candidate).

    Raises:
        ValueError: a grid key without values, listed twice or also fixed in ``overrides``.
    """

    policy: str
    overrides: tuple[str, ...] = ()
    grid: tuple[tuple[str, tuple[float, ...]], ...] = ()

    def __post_init__(self) -> None:
        keys = [key for key, _ in self.grid]
        fixed = {o.split("=", 1)[0] for o in self.overrides}
        if len(set(keys)) < len(keys) or fixed & set(keys) or not all(v for _, v in self.grid):
            raise ValueError(
                f"anchor on {self.policy!r}: each grid key needs values, once, and must not "
                f"be fixed in overrides too (grid {keys}, overrides {sorted(fixed)})"
            )

    @property
    def dense(self) -> bool:
        """Whether it runs once at density 1 rather than at each sparse density."""
        return self.policy == "dense"

    def options(self) -> list[tuple[str, ...]]:
        """Every candidate option set (``key=value`` overrides), in grid order; ``[()]``
        without a grid."""
        keys = [key for key, _ in self.grid]
        return [
            tuple(f"{key}={value:g}" for key, value in zip(keys, values, strict=True))
            for values in product(*(values for _, values in self.grid))
        ]


UPGD_REFERENCE = (
    "workload.optimizer=upgd",
    "workload.optimizer_params.sigma=0.001",
    "workload.optimizer_params.beta_utility=0.999",
    "workload.weight_decay=0.001",
)
"""UPGD with the reference's defaults (σ = 0.001, β_u = 0.999, decoupled weight decay 0.001:
the ``UPGD`` class of github.com/mohmdelsayed/upgd's README; Elsayed & Mahmood, ICLR 2024)."""

UPGD_LR = ("workload.lr", (0.02, 0.06, 0.2))
"""UPGD's step size. The reference's default (1e-5) does not transfer: UPGD has no momentum
and steps ``2·lr·(1 − ū)``, ``lr`` at a weight of no particular utility (``ū = ½``), where our
SGD's momentum 0.9 makes its ``lr = 0.02`` an effective step of 0.2; the grid spans the
workload's raw step to that effective one, log-spaced (on the regression stream, whose SGD runs
``lr = 0.01`` without momentum, all three are larger steps: the validation seeds judge)."""

L2_INIT = ("workload.l2_init", (1e-2, 1e-3, 1e-4))
"""L2 Init's λ: Kumar et al. (CoLLAs 2024, arXiv 2308.11958) sweep 1e-2 … 1e-5 per problem;
1e-5 is left out, a pull of 4e-6 a step (``2λ`` at our effective step 0.2) that is a no-op on
streams of 1,500 to 10,000 steps."""

LAYER_NORM = ("workload.host.params.layer_norm=true",)
"""LayerNorm between each hidden Linear and its activation (Lyle et al. 2024, arXiv
2402.18762, find it keeps networks plastic together with weight decay)."""

WEIGHT_DECAY = ("workload.weight_decay", (1e-4, 1e-3))
"""The weight decay that goes with layer norm (SGD's, coupled): Lyle et al. tune it per
setting, so it is chosen on the validation seeds, from a shrink of 2e-5 to 2e-4 a step at our
effective step 0.2."""

ANCHORS: dict[str, Anchor] = {
    "upgd": Anchor("static", UPGD_REFERENCE, (UPGD_LR,)),
    "l2_init": Anchor("static", (), (L2_INIT,)),
    "ln_wd": Anchor("static", LAYER_NORM, (WEIGHT_DECAY,)),
    "rigl_upgd": Anchor("rigl", UPGD_REFERENCE, (UPGD_LR,)),
    "dense_upgd": Anchor("dense", UPGD_REFERENCE, (UPGD_LR,)),
    "dense_l2_init": Anchor("dense", (), (L2_INIT,)),
    "dense_ln_wd": Anchor("dense", LAYER_NORM, (WEIGHT_DECAY,)),
}
"""The anchors a preset can name (``QualityPreset.anchors``), by their label in the table:
UPGD, L2 Init and layer norm + weight decay on the ``static`` surgeon's fixed sparse mask and
dense, and UPGD under RigL (``rigl_upgd``, RigL's ``T_end`` at 75% of the stream)."""
