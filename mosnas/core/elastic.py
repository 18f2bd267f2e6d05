"""Weight generators: the Mixture-of-Supernets idea in one file.

A generator owns every tensor of the supernet at its largest size and, for one architecture,
produces each dense tensor of that architecture's size:

- shared (HAT / SuperShaper): the top-left slice `E[:out, :in]` of one matrix.
- layer (layer-wise MoS): `m` experts per tensor and, per Transformer layer, a router
  `R(a) = W2 relu(W1 a + b1) + b2`; `alpha = softmax(R(a))`; `W = sum_k alpha_k E_k[:out, :in]`.
  One alpha per layer serves that layer's fc1 and fc2 (and attention, when mixed).
- neuron (neuron-wise MoS): one router per linear with `m * out_max` outputs laid out
  neuron-major, so that neuron i owns logits `[i*m, (i+1)*m)`; slicing the first `m * out`
  logits for a narrower layer keeps every remaining neuron's own logits (an expert-major
  layout would silently hand neuron i another neuron's logits). `W[i] = sum_k beta[i,k] E_k[i, :in]`.
- kshot (K-shot NAS, Su et al., ICML 2021): `K = m` copies of the whole supernet, every tensor (embeddings
  and LayerNorms too), mixed by ONE arch-conditioned simplex `lambda = softmax(R(a))` (K,) that all layers
  share: `W = sum_k lambda_k W_k[:out, :in]` for every tensor. It is layer-wise MoS with one "layer" that holds
  every tensor (the family's `groups` are not used).

With `router_input="constant"` every router sees the all-ones vector (the largest arch's embedding, as features
are divided by their max) instead of the arch's: the mixture is learned but cannot depend on the arch (the
control for "is it the arch conditioning that helps?").

Routing is dense and depends only on the arch embedding `a`, so for a fixed arch the mixture is a
constant and collapses into one dense matrix (see `Supernet.export`). Which tensors MoS mixes, and which
layer and linear each belongs to, is the model family's to say (`groups`); the rest are sliced.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mosnas.errors import ConfigError


def top_left(t: Tensor, shape: tuple[int, ...], lead: int = 0) -> Tensor:
    """The top-left `shape` slice of `t`, keeping its first `lead` dims whole."""
    return t[(slice(None),) * lead + tuple(slice(0, s) for s in shape)]


GENERATORS = ("shared", "layer", "neuron", "kshot")
KSHOT = "kshot"  # the k-shot generator's one router and group: every tensor belongs to it


def _key(name: str) -> str:  # module and parameter names may not contain '.'
    return name.replace(".", "__")


class Router(nn.Module):
    """arch embedding (in_dim,) -> logits (out_dim,): `R(a) = W2 relu(W1 a + b1) + b2` (MoS, Jawahar et al. 2023).

    The output layer keeps PyTorch's default weight init (uniform within +-1/sqrt(hidden)) and a zero
    bias: logits of std ~0.2, so every arch starts with a near-uniform mixture of its own. A zero
    output layer would be a fixed point with `copy` experts: identical experts get identical gradients
    and a router whose logits get no gradient. Different mixtures per arch break that symmetry once
    several archs share a step (the sandwich rule): expert k's gradient is sum_a alpha_k(a) g(a), a
    different direction per expert. (Training one arch alone would not do: Adam normalizes away the
    per-expert scale alpha_k of alpha_k g, and the experts move alike up to Adam's epsilon.)"""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, a: Tensor) -> Tensor:
        return self.fc2(F.relu(self.fc1(a)))


class WeightGenerator(nn.Module):
    """Max-size tensors (+ experts and routers for MoS) -> an arch's dense tensors.

    `groups` maps each tensor that MoS mixes to its (layer, linear): a layer-wise router serves a layer, a
    neuron-wise one a linear (weight and bias). A MoS generator whose groups name no tensor of `max_shapes`
    is an error: it would silently be plain weight sharing. `kshot` mixes every tensor in one group (one router).
    Raises ValueError for an unknown `generator` or `router_input` ('arch' | 'constant')."""

    def __init__(
        self,
        max_shapes: dict[str, tuple[int, ...]],
        generator: str,
        num_experts: int,
        router_hidden: int,
        embed_dim: int,
        groups: dict[str, tuple[str, str]],
        router_input: str = "arch",
    ):
        super().__init__()
        if generator not in GENERATORS:
            raise ValueError(f"unknown generator {generator!r}")
        if router_input not in ("arch", "constant"):
            raise ValueError(f"unknown router_input {router_input!r}")
        if generator == "kshot":  # K copies of the whole supernet under one simplex
            groups = {n: (KSHOT, n) for n in max_shapes}
        self.groups = {n: g for n, g in groups.items() if n in max_shapes} if generator != "shared" else {}
        if generator != "shared" and not self.groups:
            raise ConfigError(
                f"supernet.generator={generator} mixes no tensor: the model family names none of this model's "
                "tensors to mix (use generator=shared for plain weight sharing)"
            )
        self.generator, self.num_experts, self.router_input = generator, num_experts, router_input
        self.per_layer = generator in ("layer", "kshot")  # one (m,) mixture per group (layer-wise / k-shot)
        self.max_shapes = dict(max_shapes)
        self.shared = nn.ParameterDict()
        self.experts = nn.ParameterDict()  # (m, *max_shape) each
        self.routers = nn.ModuleDict()
        for name, shape in max_shapes.items():
            group = self.groups.get(name)
            if group is None:
                self.shared[_key(name)] = nn.Parameter(torch.zeros(shape))
                continue
            self.experts[_key(name)] = nn.Parameter(torch.zeros(num_experts, *shape))
            layer, linear = group
            if self.per_layer and _key(layer) not in self.routers:
                self.routers[_key(layer)] = Router(embed_dim, router_hidden, num_experts)
            if generator == "neuron" and _key(linear) not in self.routers:
                out_max = max_shapes[f"{linear}.weight"][0]
                self.routers[_key(linear)] = Router(embed_dim, router_hidden, num_experts * out_max)

    def is_mixed(self, name: str) -> bool:
        return _key(name) in self.experts

    @torch.no_grad()
    def load_dense(self, tensors: dict[str, Tensor], experts: str | int = "all") -> None:
        """Copy dense tensors (any size up to max) into the top-left of the max tensors;
        mixed tensors go to every expert (`'all'`) or to expert `k` only."""
        for name, value in tensors.items():
            key = _key(name)
            if key in self.shared:
                top_left(self.shared[key], tuple(value.shape)).copy_(value)
            elif key in self.experts:
                target = self.experts[key]
                rows = range(self.num_experts) if experts == "all" else [int(experts)]
                for k in rows:
                    top_left(target[k], tuple(value.shape)).copy_(value)
            else:
                raise KeyError(name)

    def mixing(self, a: Tensor, name: str, out: int | None = None) -> Tensor:
        """Mixing coefficients (fp32) of tensor `name` for arch embedding `a` (embed_dim,): (m,) layer-wise and
        k-shot, or (out, m) neuron-wise for the first `out` neurons (default: all); rows sum to 1. With
        router_input='constant' the router sees ones (embed_dim,) instead of `a`."""
        layer, linear = self.groups[name]
        m = self.num_experts
        if self.router_input == "constant":  # the control: a router that cannot tell archs apart
            a = torch.ones_like(a)
        # Routing runs in fp32 even under autocast, so training mixes with the coefficients export uses.
        with torch.autocast(a.device.type, enabled=False):
            if self.per_layer:
                return self.routers[_key(layer)](a.float()).softmax(-1)
            logits = self.routers[_key(linear)](a.float())
            out = out if out is not None else self.max_shapes[f"{linear}.weight"][0]
            # neuron-major layout: neuron i owns logits [i*m, (i+1)*m), so a prefix slice keeps them.
            return logits[: m * out].view(out, m).softmax(-1)

    def forward(self, a: Tensor, shapes: dict[str, tuple[int, ...]], source: dict[str, str]) -> dict[str, Tensor]:
        """Tensors of the given shapes; `source[name]` names the max tensor each one slices."""
        weights: dict[str, Tensor] = {}
        cache: dict[str, Tensor] = {}  # router outputs, computed once per layer / linear
        for name, shape in shapes.items():
            src = source[name]
            key = _key(src)
            if key in self.shared:
                weights[name] = top_left(self.shared[key], shape)
                continue
            experts = top_left(self.experts[key], shape, lead=1)  # (m, out, [in])
            layer, linear = self.groups[src]
            if self.per_layer:
                if layer not in cache:
                    cache[layer] = self.mixing(a, src)
                coef = cache[layer].view(-1, *([1] * len(shape)))  # (m, 1, [1])
            else:
                if linear not in cache:
                    cache[linear] = self.mixing(a, src, out=self.max_shapes[f"{linear}.weight"][0])
                beta = cache[linear][: shape[0]]  # (out, m): first `out` neurons keep their own logits
                coef = beta.t().reshape(self.num_experts, shape[0], *([1] * (len(shape) - 1)))
            weights[name] = (coef * experts).sum(0)
        return weights
