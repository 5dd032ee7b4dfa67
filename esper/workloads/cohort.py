"""A cohort: many organisms of one host architecture trained as one batched network.

Small living networks are dominated by per-step Python and kernel-launch overhead, not by
arithmetic, so ``N`` organisms stepped one after another pay that overhead ``N`` times. A
:class:`Cohort` stacks its members' parameters, masks and momentum buffers along a leading
member axis and runs their ``K`` training steps between surgeries as one computation: the
forward pass is the host's :meth:`~esper.workloads.hosts.Host.stacked_forward` (its own
``forward`` through :func:`torch.func.functional_call` under :func:`torch.vmap` over the
member axis, or a cheaper batched form of the host's own: one ``baddbmm`` per layer for the
MLP), the backward is one autograd pass over the sum of the members' losses (members share no
parameter, so each gets exactly its own gradient), and masked SGD with momentum is applied to
the stacked tensors with ``torch._foreach`` ops (the single-process analogue of Anakin /
PureJaxRL-style vectorized RL, Hessel et al. 2021, arXiv 2104.06272).

Everything else stays per member and unchanged: each member draws its own batches from its
own drifting stream, keeps its own sedation schedule, masks, sensors, event identity and
checkpoint; surgery (:meth:`Organism.begin <esper.workloads.organism.Organism.begin>`) and
sensing and scoring (:meth:`Organism.finish <esper.workloads.organism.Organism.finish>`) run
member by member, except the spike control's losses, measured for all members in one stacked
forward (:func:`~esper.workloads.spike.stacked_probe_losses`). Parameters are gathered before
the ``K`` steps and written back after them, so between surgeries every member is an
ordinary :class:`~esper.workloads.organism.Organism`: it can be replaced (a PBT exploit, a
rebuilt replica) without touching the others, and a member trained in a cohort follows the
trajectory it would follow alone, to float tolerance (batched matrix products round
differently).

A member whose loss turns non-finite stops where a lone organism would (after that step's
update): its parameters are frozen from then on and its stream is rewound to the batches it
actually used.

Supported: SGD (momentum, no weight decay, dampening or Nesterov) and the ``masked`` mechanism
without a penalty, no data side, a host without buffers, and a stream whose batches do not
depend on the host (the ``K`` batches are drawn before the batched steps; an agent acting with
its host cannot be): the default organism. Anything else is refused when the cohort is built,
and by config key at composition (:func:`check_cohort_config`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch

from esper.config import WorkloadConfig
from esper.events import SurgicalEvent
from esper.workloads.actions import LayerAction
from esper.workloads.hosts import HOSTS, Host
from esper.workloads.organism import Organism
from esper.workloads.prequential import StepRecord, stacked_batch_loss
from esper.workloads.rl.agent import ENVIRONMENTS
from esper.workloads.scalpel.mechanisms.hard import HardMask
from esper.workloads.sgd import has_step_hooks
from esper.workloads.spike import stacked_probe_losses
from esper.workloads.timestep import OrganismStep, Surgery

__all__ = ["Cohort", "CohortError", "check_cohort_config"]


class CohortError(ValueError):
    """Organisms that cannot be trained together (different shapes, optimizer or mechanism)."""


def check_cohort_config(workload: WorkloadConfig, cohort: int) -> None:
    """Refuse, by config key, a workload that ``cohort`` > 1 members cannot be trained on as
    one batched network (what :class:`Cohort` would refuse once built).

    Raises:
        ValueError: naming the key, its value and what a cohort needs.
    """
    if cohort <= 1:
        return
    needs = {
        "workload.optimizer": (workload.optimizer.value, "sgd"),
        "workload.weight_decay": (workload.weight_decay, 0.0),
        "workload.l2_init": (workload.l2_init, 0.0),
        "workload.optimizer_params": (dict(workload.optimizer_params), {}),
        "workload.scalpel.mechanism.name": (workload.scalpel.mechanism.name, "masked"),
        "workload.scalpel.penalty_weight": (workload.scalpel.penalty_weight, 0.0),
        "workload.memory.capacity": (workload.memory.capacity, 0),
    }
    for key, (value, needed) in needs.items():
        if value != needed:
            raise ValueError(
                f"policy.training.cohort={cohort} trains the members as one batched network, "
                f"which needs {key}={needed}, got {value!r} (or set policy.training.cohort=1)"
            )
    if HOSTS[workload.host.name].has_buffers:
        raise ValueError(
            f"policy.training.cohort={cohort}: workload.host.name={workload.host.name} keeps "
            "buffers, which a cohort does not stack; set policy.training.cohort=1"
        )
    if workload.dataset.name in ENVIRONMENTS:
        raise ValueError(
            f"policy.training.cohort={cohort}: workload.dataset={workload.dataset.name} is an "
            "agent acting with its host, whose batches cannot be drawn ahead of the batched "
            "steps; set policy.training.cohort=1"
        )


def _signature(organism: Organism) -> tuple[Any, ...]:
    shapes = tuple((n, tuple(p.shape), p.dtype) for n, p in organism.host.named_parameters())
    return (type(organism.host).__name__, shapes, organism.K, organism.kind,
            organism.device, organism.stream.batch_size, organism.spike_window)  # fmt: skip


def _check(organism: Organism, index: int) -> None:
    """Refuse what the batched step does not implement."""
    where = f"cohort member {index}"
    if type(organism.scalpel.mechanism) is not HardMask:
        raise CohortError(
            f"{where}: mask mechanism {type(organism.scalpel.mechanism).__name__}; a cohort "
            "trains only workload.scalpel.mechanism=masked"
        )
    if organism.penalty_weight:
        raise CohortError(f"{where}: penalty_weight={organism.penalty_weight}; needs 0")
    if organism.data_side is not None:
        raise CohortError(
            f"{where}: a data side (workload.memory.capacity > 0); a cohort "
            "trains without replay (training.cohort=1)"
        )
    if organism.traffic is not None:
        raise CohortError(
            f"{where}: fused sensing reads each member's own training steps, which a cohort "
            "batches: set workload.organism.sensors.fused=false (or training.cohort=1)"
        )
    if getattr(organism.stream, "acts_with_host", False):
        raise CohortError(
            f"{where}: its stream acts with the host (an agent), so its batches cannot be "
            "drawn before the batched steps; an agent trains alone (training.cohort=1)"
        )
    opt = organism.optimizer
    if type(opt) is not torch.optim.SGD:
        raise CohortError(f"{where}: optimizer {type(opt).__name__}; a cohort trains with SGD")
    if has_step_hooks(opt):
        raise CohortError(f"{where}: its optimizer has step hooks (L2 Init?), which the batched "
                          "step does not run; a cohort needs workload.l2_init=0")  # fmt: skip
    for group in opt.param_groups:
        for key, plain in (("weight_decay", 0), ("dampening", 0), ("nesterov", False),
                           ("maximize", False)):  # fmt: skip
            if group.get(key, plain) != plain:
                raise CohortError(f"{where}: SGD {key}={group[key]}; a cohort needs {plain}")
    if list(organism.host.buffers()):
        raise CohortError(f"{where}: the host has buffers (batch norm?); a cohort needs none")


class Cohort:
    """Organisms of one architecture whose training steps run as one batched computation.

    Args:
        members: The organisms (same host class and shapes, ``K``, task kind, device, batch
            size and spike window; SGD and the ``masked`` mechanism), each with its own
            stream, seed and replica id. They may be fresh or already reset.

    Raises:
        CohortError: the members cannot be trained together (the message names the member
            and what differs).
    """

    def __init__(self, members: Sequence[Organism]) -> None:
        if not members:
            raise CohortError("a cohort needs at least one member")
        self.members = list(members)
        for i, member in enumerate(self.members):
            self._admit(member, i)
        template = copy.deepcopy(self.members[0].host)
        for module in template.modules():  # a plain forward: no hooks of sensors or masks
            module._forward_hooks.clear()
            module._forward_pre_hooks.clear()
        self._template = template.requires_grad_(False)
        self._names = [n for n, _ in template.named_parameters()]

    def _admit(self, member: Organism, index: int) -> None:
        _check(member, index)
        if _signature(member) != _signature(self.members[0]):
            raise CohortError(
                f"cohort member {index} differs from member 0 in host, shapes, K, task kind, "
                f"device, batch size or spike window: {_signature(member)} vs "
                f"{_signature(self.members[0])}"
            )

    @property
    def template(self) -> Host:
        """A hook-free copy of member 0's host whose ``stacked_forward`` trains the cohort."""
        return self._template

    def __len__(self) -> int:
        return len(self.members)

    def replace(self, index: int, organism: Organism) -> None:
        """Put ``organism`` in place of member ``index`` (a rebuilt or copied member); the
        others are untouched.

        Raises:
            CohortError: ``organism`` cannot join this cohort.
            IndexError: no member ``index``.
        """
        if not 0 <= index < len(self.members):
            raise IndexError(f"no cohort member {index}; members: 0..{len(self.members) - 1}")
        self._admit(organism, index)
        self.members[index] = organism

    # -- the environment interface, for all members at once ----------------------------------

    def reset(self) -> list[OrganismStep]:
        """Reset every member (each trains its first ``K`` steps on its own: once per life)."""
        return [member.reset() for member in self.members]

    def step(self, actions: Sequence[Mapping[str, LayerAction]]) -> list[OrganismStep]:
        """One surgery per member (``actions[i]`` for member ``i``), ``K`` training steps for
        all together, then each member senses and scores its surgery."""
        surgeries = self.begin(actions)
        trained = self.train_steps()
        return [
            m.finish(s, events, diverged)
            for m, s, (events, diverged) in zip(self.members, surgeries, trained, strict=True)
        ]

    def begin(self, actions: Sequence[Mapping[str, LayerAction]]) -> list[Surgery]:
        """Every member's :meth:`Organism.begin <esper.workloads.organism.Organism.begin>`,
        with the spike control of all members measured together: their losses on their next
        ``spike_window`` batches in one stacked forward before the surgeries, and one after."""
        if len(actions) != len(self.members):
            raise ValueError(f"{len(actions)} action maps for {len(self.members)} members")
        members = self.members
        for member, acts in zip(members, actions, strict=True):  # before any member is operated
            member.validate(acts)
        probes = [m.stream.peek(m.spike_window) for m in members]

        def losses() -> list[float]:  # every member's, on its own probe
            hosts = [m.host for m in members]
            kind, device = members[0].kind, members[0].device
            return stacked_probe_losses(self._template, hosts, probes, kind, device)

        surgeries = [m.begin(a, control_loss=c) for m, a, c in
                     zip(members, actions, losses(), strict=True)]  # fmt: skip
        return [replace(s, operated_loss=o) for s, o in zip(surgeries, losses(), strict=True)]

    # -- the batched training steps ----------------------------------------------------------

    def train_steps(self) -> list[tuple[list[SurgicalEvent], bool]]:
        """Every member's ``K`` prequential steps, batched; per member the events of mask
        changes during training (none with ``masked``) and whether it diverged."""
        members = self.members
        k_steps = members[0].K
        saved = [(m.stream.state_dict(), m.sedation.state_dict()) for m in members]
        batches = [[m.stream.next_batch().to(m.device) for _ in range(k_steps)] for m in members]
        lrs = self._learning_rates(k_steps)
        params, buffers, masks, momentum = self._gather()
        xs = torch.stack([torch.stack([b.x for b in row]) for row in batches], dim=1)
        ys = torch.stack([torch.stack([b.y for b in row]) for row in batches], dim=1)
        losses, correct = [], []
        died: dict[int, int] = {}  # member → the step whose loss was not finite
        frozen: dict[int, list[torch.Tensor]] = {}
        kind = members[0].kind

        for k in range(k_steps):
            leaves = tuple(p.detach().requires_grad_() for p in params)
            out = self._template.stacked_forward(leaves, xs[k])
            loss = stacked_batch_loss(out, ys[k], kind)
            grads = list(torch.autograd.grad(loss.sum(), leaves))
            losses.append(loss.detach())
            if kind == "classification":
                correct.append((out.detach().argmax(-1) == ys[k]).float().mean(-1))
            if k == k_steps - 1:
                self._record_dense_grads(grads, masks, died)
            with torch.no_grad():
                for g, m in zip(grads, masks, strict=True):
                    if m is not None:
                        g.mul_(m)
                torch._foreach_mul_(buffers, momentum)
                torch._foreach_add_(buffers, grads)
                torch._foreach_addcmul_(params, buffers, lrs[k], value=-1.0)
            finite = torch.isfinite(loss.detach())
            if not bool(finite.all()):
                for i in (~finite).nonzero().view(-1).tolist():
                    if i not in died:
                        died[i] = k
                        frozen[i] = [t[i].clone() for t in (*params, *buffers)]
        for i, state in frozen.items():
            for t, value in zip((*params, *buffers), state, strict=True):
                t[i] = value
        self._scatter(params, buffers, momentum)
        loss_rows = torch.stack(losses).tolist()
        acc_rows = torch.stack(correct).tolist() if correct else None
        results: list[tuple[list[SurgicalEvent], bool]] = []
        for i, member in enumerate(members):
            used = died.get(i, k_steps - 1) + 1
            if used < k_steps:  # rewind the stream and sedation to the batches it used
                member.stream.load_state_dict(saved[i][0])
                member.sedation.load_state_dict(saved[i][1])
                for _ in range(used):
                    member.stream.next_batch()
                    member.sedation.before_step()
            for k in range(used):
                batch, value = batches[i][k], loss_rows[k][i]
                accuracy = acc_rows[k][i] if acc_rows is not None else 1.0 / (1.0 + value)
                member.note_step(StepRecord(batch.step, batch.task_index, value, accuracy,
                                            batch.novelty), batch)  # fmt: skip
                member.scalpel.after_step()
            member.scalpel.capture_dense_grad = used == k_steps
            results.append(([], i in died))
        return results

    def _learning_rates(self, k_steps: int) -> list[list[torch.Tensor]]:
        """Per step, per parameter, the members' learning rates ``[N, 1, ...]`` (sedation
        advanced member by member, as each member's own training loop would)."""
        per_step: list[list[list[float]]] = []  # [step][member][parameter]
        lookups: list[list[dict[str, Any]]] = []
        for member in self.members:
            named = dict(member.host.named_parameters())
            by_id = {id(p): g for g in member.optimizer.param_groups for p in g["params"]}
            lookups.append([by_id[id(named[n])] for n in self._names])
        for _ in range(k_steps):
            row = []
            for member, groups in zip(self.members, lookups, strict=True):
                member.sedation.before_step()
                row.append([float(g["lr"]) for g in groups])
            per_step.append(row)
        device = self.members[0].device
        table = torch.tensor(per_step, dtype=torch.float32, device=device)  # [K, N, P]
        shapes = [p.shape for p in self._template.parameters()]
        return [
            [table[k, :, j].view(-1, *([1] * len(shape))) for j, shape in enumerate(shapes)]
            for k in range(k_steps)
        ]

    def _gather(
        self,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor | None], list[float]]:
        """Stacked parameters, momentum buffers (zeros where a member has none yet: the first
        SGD step then starts from the gradient, as PyTorch's does) and float masks."""
        params, buffers, masks, momentum = [], [], [], []
        named = [dict(m.host.named_parameters()) for m in self.members]
        for name in self._names:
            tensors = [n[name] for n in named]
            params.append(torch.stack([t.detach() for t in tensors]))
            bufs = [m.optimizer.state.get(t, {}).get("momentum_buffer") for m, t in
                    zip(self.members, tensors, strict=True)]  # fmt: skip
            buffers.append(torch.stack([torch.zeros_like(t) if b is None else b.detach()
                                        for t, b in zip(tensors, bufs, strict=True)]))  # fmt: skip
            group = next(g for g in self.members[0].optimizer.param_groups
                         if any(p is tensors[0] for p in g["params"]))  # fmt: skip
            momentum.append(float(group["momentum"]))
            scalpel = self.members[0].scalpel
            masks.append(
                torch.stack([m.scalpel.mask(name).to(params[-1].dtype) for m in self.members])
                if name in scalpel.names
                else None
            )
        return params, buffers, masks, momentum

    def _record_dense_grads(
        self,
        grads: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor | None],
        died: Mapping[int, int],
    ) -> None:
        """The last step's gradients before masking, as each member's Scalpel would keep
        them (regrowth by gradient reads them)."""
        for j, name in enumerate(self._names):
            if masks[j] is None:
                continue
            for i, member in enumerate(self.members):
                if i not in died:
                    member.scalpel.record_dense_grad(name, grads[j][i])

    @torch.no_grad()
    def _scatter(
        self,
        params: Sequence[torch.Tensor],
        buffers: Sequence[torch.Tensor],
        momentum: Sequence[float],
    ) -> None:
        """Write the stacked parameters and momentum buffers back into every member (no
        buffer where the momentum is 0: PyTorch's SGD keeps none then)."""
        for i, member in enumerate(self.members):
            named = dict(member.host.named_parameters())
            for j, name in enumerate(self._names):
                tensor = named[name]
                tensor.copy_(params[j][i])
                if momentum[j] == 0:
                    continue
                state = member.optimizer.state[tensor]
                if "momentum_buffer" in state and state["momentum_buffer"] is not None:
                    state["momentum_buffer"].copy_(buffers[j][i])
                else:
                    state["momentum_buffer"] = buffers[j][i].clone()
