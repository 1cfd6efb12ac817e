"""Datasets with deterministic train / validation / test splits.

- `fashion-mnist`: the original gzip IDX files (60k train, 10k test, 28x28).
  The validation split is carved from the training files, never from the test set.
- `digits`: scikit-learn's bundled 8x8 digits (1,797 images), the fastest real data.
- `breast-cancer`: scikit-learn's bundled Wisconsin breast cancer table (569 rows,
  30 real-valued features, 2 classes), the tabular modality.
- `mnist1d`: MNIST-1D (Greydanus, 2020), 40-sample 1-D signals made from the ten digits'
  templates by the `mnist1d` package with its default arguments (5,000 signals, seed 42:
  4,000 train, 1,000 test), the 1-D sequence modality. Built locally, never downloaded.

Images come as float32 (N, 1, H, W), standardized with the training split's
pixel mean and std; tabular rows as float32 (N, F), each feature standardized
with the training split's mean and std; 1-D signals as float32 (N, 1, L), standardized
with the training split's mean and std (the same for every position, stated per position in
the input contract); labels as int64 (N,). Nothing is downloaded.
"""

import gzip
import hashlib
import math
import os
import random
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from contract.inputs import InputContract, Standardize

FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
SPLIT_SEED = 0  # fixes which examples form the validation (and, for digits, test) split
REPO_ROOT = Path(__file__).resolve().parents[2]


class DatasetNotFoundError(FileNotFoundError):
    """The dataset files are not in any searched directory; the message says where to put them."""


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # (N, 1, H, W) float32, standardized
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    fingerprint: str  # sha256 over the raw arrays and the split recipe
    # (scale, mean, std) of `standardize`: raw pixels are recovered exactly, so batches store as uint8
    pixel_stats: tuple[float, float, float] = (1.0, 0.0, 1.0)
    classes: tuple[str, ...] = ()  # name of each label, in label order
    raw_dtype: str = "uint8"  # dtype of the raw values a user feeds (before `standardize`)
    raw_range: tuple[float, float] = (0.0, 255.0)
    train_description: str = ""  # which examples form the training split
    # tabular data: per-feature (mean, std) of the training split; the splits hold standardized
    # features (and `pixel_stats` is the identity), so artifacts store them as float32
    feature_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def preprocessing(self) -> Standardize:
        """How the splits' inputs were made from raw values."""
        if self.feature_stats is None:
            scale, mean, std = self.pixel_stats
            return Standardize(scale=scale, mean=mean, std=std)
        means, stds = self.feature_stats
        return Standardize(scale=1.0, mean=list(means), std=list(stds))

    def input_contract(self, input_shape: tuple[int, ...], trained_on: str) -> InputContract:
        """What a network trained on this dataset takes (contract.inputs), `trained_on` saying
        which training examples it saw."""
        return InputContract(
            dataset=self.name,
            shape=list(input_shape),
            dtype=self.raw_dtype,
            value_range=list(self.raw_range),
            preprocessing=self.preprocessing(),
            classes=list(self.classes),
            trained_on=trained_on,
        )


def fashion_search_path(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Directories searched for the Fashion-MNIST files, in order.

    1. `data_dir` (argument), 2. `$DWF_DATA_DIR` and `$DWF_DATA_DIR/fashion-mnist`,
    3. `../shared/data/fashion-mnist` beside the repository, 4. `./data/fashion-mnist`
    in the repository, 5. `/usr/share/datasets/fashion-mnist` (Debian's
    `dataset-fashion-mnist`).
    """
    candidates: list[Path] = []
    if data_dir is not None:
        candidates += [Path(data_dir), Path(data_dir) / "fashion-mnist"]
    if env := os.environ.get("DWF_DATA_DIR"):
        candidates += [Path(env), Path(env) / "fashion-mnist"]
    candidates += [
        REPO_ROOT.parent / "shared" / "data" / "fashion-mnist",
        REPO_ROOT / "data" / "fashion-mnist",
        Path("/usr/share/datasets/fashion-mnist"),
    ]
    return candidates


def find_fashion_dir(data_dir: str | os.PathLike | None = None) -> Path:
    searched = fashion_search_path(data_dir)
    for directory in searched:
        if all((directory / f).is_file() for f in FASHION_FILES.values()):
            return directory
    raise DatasetNotFoundError(
        "Fashion-MNIST not found. Put the four gzip IDX files ("
        + ", ".join(FASHION_FILES.values())
        + ") in one of: "
        + ", ".join(str(d) for d in searched)
        + "; or set DWF_DATA_DIR to their folder; or `apt-get install dataset-fashion-mnist`."
    )


def read_idx(path: Path) -> np.ndarray:
    """Parse a gzip IDX file: big-endian magic (0x0000, dtype 0x08, ndim), uint32 dims, uint8 data."""
    raw = gzip.decompress(path.read_bytes())
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path} is not a uint8 IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {data.size} values")
    return data.reshape(shape)


def split_indices(n: int, holdout: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (kept, held-out) index arrays, both sorted."""
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[holdout:]), np.sort(order[:holdout])


