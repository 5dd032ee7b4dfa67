"""Host networks: the living networks that Emrakul operates on.

Three families, each built from a config and the stream's input shape: an MLP, a small CNN
(2-D convolutions for images such as digits, 1-D for signals such as MNIST-1D), and a tiny
pre-LayerNorm transformer encoder whose attention heads are addressable units.

Every prunable tensor is addressed by its full parameter name (``"layers.0.weight"``,
``"blocks.1.attn.q.weight"``), exactly as in ``named_parameters()``, so masks, sensors and
event logs all speak the same language. Prunable tensors are the weights of Linear and
Conv layers; biases, LayerNorm and positional embeddings stay dense.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import torch
from torch import nn
from torch.func import functional_call

from esper.registry import Registry, build

__all__ = [
    "CNN",
    "HOSTS",
    "MLP",
    "Host",
    "MultiHeadSelfAttention",
    "TinyTransformer",
    "UnitGroup",
    "make_host",
]

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def _activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(
            f"unknown activation {name!r}; valid activations: {', '.join(sorted(_ACTIVATIONS))}"
        )
    return _ACTIVATIONS[name]()


@dataclass(frozen=True)
class UnitGroup:
    """A set of structured units (neurons, channels or attention heads) of one module.

    Attributes:
        module: Full module name (``"blocks.0.attn"``).
        kind: ``"neuron"``, ``"channel"`` or ``"head"``.
        count: Number of units.
        slices: For each parameter that a unit owns, ``(parameter name, dim, unit width)``:
            unit ``u`` owns indices ``u·width … (u+1)·width − 1`` of that parameter along ``dim``.
    """

    module: str
    kind: str
    count: int
    slices: tuple[tuple[str, int, int], ...]

    def index(self, unit: int) -> dict[str, tuple[int, slice]]:
        """The ``(dim, slice)`` of each parameter that unit ``unit`` owns."""
        if not 0 <= unit < self.count:
            raise IndexError(f"{self.module} has {self.count} {self.kind}s, no unit {unit}")
        return {name: (dim, slice(unit * w, (unit + 1) * w)) for name, dim, w in self.slices}


class Host(nn.Module):
    """Base class of host networks: addressable prunable tensors and structured units."""

    has_buffers: ClassVar[bool] = False
    """Whether the host keeps buffers (a cohort stacks parameters only, so it refuses them)."""

    def prunable_parameters(self) -> dict[str, nn.Parameter]:
        """Weights of every Linear and Conv layer, by full parameter name, in forward order."""
        out: dict[str, nn.Parameter] = {}
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                out[f"{name}.weight"] = cast(nn.Parameter, module.weight)
        return out

    def unit_groups(self) -> list[UnitGroup]:
        """Output neurons of Linear layers, output channels of Conv layers, attention heads."""
        groups: list[UnitGroup] = []
        for name, module in self.named_modules():
            if isinstance(module, MultiHeadSelfAttention):
                groups.append(module.head_group(name))
            elif isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                kind = "neuron" if isinstance(module, nn.Linear) else "channel"
                slices = [(f"{name}.weight", 0, 1)]
                if module.bias is not None:
                    slices.append((f"{name}.bias", 0, 1))
                groups.append(UnitGroup(name, kind, module.weight.shape[0], tuple(slices)))
        return groups

    def stacked_forward(self, params: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The forward of ``N`` copies of this host at once, for a cohort.

        Args:
            params: Every parameter, in ``named_parameters()`` order, stacked along a leading
                member axis of size ``N``.
            x: The members' batches, ``[N, B, *input_shape]``.

        Returns:
            ``[N, B, *output]``: member ``i``'s outputs on its batch at its parameters.

        The generic form calls this module's own ``forward`` through
        :func:`torch.func.functional_call` under :func:`torch.vmap`; a host whose layers have a
        cheaper batched form overrides it (:meth:`MLP.stacked_forward`). Forward hooks of this
        module run as in any call, so a cohort calls it on a hook-free copy.
        """
        names = [n for n, _ in self.named_parameters()]

        def one(p: tuple[torch.Tensor, ...], xb: torch.Tensor) -> torch.Tensor:
            return functional_call(self, dict(zip(names, p, strict=True)), (xb,))

        return torch.vmap(one)(tuple(params), x)


