"""The traced layer graph and the topology embedding: bottleneck vs parallel branch."""

from __future__ import annotations

import torch
from torch import nn

from esper.workloads.hosts import make_host
from esper.workloads.sensors import LayerGraph, TopologyEncoder, trace_layer_graph


class Bottleneck(nn.Module):
    """a → b → c: every path goes through b."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


class Parallel(nn.Module):
    """a → (b | b2) → sum → c: b is one of two parallel branches."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 4)
        self.b2 = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        return self.c(torch.relu(self.b(h)) + torch.relu(self.b2(h)))


def _embed(graph: LayerGraph) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    encoder = TopologyEncoder(graph.structural_features().shape[1], hidden=16, out_features=8)
    with torch.no_grad():
        emb = encoder(graph.structural_features(), graph)
    return dict(zip(graph.names, emb, strict=True))


def test_graphs_of_bottleneck_and_parallel_branch() -> None:
    seq = trace_layer_graph(Bottleneck(), torch.randn(2, 8))
    par = trace_layer_graph(Parallel(), torch.randn(2, 8))
    assert seq.names == ("a.weight", "b.weight", "c.weight")
    assert seq.edges == ((0, 1), (1, 2))
    assert par.names == ("a.weight", "b.weight", "c.weight", "b2.weight")
    assert set(par.edges) == {(0, 1), (0, 3), (1, 2), (3, 2)}
    assert seq.path_share == (1.0, 1.0, 1.0)
    assert par.path_share == (1.0, 0.5, 1.0, 0.5)
    assert seq.depth == (0.0, 0.5, 1.0) and par.depth == (0.0, 0.5, 1.0, 0.5)
    assert seq.activations == ("relu", "relu", "identity")


def test_embedding_distinguishes_bottleneck_from_branch() -> None:
    seq = _embed(trace_layer_graph(Bottleneck(), torch.randn(2, 8)))
    par = _embed(trace_layer_graph(Parallel(), torch.randn(2, 8)))
    # Same layer shapes, same encoder: only the structure differs.
    for layer in ("b.weight", "a.weight"):  # b: bottleneck vs branch; a: feeds one or two
        assert (seq[layer] - par[layer]).norm() > 0.1 * seq[layer].norm()
    torch.testing.assert_close(par["b.weight"], par["b2.weight"])  # symmetric branches


def test_hosts_trace() -> None:
    mlp = trace_layer_graph(make_host("mlp", (6,), 3, hidden=(5, 4)), torch.randn(2, 6))
    assert mlp.edges == ((0, 1), (1, 2)) and mlp.kinds == ("linear",) * 3
    cnn = trace_layer_graph(make_host("cnn", (1, 8, 8), 3), torch.randn(2, 1, 8, 8))
    assert cnn.kinds == ("conv2d", "conv2d", "linear", "linear")
    assert cnn.fan_in[0] == 9 and cnn.activations[0] == "relu"
    tr = trace_layer_graph(
        make_host("transformer", (12,), 3, token_dim=4, d_model=8, heads=2), torch.randn(2, 12)
    )
    idx = {n: i for i, n in enumerate(tr.names)}
    for proj in ("q", "k", "v"):  # each projection feeds the output projection
        assert (idx[f"blocks.0.attn.{proj}.weight"], idx["blocks.0.attn.out.weight"]) in tr.edges
    # the residual stream: the embedding reaches the head directly
    assert (idx["embed.weight"], idx["head.weight"]) in tr.edges
    assert tr.activations[idx["blocks.0.ff1.weight"]] == "gelu"
    assert tr.path_share[idx["embed.weight"]] == 1.0
    assert tr.path_share[idx["blocks.0.attn.q.weight"]] < 1.0
