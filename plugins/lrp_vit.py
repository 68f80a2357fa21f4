"""Layer-wise relevance propagation through torchvision vision transformers (AttnLRP), for ``pxp``.

Pruning by explaining ranks a ViT's attention heads and MLP neurons by their
LRP relevance (Hatefi et al. 2024), propagated with the attention-aware rules
of AttnLRP (Achtibat et al. 2024):

- Linear layers, the patch convolution and residual additions: the ε-rule
  ``R_i = Σ_j x_i ∂z_j/∂x_i · R_j / (z_j + ε sign z_j)``.
- LayerNorm: the normalisation (the standard deviation) is treated as a
  constant, so the layer is linear in its input and takes the ε-rule.
- q·kᵀ and attention·value: each factor receives half of the ε-rule relevance
  computed with the other factor held constant (the uniform rule).
- softmax: linearised at its input with its own value as bias,
  ``R_in = x ⊙ (R - s ⊙ Σ R)``; the bias keeps the rest.
- GELU (and a Tanh pre-logits activation) passes relevance through.

Why not captum: captum's LRP attaches one rule to each supported leaf module
and lets autograd carry relevance between them. The operations AttnLRP needs
rules for are functional calls inside ``nn.MultiheadAttention``'s fused kernel
(q·kᵀ, softmax, attention·value) or leaf modules captum refuses (LayerNorm,
GELU), so captum would either raise or copy relevance unchanged through them.
Instead the encoder's forward is re-implemented from the modules' own weights
with every numeric operation an ``autograd.Function`` whose backward receives
the relevance of its output and returns that of its inputs ("relevance as
gradient"). Reshapes, slices and concatenations move relevance unchanged, and
a tensor read by several operations sums what comes back from each of them,
which is LRP on a graph. One generic rule covers every homogeneous operation:
for ``y = f(x_1, …, x_n)`` positively homogeneous of degree ``d`` in its inputs,
``R_{x_k} = x_k ⊙ ∂(y · R/(y + ε sign y))/∂x_k / d``, which sums to ``Σ R``
over the inputs by Euler's theorem (``d = 1``: ε-rule; ``d = 2``: the uniform
rule for products). Biases are constants, so they keep their share, as in the
ε-rule.

Conservation: with every bias, LayerNorm β, class token and position embedding
set to zero (``without_biases``) the only relevance not passed down is what
the softmax biases keep, so the pixel relevance plus that share equals the
explained logit (``Explanation.absorbed``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vision_transformer import EncoderBlock, VisionTransformer

from secateur.core.api import ATTENTION_TYPES, HEADS_SUFFIX, HeadPrunedAttention, InputError, Progress

DEFAULT_EPSILON = 1e-6  # zennit's ε, as in the paper's code
_SUPPORTED = (
    "torchvision VisionTransformer: a Conv2d patch embedding, encoder blocks of LayerNorm, multi-head attention"
    " and a Linear-GELU-Linear MLP, Linear (and Tanh) heads"
)


def is_vit(model: nn.Module) -> bool:
    """Whether ``model`` goes to the transformer LRP: it is a ViT, or it has attention layers.

    A model with attention layers that is not a torchvision VisionTransformer is
    routed here too, so that ``vit_relevance`` refuses it by naming the layer
    instead of the CNN path failing on an operation it does not know.
    """
    return isinstance(model, VisionTransformer) or any(isinstance(m, ATTENTION_TYPES) for m in model.modules())


def _stabilise(value: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``z + ε sign z`` with sign 0 = +1, the ε-rule's denominator."""
    return value + epsilon * torch.where(value >= 0, 1.0, -1.0).to(value.dtype)


class _Homogeneous(torch.autograd.Function):
    """The ε-rule for ``y = fn(*inputs)``, positively homogeneous of degree ``degree`` in its inputs.

    Each input gets ``x ⊙ ∂(y · R/(y + ε sign y))/∂x / degree``. Whatever else
    ``fn`` reads (weights, biases, a LayerNorm's standard deviation) is a
    constant of the rule.
    """

    @staticmethod
    def forward(ctx, fn: Callable[..., torch.Tensor], degree: int, epsilon: float, *inputs: torch.Tensor):
        ctx.fn, ctx.degree, ctx.epsilon = fn, degree, epsilon
        ctx.save_for_backward(*inputs)
        return fn(*inputs)

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):
        inputs = [x.detach().requires_grad_() for x in ctx.saved_tensors]
        with torch.enable_grad():
            output = ctx.fn(*inputs)
        scaled = relevance / _stabilise(output.detach(), ctx.epsilon)
        grads = torch.autograd.grad(output, inputs, scaled)
        return (None, None, None, *(x.detach() * g / ctx.degree for x, g in zip(inputs, grads, strict=True)))


