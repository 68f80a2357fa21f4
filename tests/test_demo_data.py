"""The generated demo data set: fixed content, balanced, disjoint splits."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from secateur.core.data.demo import demo_arrays
from secateur.core.data.loading import load_data
from secateur.core.data.shapes import (
    CHANNEL_MEAN,
    CHANNEL_STD,
    SPLIT_DIGESTS,
    SPLITS,
    _shape_mask,
    bayes_ceiling,
    split_digest,
    split_statistics,
)


@pytest.mark.parametrize("split", sorted(SPLITS))
def test_generator_reproduces_the_pinned_splits(split: str) -> None:
    images, labels = demo_arrays(split)
    assert split_digest(images, labels) == SPLIT_DIGESTS[split]
    assert images.shape == (SPLITS[split].per_class * 10, 3, 32, 32)
    assert np.bincount(labels, minlength=10).tolist() == [SPLITS[split].per_class] * 10


def test_splits_share_no_image() -> None:
    seen: dict[str, str] = {}
    for split in SPLITS:
        images, _ = demo_arrays(split)
        for image in images:
            key = hashlib.sha1(image.tobytes()).hexdigest()
            assert seen.setdefault(key, split) == split, f"an image of {split} is also in {seen[key]}"


def test_normalisation_constants_match_the_train_split() -> None:
    mean, std = split_statistics(demo_arrays("train")[0])
    assert mean == pytest.approx(CHANNEL_MEAN, abs=1e-4)
    assert std == pytest.approx(CHANNEL_STD, abs=1e-4)


def test_demo_bundle_serves_normalised_batches() -> None:
    data = load_data("demo")
    assert (len(data.train), len(data.calibration), len(data.test)) == (3000, 1000, 2000)
    assert data.num_classes == 10 and data.input_shape == (3, 32, 32)
    images, labels = next(iter(data.loader("train", batch_size=500)))
    assert images.shape == (500, 3, 32, 32) and labels.shape == (500,)
    # one batch of the normalised train split has about zero mean and unit spread per channel
    assert images.mean(dim=(0, 2, 3)).abs().max() < 0.1
    assert (images.std(dim=(0, 2, 3)) - 1).abs().max() < 0.1
    single, label = data.train[3]
    assert single.shape == (3, 32, 32) and label == 3
    assert np.allclose(single.numpy(), images[3].numpy())


def _turned_mask(label: int, degrees: float, radius: float) -> np.ndarray:
    xs = np.linspace(-12, 12, 97)
    x, y = np.meshgrid(xs, xs)
    angle = np.deg2rad(degrees)
    u, v = x * np.cos(angle) + y * np.sin(angle), -x * np.sin(angle) + y * np.cos(angle)
    return _shape_mask(label, u, v, radius)


def test_paired_classes_draw_the_same_shape_across_the_rotation_boundary() -> None:
    # a square turned by 20° is a diamond turned by -25° (within the ±27° range of both): truly ambiguous
    square, diamond = _turned_mask(1, 20.0, 9.0), _turned_mask(5, -25.0, 9.0 * 0.82 / (1.1 / np.sqrt(2)))
    assert (square != diamond).mean() < 0.01
    assert (_turned_mask(3, 20.0, 9.0) != _turned_mask(6, -25.0, 9.0)).mean() < 0.02  # plus vs cross
    # while one class turned by 45° differs from itself, so the overlap is what makes them ambiguous
    assert (_turned_mask(1, 20.0, 9.0) != _turned_mask(1, -25.0, 9.0)).mean() > 0.1


def test_bayes_ceiling_follows_the_rotation_overlap() -> None:
    assert bayes_ceiling(22.5) == 1.0  # no shared angles below 22.5°
    assert bayes_ceiling(45.0) == pytest.approx(0.8)  # the pairs fully shared: 4 classes at 50%
    assert bayes_ceiling() == pytest.approx(1 - 4 * (9 / 27 / 2) / 10)
