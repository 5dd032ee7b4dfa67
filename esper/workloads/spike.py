"""The spike term's control: a host's loss on the next few batches of its stream, measured
right before and right after a surgery, forward only.

The reward's spike term (:func:`~esper.workloads.reward.score_surgery`) compares the operated
host with the same host unoperated on the same upcoming batches
(:meth:`DriftStream.peek <esper.workloads.stream.DriftStream.peek>`), so that drift in the stream
is not charged to the surgery. :func:`probe_loss` measures one host;
:func:`stacked_probe_losses` measures a cohort's members in one stacked forward (on this
project's CPU about twice as fast as the members one by one, ``benchmarks/cohort_stages.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from esper.workloads.hosts import Host
from esper.workloads.prequential import batch_loss, stacked_batch_loss
from esper.workloads.stream import Batch

__all__ = ["probe_loss", "stacked_probe_losses"]


def probe_loss(host: nn.Module, batches: Sequence[Batch], kind: str, device: torch.device) -> float:
    """Mean loss of ``host`` on ``batches`` (the mean of their mean losses), forward only: no
    gradient, nothing trained. ``nan`` for no batches."""
    with torch.no_grad():
        losses = [batch_loss(host(b.x.to(device)), b.y.to(device), kind) for b in batches]
    return float(torch.stack(losses).mean()) if losses else math.nan


@torch.no_grad()
def stacked_probe_losses(
    template: Host,
    hosts: Sequence[nn.Module],
    probes: Sequence[Sequence[Batch]],
    kind: str,
    device: torch.device,
) -> list[float]:
    """:func:`probe_loss` of every host on its own batches, in one forward of the stacked
    hosts (``template.stacked_forward``).

    Args:
        template: A hook-free host of the members' architecture (a cohort's template).
        hosts: The members' hosts (their current parameters are read).
        probes: Per host its batches; every host has as many, all of one size (inputs and
            targets).
        kind: The task kind (its loss).
        device: Where the hosts live.

    Raises:
        ValueError: not one probe per host, or batches of different counts or sizes.
    """
    counts = {len(p) for p in probes}
    sizes = {(tuple(b.x.shape), tuple(b.y.shape)) for p in probes for b in p}
    if len(hosts) != len(probes) or len(counts) > 1 or len(sizes) > 1:
        raise ValueError(
            f"{len(probes)} probes for {len(hosts)} hosts need one count and one size of "
            f"batches, got counts {sorted(counts)} and sizes {sorted(sizes)}"
        )
    windows = len(probes[0])
    if windows == 0:
        return [math.nan] * len(hosts)
    named = [dict(h.named_parameters()) for h in hosts]
    params = [torch.stack([n[name].detach() for n in named]) for name, _ in
              template.named_parameters()]  # fmt: skip
    x = torch.stack([torch.cat([b.x for b in p]) for p in probes]).to(device)
    y = torch.stack([torch.cat([b.y for b in p]) for p in probes]).to(device)
    out = template.stacked_forward(params, x)  # [N, windows · B, ...]
    n = len(hosts)
    per_batch = stacked_batch_loss(
        out.reshape(n * windows, -1, *out.shape[2:]), y.reshape(n * windows, -1, *y.shape[2:]), kind
    )
    return per_batch.view(n, windows).mean(1).tolist()
