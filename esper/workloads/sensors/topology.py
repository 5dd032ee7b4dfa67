"""The host's layer graph and a message-passing embedding of it.

The graph's nodes are the prunable tensors; an edge ``u → v`` means the output of ``u``'s
layer reaches ``v``'s layer's input without passing through another prunable layer. It is
read off one real forward pass, not a symbolic trace (``torch.fx`` cannot trace the
transformer host, whose attention unpacks ``x.shape``): a ``TorchFunctionMode`` tags every
tensor with the prunable layers it last came from, and each layer's input tags become its
in-edges. Residual streams, attention's q/k/v fan-out and parallel branches appear as they
run. The same pass records which activation function (if any) is applied directly to each
layer's output, and any normalisation module in between (a LayerNorm between a hidden Linear
and its activation), so ReDo scores can be taken on what the units emit
(:meth:`LayerGraph.unit_output`).

Node features combine structure (type, fan-in/out, degrees, depth and *path share*: the
fraction of input-to-output paths through the node, 1 for a bottleneck and ``1/k`` for one of
``k`` parallel branches) with whatever sensor summaries the caller appends. A small GNN in the
spirit of Neural Graph Embedding (Li et al. 2020, "Neural Graph Embedding for Neural
Architecture Search", AAAI) mixes them over a few rounds of mean aggregation along in- and
out-edges separately, so a layer's embedding depends on what feeds it and what it feeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from esper.workloads.sensors.activity import ACTIVATIONS
from esper.workloads.sensors.capture import layer_modules, prunable_parameters

__all__ = ["STRUCTURAL_FEATURES", "LayerGraph", "TopologyEncoder", "trace_layer_graph"]

STRUCTURAL_FEATURES = (
    "is_linear",
    "is_conv1d",
    "is_conv2d",
    "is_other",
    "log_fan_in",
    "log_fan_out",
    "log_numel",
    "in_degree",
    "out_degree",
    "depth",
    "path_share",
)
"""Names of :meth:`LayerGraph.structural_features` columns."""

_KINDS = ("linear", "conv1d", "conv2d", "other")

_ACTIVATION_FUNCS: dict[Any, str] = {
    F.relu: "relu",
    torch.relu: "relu",
    torch.Tensor.relu: "relu",
    F.gelu: "gelu",
    torch.tanh: "tanh",
    F.tanh: "tanh",
    torch.Tensor.tanh: "tanh",
    torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid",
    torch.Tensor.sigmoid: "sigmoid",
    F.silu: "silu",
    F.elu: "elu",
    F.leaky_relu: "leaky_relu",
}

_NORMS = (nn.LayerNorm, nn.GroupNorm)
"""Normalisation modules a layer's output may pass through on its way to the activation."""


