"""Data SPECs: turning what a user types into train, calibration and test splits.

Accepted forms (nothing is ever downloaded):

- ``demo``: the embedded generated shapes set (fixed splits);
- ``imagefolder:DIR``: ``DIR/train/<class>/*.png`` and ``DIR/val/<class>/*``
  (or ``DIR/test``), or just ``DIR/<class>/*`` split 80/20 with a fixed seed;
- ``cifar10:DIR``, ``cifar100:DIR``: the "python version" archives, unpacked;
- ``mnist:DIR``: the four IDX files (optionally ``.gz``).

The calibration split is for methods that look at data (scoring, BatchNorm
recalibration, validation while fine-tuning); it never overlaps the test split.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from secateur.core.common.errors import InputError
from secateur.core.data.arrays import ArrayDataset
from secateur.core.data.demo import demo_arrays
from secateur.core.data.safe_pickle import load_arrays_pickle
from secateur.core.data.shapes import CHANNEL_MEAN, CHANNEL_STD, CLASS_NAMES

DATA_FORMS = "demo, imagefolder:DIR, cifar10:DIR, cifar100:DIR or mnist:DIR"
CALIBRATION_SIZE = 1000
SPLIT_SEED = 0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
IMAGEFOLDER_LAYOUT = (
    "expected DIR/train/<class>/<image> with DIR/val/<class>/<image> (or DIR/test/...), "
    "or DIR/<class>/<image>; images as .png, .jpg, .jpeg, .bmp, .ppm, .tif or .webp"
)


@dataclass
class DataBundle:
    """The three splits of a data set and what a model needs to know of them."""

    spec: str
    train: Dataset
    calibration: Dataset
    test: Dataset
    class_names: list[str]
    input_shape: tuple[int, int, int]
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> Dataset:
        """The named split: ``train``, ``calibration`` or ``test``."""
        if name not in ("train", "calibration", "test"):
            raise InputError(f"split {name!r}: expected train, calibration or test")
        return getattr(self, name)

    def loader(
        self, split: str, batch_size: int = 128, shuffle: bool = False, num_workers: int = 0, seed: int = 0
    ) -> DataLoader:
        """A DataLoader over a split; shuffling is seeded so runs repeat exactly."""
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(
            self.split(split),
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=num_workers,
            generator=generator,
            persistent_workers=False,
        )


def load_data(text: str, input_size: int | None = None) -> DataBundle:
    """Load the data set a SPEC names; ``input_size`` resizes image folders for the model."""
    text = text.strip()
    if text == "demo":
        return _demo_bundle()
    kind, separator, location = text.partition(":")
    if not separator or kind not in _LOADERS:
        raise InputError(f"data SPEC {text!r} is not recognised; expected {DATA_FORMS}")
    directory = Path(location)
    if not location or not directory.is_dir():
        raise InputError(f"data SPEC {text}: {location or '(empty)'} is not a directory")
    if kind == "imagefolder":
        return _imagefolder_bundle(text, directory, input_size or 224)
    return _LOADERS[kind](text, directory)


def _demo_bundle() -> DataBundle:
    splits = {
        name: ArrayDataset(*demo_arrays(name), CHANNEL_MEAN, CHANNEL_STD) for name in ("train", "calibration", "test")
    }
    return DataBundle("demo", splits["train"], splits["calibration"], splits["test"], list(CLASS_NAMES), (3, 32, 32))


def _calibration_indices(count: int) -> np.ndarray:
    rng = np.random.default_rng(SPLIT_SEED)
    return np.sort(rng.permutation(count)[: min(CALIBRATION_SIZE, count)])


def _array_bundle(spec: str, train: ArrayDataset, test: ArrayDataset, class_names: list[str]) -> DataBundle:
    calibration = train.subset(_calibration_indices(len(train)))
    shape = tuple(int(v) for v in train.images.shape[1:])
    return DataBundle(spec, train, calibration, test, class_names, shape)  # type: ignore[arg-type]


# --- CIFAR ------------------------------------------------------------------


def _read_cifar_file(path: Path, spec: str) -> dict:
    if not path.is_file():
        raise InputError(f"data SPEC {spec}: missing {path}; expected CIFAR's unpacked 'python version' archive")
    try:
        content = load_arrays_pickle(path.read_bytes())
    except Exception as error:
        raise InputError(f"data SPEC {spec}: {path} is not a readable CIFAR batch ({error})") from None
    if not isinstance(content, dict):
        raise InputError(f"data SPEC {spec}: {path} holds {type(content).__name__}, not a CIFAR batch dict")
    return {key.decode() if isinstance(key, bytes) else key: value for key, value in content.items()}


def _cifar_arrays(batch: dict, label_key: str, path: Path, spec: str) -> tuple[np.ndarray, np.ndarray]:
    data, labels = batch.get("data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or labels is None or data.ndim != 2 or data.shape[1] != 3072:
        raise InputError(f"data SPEC {spec}: {path} lacks 'data' (N×3072 uint8) and '{label_key}'")
    return data.reshape(-1, 3, 32, 32).astype(np.uint8), np.asarray(labels, dtype=np.int64)


def _find_folder(directory: Path, name: str, marker: str) -> Path:
    """``directory/name`` when it exists, else ``directory`` itself if it holds ``marker``."""
    if (directory / name).is_dir():
        return directory / name
    if (directory / marker).exists():
        return directory
    return directory / name


def _load_cifar10(spec: str, directory: Path) -> DataBundle:
    folder = _find_folder(directory, "cifar-10-batches-py", "data_batch_1")
    parts = [
        _cifar_arrays(_read_cifar_file(folder / f"data_batch_{i}", spec), "labels", folder, spec) for i in range(1, 6)
    ]
    test = _cifar_arrays(_read_cifar_file(folder / "test_batch", spec), "labels", folder, spec)
    names = [f"class {i}" for i in range(10)]
    if (folder / "batches.meta").is_file():
        meta = _read_cifar_file(folder / "batches.meta", spec)
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get("label_names", names)]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return _array_bundle(
        spec, ArrayDataset(*train, CIFAR_MEAN, CIFAR_STD), ArrayDataset(*test, CIFAR_MEAN, CIFAR_STD), names
    )


def _load_cifar100(spec: str, directory: Path) -> DataBundle:
    folder = _find_folder(directory, "cifar-100-python", "train")
    train = _cifar_arrays(_read_cifar_file(folder / "train", spec), "fine_labels", folder, spec)
    test = _cifar_arrays(_read_cifar_file(folder / "test", spec), "fine_labels", folder, spec)
    names = [f"class {i}" for i in range(100)]
    if (folder / "meta").is_file():
        meta = _read_cifar_file(folder / "meta", spec)
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get("fine_label_names", names)]
    return _array_bundle(
        spec, ArrayDataset(*train, CIFAR_MEAN, CIFAR_STD), ArrayDataset(*test, CIFAR_MEAN, CIFAR_STD), names
    )


# --- MNIST ------------------------------------------------------------------

_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _read_idx(folder: Path, stem: str, dims: int, spec: str) -> np.ndarray:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            raw = candidate.read_bytes()
            if candidate.suffix == ".gz":
                try:
                    raw = gzip.decompress(raw)
                except OSError as error:
                    raise InputError(f"data SPEC {spec}: {candidate} is not a readable gzip file ({error})") from None
            break
    else:
        expected = ", ".join(_MNIST_FILES.values())
        raise InputError(
            f"data SPEC {spec}: missing {folder / stem}; expected the four IDX files {expected} (optionally .gz)"
        )
    magic = 0x0800 + dims
    if len(raw) < 4 + 4 * dims or int.from_bytes(raw[:4], "big") != magic:
        raise InputError(f"data SPEC {spec}: {candidate} is not an IDX file of {dims} dimension(s) of unsigned bytes")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise InputError(f"data SPEC {spec}: {candidate} is truncated ({body.size} bytes for shape {shape})")
    return body.reshape(shape)


def _load_mnist(spec: str, directory: Path) -> DataBundle:
    folder = directory / "MNIST" / "raw" if (directory / "MNIST" / "raw").is_dir() else directory
    arrays = {
        key: _read_idx(folder, stem, 3 if key.endswith("images") else 1, spec) for key, stem in _MNIST_FILES.items()
    }
    for split in ("train", "test"):
        if len(arrays[f"{split}_images"]) != len(arrays[f"{split}_labels"]):
            raise InputError(f"data SPEC {spec}: the {split} images and labels differ in count")
    train = ArrayDataset(
        arrays["train_images"][:, None], arrays["train_labels"].astype(np.int64), MNIST_MEAN, MNIST_STD
    )
    test = ArrayDataset(arrays["test_images"][:, None], arrays["test_labels"].astype(np.int64), MNIST_MEAN, MNIST_STD)
    return _array_bundle(spec, train, test, [str(i) for i in range(10)])


# --- image folders ----------------------------------------------------------


def _image_folder(root: Path, size: int, spec: str) -> Dataset:
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [
            transforms.Resize(round(size / 0.875)),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    try:
        return datasets.ImageFolder(str(root), transform=transform)
    except (FileNotFoundError, OSError) as error:
        raise InputError(f"data SPEC {spec}: {root} is not an image folder ({error}); {IMAGEFOLDER_LAYOUT}") from None


def _imagefolder_bundle(spec: str, directory: Path, size: int) -> DataBundle:
    test_root = next((directory / name for name in ("val", "test") if (directory / name).is_dir()), None)
    if (directory / "train").is_dir():
        if test_root is None:
            raise InputError(
                f"data SPEC {spec}: {directory}/train exists but neither val/ nor test/ does; {IMAGEFOLDER_LAYOUT}"
            )
        train = _image_folder(directory / "train", size, spec)
        test = _image_folder(test_root, size, spec)
        if train.classes != test.classes:  # type: ignore[attr-defined]
            raise InputError(
                f"data SPEC {spec}: train/ and {test_root.name}/ have different class folders "
                f"({len(train.classes)} vs {len(test.classes)}); both need the same <class> folders"  # type: ignore[attr-defined]
            )
        notes: list[str] = []
    else:
        whole = _image_folder(directory, size, spec)
        order = np.random.default_rng(SPLIT_SEED).permutation(len(whole))
        cut = max(1, int(0.8 * len(whole)))
        train, test = Subset(whole, np.sort(order[:cut]).tolist()), Subset(whole, np.sort(order[cut:]).tolist())
        notes = [f"no train/ and val/ folders: split {len(train)} train / {len(test)} test with seed {SPLIT_SEED}"]
    classes = list(train.classes if hasattr(train, "classes") else train.dataset.classes)  # type: ignore[attr-defined]
    calibration = Subset(train, _calibration_indices(len(train)).tolist())
    return DataBundle(spec, train, calibration, test, classes, (3, size, size), notes)


_LOADERS = {
    "imagefolder": _imagefolder_bundle,
    "cifar10": _load_cifar10,
    "cifar100": _load_cifar100,
    "mnist": _load_mnist,
}
