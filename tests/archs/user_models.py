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
