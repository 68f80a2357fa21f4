"""The embedded demo data set: ten classes of generated shapes, 3×32×32, hard enough to tell methods apart.

Nothing can be downloaded at run time, so Secateur generates its demo images
deterministically from a seed. Each image is one shape (the class), 5–12 px in
radius, turned by up to ±27°, filled with a two-colour gradient, over a
textured background (a colour gradient plus an oriented sine grating) with
2–4 distractors (blobs and line segments); half the shapes are crossed by an
occluding bar, and pixel noise is added. Shapes are rendered at 2× resolution
and averaged down, so edges are anti-aliased.

The demo must stay below the accuracy ceiling, or every pruning method
recovers to 100% and none can be told apart. Two class pairs overlap by
design: a square turned by more than 22.5° is a diamond turned the other way,
and a plus likewise a cross, so about a third of each of these four classes
is ambiguous and no classifier can exceed ``bayes_ceiling()`` (93.3%). The
clutter, texture and occlusion make the rest learnable but not trivially.

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
_BASE_SEED = 20261130
# Every shape turns by up to this many degrees. Above 22.5°, a turned square
# can be a turned diamond (and a plus a cross): the two pairs overlap, which
# caps the reachable accuracy below 100% by design (see ``bayes_ceiling``).
# The pairs are (square, diamond) and (plus, cross): class ids 1/5 and 3/6.
OVERLAPPING_PAIRS = ((1, 5), (3, 6))
_MAX_ROTATION = 27.0
_TEXTURE_AMPLITUDE = 0.25
_MIN_CONTRAST = 0.6
_OCCLUSION_PROBABILITY = 0.5
_NOISE = 0.08


@dataclass(frozen=True)
class SplitSpec:
    """How many images per class a split holds and the seed that draws them."""

    per_class: int
    seed_offset: int


# A small train split keeps one epoch of fine-tuning a short recovery: with 10 000 images one epoch won back
# nearly everything L1 at 50% fewer MACs had cost, so the methods could not be told apart after it.
SPLITS: dict[str, SplitSpec] = {
    "train": SplitSpec(per_class=300, seed_offset=0),
    "calibration": SplitSpec(per_class=100, seed_offset=1),
    "test": SplitSpec(per_class=200, seed_offset=2),
}

# Per-channel mean and standard deviation of the train split, used to
# normalise every split (computed once with ``split_statistics``).
CHANNEL_MEAN = (0.5032, 0.4951, 0.5017)
CHANNEL_STD = (0.2596, 0.2604, 0.2577)

# SHA-256 of (images uint8, labels int64) of each split, as generated.
SPLIT_DIGESTS: dict[str, str] = {
    "train": "f8ae909001a20c7106dcd5264d8699c905aae995b433239a38f452fe68392d1e",
    "calibration": "ed03f5c2d9bf4bac6d773bf8aac1da7fdce4ba4d23f8ae186b7437faba3baa61",
    "test": "78a43f4449e558c6e64754e804580569d2642e975f5a669fea3e725d0f95f559",
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


def _texture(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """A random background (3, H, W): a colour gradient plus an oriented sine texture."""
    c0, c1 = rng.uniform(0.0, 1.0, size=(2, 3))
    direction = rng.uniform(0, 2 * np.pi)
    t = ((xs * np.cos(direction) + ys * np.sin(direction)) / IMAGE_SIZE + 1) / 2
    image = c0[:, None, None] * (1 - t) + c1[:, None, None] * t
    period = rng.uniform(3.0, 9.0)
    heading = rng.uniform(0, np.pi)
    wave = np.sin(2 * np.pi * (xs * np.cos(heading) + ys * np.sin(heading)) / period + rng.uniform(0, 2 * np.pi))
    tint = rng.uniform(-1.0, 1.0, size=3) * rng.uniform(0.05, _TEXTURE_AMPLITUDE)
    return image + tint[:, None, None] * wave[None]


def _clutter(rng: np.random.Generator, image: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Distractors: small blobs and thin line segments in random colours."""
    for _ in range(rng.integers(2, 5)):
        colour = rng.uniform(0.0, 1.0, size=3)[:, None, None]
        x0, y0 = rng.uniform(0, IMAGE_SIZE, size=2)
        if rng.random() < 0.5:
            mask = np.hypot(xs - x0, ys - y0) < rng.uniform(1.0, 3.0)
        else:
            heading = rng.uniform(0, np.pi)
            along = (xs - x0) * np.cos(heading) + (ys - y0) * np.sin(heading)
            across = -(xs - x0) * np.sin(heading) + (ys - y0) * np.cos(heading)
            mask = (np.abs(across) < rng.uniform(0.4, 0.9)) & (np.abs(along) < rng.uniform(3.0, 9.0))
        image = np.where(mask[None], colour, image)
    return image


