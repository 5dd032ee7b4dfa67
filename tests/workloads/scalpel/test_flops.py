"""FLOP (multiply-accumulate) accounting against hand-computed numbers."""

from __future__ import annotations

import torch

from esper.workloads.hosts import CNN, MLP, TinyTransformer
from esper.workloads.scalpel import Scalpel, flops


def test_mlp_flops() -> None:
    model = MLP((64,), 10, hidden=(32, 16))
    report = flops(model, (64,))
    assert report.dense == report.sparse == 64 * 32 + 32 * 16 + 16 * 10
    masks = {"layers.0.weight": torch.zeros(32, 64, dtype=torch.bool)}
    masks["layers.0.weight"][:, :8] = True  # 256 kept
    report = flops(model, (64,), masks)
    assert report.per_layer["layers.0.weight"].sparse == 256
    assert report.sparse == 256 + 512 + 160 and report.dense == 2720
    assert list(report.per_layer) == ["layers.0.weight", "layers.1.weight", "layers.2.weight"]


def test_cnn_flops_count_every_output_position() -> None:
    model = CNN((1, 8, 8), 10, channels=(4, 8), kernel_size=3, hidden=16)
    report = flops(model, (1, 8, 8))
    conv0 = 8 * 8 * (4 * 1 * 9)  # 64 positions × 36 weights
    conv1 = 4 * 4 * (8 * 4 * 9)  # after 2×2 pooling: 16 positions × 288 weights
    fc = (8 * 2 * 2) * 16
    assert report.per_layer["features.0.weight"].dense == conv0
    assert report.per_layer["features.3.weight"].dense == conv1
    assert report.dense == conv0 + conv1 + fc + 16 * 10
    conv1d = CNN((2, 12), 10, channels=(4,), kernel_size=3, hidden=8)
    assert flops(conv1d, (2, 12)).per_layer["features.0.weight"].dense == 12 * 4 * 2 * 3


def test_transformer_flops_and_active_heads() -> None:
    model = TinyTransformer((64,), 10, token_dim=8, d_model=32, heads=4, layers=1, ff=64)
    t, d = 8, 32
    embed = t * 8 * d
    projections = 4 * t * d * d
    attention = 2 * t * t * d  # scores and values, all heads
    ff = 2 * t * d * 64
    head = d * 10  # after mean pooling: one position
    report = flops(model, (64,))
    assert report.per_layer["blocks.0.attn.attention"].dense == attention
    assert report.dense == report.sparse == embed + projections + attention + ff + head
    model.blocks[0].attn.head_gate[1] = 0.0  # one of four heads off
    report = flops(model, (64,))
    assert report.dense == embed + projections + attention + ff + head
    saved = 3 * t * 8 * d + t * d * 8 + attention // 4  # q,k,v rows, out columns, products
    assert report.sparse == report.dense - saved


def test_scalpel_flops_follow_masks_and_heads() -> None:
    torch.manual_seed(0)
    model = TinyTransformer((64,), 10, token_dim=8, d_model=16, heads=4, layers=1, ff=32)
    scalpel = Scalpel(model, "gumbel_topk", {"keep": 0.5}, density=0.5)
    report = scalpel.flops((64,))
    assert report.per_layer["blocks.0.attn.attention"].sparse == 2 * 2 * 8 * 8 * 4
    masks = scalpel.effective_masks()
    for name, layer in report.per_layer.items():
        if name in masks and not name.startswith("blocks.0.attn"):
            positions = layer.dense // scalpel.numel(name)
            assert layer.sparse == positions * int(masks[name].sum())
    assert model.training  # flops() restores the mode
    assert 0 < report.ratio < 0.5