def train_val_test_indices(n: int, val_size: int, test_size: int) -> tuple[np.ndarray, ...]:
    """Deterministic sorted (train, validation, test) index arrays for a set with no test split of its own."""
    rest, test = split_indices(n, test_size)
    keep, held = split_indices(len(rest), val_size, seed=SPLIT_SEED + 1)
    return rest[keep], rest[held], test


def make_dataset(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    scale: float,
    classes: tuple[str, ...],
    train_description: str,
    raw_dtype: str = "uint8",
    raw_range: tuple[float, float] = (0.0, 255.0),
) -> Dataset:
    """Standardize uint8-range images with the training split's pixel statistics; hash everything."""
    digest = hashlib.sha256(f"{name}:{SPLIT_SEED}".encode())
    for images, labels in (train, val, test):
        digest.update(np.ascontiguousarray(images).tobytes())
        digest.update(np.ascontiguousarray(labels).tobytes())
    train_pixels = train[0].astype(np.float32) / scale
    mean, std = float(train_pixels.mean()), float(train_pixels.std())

    def to_split(images: np.ndarray, labels: np.ndarray) -> Split:
        x = standardize(torch.from_numpy(images.astype(np.float32)), scale, mean, std)
        return Split(x.unsqueeze(1).contiguous(), torch.from_numpy(labels.astype(np.int64)))

    splits = (to_split(*train), to_split(*val), to_split(*test))
    return Dataset(
        name,
        *splits,
        num_classes,
        digest.hexdigest(),
        pixel_stats=(scale, mean, std),
        classes=classes,
        raw_dtype=raw_dtype,
        raw_range=raw_range,
        train_description=train_description,
    )


def standardize(raw: torch.Tensor, scale: float, mean: float, std: float) -> torch.Tensor:
    """Raw pixel values (any shape, uint8 or float) -> float32 (raw / scale - mean) / std."""
    return (raw.float() / scale - mean) / std


def raw_pixels(images: torch.Tensor, pixel_stats: tuple[float, float, float]) -> torch.Tensor:
    """Inverse of `standardize` for integer pixel values: float32 images -> uint8 raw pixels."""
    scale, mean, std = pixel_stats
    return ((images * std + mean) * scale).round().clamp(0, 255).to(torch.uint8)


@lru_cache(maxsize=4)
def load_fashion_mnist(data_dir: str | None = None, val_size: int = 5000) -> Dataset:
    directory = find_fashion_dir(data_dir)
    arrays = {key: read_idx(directory / f) for key, f in FASHION_FILES.items()}
    keep, held = split_indices(len(arrays["train_labels"]), val_size)
    images, labels = arrays["train_images"], arrays["train_labels"]
    return make_dataset(
        "fashion-mnist",
        (images[keep], labels[keep]),
        (images[held], labels[held]),
        (arrays["test_images"], arrays["test_labels"]),
        num_classes=10,
        scale=255.0,
        classes=FASHION_CLASSES,
        train_description=(
            f"the Fashion-MNIST training files less a {val_size:,}-image validation split "
            f"(seed {SPLIT_SEED}): {len(keep):,} images"
        ),
    )


@lru_cache(maxsize=1)
def load_digits_dataset(val_size: int = 180, test_size: int = 360) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, labels = bunch.images.astype(np.float32), bunch.target  # (1797, 8, 8) in [0, 16]
    train, val, test = train_val_test_indices(len(labels), val_size, test_size)
    return make_dataset(
        "digits",
        (images[train], labels[train]),
        (images[val], labels[val]),
        (images[test], labels[test]),
        num_classes=10,
        scale=16.0,
        classes=tuple(str(d) for d in range(10)),
        raw_dtype="float32",
        raw_range=(0.0, 16.0),
        train_description=(
            f"scikit-learn's digits less a {test_size}-image test and a {val_size}-image validation "
            f"split (seed {SPLIT_SEED}): {len(train):,} images"
        ),
    )


def feature_dataset(
    name: str,
    inputs: np.ndarray,
    labels: np.ndarray,
    splits: tuple[np.ndarray, np.ndarray, np.ndarray],
    stats: tuple[np.ndarray, np.ndarray],
    classes: tuple[str, ...],
    train_description: str,
) -> Dataset:
    """A dataset of float32 inputs (N, ...) and int64 labels (N,) standardized per feature:
    `stats` = (mean, std), each (F,) over the flattened input; `splits` = (train, validation,
    test) row indices. The fingerprint hashes the name, the split seed and every input and label."""
    digest = hashlib.sha256(f"{name}:{SPLIT_SEED}".encode())
    digest.update(inputs.tobytes() + labels.tobytes())
    mean, std = (torch.from_numpy(s.astype(np.float32)) for s in stats)

    def to_split(rows: np.ndarray) -> Split:
        x = torch.from_numpy(inputs[rows].astype(np.float32))
        standardized = ((x.flatten(1) - mean) / std).view_as(x)
        return Split(standardized.contiguous(), torch.from_numpy(labels[rows].astype(np.int64)))

    return Dataset(
        name,
        *(to_split(rows) for rows in splits),
        num_classes=len(classes),
        fingerprint=digest.hexdigest(),
        classes=classes,
        raw_dtype="float32",
        raw_range=(float(inputs.min()), float(inputs.max())),
        train_description=train_description,
        feature_stats=(tuple(mean.tolist()), tuple(std.tolist())),
    )