def _render(label: int, rng: np.random.Generator) -> np.ndarray:
    """One float image (3, H, W) in [0, 1] of class ``label``."""
    size = IMAGE_SIZE * _SUPERSAMPLE
    coords = (np.arange(size) + 0.5) / _SUPERSAMPLE
    ys, xs = np.meshgrid(coords, coords, indexing="ij")

    radius = rng.uniform(5.0, 12.0)
    margin = radius * 0.7
    cx = rng.uniform(margin, IMAGE_SIZE - margin)
    cy = rng.uniform(margin, IMAGE_SIZE - margin)
    angle = np.deg2rad(rng.uniform(-_MAX_ROTATION, _MAX_ROTATION))
    cos_a, sin_a = np.cos(angle), np.sin(angle)
    u = (xs - cx) * cos_a + (ys - cy) * sin_a
    v = -(xs - cx) * sin_a + (ys - cy) * cos_a

    image = _clutter(rng, _texture(rng, xs, ys), xs, ys)

    # Foreground: a two-colour gradient across the shape, far enough from the background on average.
    background_mean = image.mean(axis=(1, 2))
    foreground = rng.uniform(0.0, 1.0, size=3)
    for _ in range(20):
        if np.abs(foreground - background_mean).sum() > _MIN_CONTRAST:
            break
        foreground = rng.uniform(0.0, 1.0, size=3)
    shade = np.clip(foreground + rng.uniform(-0.25, 0.25, size=3), 0.0, 1.0)
    t = np.clip((u / radius + 1) / 2, 0.0, 1.0)
    fill = foreground[:, None, None] * (1 - t) + shade[:, None, None] * t

    mask = _shape_mask(label, u, v, radius)
    image = np.where(mask[None], fill, image)

    # Occlusion: sometimes a bar of a random colour crosses the shape.
    if rng.random() < _OCCLUSION_PROBABILITY:
        heading = rng.uniform(0, np.pi)
        offset = rng.uniform(-0.6, 0.6) * radius
        across = (xs - cx) * np.cos(heading) + (ys - cy) * np.sin(heading) - offset
        bar = np.abs(across) < rng.uniform(0.12, 0.3) * radius
        image = np.where(bar[None], rng.uniform(0.0, 1.0, size=3)[:, None, None], image)

    image = image.reshape(3, IMAGE_SIZE, _SUPERSAMPLE, IMAGE_SIZE, _SUPERSAMPLE).mean(axis=(2, 4))
    image = image + rng.normal(0.0, _NOISE, size=image.shape)
    return np.clip(image, 0.0, 1.0)


def bayes_ceiling(max_rotation: float = _MAX_ROTATION) -> float:
    """The best accuracy any classifier can reach, from the rotation overlap of the paired classes.

    A square turned by θ is a diamond turned by θ ∓ 45°. Each class's angle
    is uniform on [−R, R]; the pair shares the angles with |θ| in
    [45 − R, R], a fraction (2R − 45)/R of each class, where the best guess
    is right half the time.
    """
    shared = max(0.0, 2 * max_rotation - 45.0) / max_rotation
    ambiguous_classes = 2 * len(OVERLAPPING_PAIRS)
    return 1.0 - ambiguous_classes * (shared / 2) / len(CLASS_NAMES)


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
