"""Which tensors the sensors read, and forward hooks that capture their layers' traffic.

Sensors address a prunable tensor by its full parameter name, as hosts, masks and event logs
do. A :class:`~esper.workloads.hosts.Host` says which tensors are prunable; for any other
module the weights of its Linear and Conv layers are. :class:`LayerCapture` installs forward
hooks on the modules owning those tensors for the duration of one ``with`` block and records
each call's input and output, which is all that per-sample gradient statistics (with the
output gradients), ReDo scores and effective ranks need. No hook outlives the block.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, cast

import torch
from torch import Tensor, nn

__all__ = [
    "LayerCall",
    "LayerCapture",
    "check_unmodified",
    "layer_modules",
    "prunable_parameters",
]

_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)


def prunable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The tensors sensors report on: ``model.prunable_parameters()`` when the model has it
    (every :class:`~esper.workloads.hosts.Host` does), else every Linear/Conv weight, in
    module order."""
    own = getattr(type(model), "prunable_parameters", None)
    if callable(own):
        params: dict[str, nn.Parameter] = own(model)
        return dict(params)
    return {
        f"{name}.weight": cast(nn.Parameter, module.weight)
        for name, module in model.named_modules()
        if isinstance(module, _LAYER_TYPES)
    }


def layer_modules(
    model: nn.Module, names: Iterable[str], params: Mapping[str, Tensor] | None = None
) -> dict[str, nn.Module]:
    """The module owning each parameter name (``"blocks.0.ff1.weight"`` → ``blocks.0.ff1``).

    Args:
        model: The network.
        names: Parameter names.
        params: ``dict(model.named_parameters())`` if the caller has it already.

    Raises:
        KeyError: a name that is not a parameter of ``model``.
    """
    params = params if params is not None else dict(model.named_parameters())
    out: dict[str, nn.Module] = {}
    for name in names:
        if name not in params:
            raise KeyError(
                f"{name!r} is not a parameter of {type(model).__name__}; "
                f"prunable tensors: {', '.join(prunable_parameters(model))}"
            )
        owner, _, _ = name.rpartition(".")
        out[name] = model.get_submodule(owner) if owner else model
    return out


@dataclass
class LayerCall:
    """One call of a hooked module: its first positional input and its output."""

    input: torch.Tensor
    output: torch.Tensor
    version: int = field(default=0)


class LayerCapture:
    """Forward hooks recording every call of the modules that own ``names``.

    Used as a context manager; the hooks are removed on exit, even on error. After the
    block, :meth:`check_unmodified` verifies no captured output was modified in place (an
    in-place activation would make the recorded output gradient wrong).

    Args:
        model: The network.
        names: Parameter names whose owning modules are hooked.
        params: ``dict(model.named_parameters())`` if the caller has it already.
    """

    def __init__(
        self,
        model: nn.Module,
        names: Iterable[str],
        params: Mapping[str, Tensor] | None = None,
    ) -> None:
        self.modules = layer_modules(model, names, params)
        self.calls: dict[str, list[LayerCall]] = {name: [] for name in self.modules}
        self._handles: list[Any] = []

    def __enter__(self) -> LayerCapture:
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str) -> Any:
        calls = self.calls[name]

        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if isinstance(output, torch.Tensor) and args and isinstance(args[0], torch.Tensor):
                calls.append(LayerCall(args[0], output, output._version))

        return hook

    def check_unmodified(self) -> None:
        """Raise if a captured output was modified in place after its module returned it."""
        check_unmodified(
            self.calls,
            "use out-of-place activations or method='func' for per-sample gradient statistics",
        )


def check_unmodified(calls: Mapping[str, Iterable[LayerCall]], remedy: str) -> None:
    """Raise if a captured output was modified in place after its module returned it (an
    in-place activation would make the recorded output gradient wrong); ``remedy`` ends the
    message."""
    for name, layer_calls in calls.items():
        for call in layer_calls:
            if call.output._version != call.version:
                raise RuntimeError(
                    f"the output of the layer owning {name!r} was modified in place "
                    f"(an inplace activation?); {remedy}"
                )
