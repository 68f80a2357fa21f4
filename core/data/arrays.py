"""A data set over in-memory uint8 image arrays, normalised as it is read."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


def normalize_uint8(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 images (N, C, H, W) to float, scaled to [0, 1] and standardised per channel."""
    channels = images.shape[1]
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, channels, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, channels, 1, 1)
    return (images.float().div_(255.0) - mean_t) / std_t


class ArrayDataset(Dataset):
    """Images kept as uint8 (N, C, H, W) in memory; items are normalised float tensors.

    Storing uint8 keeps a 50k-image set at a quarter of the float size, and
    ``__getitems__`` lets the DataLoader fetch and normalise a whole batch at once.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> None:
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {images.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if not images.flags.writeable:  # torch tensors over read-only memory are undefined behaviour
            images = images.copy()
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(np.array(labels, dtype=np.int64))
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = normalize_uint8(self.images[index : index + 1], self.mean, self.std)[0]
        return image, int(self.labels[index])

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        index = torch.as_tensor(indices, dtype=torch.long)
        batch = normalize_uint8(self.images[index], self.mean, self.std)
        return list(zip(batch, self.labels[index].tolist(), strict=True))

    def subset(self, indices: np.ndarray) -> ArrayDataset:
        """A new data set over the chosen rows (shares nothing mutable with this one)."""
        return ArrayDataset(self.images.numpy()[indices], self.labels.numpy()[indices], self.mean, self.std)
