"""Fused sensing: gradient statistics from the training steps' own traffic, no sensing pass.

:func:`gradient_statistics <esper.workloads.sensors.gradients.gradient_statistics>` runs a
forward and a backward of its own over the organism's recent batches. Those batches were just
trained on, so the forward and the backward already ran: :class:`TrainingTraffic` (what
``workload.organism.sensors.fused=true`` turns on) keeps each prunable layer's input ``a``,
output and output gradient ``δ`` from the last few training steps, as BackPACK extends a
backward (Dangel et al. 2020, ICLR, arXiv 1912.10985): forward hooks keep the inputs, tensor
hooks on the outputs keep the gradients autograd computes anyway. The report then sums them
into the same :class:`~esper.workloads.sensors.gradients.GradientReport` the full pass makes,
with the same per-sample definitions (for a Linear layer fed a matrix, one extra product per
layer gives ``Σ_b g_b² = (δ²)ᵀ(a²)``), boundary samples and layer outputs, for Linear and Conv
weights alike; the summaries (population variance, the GSNR's variance floor, coherence over
active weights) are :func:`~esper.workloads.sensors.gradients.finish_statistics`'s, as in the
full pass.

For a Linear layer with boundary samples, the window's inputs and output gradients are copied
once, boundary rows first, into buffers the traffic keeps for the next report (about the
window's size again per layer), squared there, and both Fisher sums are slices of one product:
no joined copy, and no fresh pages mapped at every reading.

The only difference is *when* the parameters are read: each batch at the parameters of the step
that trained on it, before its update, instead of all batches after the last update. With a
learning rate of 0 the two reports agree to float tolerance. The mean gradient is formed from
the traffic too (dense, at pruned weights as well): the optimizer's own gradient is masked
there, and the GSNR and regrowth read the dense one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from esper.workloads.sensors._per_sample import Slots, hookable, hooked_sums, split_square_sums
from esper.workloads.sensors.capture import LayerCall, check_unmodified, layer_modules
from esper.workloads.sensors.gradients import (
    BoundaryFn,
    GradientReport,
    LossFn,
    boundary_samples,
    check_masks,
    finish_statistics,
    per_sample_cross_entropy,
)

__all__ = ["TrainingTraffic"]


@dataclass
class _Step:
    """One training step's traffic: per layer its calls and their output gradients (of the
    step's *mean* loss), and the step's outputs and targets."""

    calls: dict[str, list[LayerCall]]
    grads: dict[str, list[Tensor | None]]
    logits: Tensor | None = None
    targets: Tensor | None = None
    handles: list[Any] = field(default_factory=list)
    summed: set[str] = field(default_factory=set)  # weights whose gradient joined the sums


class TrainingTraffic:
    """The layer traffic of an organism's last ``steps`` training steps, from which the reading
    after them is summed without a forward or backward pass of its own.

    Args:
        model: The host.
        names: The prunable weights the sensors read (Linear or Conv weights).
        steps: Training steps kept (the organism's ``sense_batches``).

    Raises:
        ValueError: a weight the hooks cannot read (not a Linear or zero-padded, ungrouped
            Conv weight): sense it with the full pass (``fused=false``).
    """

    def __init__(self, model: nn.Module, names: Sequence[str], steps: int) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self._model, self._named = model, dict(model.named_parameters())
        self.modules = layer_modules(model, names, self._named)
        other = [n for n, m in self.modules.items() if not hookable(m, n)]
        if other:
            raise ValueError(
                f"fused sensing reads Linear and Conv weights from the training step; "
                f"{other} are not: set workload.organism.sensors.fused=false"
            )
        self.names, self.steps = list(names), steps
        self._steps: list[_Step] = []
        # Σ_s rows_s · ∇L_s per weight over the kept steps (dense_grads), and whether it still
        # holds exactly the kept steps (a step that slid out of the window cannot be removed)
        self._grad_sums: dict[str, Tensor] = {}
        self._sums_valid = True
        self._buffers: dict[tuple[str, str], Tensor] = {}  # the report's reused temporaries

    def __len__(self) -> int:
        return len(self._steps)

    def clear(self) -> None:
        """Forget the kept steps (a new training window begins)."""
        self._steps.clear()
        self._grad_sums.clear()
        self._sums_valid = True

    @contextmanager
    def record(self, targets: Tensor, *, dense_grads: bool = False) -> Iterator[None]:
        """Keep the traffic of the one training step run inside the block (one forward of the
        host on the batch whose ``targets`` are given, its backward and the update).

        Args:
            targets: The batch's targets.
            dense_grads: The weights' gradients reach ``.grad`` dense and are the plain loss's
                (no mask on them during backward, no penalty term: the organism's explicit
                gradient masking, which masks after backward). Each is then added, as the
                backward leaves it, to a running sum over the window, and the report's mean
                gradient is that sum's average instead of one more product per layer over the
                traffic.
        """
        step = _Step({n: [] for n in self.names}, {n: [] for n in self.names})
        step.targets = targets
        if dense_grads:
            rows = targets.shape[0]

            def summed(p: Tensor, name: str) -> None:  # before the gradient is masked in place
                if name in step.summed:  # a second backward in one step: ``.grad`` accumulated
                    self._sums_valid = False
                assert p.grad is not None  # the hook runs after accumulation
                total = self._grad_sums.get(name)
                if total is None:
                    self._grad_sums[name] = p.grad.detach() * rows
                else:
                    total.add_(p.grad.detach(), alpha=rows)
                step.summed.add(name)

            for name in self.names:
                step.handles.append(
                    self._named[name].register_post_accumulate_grad_hook(
                        lambda p, name=name: summed(p, name)
                    )
                )

        def outputs(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if step.logits is not None:
                raise RuntimeError("fused sensing records one forward of the host per step")
            step.logits = output.detach()

        def keep(name: str) -> Callable[..., None]:
            calls, grads = step.calls[name], step.grads[name]

            def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
                if not (isinstance(output, Tensor) and args and isinstance(args[0], Tensor)):
                    return
                calls.append(LayerCall(args[0].detach(), output.detach(), output._version))
                grads.append(None)
                if output.requires_grad:
                    slot = len(grads) - 1
                    output.register_hook(lambda g: grads.__setitem__(slot, g))

            return hook

        for name, module in self.modules.items():
            step.handles.append(module.register_forward_hook(keep(name)))
        step.handles.append(self._model.register_forward_hook(outputs))
        try:
            yield
            check_unmodified(step.calls, "fused sensing needs out-of-place ones")
        except BaseException:
            self._sums_valid = False  # its gradient may be in the sums; the step is not kept
            raise
        finally:
            for handle in step.handles:
                handle.remove()
            step.handles.clear()
        self._steps.append(step)
        if len(self._steps) > self.steps:
            del self._steps[: -self.steps]
            self._sums_valid = False  # the dropped steps' gradients are in the sums

    def report(
        self,
        masks: Mapping[str, Tensor] | None = None,
        *,
        loss_fn: LossFn | None = None,
        boundary_quantile: float | None = None,
        boundary_fn: BoundaryFn | None = None,
        eps: float = 1e-12,
    ) -> GradientReport:
        """The kept steps' samples as one sensing batch: the
        :func:`~esper.workloads.sensors.gradients.gradient_statistics` report (with the layer
        outputs) of their concatenation, each sample's gradient at its step's parameters.

        Raises:
            RuntimeError: fewer than ``steps`` steps kept, or one without a forward.
        """
        steps = self._steps
        if len(steps) < self.steps or any(s.logits is None for s in steps):
            raise RuntimeError(
                f"{len(steps)} of {self.steps} training steps recorded with a forward"
            )
        logits = torch.cat([s.logits for s in steps if s.logits is not None])
        targets = torch.cat([s.targets for s in steps if s.targets is not None])
        losses = (loss_fn or per_sample_cross_entropy)(logits, targets)
        batch = logits.shape[0]
        if losses.shape != (batch,):
            raise ValueError(f"loss_fn must return one loss per sample, shape ({batch},)")
        boundary = None
        if boundary_quantile is not None:
            boundary = (boundary_fn or boundary_samples)(logits, targets, losses, boundary_quantile)
        slots = Slots({n: self._named[n] for n in self.names}, 4 if boundary is not None else 3)
        scales = (1.0 / batch, 1.0 / max(len(boundary), 1) if boundary is not None else 1.0)
        positions = None if boundary is None else _ordered_positions(boundary, batch)
        outputs = {}
        for name in self.names:
            mean = self._mean_grad(name, batch)
            if positions is not None and mean is not None and self._gathers(name):
                assert boundary is not None
                self._boundary_sums(name, positions, boundary.numel(), slots.of(name), scales)
                slots.of(name)[0].copy_(mean)
                outputs[name] = torch.cat([s.calls[name][0].output for s in self._steps])
                continue
            joined = self._joined(name)
            hooked_sums(self.modules[name], joined, boundary, batch, slots.of(name), scales, mean)
            if joined:
                outputs[name] = torch.cat([c.output for c, _ in joined])
        checked = check_masks({n: self._named[n] for n in self.names}, masks)
        layers = finish_statistics(self.names, slots, batch, checked, eps)
        return GradientReport(layers, losses.detach(), logits, boundary, outputs)

    def _gathers(self, name: str) -> bool:
        """Whether a layer's window can be gathered by :meth:`_boundary_sums`: a Linear layer
        called once per step on a matrix of that step's samples (one row each, as many as its
        outputs), with its output gradient, in steps of equal size. Anything else takes the
        joined path, which refuses a layer that reshapes the batch."""
        steps = self._steps
        if not isinstance(self.modules[name], nn.Linear):
            return False
        if any(len(s.calls[name]) != 1 or s.grads[name][0] is None for s in steps):
            return False
        rows = set()
        for s in steps:
            a = s.calls[name][0].input
            assert s.logits is not None
            if a.dim() != 2 or a.shape[0] != s.logits.shape[0]:
                return False
            rows.add(a.shape[0])
        return len(rows) == 1

    def _boundary_sums(
        self,
        name: str,
        positions: Tensor,
        boundary: int,
        out: list[Tensor],
        scales: tuple[float, float],
    ) -> None:
        """``F`` and ``F_boundary`` of a gathered layer (:meth:`_gathers`) into ``out[1]`` and
        ``out[3]``: every step's inputs and output gradients copied once into reused buffers,
        boundary rows first, squared in place there; the two sums are then slices of one
        product (:func:`~esper.workloads.sensors._per_sample.split_square_sums`, as
        ``hooked_sums`` does from the joined window, without joining it first). Each step's
        output gradients are of its mean loss: their squares are scaled back to the samples'
        own losses at the end."""
        steps = self._steps
        rows = steps[0].calls[name][0].input.shape[0]
        a2 = self._gathered(name, "input", [s.calls[name][0].input for s in steps], positions)
        grads = [g for s in steps if (g := s.grads[name][0]) is not None]  # all, by _gathers
        d2 = self._gathered(name, "grad", grads, positions)
        split_square_sums(a2, d2, boundary, out, scales, factor=rows * rows)

    def _gathered(self, name: str, what: str, pieces: list[Tensor], positions: Tensor) -> Tensor:
        """The squares of ``pieces`` (a step each, joined along the batch) with row ``j`` of
        the join at ``positions[j]``, in a buffer kept for the next report: the window is
        copied once, and a process does not map fresh pages for it at every reading."""
        first = pieces[0]
        shape = (positions.numel(), first.shape[1])
        buffer = self._buffers.get((name, what))
        if buffer is None or (buffer.shape, buffer.dtype, buffer.device) != (
            shape,
            first.dtype,
            first.device,
        ):
            buffer = self._buffers[name, what] = first.new_empty(shape)
        start = 0
        for piece in pieces:
            stop = start + piece.shape[0]
            buffer.index_copy_(0, positions[start:stop], piece.detach())
            start = stop
        return buffer.mul_(buffer)

    def _mean_grad(self, name: str, batch: int) -> Tensor | None:
        """The window's mean gradient from the steps' weight gradients (each the mean over its
        own batch, summed as they were made, weighted by their batches), or ``None`` unless
        the sums hold exactly the kept steps, each with its gradient."""
        total = self._grad_sums.get(name)
        if total is None or not self._sums_valid:
            return None
        if not all(name in s.summed for s in self._steps):
            return None
        return total / batch

    def _joined(self, name: str) -> list[tuple[LayerCall, Tensor | None]]:
        """A layer's calls, the ``j``-th of every step joined along the batch; the output
        gradients rescaled from each step's mean loss to its samples' own losses."""
        steps = self._steps
        counts = {len(s.calls[name]) for s in steps}
        if len(counts) != 1:
            raise RuntimeError(f"{name}: called a different number of times per step {counts}")
        joined: list[tuple[LayerCall, Tensor | None]] = []
        for j in range(counts.pop()):
            calls = [s.calls[name][j] for s in steps]
            grads = []
            for s, call in zip(steps, calls, strict=True):
                g = s.grads[name][j]
                assert s.logits is not None
                rows = s.logits.shape[0]
                grads.append(torch.zeros_like(call.output) if g is None else g * rows)
            inputs = torch.cat([c.input for c in calls])
            outputs = torch.cat([c.output for c in calls])
            joined.append((LayerCall(inputs, outputs, outputs._version), torch.cat(grads)))
        return joined


def _ordered_positions(boundary: Tensor, batch: int) -> Tensor | None:
    """Where each of ``batch`` joined rows goes when the boundary rows come first (in the
    boundary's order, then the rest in theirs); ``None`` for repeated boundary rows (counted
    as often as given: the joined path handles them)."""
    if torch.unique(boundary).numel() != boundary.numel():
        return None
    rest = torch.ones(batch, dtype=torch.bool, device=boundary.device)
    rest[boundary] = False
    order = torch.cat([boundary, rest.nonzero().view(-1)])
    positions = torch.empty_like(order)
    positions[order] = torch.arange(batch, device=order.device)
    return positions
