"""Which tensors a Scalpel masks: resolving and validating ``{name: weight}`` targets.

Every masked tensor is addressed by its full parameter name, exactly as in
``model.named_parameters()``, and must be the weight of a Linear, Conv1d or Conv2d module: those
are the layers whose forward pass the mechanisms know how to mask, and whose cost
:func:`esper.workloads.scalpel.flops` counts.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

__all__ = ["MASKABLE", "resolve_targets"]

MASKABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


def resolve_targets(
    model: nn.Module, params: Mapping[str, nn.Parameter] | None
) -> tuple[dict[str, nn.Parameter], dict[str, nn.Module]]:
    """The tensors to mask and their modules, in order.

    Args:
        model: The network.
        params: ``{full name: weight}``; default ``model.prunable_parameters()`` (an esper Host).

    Raises:
        TypeError: no ``params`` and the model has no ``prunable_parameters()``.
        ValueError: an empty selection, a name that is not that parameter's name in the
            model, or a tensor that is not a Linear/Conv weight.
    """
    if params is None:
        default = getattr(model, "prunable_parameters", None)
        if default is None:
            raise TypeError(
                f"{type(model).__name__} has no prunable_parameters(); pass params={{name: weight}}"
            )
        params = default()
    params = dict(params)
    if not params:
        raise ValueError("no prunable parameters to mask")
    owned = {id(p): n for n, p in model.named_parameters()}
    modules: dict[str, nn.Module] = {}
    for name, param in params.items():
        if owned.get(id(param)) != name:
            raise ValueError(f"{name!r} is not the name of that parameter in the model")
        prefix, _, attr = name.rpartition(".")
        module = model.get_submodule(prefix)
        if attr != "weight" or not isinstance(module, MASKABLE):
            raise ValueError(
                f"{name!r} is not the weight of a Linear, Conv1d or Conv2d module; "
                f"the Scalpel masks only those"
            )
        modules[name] = module
    return params, modules
