"""The workload label a command puts in its run's name and ``run.json``."""

from __future__ import annotations

from collections.abc import Sequence

from esper.conf import chosen_option, compose
from esper.config import EsperConfig
from esper.platform.runs import workload_label

__all__ = ["chosen_workload"]


def chosen_workload(cfg: EsperConfig, overrides: Sequence[str]) -> str:
    """The chosen workload preset's name, plus a digest of ``cfg.workload`` if it differs.

    ``workload=digits_permuted`` gives ``digits_permuted``; adding
    ``workload.drifts=[{name: rotate}]`` gives ``digits_permuted+<digest>`` (see
    :func:`esper.platform.runs.workload_label`).

    Args:
        cfg: The config composed from ``overrides``.
        overrides: The command's Hydra overrides.
    """
    preset = chosen_option("workload", overrides)
    return workload_label(preset, compose([f"workload={preset}"]).workload, cfg.workload)