class _Softmax(torch.autograd.Function):
    """AttnLRP's softmax rule: the Taylor linearisation at the input, its bias keeping ``Σ R - Σ R_in``."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, ledger: list[torch.Tensor]):
        weights = scores.softmax(-1)
        ctx.ledger = ledger
        ctx.save_for_backward(scores, weights)
        return weights

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):
        scores, weights = ctx.saved_tensors
        passed = scores * (relevance - weights * relevance.sum(-1, keepdim=True))
        ctx.ledger.append((relevance - passed).flatten(1).sum(1))  # per image: what the bias keeps
        return passed, None


class _PassThrough(torch.autograd.Function):
    """The identity rule: an elementwise activation hands its relevance to its input unchanged."""

    @staticmethod
    def forward(ctx, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor):
        return fn(x)

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):
        return None, relevance


@dataclass
class Explanation:
    """The relevance of one batch, with relevance 1 on each image's explained class (per image)."""

    logits: torch.Tensor  # (batch, classes), the model's output
    pixels: torch.Tensor  # relevance at the input images
    units: dict[str, torch.Tensor]  # group id -> (batch, heads or neurons)
    attention: dict[str, torch.Tensor]  # attention layer -> (batch,) relevance at its output
    absorbed: torch.Tensor  # (batch,) relevance kept by the softmax linearisations' biases


def _refuse(name: str, module: nn.Module, why: str = "") -> InputError:
    detail = f": {why}" if why else ""
    return InputError(
        f"pxp cannot propagate relevance through {name or 'the model'} ({type(module).__name__}){detail}; "
        f"its transformer LRP supports {_SUPPORTED}"
    )


def _check(name: str, module: nn.Module, types: tuple[type, ...]) -> None:
    if not isinstance(module, types):
        raise _refuse(name, module)


