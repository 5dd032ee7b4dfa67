"""Peer check: our RigL update against ``rigl-torch``'s ``RigLScheduler`` (PyPI ``rigl-torch``).

Same model, weights, masks, batch (hence dense gradients) and drop fraction. Where the two rules
coincide they choose the same weights:

* **Drop** — both remove the ``k = ⌊f(t)·n_active⌋`` active weights of smallest ``|w|``
  (rigl-torch keeps the ``n_active − k`` largest ``|w|`` of the whole tensor, the same set when
  no active weight is exactly zero).
* **Grow** — the one difference: rigl-torch takes the top-``k`` dense ``|g|`` among *all* weights
  inactive after the drop, so it may regrow a weight it has just dropped (which then keeps its
  value); we take them among the weights inactive *before* the drop (as ``esper.policies.base.
  swap`` does), so a dropped weight is never regrown by the same update. The test checks
  rigl-torch's new mask is exactly ``(M − D) ∪ top_k(|g|, ¬(M − D))`` with our ``D``, and that it
  equals our new mask whenever none of its regrown weights is in ``D`` (otherwise its grown
  weights outside ``D`` are the top of our grow ranking). With the real gradients of this batch
  rigl-torch does regrow a few just-dropped weights; with dense gradients that vanish on the
  support (fed identically to both), the rules coincide and so do the chosen weights.

Setup differences handled here: rigl-torch's ``uniform`` mode keeps the first layer dense (its
``S[0] = 0``), so only the other layers are compared; its random initial masks are replaced by
ours (``backward_masks`` copied from our Scalpel), and ``ignore_linear_layers=False`` makes it
operate on the MLP's Linear layers at all.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from esper.bench.anchors import import_rigl_scheduler
from esper.policies.base import Policy
from esper.policies.baselines import RigL
from esper.workloads.hosts import make_host
from esper.workloads.organism import Organism, OrganismStep
from esper.workloads.scalpel import topk_among
from tests.policies.baselines.test_baselines import started

T_END = 60
DELTA = 6


def _pair() -> tuple[Organism, Policy, OrganismStep, Any, dict[str, torch.Tensor]]:
    """Our organism and RigL, and rigl-torch on a copy of the host with our masks, both with the
    dense gradients of the same batch, rigl-torch's update at step ``ΔT`` already applied."""
    org, policy, first = started(
        "rigl", "workload.scalpel.distribution=uniform", delta_t=DELTA, t_end=T_END
    )
    assert org.sgd_step == DELTA  # the first surgery is a RigL step in both
    x, y = org.stream.source.sample(torch.Generator().manual_seed(5), 16, 0)
    peer = make_host("mlp", tuple(x.shape[1:]), 10, hidden=[32, 16])
    optimizer = torch.optim.SGD(peer.parameters(), lr=0.1, momentum=0.9)
    scheduler = import_rigl_scheduler()(
        peer,
        optimizer,
        dense_allocation=org.scalpel.global_density(),
        T_end=T_END,
        delta=DELTA,
        alpha=0.3,
        sparsity_distribution="uniform",
        ignore_linear_layers=False,
    )
    assert scheduler.S[0] == 0 and all(s > 0 for s in scheduler.S[1:])
    peer.load_state_dict(org.host.state_dict())
    masks = {n: org.scalpel.mask(n).clone() for n in org.scalpel.names}
    for i, name in enumerate(org.scalpel.names):
        if scheduler.S[i] > 0:
            scheduler.backward_masks[i] = masks[name].clone()
    org.host.zero_grad()
    with org.scalpel.dense_grads():
        F.cross_entropy(org.host(x), y).backward()
    scheduler.step = DELTA - 1  # the hooks keep the dense gradient of the next backward
    F.cross_entropy(peer(x), y).backward()
    return org, policy, first, scheduler, masks


def _run_peer(
    org: Organism,
    policy: Policy,
    first: OrganismStep,
    scheduler: Any,
    masks: dict[str, torch.Tensor],
) -> int:
    """Runs both updates and checks the documented relation; returns how many layers agree."""
    assert not scheduler()  # step → ΔT: its RigL update ran (the optimizer step is skipped)
    assert isinstance(policy, RigL)
    fraction = policy.drop_fraction(DELTA)
    assert math.isclose(fraction, float(scheduler.cosine_annealing()))
    actions = policy.act(org, first)
    weights = dict(org.host.named_parameters())
    peer_weights = dict(scheduler.model.named_parameters())
    names = org.scalpel.names
    coinciding = 0
    for i, name in enumerate(names[1:], start=1):
        mask = masks[name].view(-1)
        k = int(int(mask.sum()) * fraction)
        grad = org.scalpel.dense_grad(name).view(-1).abs()
        peer_grad = scheduler.backward_hook_objects[i].dense_grad.view(-1).abs()
        assert torch.allclose(grad, peer_grad, atol=1e-7)
        assert bool((weights[name].detach().view(-1)[mask] != 0).all())

        drop = torch.as_tensor(actions[name].prune)
        assert drop.numel() == k
        ours = mask.clone()
        ours[drop] = False
        ours[torch.as_tensor(actions[name].regrow)] = True
        theirs = scheduler.backward_masks[i].view(-1)

        after_drop = mask.clone()
        after_drop[drop] = False
        their_grow = topk_among(grad, ~after_drop, k)
        expected = after_drop.clone()
        expected[their_grow] = True
        assert torch.equal(theirs, expected), name  # same drop; grow among ¬(M − D)

        regrown_dropped = set(their_grow.tolist()) & set(drop.tolist())
        if not regrown_dropped:
            assert torch.equal(theirs, ours), name
            coinciding += 1
        else:
            outside = [j for j in their_grow.tolist() if j not in regrown_dropped]
            ranking = topk_among(grad, ~mask, len(outside)).tolist()
            assert set(outside) == set(ranking), name
        # Both start regrown weights at zero.
        new = (theirs & ~mask).nonzero().view(-1)
        assert torch.all(peer_weights[name].detach().view(-1)[new] == 0)
        assert actions[name].regrow_init == "zero"
    return coinciding


def test_rigl_matches_rigl_torch_up_to_regrowing_just_dropped_weights() -> None:
    org, policy, first, scheduler, masks = _pair()
    _run_peer(org, policy, first, scheduler, masks)


def test_rigl_selects_the_same_weights_as_rigl_torch_where_the_rules_coincide(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    org, policy, first, scheduler, masks = _pair()
    grads = {n: org.scalpel.dense_grad(n).clone() for n in org.scalpel.names}
    for i, name in enumerate(org.scalpel.names):
        if scheduler.S[i] > 0:
            grads[name] = torch.where(masks[name], 0.0, grads[name])
            scheduler.backward_hook_objects[i].dense_grad = grads[name].clone()
    monkeypatch.setattr(org.scalpel, "dense_grad", lambda name: grads[name])
    assert _run_peer(org, policy, first, scheduler, masks) == len(org.scalpel.names) - 1
