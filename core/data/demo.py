"""The embedded demo: a generated shapes data set and two small trained models."""

from __future__ import annotations

from functools import cache

import numpy as np
import torch

from secateur.core.data.arrays import normalize_uint8
from secateur.core.data.shapes import CHANNEL_MEAN, CHANNEL_STD, generate_split


@cache
def demo_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images and int64 labels of a demo split, generated once per process."""
    images, labels = generate_split(split)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def demo_tensors(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised float images (N, 3, 32, 32) and int64 labels of a demo split."""
    images, labels = demo_arrays(split)
    pixels = torch.from_numpy(images.copy())
    return normalize_uint8(pixels, CHANNEL_MEAN, CHANNEL_STD), torch.from_numpy(labels.copy())