@dataclass(frozen=True)
class LayerGraph:
    """Dataflow between the prunable layers of a network.

    Attributes:
        names: Prunable parameter names (the nodes), in the model's order.
        kinds: ``"linear"``, ``"conv1d"``, ``"conv2d"`` or ``"other"`` per node.
        fan_in: Inputs per output unit (``in_features``, or ``in_channels·kernel``).
        fan_out: Outputs per input unit (``out_features``, or ``out_channels·kernel``).
        numel: Weights per node.
        activations: Activation applied to each node's output, directly or after its
            normalisation (``"identity"`` if none was seen); a key of
            :data:`~esper.workloads.sensors.activity.ACTIVATIONS`.
        edges: ``(source, target)`` node indices; always from an earlier-called node.
        norms: Per node, the name of the normalisation module (LayerNorm, GroupNorm) applied
            directly to its output, ``""`` for none; empty: none anywhere.
    """

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    fan_in: tuple[int, ...]
    fan_out: tuple[int, ...]
    numel: tuple[int, ...]
    activations: tuple[str, ...]
    edges: tuple[tuple[int, int], ...] = field(default=())
    norms: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.names)

    def unit_output(self, model: nn.Module, i: int, output: Tensor) -> Tensor:
        """Node ``i``'s layer output (``output``, as recorded by its forward hook) as its units
        emit it: through its normalisation module of ``model``, if any, then its activation."""
        norm = self.norms[i] if self.norms else ""
        if norm:
            output = model.get_submodule(norm)(output)
        return ACTIVATIONS[self.activations[i]](output)

    def predecessors(self, i: int) -> list[int]:
        """Nodes with an edge into node ``i``."""
        return [s for s, t in self.edges if t == i]

    def successors(self, i: int) -> list[int]:
        """Nodes with an edge from node ``i``."""
        return [t for s, t in self.edges if s == i]

    @cached_property
    def _order(self) -> list[int]:
        indegree = [len(self.predecessors(i)) for i in range(len(self))]
        ready = [i for i in range(len(self)) if indegree[i] == 0]
        order: list[int] = []
        while ready:
            i = ready.pop(0)
            order.append(i)
            for j in self.successors(i):
                indegree[j] -= 1
                if indegree[j] == 0:
                    ready.append(j)
        return order

    @cached_property
    def depth(self) -> tuple[float, ...]:
        """Longest path from a source to each node, divided by the longest path overall."""
        level = [0] * len(self)
        for i in self._order:
            for j in self.successors(i):
                level[j] = max(level[j], level[i] + 1)
        top = max(level, default=0)
        return tuple(v / top if top else 0.0 for v in level)

    @cached_property
    def path_share(self) -> tuple[float, ...]:
        """Fraction of source-to-sink paths through each node (1 for a bottleneck)."""
        into = [0] * len(self)
        for i in self._order:
            preds = self.predecessors(i)
            into[i] = sum(into[p] for p in preds) if preds else 1
        out = [0] * len(self)
        for i in reversed(self._order):
            succs = self.successors(i)
            out[i] = sum(out[s] for s in succs) if succs else 1
        total = sum(into[i] for i in range(len(self)) if not self.successors(i))
        return tuple(into[i] * out[i] / total if total else 0.0 for i in range(len(self)))

    def adjacency(self) -> tuple[Tensor, Tensor]:
        """Row-normalised ``(in, out)`` adjacency: ``in @ h`` averages each node's
        predecessors' features, ``out @ h`` its successors' (zero rows for none)."""
        n = len(self)
        incoming = torch.zeros(n, n)
        for s, t in self.edges:
            incoming[t, s] = 1.0
        outgoing = incoming.t().clone()
        for a in (incoming, outgoing):
            a.div_(a.sum(1, keepdim=True).clamp_min(1.0))
        return incoming, outgoing

    def structural_features(self) -> Tensor:
        """``(nodes, len(STRUCTURAL_FEATURES))`` float32 structural node features (the
        ``log_*`` columns are natural logs divided by 10, to keep all near unit scale)."""
        rows = []
        for i in range(len(self)):
            onehot = [float(self.kinds[i] == k) for k in _KINDS]
            rows.append(
                [
                    *onehot,
                    math.log(self.fan_in[i]) / 10.0,
                    math.log(self.fan_out[i]) / 10.0,
                    math.log(self.numel[i]) / 10.0,
                    float(len(self.predecessors(i))),
                    float(len(self.successors(i))),
                    self.depth[i],
                    self.path_share[i],
                ]
            )
        return torch.tensor(rows, dtype=torch.float32).reshape(len(self), len(STRUCTURAL_FEATURES))


def _describe(module: nn.Module, weight: Tensor) -> tuple[str, int, int]:
    if isinstance(module, nn.Linear):
        return "linear", module.in_features, module.out_features
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        k = math.prod(module.kernel_size)
        kind = "conv1d" if isinstance(module, nn.Conv1d) else "conv2d"
        return kind, module.in_channels // module.groups * k, module.out_channels * k
    shape = weight.shape
    return "other", max(math.prod(shape[1:]), 1), max(shape[0] if shape else 1, 1)


