"""HAP's neural implants: a k×k convolution some of whose output channels are computed by a 1×1 convolution.

``ImplantedConv2d`` holds the kept k×k convolution (the channels computed as
before) and a 1×1 convolution for the implanted channels (same stride,
padding 0, no bias, zero-initialised); its output is
``cat([conv(x), implant(x)])``, put back into the layer's channel order by a
fixed permutation when the implanted channels are not the last ones. HAP's
apply first reorders the channels of each implanted dependency group (a
function-preserving permutation of every producer, BatchNorm and consumer)
so that the implanted channels are the last ones of the pruned layer: the
module is then just ``Conv2d``, ``Conv2d`` and ``cat``, which Torch-Pruning
traces exactly (so an implanted model can be inspected and pruned again) and
which exports to ONNX as a Concat. The edit ``hap_implants`` records the
implanted positions of each layer and rebuilds the modules on load, before
the tensors are loaded.

A 1×1 implant lines up with the k×k output only when the k×k convolution is
centred: zero padding of ``dilation·(k−1)/2`` on each side, as in every 3×3,
padding 1 convolution. Other convolutions (1×1 already, grouped or
depthwise, uncentred padding, transposed) are not implantable.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from secateur.core.api import EditKind, InputError, replace_module

EDIT_KIND = "hap_implants"


def implantable(module: nn.Module) -> bool:
    """Whether ``module`` is a k×k Conv2d (k > 1) whose channels a 1×1 implant can stand in for."""
    if type(module) is not nn.Conv2d or module.groups != 1 or module.padding_mode != "zeros":
        return False
    if all(k == 1 for k in module.kernel_size):
        return False
    if isinstance(module.padding, str):
        return (
            module.padding == "same"
            and all((d * (k - 1)) % 2 == 0 for k, d in zip(module.kernel_size, module.dilation, strict=True))
            and all(s == 1 for s in module.stride)
        )
    return all(
        2 * p == d * (k - 1) for p, k, d in zip(module.padding, module.kernel_size, module.dilation, strict=True)
    )


class ImplantedConv2d(nn.Module):
    """A Conv2d whose output channels ``implanted`` come from a 1×1 convolution instead of the k×k one.

    ``conv`` computes the other channels with their k×k kernels (and bias);
    ``implant`` (1×1, same stride, padding 0, no bias) computes the implanted
    ones. When the implanted channels are the last ones the output is
    ``cat([conv(x), implant(x)])``; otherwise the fixed buffer ``order``
    scatters it back into the layer's channel order. (Torch-Pruning takes
    that ``index_select`` for an element-wise op, so only the first form can
    be pruned again; HAP's apply always builds that one.)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        stride: tuple[int, int],
        padding: tuple[int, int] | str,
        dilation: tuple[int, int],
        bias: bool,
        implanted: list[int],
    ) -> None:
        super().__init__()
        implanted = sorted({int(c) for c in implanted})
        if not implanted or implanted[0] < 0 or implanted[-1] >= out_channels or len(implanted) >= out_channels:
            raise ValueError(f"implanted channels {implanted} must be some, not all, of 0..{out_channels - 1}")
        chosen = set(implanted)
        kept = [c for c in range(out_channels) if c not in chosen]
        self.kernel_size, self.stride = tuple(kernel_size), tuple(stride)
        self.conv = nn.Conv2d(in_channels, len(kept), kernel_size, stride, padding, dilation, bias=bias)
        self.implant = nn.Conv2d(in_channels, len(implanted), 1, stride, 0, bias=False)
        nn.init.zeros_(self.implant.weight)
        self.scattered = implanted != list(range(len(kept), out_channels))  # False: the implants are the tail
        order = torch.empty(out_channels, dtype=torch.long)
        order[kept] = torch.arange(len(kept))
        order[implanted] = len(kept) + torch.arange(len(implanted))
        # a fixed index buffer, rebuilt from the edit record on load, so kept out of the state dict
        self.register_buffer("order", order, persistent=False)

    @property
    def in_channels(self) -> int:
        return self.conv.in_channels

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels + self.implant.out_channels

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, implanted: list[int], copy_weights: bool = True) -> ImplantedConv2d:
        """Replace ``conv``: its other channels keep their k×k kernels (and bias); the implants start at zero."""
        if not implantable(conv):
            raise ValueError(f"{conv} is not an implantable k×k convolution")
        module = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.bias is not None,
            implanted,
        ).to(device=conv.weight.device, dtype=conv.weight.dtype)
        if copy_weights:
            kept = torch.argsort(module.order)[: module.conv.out_channels].to(conv.weight.device)
            with torch.no_grad():
                module.conv.weight.copy_(conv.weight[kept])
                if conv.bias is not None:
                    module.conv.bias.copy_(conv.bias[kept])
        module.train(conv.training)
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a later pruning round may remove every channel of one part: a conv of no outputs is skipped
        parts = [part(x) for part in (self.conv, self.implant) if part.out_channels > 0]
        out = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        return out.index_select(1, self.order) if self.scattered else out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"implanted={self.implant.out_channels}{', scattered' if self.scattered else ''}"
        )


