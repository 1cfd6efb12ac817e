"""Real datasets: deterministic splits, validation carved from training data, clear errors."""

import pytest
import torch

from models.zoo import datasets
from models.zoo.datasets import DatasetNotFoundError, load_dataset


def test_digits_splits_are_deterministic_and_disjoint():
    data = load_dataset("digits")
    assert (len(data.train), len(data.val), len(data.test)) == (1257, 180, 360)
    assert data.train.images.shape[1:] == (1, 8, 8)
    assert abs(data.train.images.mean().item()) < 1e-4
    assert data.train.images.std().item() == pytest.approx(1.0, abs=1e-3)
    datasets.load_digits_dataset.cache_clear()
    again = load_dataset("digits")
    assert torch.equal(again.val.images, data.val.images)
    assert again.fingerprint == data.fingerprint
    rows = lambda s: {tuple(r.tolist()) for r in s.images.flatten(1)}  # noqa: E731
    assert not rows(data.val) & rows(data.test)


def test_fashion_mnist_validation_comes_from_training_files():
    data = load_dataset("fashion-mnist")
    assert (len(data.train), len(data.val), len(data.test)) == (55_000, 5_000, 10_000)
    assert data.train.images.shape[1:] == (1, 28, 28)
    assert set(data.test.labels.unique().tolist()) == set(range(10))
    # The validation images are training-file images: none of them is a test image.
    test_rows = {hash(r.numpy().tobytes()) for r in data.test.images[:2000].flatten(1)}
    assert not any(hash(r.numpy().tobytes()) in test_rows for r in data.val.images.flatten(1))


@pytest.mark.skipif(
    datasets.Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="system copy installed"
)
def test_missing_fashion_mnist_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setenv("DWF_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(DatasetNotFoundError) as info:
        datasets.find_fashion_dir(tmp_path / "given")
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message
    for searched in ["given", "env", "repo/data/fashion-mnist", "shared/data/fashion-mnist"]:
        assert str(tmp_path / searched) in message or searched in message
    assert "DWF_DATA_DIR" in message and "dataset-fashion-mnist" in message


def test_data_dir_setting_is_searched_first(tmp_path):
    real = datasets.find_fashion_dir()
    link = tmp_path / "fashion-mnist"
    link.symlink_to(real, target_is_directory=True)
    assert datasets.fashion_search_path(tmp_path)[:2] == [tmp_path, link]
    assert datasets.find_fashion_dir(tmp_path) == link


def test_truncated_idx_is_rejected(tmp_path):
    import gzip

    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (100).to_bytes(4, "big") + b"\x01" * 10))
    with pytest.raises(ValueError, match="truncated"):
        datasets.read_idx(bad)


def test_unknown_dataset_is_named():
    with pytest.raises(ValueError, match="known datasets: digits, fashion-mnist"):
        load_dataset("cifar-100")