class _Tracer(TorchFunctionMode):
    """Tags each tensor with the prunable layers its value last came from."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[int, frozenset[str]] = {}
        self.keep: list[Tensor] = []  # keeps tagged tensors alive so their ids stay unique
        self.outputs: dict[int, str] = {}
        self.activations: dict[str, str] = {}
        self.norms: dict[str, str] = {}

    def tags_of(self, values: Iterable[Any]) -> frozenset[str]:
        found: set[str] = set()
        for t in values:
            if isinstance(t, Tensor):
                found |= self.tags.get(id(t), frozenset())
        return frozenset(found)

    def tag(self, value: Any, tags: frozenset[str]) -> None:
        for t in tree_leaves(value):
            if isinstance(t, Tensor):
                self.tags[id(t)] = tags
                self.keep.append(t)

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        result = func(*args, **kwargs)
        inputs = tree_leaves((list(args), kwargs))
        name = _ACTIVATION_FUNCS.get(func)
        if name is not None and inputs and isinstance(inputs[0], Tensor):
            layer = self.outputs.get(id(inputs[0]))
            if layer is not None:
                self.activations.setdefault(layer, name)
        tags = self.tags_of(inputs)
        if tags:
            self.tag(result, tags)
        return result


def trace_layer_graph(
    model: nn.Module, example_input: Tensor, params: Sequence[str] | None = None
) -> LayerGraph:
    """The :class:`LayerGraph` of ``model``, from one forward pass on ``example_input``
    (a batch of one or two examples is enough; gradients are not needed)."""
    names = list(params) if params is not None else list(prunable_parameters(model))
    modules = layer_modules(model, names)
    weights = dict(model.named_parameters())
    tracer = _Tracer()
    first_call: dict[str, int] = {}
    preds: dict[str, set[str]] = {n: set() for n in names}
    handles = []
    for name, module in modules.items():

        def pre(mod: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
            first_call.setdefault(name, len(first_call))
            preds[name] |= tracer.tags_of(tree_leaves(list(args)))

        def post(mod: nn.Module, args: tuple[Any, ...], out: Any, name: str = name) -> None:
            tracer.tag(out, frozenset({name}))
            if isinstance(out, Tensor):
                tracer.outputs[id(out)] = name

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    for norm_name, norm in model.named_modules():
        if not isinstance(norm, _NORMS):
            continue

        def normalised(
            mod: nn.Module, args: tuple[Any, ...], out: Any, name: str = norm_name
        ) -> None:
            layer = tracer.outputs.get(id(args[0])) if args else None
            if layer is not None and isinstance(out, Tensor):  # still that layer's output
                tracer.norms.setdefault(layer, name)
                tracer.outputs[id(out)] = layer

        handles.append(norm.register_forward_hook(normalised))
    try:
        with torch.no_grad(), tracer:
            model(example_input)
    finally:
        for handle in handles:
            handle.remove()
    index = {n: i for i, n in enumerate(names)}
    edges = sorted(
        (index[s], index[t])
        for t in names
        for s in preds[t]
        if s != t and s in first_call and first_call[s] < first_call[t]
    )
    described = [_describe(modules[n], weights[n]) for n in names]
    return LayerGraph(
        names=tuple(names),
        kinds=tuple(d[0] for d in described),
        fan_in=tuple(d[1] for d in described),
        fan_out=tuple(d[2] for d in described),
        numel=tuple(weights[n].numel() for n in names),
        activations=tuple(tracer.activations.get(n, "identity") for n in names),
        edges=tuple(edges),
        norms=tuple(tracer.norms.get(n, "") for n in names) if tracer.norms else (),
    )


class _Round(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.self_ = nn.Linear(width, width)
        self.incoming = nn.Linear(width, width, bias=False)
        self.outgoing = nn.Linear(width, width, bias=False)

    def forward(self, h: Tensor, incoming: Tensor, outgoing: Tensor) -> Tensor:
        update = self.self_(h) + self.incoming(incoming @ h) + self.outgoing(outgoing @ h)
        return h + torch.tanh(update)


class TopologyEncoder(nn.Module):
    """Message passing over a :class:`LayerGraph`: after a linear embedding of the node
    features, ``rounds`` residual rounds of
    ``h ← h + tanh(W_s h + W_in mean_pred(h) + W_out mean_succ(h) + b)``, then a linear
    read-out squashed by ``tanh`` to ``[−1, 1]``.

    Weights start LeCun-normal (``std = 1/√fan_in``, zero biases) so that an untrained
    encoder already separates structurally different layers; it is a learnable module, and a
    policy may train it end to end. The Nervous System uses it with its seeded initial
    weights unless given trained ones.

    Args:
        in_features: Node feature width.
        hidden: Width of the messages.
        out_features: Embedding width per layer.
        rounds: Message-passing rounds (how far along the graph a layer sees).
    """

    def __init__(
        self, in_features: int, hidden: int = 16, out_features: int = 8, rounds: int = 3
    ) -> None:
        super().__init__()
        if rounds < 1:
            raise ValueError(f"the topology encoder needs at least 1 round, got {rounds}")
        self.embed = nn.Linear(in_features, hidden)
        self.rounds = nn.ModuleList(_Round(hidden) for _ in range(rounds))
        self.readout = nn.Linear(hidden, out_features)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=module.in_features**-0.5)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, features: Tensor, graph: LayerGraph) -> Tensor:
        """Embeddings ``(nodes, out_features)`` of the graph's nodes."""
        incoming, outgoing = (a.to(features) for a in graph.adjacency())
        h = self.embed(features)
        for layer in self.rounds:
            h = layer(h, incoming, outgoing)
        return torch.tanh(self.readout(h))