def implant_layers(model: nn.Module, layers: dict[str, list[int]], copy_weights: bool = True) -> None:
    """Replace each named Conv2d of ``model`` (in place) by an ``ImplantedConv2d`` with those channels implanted."""
    for name, channels in layers.items():
        try:
            conv = model.get_submodule(name)
        except AttributeError:
            raise InputError(f"edit {EDIT_KIND} names layer {name!r}, which the model does not have") from None
        if not implantable(conv):
            raise InputError(f"edit {EDIT_KIND}: layer {name!r} is {type(conv).__name__}, not an implantable conv")
        try:
            replace_module(model, name, ImplantedConv2d.from_conv(conv, channels, copy_weights))
        except ValueError as error:
            raise InputError(f"edit {EDIT_KIND}: layer {name!r}: {error}") from None


def _depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvNd) and module.groups == module.in_channels == module.out_channels


def _channel_dim(module: nn.Module, is_output: bool) -> int | None:
    """The weight dimension a dependency group runs along in ``module``; None when it cannot be permuted."""
    if isinstance(module, nn.modules.conv._ConvNd):
        if _depthwise(module):
            return 0  # its inputs and outputs are the same channels: permute its filters once
        if module.groups != 1:
            return None  # a permutation across convolution groups changes the function
        out, into = (1, 0) if module.transposed else (0, 1)
        return out if is_output else into
    if isinstance(module, nn.Linear):
        return 0 if is_output else 1
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return 0
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
        return 0
    return None


def reorder_problem(members: list, channels: int) -> str | None:
    """Why a group's channels cannot be permuted without changing the function, or None when they can."""
    for member in members:
        if _channel_dim(member.module, member.is_output) is None:
            return f"it contains a {type(member.module).__name__}, whose channels cannot be permuted"
        if set(member.group_indices) != set(range(channels)):
            return f"a {type(member.module).__name__} sees only part of its channels"
    return None


@torch.no_grad()
def reorder_group(model: nn.Module, members: list, names: dict[nn.Module, str], order: list[int]) -> None:
    """Permute one dependency group's channels in ``model`` (in place): new channel ``j`` is old ``order[j]``.

    ``members`` (``ScoringContext.members`` of the group, on a model with the
    same names as ``model``) say which positions of which layer carry which
    channel; every producer's outputs, normalisation vector and consumer's
    inputs are permuted alike, which leaves the function unchanged.
    """
    done: set[str] = set()
    for member in members:
        name = names[member.module]
        module = model.get_submodule(name)
        dim = _channel_dim(module, member.is_output)
        if dim is None or (_depthwise(module) and name in done):
            continue
        done.add(name)
        positions: dict[int, list[int]] = {}
        for index, channel in zip(member.indices, member.group_indices, strict=True):
            positions.setdefault(channel, []).append(index)
        sources = [index for channel in order for index in positions[channel]]
        norm = isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm))
        tensors = [] if norm else [(module.weight, dim)]
        if member.is_output or norm or _depthwise(module):  # vectors along the channels: biases, norm statistics
            tensors += [(t, 0) for t in (module.weight, module.bias) if t is not None and t.dim() == 1]
            tensors += [(t, 0) for _, t in module.named_buffers(recurse=False) if t is not None and t.dim() == 1]
        unique = {id(tensor): (tensor, axis) for tensor, axis in tensors}
        for tensor, axis in unique.values():
            index = torch.arange(tensor.shape[axis])
            index[sorted(member.indices)] = torch.tensor(sources)
            tensor.copy_(tensor.index_select(axis, index.to(tensor.device)))


def replay_implants(model: nn.Module, edit: dict[str, Any], example: torch.Tensor) -> None:
    """Rebuild the implants of a checkpoint; the tensors are loaded afterwards."""
    implant_layers(model, {name: list(channels) for name, channels in edit["layers"].items()}, copy_weights=False)


def implant_parameters(model: nn.Module) -> int:
    """Parameters held by the 1×1 implants of ``model``."""
    return sum(m.implant.weight.numel() for m in model.modules() if isinstance(m, ImplantedConv2d))


IMPLANT_EDIT = EditKind(EDIT_KIND, replay_implants)