@lru_cache(maxsize=1)
def load_breast_cancer_dataset(val_size: int = 57, test_size: int = 114) -> Dataset:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    features, labels = bunch.data.astype(np.float32), bunch.target.astype(np.int64)  # (569, 30), (569,)
    train, val, test = train_val_test_indices(len(labels), val_size, test_size)
    return feature_dataset(
        "breast-cancer",
        features,
        labels,
        (train, val, test),
        (features[train].mean(0), features[train].std(0)),
        tuple(str(name) for name in bunch.target_names),
        f"scikit-learn's breast cancer table less a {test_size}-row test and a {val_size}-row "
        f"validation split (seed {SPLIT_SEED}): {len(train)} rows",
    )


@lru_cache(maxsize=1)
def load_mnist1d_dataset(val_size: int = 400) -> Dataset:
    from mnist1d.data import get_dataset_args, make_dataset

    # the package seeds numpy's and Python's global generators: leave them as they were
    numpy_state, python_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        data = make_dataset(get_dataset_args())  # built from the templates, never downloaded
    finally:
        np.random.set_state(numpy_state)  # noqa: NPY002
        random.setstate(python_state)
    signals = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)[:, None, :]  # (5000, 1, 40)
    labels = np.concatenate([data["y"], data["y_test"]]).astype(np.int64)
    keep, held = split_indices(len(data["y"]), val_size)
    test = np.arange(len(data["y"]), len(labels))
    mean, std = signals[keep].mean(), signals[keep].std()
    length = signals.shape[-1]
    return feature_dataset(
        "mnist1d",
        signals,
        labels,
        (keep, held, test),
        (np.full(length, mean), np.full(length, std)),
        tuple(str(d) for d in range(10)),
        f"MNIST-1D's 4,000 training signals (the mnist1d package's defaults, seed 42) less a "
        f"{val_size}-signal validation split (seed {SPLIT_SEED}): {len(keep):,} signals",
    )


DATASET_NAMES = ("digits", "fashion-mnist", "breast-cancer", "mnist1d")


def load_dataset(name: str, data_dir: str | None = None, preprocessing: Standardize | None = None) -> Dataset:
    """Load a dataset by name (one of DATASET_NAMES), standardized as `preprocessing` says (for
    networks that expect other inputs, e.g. an imported zoo) or, by default, as the dataset does."""
    if name == "fashion-mnist":
        dataset = load_fashion_mnist(data_dir)
    elif name == "digits":
        dataset = load_digits_dataset()
    elif name == "breast-cancer":
        dataset = load_breast_cancer_dataset()
    elif name == "mnist1d":
        dataset = load_mnist1d_dataset()
    else:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASET_NAMES)}")
    if preprocessing is None or preprocessing == dataset.preprocessing():
        return dataset
    return with_preprocessing(dataset, preprocessing)


def raw_inputs(dataset: Dataset, inputs: torch.Tensor) -> torch.Tensor:
    """Undo the dataset's own standardization: (N, ...) -> raw values (exact integers for images)."""
    if dataset.feature_stats is None:
        return raw_pixels(inputs, dataset.pixel_stats).float()
    mean, std = (torch.tensor(s, dtype=torch.float32) for s in dataset.feature_stats)
    return inputs * std + mean


def with_preprocessing(dataset: Dataset, preprocessing: Standardize) -> Dataset:
    """The same examples, fed as `(raw / scale - mean) / std` (float32, as contract.inputs says) with
    the given scalars or per-feature lists. Per-feature statistics become the dataset's
    `feature_stats` (scale folded in), so artifacts store such inputs as float32, as for tabular data."""
    scale = preprocessing.scale
    features = math.prod(dataset.train.images.shape[1:])
    mean = torch.as_tensor(preprocessing.mean, dtype=torch.float32).expand(features)
    std = torch.as_tensor(preprocessing.std, dtype=torch.float32).expand(features)
    if (std <= 0).any() or scale <= 0:
        raise ValueError("the declared input scale and std must be positive")

    def convert(split: Split) -> Split:
        raw = raw_inputs(dataset, split.images).flatten(1)
        return Split(((raw / scale - mean) / std).view_as(split.images).contiguous(), split.labels)

    if isinstance(preprocessing.mean, list) or isinstance(preprocessing.std, list):
        folded = (tuple((mean * scale).tolist()), tuple((std * scale).tolist()))
        stats = {"feature_stats": folded, "pixel_stats": (1.0, 0.0, 1.0)}
    else:
        stats = {"feature_stats": None, "pixel_stats": (scale, preprocessing.mean, preprocessing.std)}
    splits = {name: convert(getattr(dataset, name)) for name in ("train", "val", "test")}
    return replace(dataset, **splits, **stats)
