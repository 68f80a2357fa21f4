"""The generated demo data set: fixed content, balanced, disjoint splits."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from secateur.core.data.demo import demo_arrays
from secateur.core.data.loading import load_data
from secateur.core.data.shapes import CHANNEL_MEAN, CHANNEL_STD, SPLIT_DIGESTS, SPLITS, split_digest, split_statistics


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
    assert (len(data.train), len(data.calibration), len(data.test)) == (10000, 1000, 2000)
    assert data.num_classes == 10 and data.input_shape == (3, 32, 32)
    images, labels = next(iter(data.loader("train", batch_size=500)))
    assert images.shape == (500, 3, 32, 32) and labels.shape == (500,)
    # one batch of the normalised train split has about zero mean and unit spread per channel
    assert images.mean(dim=(0, 2, 3)).abs().max() < 0.1
    assert (images.std(dim=(0, 2, 3)) - 1).abs().max() < 0.1
    single, label = data.train[3]
    assert single.shape == (3, 32, 32) and label == 3
    assert np.allclose(single.numpy(), images[3].numpy())
