"""A lean ``SGD.step()`` for the organism's small networks, bit-identical to PyTorch's.

``torch.optim.SGD.step`` walks its parameter groups in Python (the organism has one group per
prunable tensor, so sedation can damp single layers) and, on the CPU, updates tensor by tensor.
On a 26k-parameter host that bookkeeping costs as much as a fifth of a training step.
:func:`sgd_step` applies the same update with two ``torch._foreach`` calls for the momentum
buffers and one per distinct learning rate for the weights, reading and writing the
optimizer's own state (``momentum_buffer``), so the optimizer, its ``state_dict`` and
checkpoints are unchanged. The arithmetic is PyTorch's (momentum ``buf ← μ·buf + g``, the
first buffer a copy of ``g``; ``p ← p − lr·buf``), in the same
order, so results are bit-identical (tests pin a trajectory recorded with ``SGD.step``).

Only plain SGD is handled (one momentum > 0 for every group; no weight decay, dampening,
Nesterov, maximize or fused step; no step hooks, such as L2 Init's, which ``step()`` runs):
anything else returns ``False`` and the caller steps the optimizer itself.
"""

from __future__ import annotations

import torch

__all__ = ["clear_grads", "has_step_hooks", "sgd_step"]


_PLAIN = (0, 0, False, False, None, False)


def has_step_hooks(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step()`` runs hooks of its own (L2 Init's gradient term), which an
    update that bypasses ``step()`` would skip."""
    return bool(optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks)


def _momentum(optimizer: torch.optim.Optimizer) -> float | None:
    """The momentum shared by every group of a plain SGD optimizer, else ``None``."""
    if type(optimizer) is not torch.optim.SGD or has_step_hooks(optimizer):
        return None
    momenta = set()
    for g in optimizer.param_groups:
        if (g["weight_decay"], g["dampening"], g["nesterov"], g["maximize"], g.get("fused"),
                g.get("differentiable")) != _PLAIN:  # fmt: skip
            return None
        momenta.add(float(g["momentum"]))
    momentum = momenta.pop() if len(momenta) == 1 else 0.0
    return momentum if momentum > 0 else None


@torch.no_grad()
def sgd_step(optimizer: torch.optim.Optimizer) -> bool:
    """Apply ``optimizer.step()``'s update if ``optimizer`` is plain SGD with one momentum;
    returns whether it did (``False``: call ``optimizer.step()`` instead)."""
    momentum = _momentum(optimizer)
    if momentum is None:
        return False
    state = optimizer.state
    olds: list[torch.Tensor] = []  # buffers to advance, and their gradients
    grads: list[torch.Tensor] = []
    updates: list[tuple[float, list[torch.Tensor], list[torch.Tensor]]] = []
    for group in optimizer.param_groups:
        params, buffers = [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            buf = state[p].get("momentum_buffer")
            if buf is None:  # the first step: the buffer is the gradient
                state[p]["momentum_buffer"] = buf = torch.clone(p.grad).detach()
            else:
                olds.append(buf)
                grads.append(p.grad)
            params.append(p)
            buffers.append(buf)
        if params:
            updates.append((float(group["lr"]), params, buffers))
    if olds:
        torch._foreach_mul_(olds, momentum)
        torch._foreach_add_(olds, grads)
    if len({lr for lr, _, _ in updates}) == 1:  # no sedation: one call for every tensor
        every = [p for _, ps, _ in updates for p in ps]
        torch._foreach_add_(every, [b for _, _, bs in updates for b in bs], alpha=-updates[0][0])
    else:
        for lr, params, buffers in updates:
            torch._foreach_add_(params, buffers, alpha=-lr)
    return True


def clear_grads(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.zero_grad(set_to_none=True)`` without its profiling and hook machinery
    for SGD: every parameter's ``.grad`` is dropped. Other optimizers zero their own."""
    if type(optimizer) is not torch.optim.SGD:
        optimizer.zero_grad(set_to_none=True)
        return
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = None