class TransformerLRP:
    """AttnLRP over a deep copy of a torchvision VisionTransformer (the caller's model is never touched)."""

    def __init__(self, model: nn.Module, device: torch.device, epsilon: float = DEFAULT_EPSILON):
        if not isinstance(model, VisionTransformer):
            attention = next((n for n, m in model.named_modules() if isinstance(m, ATTENTION_TYPES)), None)
            if attention is None:
                raise _refuse("", model, "not a vision transformer")
            raise _refuse(attention, model.get_submodule(attention), f"attention inside a {type(model).__name__}")
        if not epsilon > 0:
            raise InputError(f"pxp: the LRP epsilon must be > 0, got {epsilon}")
        self.model = copy.deepcopy(model).float().eval().to(device)
        self.model.requires_grad_(False)
        self.names = {module: name for name, module in self.model.named_modules()}
        self.epsilon, self.device = epsilon, device
        # what the current backward pass records: relevance per unit, at attention outputs, kept by softmaxes
        self.units: dict[str, torch.Tensor] = {}
        self.attention: dict[str, torch.Tensor] = {}
        self.ledger: list[torch.Tensor] = []
        self._check_structure()

    def _check_structure(self) -> None:
        """Refuse, by name, any module this propagation does not reproduce exactly."""
        model = self.model
        _check("conv_proj", model.conv_proj, (nn.Conv2d,))
        for name, block in model.encoder.layers.named_children():
            prefix = f"encoder.layers.{name}"
            _check(prefix, block, (EncoderBlock,))
            _check(f"{prefix}.ln_1", block.ln_1, (nn.LayerNorm,))
            _check(f"{prefix}.ln_2", block.ln_2, (nn.LayerNorm,))
            _check(f"{prefix}.dropout", block.dropout, (nn.Dropout,))
            _check(f"{prefix}.self_attention", block.self_attention, ATTENTION_TYPES)
            self._check_attention(f"{prefix}.self_attention", block.self_attention)
            for index, child in block.mlp.named_children():
                _check(f"{prefix}.mlp.{index}", child, (nn.Linear, nn.GELU, nn.Dropout))
        _check("encoder.ln", model.encoder.ln, (nn.LayerNorm,))
        for index, child in model.heads.named_children():
            _check(f"heads.{index}", child, (nn.Linear, nn.Tanh))
        last = list(model.heads.named_children())[-1][0]
        _check(f"heads.{last}", model.heads.get_submodule(last), (nn.Linear,))  # the classifier gives the classes

    @staticmethod
    def _check_attention(name: str, module: nn.Module) -> None:
        unusual = isinstance(module, nn.MultiheadAttention) and (
            not module._qkv_same_embed_dim or module.bias_k is not None or module.add_zero_attn
        )
        if unusual:
            raise _refuse(name, module, "separate key/value widths, key/value biases or zero attention")
        if not module.batch_first:
            raise _refuse(name, module, "not batch_first, unlike torchvision's encoder blocks")

    # --- rules on the copy's modules ---------------------------------------------------------

    def _linear(self, module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        return self._affine(module.weight, module.bias, x)

    def _affine(self, weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        return _Homogeneous.apply(lambda t: F.linear(t, weight, bias), 1, self.epsilon, x)

    def _layer_norm(self, module: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        def normalise(t: torch.Tensor) -> torch.Tensor:
            dims = tuple(range(-len(module.normalized_shape), 0))
            std = (t.detach().var(dims, unbiased=False, keepdim=True) + module.eps).sqrt()  # a constant
            y = (t - t.mean(dims, keepdim=True)) / std
            if module.weight is not None:
                y = y * module.weight
            return y if module.bias is None else y + module.bias

        return _Homogeneous.apply(normalise, 1, self.epsilon, x)

    def _add(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _Homogeneous.apply(torch.add, 1, self.epsilon, a, b)

    def _attention(self, name: str, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Multi-head self-attention computed from the layer's weights, heads recorded before the output projection."""
        batch, tokens, _ = x.shape
        heads = module.num_heads
        if isinstance(module, HeadPrunedAttention):
            projections = [(p.weight, p.bias) for p in (module.q_proj, module.k_proj, module.v_proj)]
        else:
            biases = module.in_proj_bias.chunk(3) if module.in_proj_bias is not None else (None,) * 3
            projections = list(zip(module.in_proj_weight.chunk(3), biases, strict=True))
        head_dim = projections[0][0].shape[0] // heads
        q, k, v = (
            self._affine(weight, bias, x).view(batch, tokens, heads, head_dim).transpose(1, 2)
            for weight, bias in projections
        )
        scale = head_dim**-0.5
        scores = _Homogeneous.apply(lambda a, b: a @ b.transpose(-2, -1) * scale, 2, self.epsilon, q, k)
        weights = _Softmax.apply(scores, self.ledger)
        context = _Homogeneous.apply(torch.matmul, 2, self.epsilon, weights, v)
        self._record(context, self.units, f"{name}{HEADS_SUFFIX}", (2, 3))
        out = self._linear(module.out_proj, context.transpose(1, 2).reshape(batch, tokens, heads * head_dim))
        self._record(out, self.attention, name, (1, 2))
        return out

    @staticmethod
    def _record(tensor: torch.Tensor, into: dict[str, torch.Tensor], key: str, dims: tuple[int, ...]) -> None:
        """Keep the relevance reaching ``tensor`` in the backward pass, summed over ``dims``."""

        def keep(relevance: torch.Tensor) -> None:
            into[key] = relevance.detach().sum(dims)

        tensor.register_hook(keep)

    def _mlp(self, block: EncoderBlock, x: torch.Tensor) -> torch.Tensor:
        linears = [m for m in block.mlp if isinstance(m, nn.Linear)]
        for module in block.mlp:
            if isinstance(module, nn.Linear):
                x = self._linear(module, x)
                if module is not linears[-1]:  # the last one writes the residual stream
                    self._record(x, self.units, self.names[module], (1,))
            elif isinstance(module, nn.GELU):
                x = _PassThrough.apply(module, x)
        return x

    def _block(self, block: EncoderBlock, x: torch.Tensor) -> torch.Tensor:
        attention = block.self_attention
        x = self._add(self._attention(self.names[attention], attention, self._layer_norm(block.ln_1, x)), x)
        return self._add(x, self._mlp(block, self._layer_norm(block.ln_2, x)))

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        model, conv = self.model, self.model.conv_proj

        def patches(t: torch.Tensor) -> torch.Tensor:
            return F.conv2d(t, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)

        x = _Homogeneous.apply(patches, 1, self.epsilon, images)
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([model.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        position = model.encoder.pos_embedding
        x = _Homogeneous.apply(lambda t: t + position, 1, self.epsilon, x)  # the position embedding is a bias
        for block in model.encoder.layers:
            x = self._block(block, x)
        x = self._layer_norm(model.encoder.ln, x)[:, 0]
        for module in model.heads:
            x = self._linear(module, x) if isinstance(module, nn.Linear) else _PassThrough.apply(module, x)
        return x

    # --- explaining ---------------------------------------------------------------------------

    def explain(self, images: torch.Tensor, labels: torch.Tensor) -> Explanation:
        """Relevance of one batch, starting from 1 on each image's label."""
        shape = (self.model.conv_proj.in_channels, self.model.image_size, self.model.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != shape or images.shape[0] == 0:
            raise InputError(
                f"pxp: the ViT takes batches of shape (N ≥ 1, {', '.join(map(str, shape))}), got {tuple(images.shape)}"
            )
        classes = self.model.heads[-1].out_features
        if labels.shape != (images.shape[0],) or labels.min() < 0 or labels.max() >= classes:
            raise InputError(f"pxp: the labels must be one class index in [0, {classes}) per image")
        images = images.to(self.device, torch.float32).detach().requires_grad_()  # never the caller's tensor
        self.units, self.attention, self.ledger = {}, {}, []
        with torch.enable_grad():
            logits = self._forward(images)
            start = F.one_hot(labels.to(self.device).long(), classes).to(logits.dtype)
            (pixels,) = torch.autograd.grad(logits, images, start)
        return Explanation(
            logits=logits.detach(),
            pixels=pixels.detach(),
            units=self.units,
            attention=self.attention,
            absorbed=torch.stack(self.ledger).sum(0),
        )

    def check_output(self, images: torch.Tensor, logits: torch.Tensor) -> None:
        """Refuse a model whose own forward this re-implementation does not reproduce (a changed forward)."""
        with torch.no_grad():
            reference = self.model(images.to(self.device, torch.float32))
        tolerance = 1e-3 * (1.0 + reference.abs().max().item())
        if reference.shape != logits.shape or (reference - logits).abs().max().item() > tolerance:
            raise InputError(
                f"pxp: the model's forward differs from torchvision's VisionTransformer ({type(self.model).__name__}"
                f" changed), so its transformer LRP cannot explain it; it supports {_SUPPORTED}"
            )


def vit_relevance(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    progress: Progress,
    epsilon: float = DEFAULT_EPSILON,
) -> dict[str, torch.Tensor]:
    """Relevance of every attention head and MLP neuron, as ``I = Σ_images |r|``, keyed by group id.

    Heads: ``"<attention>:heads"``, the relevance of each head's output (before
    the output projection). Neurons: the first Linear of each MLP, relevance
    summed over tokens. ``batches`` holds ``(images, labels)``; each image
    starts with relevance 1 on its label.
    """
    lrp = TransformerLRP(model, device, epsilon)
    total = len(batches) if isinstance(batches, Sized) else 0
    totals: dict[str, torch.Tensor] = {}
    progress("LRP relevance of heads and neurons", 0, total)
    for index, (images, labels) in enumerate(batches):
        found = lrp.explain(images, labels)
        if index == 0:
            lrp.check_output(images, found.logits)
        for key, values in found.units.items():
            totals[key] = totals.get(key, 0) + values.abs().sum(0)
        progress("LRP relevance of heads and neurons", index + 1, total)
    if not totals:
        raise InputError("pxp: no reference images to compute relevance on (the reference set is empty)")
    return {key: values.float().cpu() for key, values in totals.items()}


@torch.no_grad()
def without_biases(model: nn.Module) -> nn.Module:
    """A copy with every bias, LayerNorm β, class token and position embedding zero: the conservation check's model.

    These additive constants keep relevance in the ε-rule, so only without
    them does the input relevance (plus the softmax biases' share) add up to
    the explained logit.
    """
    bare = copy.deepcopy(model)
    for name, parameter in bare.named_parameters():
        if name.endswith("bias") or name in ("class_token", "encoder.pos_embedding"):
            parameter.zero_()
    return bare
