"""Data SPECs on real on-disk formats written by the tests, good and bad."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from secateur.core.common.errors import InputError
from secateur.core.data.loading import CIFAR_MEAN, CIFAR_STD, load_data


def _cifar10(root: Path, per_batch: int = 20) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, per_batch).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [f"name{i}".encode() for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def test_cifar10_reads_pixels_and_labels_exactly(tmp_path: Path) -> None:
    folder = _cifar10(tmp_path)
    data = load_data(f"cifar10:{tmp_path}")
    assert (len(data.train), len(data.test), data.num_classes) == (100, 20, 10)
    assert data.class_names[3] == "name3"
    raw = pickle.loads((folder / "test_batch").read_bytes())
    image, label = data.test[7]
    expected = (
        torch.tensor(raw[b"data"][7].reshape(3, 32, 32)).float() / 255 - torch.tensor(CIFAR_MEAN)[:, None, None]
    ) / torch.tensor(CIFAR_STD)[:, None, None]
    assert torch.allclose(image, expected, atol=1e-6) and label == raw[b"labels"][7]


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_cifar_batch_with_code_is_refused_and_not_run(tmp_path: Path) -> None:
    folder = _cifar10(tmp_path)
    marker = tmp_path / "executed"
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": _Evil(marker)}))
    with pytest.raises(InputError, match="refused to load pathlib"):
        load_data(f"cifar10:{tmp_path}")
    assert not marker.exists()


def test_cifar_missing_files_are_named(tmp_path: Path) -> None:
    folder = _cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(InputError, match=r"missing .*data_batch_3; expected CIFAR's unpacked 'python version'"):
        load_data(f"cifar10:{tmp_path}")


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, count in (("train", 30), ("test", 10)):
        batch = {b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8), b"fine_labels": list(range(count))}
        (folder / name).write_bytes(pickle.dumps(batch))
    data = load_data(f"cifar100:{tmp_path}")
    assert data.num_classes == 100 and data.test[9][1] == 9


def _idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = (0x0800 + array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    body = header + array.astype(np.uint8).tobytes()
    if compress:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(body))
    else:
        path.write_bytes(body)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_files(tmp_path: Path, compress: bool) -> None:
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (12, 28, 28))
    _idx(tmp_path / "train-images-idx3-ubyte", images, compress)
    _idx(tmp_path / "train-labels-idx1-ubyte", np.arange(12) % 10, compress)
    _idx(tmp_path / "t10k-images-idx3-ubyte", images[:4], compress)
    _idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(4), compress)
    data = load_data(f"mnist:{tmp_path}")
    assert data.input_shape == (1, 28, 28) and len(data.train) == 12 and data.test[2][1] == 2
    assert torch.allclose(data.test[1][0][0, 0, :3], (torch.tensor(images[1, 0, :3]).float() / 255 - 0.1307) / 0.3081)


def test_mnist_truncated_file(tmp_path: Path) -> None:
    for stem in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        _idx(tmp_path / stem, np.zeros((3, 28, 28)), False)
    for stem in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        _idx(tmp_path / stem, np.zeros(3), False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(InputError, match=r"missing .*expected the four IDX files"):
        load_data(f"mnist:{tmp_path}")
    _idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3), False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(InputError, match="is truncated"):
        load_data(f"mnist:{tmp_path}")


def _image_tree(root: Path, classes: list[str], per_class: int) -> None:
    rng = np.random.default_rng(3)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def test_imagefolder_with_train_and_val(tmp_path: Path) -> None:
    _image_tree(tmp_path / "train", ["cat", "dog"], 3)
    _image_tree(tmp_path / "val", ["cat", "dog"], 2)
    data = load_data(f"imagefolder:{tmp_path}", input_size=32)
    assert data.class_names == ["cat", "dog"] and (len(data.train), len(data.test)) == (6, 4)
    assert data.test[0][0].shape == (3, 32, 32) and data.input_shape == (3, 32, 32)


def test_imagefolder_flat_layout_is_split_with_a_fixed_seed(tmp_path: Path) -> None:
    _image_tree(tmp_path, ["a", "b"], 5)
    first, second = load_data(f"imagefolder:{tmp_path}", 16), load_data(f"imagefolder:{tmp_path}", 16)
    assert (len(first.train), len(first.test)) == (8, 2)
    assert first.test.indices == second.test.indices and "split 8 train / 2 test" in first.notes[0]


def test_imagefolder_wrong_layouts(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"is not an image folder .*expected DIR/train/<class>/<image>"):
        load_data(f"imagefolder:{tmp_path / 'empty'}")
    _image_tree(tmp_path / "only" / "train", ["a"], 1)
    with pytest.raises(InputError, match="neither val/ nor test/ does"):
        load_data(f"imagefolder:{tmp_path / 'only'}")
    _image_tree(tmp_path / "mismatch" / "train", ["a", "b"], 1)
    _image_tree(tmp_path / "mismatch" / "val", ["a"], 1)
    with pytest.raises(InputError, match="different class folders"):
        load_data(f"imagefolder:{tmp_path / 'mismatch'}")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("imagenet:/x", "is not recognised; expected demo, imagefolder:DIR"),
        ("cifar10:/no/such/dir", "is not a directory"),
    ],
)
def test_bad_data_specs(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_data(text)
