"""Importing the third-party anchors we measure against.

``rigl-torch`` imports ``torchvision`` at module level only to recognise ResNet blocks in
``isinstance`` checks. PyPI's torchvision cannot load beside the CPU build of torch that Esper
installs by default (its compiled operators target another torch), so when torchvision is not
importable we register a placeholder module whose ResNet block classes match nothing. This is
used only by benchmarks and peer tests, never by Esper itself.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__all__ = ["import_backpack", "import_rigl_scheduler"]


def _placeholder_torchvision() -> None:
    try:
        importlib.import_module("torchvision")
        return
    except Exception:  # missing, or present but built for another torch
        sys.modules.pop("torchvision", None)
    resnet = types.ModuleType("torchvision.models.resnet")

    class _NeverMatches:  # isinstance(x, _NeverMatches) is False for every real module
        pass

    resnet.Bottleneck = _NeverMatches  # type: ignore[attr-defined]
    resnet.BasicBlock = _NeverMatches  # type: ignore[attr-defined]
    models = types.ModuleType("torchvision.models")
    models.resnet = resnet  # type: ignore[attr-defined]
    tv = types.ModuleType("torchvision")
    tv.models = models  # type: ignore[attr-defined]
    sys.modules.update(
        {"torchvision": tv, "torchvision.models": models, "torchvision.models.resnet": resnet}
    )


def import_rigl_scheduler() -> Any:
    """``rigl_torch.RigL.RigLScheduler`` (PyPI ``rigl-torch``)."""
    _placeholder_torchvision()
    from rigl_torch.RigL import RigLScheduler

    return RigLScheduler


def import_backpack() -> tuple[Any, Any, Any]:
    """``(extend, backpack, Variance)`` from BackPACK (PyPI ``backpack-for-pytorch``)."""
    from backpack import backpack, extend
    from backpack.extensions import Variance

    return extend, backpack, Variance
