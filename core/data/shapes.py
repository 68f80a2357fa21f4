"""The embedded demo data set: ten classes of generated shapes, 3×32×32.

Nothing can be downloaded at run time, so Secateur generates its demo images
deterministically from a seed. Each image is one shape (the class) drawn with a
random colour, size, position and a small rotation over a noisy colour
gradient, with a small distractor blob. Shapes are rendered at 2× resolution
and averaged down, so edges are anti-aliased and the task needs real features.

The splits are fixed: each has its own seed, so the train, calibration and test
images never overlap and never change. ``SPLIT_DIGESTS`` pins their content; a
test regenerates them and compares, so a change of NumPy's random streams
cannot silently change the demo that the shipped models were trained on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

CLASS_NAMES: tuple[str, ...] = (
    "disk",
    "square",
    "triangle",
    "plus",
    "ring",
    "diamond",
    "cross",
    "frame",
    "h-stripes",
    "v-stripes",
)
IMAGE_SIZE = 32
_SUPERSAMPLE = 2
_BASE_SEED = 20261123


@dataclass(frozen=True)
class SplitSpec:
    """How many images per class a split holds and the seed that draws them."""

    per_class: int
    seed_offset: int


SPLITS: dict[str, SplitSpec] = {
    "train": SplitSpec(per_class=1000, seed_offset=0),
    "calibration": SplitSpec(per_class=100, seed_offset=1),
    "test": SplitSpec(per_class=200, seed_offset=2),
}

# Per-channel mean and standard deviation of the train split, used to
# normalise every split (computed once with ``split_statistics``).
CHANNEL_MEAN = (0.5025, 0.4995, 0.4984)
CHANNEL_STD = (0.2553, 0.2549, 0.2569)

# SHA-256 of (images uint8, labels int64) of each split, as generated.
SPLIT_DIGESTS: dict[str, str] = {
    "train": "d95fbf42af7900d724b428613eb2250f5ca90a285d894779623b8269673342e5",
    "calibration": "6a43be2493f073dc81ec6400978a2937290c954a56db0a1e123a3d8be2838010",
    "test": "398479ef5458d7b605d638ff3388d585ef6198c06dc0944678133a4ad63d1cfa",
}


def _shape_mask(label: int, u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    """Boolean mask of shape ``label`` in local coordinates (u right, v down)."""
    r = np.hypot(u, v)
    au, av = np.abs(u), np.abs(v)
    bar = radius * 0.28
    if label == 0:  # disk
        return r < radius
    if label == 1:  # square
        return np.maximum(au, av) < radius * 0.82
    if label == 2:  # triangle, apex up
        h = radius * 1.5
        inside_base = v < h / 3
        edge = (v + 2 * h / 3) * (1 / np.sqrt(3)) - au
        return inside_base & (edge > 0)
    if label == 3:  # plus
        return ((au < bar) & (av < radius)) | ((av < bar) & (au < radius))
    if label == 4:  # ring
        return (r < radius) & (r > radius * 0.55)
    if label == 5:  # diamond
        return au + av < radius * 1.1
    if label == 6:  # cross (an x)
        d1, d2 = np.abs(u + v) / np.sqrt(2), np.abs(u - v) / np.sqrt(2)
        return ((d1 < bar) | (d2 < bar)) & (r < radius * 1.05)
    if label == 7:  # frame (hollow square)
        m = np.maximum(au, av)
        return (m < radius * 0.85) & (m > radius * 0.5)
    period = radius * 0.55
    square = np.maximum(au, av) < radius * 0.85
    if label == 8:  # horizontal stripes in a square patch
        return square & (np.cos(2 * np.pi * v / period) > 0)
    if label == 9:  # vertical stripes in a square patch
        return square & (np.cos(2 * np.pi * u / period) > 0)
    raise ValueError(f"label must be in 0..9, got {label}")


def _render(label: int, rng: np.random.Generator) -> np.ndarray:
    """One float image (3, H, W) in [0, 1] of class ``label``."""
    size = IMAGE_SIZE * _SUPERSAMPLE
    coords = (np.arange(size) + 0.5) / _SUPERSAMPLE
    ys, xs = np.meshgrid(coords, coords, indexing="ij")

    radius = rng.uniform(6.5, 12.0)
    margin = radius * 0.8
    cx = rng.uniform(margin, IMAGE_SIZE - margin)
    cy = rng.uniform(margin, IMAGE_SIZE - margin)
    angle = np.deg2rad(rng.uniform(-15.0, 15.0))
    cos_a, sin_a = np.cos(angle), np.sin(angle)
    u = (xs - cx) * cos_a + (ys - cy) * sin_a
    v = -(xs - cx) * sin_a + (ys - cy) * cos_a

    # Background: a linear gradient between two random colours.
    c0, c1 = rng.uniform(0.0, 1.0, size=(2, 3))
    direction = rng.uniform(0, 2 * np.pi)
    t = ((xs * np.cos(direction) + ys * np.sin(direction)) / size * _SUPERSAMPLE + 1) / 2
    image = c0[:, None, None] * (1 - t) + c1[:, None, None] * t

    # Foreground colour far enough from the background's mean colour.
    background_mean = (c0 + c1) / 2
    foreground = rng.uniform(0.0, 1.0, size=3)
    for _ in range(20):
        if np.abs(foreground - background_mean).sum() > 0.9:
            break
        foreground = rng.uniform(0.0, 1.0, size=3)

    # A distractor blob, drawn first so the shape stays on top.
    blob_x, blob_y = rng.uniform(2, IMAGE_SIZE - 2, size=2)
    blob_r = rng.uniform(1.5, 3.0)
    blob = np.hypot(xs - blob_x, ys - blob_y) < blob_r
    image = np.where(blob[None], rng.uniform(0.0, 1.0, size=3)[:, None, None], image)

    mask = _shape_mask(label, u, v, radius)
    image = np.where(mask[None], foreground[:, None, None], image)

    image = image.reshape(3, IMAGE_SIZE, _SUPERSAMPLE, IMAGE_SIZE, _SUPERSAMPLE).mean(axis=(2, 4))
    image = image + rng.normal(0.0, 0.06, size=image.shape)
    return np.clip(image, 0.0, 1.0)


def generate_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of a named split.

    Classes are interleaved (0, 1, ..., 9, 0, 1, ...) so any prefix of a split
    is balanced.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown demo split {split!r}; expected one of {sorted(SPLITS)}")
    spec = SPLITS[split]
    rng = np.random.default_rng(_BASE_SEED + spec.seed_offset)
    count = spec.per_class * len(CLASS_NAMES)
    labels = np.arange(count, dtype=np.int64) % len(CLASS_NAMES)
    images = np.empty((count, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for index, label in enumerate(labels):
        images[index] = np.round(_render(int(label), rng) * 255).astype(np.uint8)
    return images, labels


def split_digest(images: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 over a split's bytes, to pin the generator's output."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(labels).tobytes())
    return digest.hexdigest()


def split_statistics(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images, in [0, 1] units."""
    pixels = images.astype(np.float64) / 255.0
    mean = pixels.mean(axis=(0, 2, 3))
    std = pixels.std(axis=(0, 2, 3))
    return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)
