"""User architectures for the tests: concatenation, depthwise and grouped convs, attention."""

import torch
from torch import nn

INPUT_SHAPE = (3, 32, 32)


class ConcatNet(nn.Module):
    """Two branches concatenated along channels (an Inception-like join)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.left = nn.Conv2d(16, 8, 1)
        self.right = nn.Conv2d(16, 24, 3, padding=1)
        self.merge = nn.Conv2d(32, 32, 3, padding=1)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([self.left(x), self.right(x)], dim=1)
        x = torch.relu(self.merge(x))
        return self.head(x.mean(dim=(2, 3)))


class DepthwiseGroupedNet(nn.Module):
    """A depthwise-separable pair and a grouped conv."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.pointwise = nn.Conv2d(32, 64, 1)
        self.grouped = nn.Conv2d(64, 64, 3, padding=1, groups=4)
        self.head = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(self.pointwise(self.depthwise(x)))
        x = torch.relu(self.grouped(x))
        return self.head(x.mean(dim=(2, 3)))


class AttentionBlock(nn.Module):
    """A pre-norm transformer layer: two identity-shortcut residual additions."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attention(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyTransformer(nn.Module):
    """Patch embedding, two attention blocks, mean pooling, a linear head."""

    def __init__(self, num_classes: int = 10, dim: int = 32) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 8, stride=8)
        self.blocks = nn.Sequential(AttentionBlock(dim, 4), AttentionBlock(dim, 4))
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        return self.head(self.blocks(tokens).mean(dim=1))


def concat_net(num_classes: int = 10) -> nn.Module:
    return ConcatNet(num_classes)


def not_a_model() -> str:
    return "a string"


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: channel gates from a pooled bottleneck (multiplies its input)."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))


class GroupedSENet(nn.Module):
    """Grouped 3×3 convolutions (``groups`` 2, 4 and 8), each followed by BatchNorm and squeeze-excitation."""

    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        layers: list[nn.Module] = []
        for groups in (2, 4, 8):
            layers += [
                nn.Conv2d(width, width, 3, padding=1, groups=groups),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                SqueezeExcite(width, 8),
            ]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.stem(x)).mean(dim=(2, 3)))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: (g, c/g) → (c/g, g) along the channel axis."""
    batch, channels, height, width = x.shape
    x = x.view(batch, groups, channels // groups, height, width).transpose(1, 2).contiguous()
    return x.view(batch, channels, height, width)


class ShuffleNet(nn.Module):
    """Grouped 1×1 convolutions around a channel shuffle and a depthwise 3×3 (ShuffleNet v1's unit)."""

    def __init__(self, num_classes: int = 10, width: int = 32, groups: int = 4) -> None:
        super().__init__()
        self.groups = groups
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.reduce = nn.Conv2d(width, width, 1, groups=groups)
        self.bn1 = nn.BatchNorm2d(width)
        self.depthwise = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.bn2 = nn.BatchNorm2d(width)
        self.expand = nn.Conv2d(width, width, 1, groups=groups)
        self.bn3 = nn.BatchNorm2d(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.relu(self.bn1(self.reduce(x)))
        y = self.bn2(self.depthwise(channel_shuffle(y, self.groups)))
        x = torch.relu(x + self.bn3(self.expand(y)))
        return self.head(x.mean(dim=(2, 3)))


class DepthwiseSeparableStack(nn.Module):
    """MobileNet v1's depthwise-separable pairs, three deep, widening."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()]
        for inputs, outputs in ((16, 32), (32, 64), (64, 64)):
            layers += [
                nn.Conv2d(inputs, inputs, 3, padding=1, groups=inputs),
                nn.BatchNorm2d(inputs),
                nn.ReLU(),
                nn.Conv2d(inputs, outputs, 1),
                nn.BatchNorm2d(outputs),
                nn.ReLU(),
            ]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class TimmAttention(nn.Module):
    """Self-attention in timm's layout: one fused ``qkv`` Linear split by a reshape, ``proj``, ``num_heads``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attention = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        x = (attention @ v).transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim)
        return self.proj(x)


class TimmBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = TimmAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TimmStyleViT(nn.Module):
    """A small vision transformer written the way timm writes them (class token, pre-norm blocks)."""

    def __init__(self, num_classes: int = 10, dim: int = 48, heads: int = 4, depth: int = 2) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, 8, stride=8)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 17, dim) * 0.02)
        self.blocks = nn.Sequential(*[TimmBlock(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(tokens))[:, 0])


def grouped_se_net(num_classes: int = 10) -> nn.Module:
    return GroupedSENet(num_classes)


def shuffle_net(num_classes: int = 10) -> nn.Module:
    return ShuffleNet(num_classes)


def separable_stack(num_classes: int = 10) -> nn.Module:
    return DepthwiseSeparableStack(num_classes)


def timm_style_vit(num_classes: int = 10) -> nn.Module:
    return TimmStyleViT(num_classes)


class CrossStageSplit(nn.Module):
    """CSPNet's cross-stage split: one half of the channels skips the block, the other runs it, then both join."""

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.half = width // 2
        self.stem = nn.Sequential(nn.Conv2d(3, width // 2, 3, padding=1), nn.BatchNorm2d(width // 2), nn.ReLU())
        self.expand = nn.Sequential(nn.Conv2d(width // 2, width, 1), nn.BatchNorm2d(width), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(self.half, 4, 1), nn.ReLU(), nn.Conv2d(4, self.half, 3, padding=1))
        self.transition_b = nn.Conv2d(self.half, self.half, 1)
        self.transition = nn.Conv2d(width, 12, 1)
        self.head = nn.Linear(12, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip, through = self.expand(self.stem(x)).split(self.half, dim=1)
        through = self.transition_b(through + self.block(through))
        return self.head(torch.relu(self.transition(torch.cat([skip, through], dim=1))).mean(dim=(2, 3)))


def cross_stage_split(num_classes: int = 10) -> nn.Module:
    return CrossStageSplit(num_classes)


class HardCodedWidth(nn.Module):
    """A forward that reshapes to a fixed channel count, which no dependency graph can see: pruning breaks it."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).reshape(x.shape[0], 16, -1).mean(-1))


def hard_coded_width(num_classes: int = 10) -> nn.Module:
    return HardCodedWidth(num_classes)


class TokenSubsample(nn.Module):
    """LeViT's shrinking attention: tokens viewed as a (B, H, W, C) grid, every other row and column kept."""

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, width, 4, stride=4)
        self.side = 8  # tokens per row of a 32×32 image (LeViT keeps its resolution as a number too)
        self.mix = nn.Linear(width, width)
        self.query = nn.Linear(width, 24)
        self.head = nn.Linear(24, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = tokens + self.mix(tokens)
        grid = tokens.view(tokens.shape[0], self.side, self.side, -1)[:, ::2, ::2]
        return self.head(self.query(grid.flatten(1, 2)).mean(1))


def token_subsample(num_classes: int = 10) -> nn.Module:
    return TokenSubsample(num_classes)


class ChannelSlice(nn.Module):
    """GhostNet's module: a cheap depthwise branch doubles the channels, then a slice keeps the first ``out``."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.primary = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.cheap = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Linear(12, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        primary = self.primary(x)
        ghost = torch.cat([primary, self.cheap(primary)], dim=1)[:, :12]
        return self.head(ghost.mean(dim=(2, 3)))


def channel_slice(num_classes: int = 10) -> nn.Module:
    return ChannelSlice(num_classes)


class GhostEven(nn.Module):
    """timm's ghostnet_100: the ghost module's slice keeps every channel (no slice is traced), and a
    depthwise convolution reads the concatenation, so the concatenation's width is a group of its own;
    a plain stem stream and the last 1×1 convolution stay prunable beside it."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.primary = nn.Sequential(nn.Conv2d(8, 6, 1), nn.BatchNorm2d(6), nn.ReLU())
        self.cheap = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.BatchNorm2d(6), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(12, 12, 3, padding=1, groups=12), nn.BatchNorm2d(12))
        self.mix = nn.Conv2d(12, 16, 1)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        primary = self.primary(self.stem(x))
        ghost = torch.cat([primary, self.cheap(primary)], dim=1)
        return self.head(self.mix(self.dw(ghost)).mean(dim=(2, 3)))


def ghost_even(num_classes: int = 10) -> nn.Module:
    return GhostEven(num_classes)


class CachedScale(nn.Module):
    """LeViT's attention-bias cache: in eval mode a tensor derived from a parameter is kept per device."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.log_scale = nn.Parameter(torch.zeros(1))
        self.head = nn.Linear(8, num_classes)
        self.cache: dict[str, torch.Tensor] = {}

    def scale(self, device: torch.device) -> torch.Tensor:
        if self.training:
            return self.log_scale.exp()
        if str(device) not in self.cache:
            self.cache[str(device)] = self.log_scale.exp()
        return self.cache[str(device)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean(dim=(2, 3)) * self.scale(x.device))


def cached_scale(num_classes: int = 10) -> nn.Module:
    return CachedScale(num_classes)


class _MixerBlock(nn.Module):
    def __init__(self, dim: int, tokens: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.tokens_in, self.tokens_out = nn.Linear(tokens, 8), nn.Linear(8, tokens)
        self.channels_in, self.channels_out = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = self.tokens_out(torch.relu(self.tokens_in(self.norm1(x).transpose(1, 2))))
        x = x + mixed.transpose(1, 2)
        return x + self.channels_out(torch.relu(self.channels_in(self.norm2(x))))


class TokenMixer(nn.Module):
    """timm's MLP-Mixer in small: a token MLP on the transposed (B, C, N) tensor, 32 channels over 16 tokens."""

    def __init__(self, num_classes: int = 10, channels: int = 32) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 4, stride=4)
        self.blocks = nn.Sequential(_MixerBlock(channels, 16), _MixerBlock(channels, 16))
        self.norm = nn.LayerNorm(channels)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(x)).mean(1))


class _ShapedScale(nn.Module):
    """timm's metaformer ``Scale``: the width is repeated in a plain ``shape`` attribute that forward reads."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.shape = (dim, 1, 1)
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(self.shape)


class ShapedScaleNet(nn.Module):
    """timm's poolformer in small: a residual stream and an inner MLP, each scaled through ``Scale``."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(16, 32, 1), nn.Conv2d(32, 16, 1)
        self.inner_scale, self.res_scale = _ShapedScale(32), _ShapedScale(16)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.res_scale(x) + self.fc2(self.inner_scale(torch.relu(self.fc1(x))))
        return self.head(x.mean(dim=(2, 3)))


def shaped_scale_net(num_classes: int = 10) -> nn.Module:
    return ShapedScaleNet(num_classes)


class _SliceResidual(nn.Module):
    """timm's rexnet block: the output is added to a slice of it as wide as the input, the rest concatenated."""

    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__()
        self.channels_in = channels_in
        self.conv = nn.Sequential(nn.Conv2d(channels_in, channels_out, 1), nn.BatchNorm2d(channels_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return torch.cat([out[:, : self.channels_in] + x, out[:, self.channels_in :]], dim=1)


class SliceResidualNet(nn.Module):
    """timm's rexnet_100 in small: each block widens the stream by two channels through a slice and a concatenation."""

    def __init__(self, num_classes: int = 10, blocks: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(*(_SliceResidual(8 + 2 * b, 10 + 2 * b) for b in range(blocks)))
        self.head = nn.Linear(8 + 2 * blocks, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def slice_residual_net(num_classes: int = 10) -> nn.Module:
    return SliceResidualNet(num_classes)