HOSTS: Registry[type[Host]] = Registry("host")


@HOSTS.register("mlp")
class MLP(Host):
    """A fully connected network on flattened inputs.

    Args:
        input_shape: Shape of one example.
        num_outputs: Classes, or 1 for regression.
        hidden: Widths of the hidden layers.
        activation: ``relu``, ``gelu`` or ``tanh``.
        layer_norm: Put a LayerNorm (with its affine scale and shift) between each hidden
            Linear and its activation, ``norms.i`` after ``layers.i``: the normalisation that,
            with weight decay, Lyle et al. 2024 ("Disentangling the Causes of Plasticity Loss
            in Neural Networks", arXiv 2402.18762) find keeps networks plastic. Its parameters
            stay dense (only Linear weights are prunable).
    """

    norms: nn.ModuleList | None

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        hidden: Sequence[int] = (128, 128),
        activation: str = "relu",
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        widths = [math.prod(input_shape), *hidden, num_outputs]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.act = _activation(activation)
        self.norms = nn.ModuleList(nn.LayerNorm(w) for w in hidden) if layer_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                if self.norms is not None:
                    h = self.norms[i](h)
                h = self.act(h)
        return h

    def stacked_forward(self, params: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """:meth:`Host.stacked_forward` as one batched matrix product per layer.

        Activations are kept feature-major (``[N, features, B]``, ``h' = W h + b``) so that
        the weight gradients come out of the backward contiguous, in the weights' own layout:
        the momentum and mask updates on them then run on contiguous memory. On this
        project's 2-core CPU that halved a cohort's training step against the sample-major
        ``h Wᵀ`` form, which was itself twice as fast as the ``vmap`` form. Module hooks do
        not run (the layers are not called).

        With LayerNorms the generic form runs instead.

        Raises:
            ValueError: ``params`` is not one weight and one bias per layer.
        """
        if self.norms is not None:
            return super().stacked_forward(params, x)
        if len(params) != 2 * len(self.layers):
            raise ValueError(
                f"{len(params)} stacked tensors for {len(self.layers)} layers: expected a "
                "weight and a bias per layer, in named_parameters() order"
            )
        h = x.flatten(2).transpose(1, 2)
        last = len(self.layers) - 1
        for i in range(len(self.layers)):
            weight, bias = params[2 * i], params[2 * i + 1]
            h = torch.baddbmm(bias.unsqueeze(2), weight, h)
            if i < last:
                h = self.act(h)
        return h.transpose(1, 2)


@HOSTS.register("cnn")
class CNN(Host):
    """A small CNN: conv → act → max-pool(2) per stage, then a hidden Linear and the head.

    2-D convolutions for image inputs ``(C, H, W)``, 1-D for signals ``(C, L)``.

    Args:
        input_shape: ``(C, H, W)`` or ``(C, L)``.
        num_outputs: Classes, or 1 for regression.
        channels: Output channels of each convolution stage.
        kernel_size: Convolution kernel size (padding keeps the size before pooling).
        hidden: Width of the hidden fully connected layer.
        activation: ``relu``, ``gelu`` or ``tanh``.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        channels: Sequence[int] = (16, 32),
        kernel_size: int = 3,
        hidden: int = 64,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if len(input_shape) not in (2, 3):
            raise ValueError(
                f"host 'cnn' needs inputs shaped (C, L) or (C, H, W), "
                f"got {tuple(input_shape)}; use 'mlp'"
            )
        conv: type[nn.Conv1d] | type[nn.Conv2d] = nn.Conv2d if len(input_shape) == 3 else nn.Conv1d
        pool: type[nn.MaxPool1d] | type[nn.MaxPool2d] = (
            nn.MaxPool2d if len(input_shape) == 3 else nn.MaxPool1d
        )
        stages: list[nn.Module] = []
        size = list(input_shape[1:])
        c_in = input_shape[0]
        for c_out in channels:
            stages += [
                conv(c_in, c_out, kernel_size, padding=kernel_size // 2),
                _activation(activation),
            ]
            if min(size) >= 2:
                stages.append(pool(2))
                size = [s // 2 for s in size]
            c_in = c_out
        self.features = nn.Sequential(*stages)
        self.fc = nn.Linear(c_in * math.prod(size), hidden)
        self.act = _activation(activation)
        self.head = nn.Linear(hidden, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.fc(self.features(x).flatten(1))))


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention with separate q, k, v and output projections.

    Head ``h`` owns rows ``h·d_head … (h+1)·d_head − 1`` of ``q``, ``k`` and ``v`` (weight and
    bias) and the same columns of ``out.weight``. ``head_gate`` (a buffer of ones) scales each
    head's output, so a head can be switched off without touching its weights.

    Args:
        d_model: Model width.
        heads: Number of heads; must divide ``d_model``.
    """

    head_gate: torch.Tensor

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"heads={heads} must divide d_model={d_model}")
        self.heads = heads
        self.d_head = d_model // heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.register_buffer("head_gate", torch.ones(heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape

        def split(z: torch.Tensor) -> torch.Tensor:
            return z.view(n, t, self.heads, self.d_head).transpose(1, 2)

        att = nn.functional.scaled_dot_product_attention(
            split(self.q(x)), split(self.k(x)), split(self.v(x))
        )
        att = att * self.head_gate.view(1, -1, 1, 1)
        return self.out(att.transpose(1, 2).reshape(n, t, d))

    def head_group(self, name: str) -> UnitGroup:
        """The heads of this module (named ``name``) as a :class:`UnitGroup`."""
        w = self.d_head
        slices = [(f"{name}.{p}.{t}", 0, w) for p in ("q", "k", "v") for t in ("weight", "bias")]
        slices.append((f"{name}.out.weight", 1, w))
        return UnitGroup(name, "head", self.heads, tuple(slices))


class _Block(nn.Module):
    def __init__(self, d_model: int, heads: int, ff: int, activation: str) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = MultiHeadSelfAttention(d_model, heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, ff)
        self.act = _activation(activation)
        self.ff2 = nn.Linear(ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.ff2(self.act(self.ff1(self.ln2(x))))


@HOSTS.register("transformer")
class TinyTransformer(Host):
    """A tiny pre-LayerNorm transformer encoder over tokens cut from the flattened input.

    The input is flattened, zero-padded to a multiple of ``token_dim`` and cut into tokens
    (8×8 digits → 8 tokens of 8 pixels; MNIST-1D → 5 tokens of 8), embedded, given learned
    positions, passed through ``layers`` blocks, mean-pooled and classified.

    Args:
        input_shape: Shape of one example.
        num_outputs: Classes, or 1 for regression.
        token_dim: Features per token.
        d_model: Model width.
        heads: Attention heads per block.
        layers: Number of blocks.
        ff: Width of each block's feed-forward layer.
        activation: Feed-forward activation.
    """

    has_buffers: ClassVar[bool] = True  # the attention heads' gates

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        token_dim: int = 8,
        d_model: int = 32,
        heads: int = 4,
        layers: int = 2,
        ff: int = 64,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        features = math.prod(input_shape)
        self.token_dim = token_dim
        self.tokens = -(-features // token_dim)
        self.pad = self.tokens * token_dim - features
        self.embed = nn.Linear(token_dim, d_model)
        self.pos = nn.Parameter(torch.zeros(1, self.tokens, d_model))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(_Block(d_model, heads, ff, activation) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.pad(x.flatten(1), (0, self.pad)).view(
            x.shape[0], self.tokens, self.token_dim
        )
        h = self.embed(h) + self.pos
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h.mean(dim=1)))


def make_host(name: str, input_shape: Sequence[int], num_outputs: int, **params: Any) -> Host:
    """Build a registered host network for inputs of ``input_shape``.

    Raises:
        esper.registry.UnknownNameError: ``name`` is not a registered host.
        esper.registry.InvalidParameterError: a parameter the host does not accept.
    """
    fixed = {"input_shape": tuple(input_shape), "num_outputs": num_outputs}
    return build(HOSTS[name], params, f"host {name!r}", fixed=fixed)
