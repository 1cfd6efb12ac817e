"""WeightEncoder: per-tensor standardization, PCA, scaling, round trips and the safetensors file."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from models.flow.encoder import (
    FLOAT16_RECONSTRUCTION_TOLERANCE,
    EncoderConfig,
    WeightEncoder,
    use_exact_svd,
)
from models.flow.gram import gram_pca
from models.weightspace import WeightLayout

SIZES = [30, 6, 60, 4]  # four "tensors", D = 100
RANK = 7


def low_rank_weights(rows: int = 40, seed: int = 0) -> torch.Tensor:
    """(rows, 100) of affine rank RANK, tensors on very different scales and offsets."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, RANK, generator=g) @ torch.randn(RANK, sum(SIZES), generator=g)
    scale = torch.cat([torch.full((s,), f) for s, f in zip(SIZES, [100.0, 0.01, 1.0, 3.0], strict=True)])
    offset = torch.cat([torch.full((s,), f) for s, f in zip(SIZES, [5.0, -2.0, 0.0, 0.5], strict=True)])
    return w * scale + offset


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_per_tensor_standardization_is_per_tensor() -> None:
    g = torch.Generator().manual_seed(0)
    weights = torch.cat(
        [1000 + 50 * torch.randn(20, 12, generator=g), 1e-3 * torch.randn(20, 5, generator=g)], 1
    )
    encoder = WeightEncoder.fit(weights, [12, 5])
    codes = encoder.encode(weights)
    assert codes.shape == (20, 17) and encoder.code_dim == encoder.dim == 17
    for part in codes.split([12, 5], dim=1):
        assert part.mean().item() == pytest.approx(0, abs=1e-5)
        assert part.std(correction=0).item() == pytest.approx(1, abs=1e-5)
    assert encoder.tensors["tensor_mean"][0].item() == pytest.approx(1000, rel=0.01)


def test_round_trip_without_pca_is_exact_and_accepts_a_layout() -> None:
    layout = WeightLayout.from_module(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)))
    weights = torch.randn(9, layout.dim) * torch.linspace(0.01, 10, layout.dim)
    encoder = WeightEncoder.fit(weights, layout)
    assert encoder.tensors["tensor_sizes"].tolist() == layout.sizes
    fresh = torch.randn(5, layout.dim)
    torch.testing.assert_close(encoder.decode(encoder.encode(fresh)), fresh, rtol=0, atol=1e-6)


def test_constant_tensor_gets_unit_std() -> None:
    weights = torch.cat([torch.randn(8, 3), torch.full((8, 2), 0.25)], dim=1)
    encoder = WeightEncoder.fit(weights, [3, 2])
    assert encoder.tensors["tensor_std"][1].item() == 1.0
    assert encoder.encode(weights)[:, 3:].abs().max().item() < 1e-7
    torch.testing.assert_close(encoder.decode(encoder.encode(weights)), weights, rtol=0, atol=1e-6)


@pytest.mark.parametrize("svd", ["exact", "randomized", "gram"])
@pytest.mark.parametrize("whiten", ["global", "component", "none"])
def test_pca_at_the_data_rank_reconstructs_training_rows(svd: str, whiten: str) -> None:
    weights = low_rank_weights()
    encoder = WeightEncoder.fit(weights, SIZES, EncoderConfig(n_components=RANK, svd=svd, whiten=whiten))
    codes = encoder.encode(weights)
    assert codes.shape == (40, RANK) and encoder.code_dim == RANK
    assert relative_error(encoder.decode(codes), weights) < 1e-4
    # Components are orthonormal rows.
    components = encoder.tensors["components"]
    torch.testing.assert_close(components @ components.T, torch.eye(RANK), rtol=0, atol=1e-5)
    variances = codes.var(dim=0)
    if whiten == "component":
        torch.testing.assert_close(variances, torch.ones(RANK), rtol=1e-4, atol=1e-4)
    elif whiten == "global":
        assert variances.mean().item() == pytest.approx(1, rel=1e-4)
        assert variances.max() / variances.min() > 1.5  # relative scales are kept
    else:
        standardized = encoder.standardize(weights)
        assert variances.sum().item() == pytest.approx(standardized.var(dim=0).sum().item(), rel=1e-4)


def test_exact_and_randomized_pca_agree_and_are_seeded() -> None:
    weights = low_rank_weights() + 1e-3 * torch.randn(40, 100, generator=torch.Generator().manual_seed(1))
    exact = WeightEncoder.fit(weights, SIZES, EncoderConfig(n_components=5, svd="exact"))
    randomized = WeightEncoder.fit(weights, SIZES, EncoderConfig(n_components=5, svd="randomized"))
    torch.testing.assert_close(
        exact.tensors["components"], randomized.tensors["components"], atol=1e-3, rtol=0
    )
    again = WeightEncoder.fit(weights, SIZES, EncoderConfig(n_components=5, svd="randomized"))
    assert torch.equal(again.tensors["components"], randomized.tensors["components"])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_gram_pca_matches_the_exact_pca_block_by_block(dtype: str) -> None:
    weights = low_rank_weights() + 1e-3 * torch.randn(40, 100, generator=torch.Generator().manual_seed(1))
    config = EncoderConfig(n_components=12, components_dtype=dtype)
    exact = WeightEncoder.fit(weights, SIZES, replace(config, svd="exact"))
    gram = WeightEncoder.fit(weights, SIZES, replace(config, svd="gram"))
    torch.testing.assert_close(gram.tensors["pca_mean"], exact.tensors["pca_mean"], atol=1e-5, rtol=0)
    torch.testing.assert_close(
        gram.tensors["coordinate_scale"], exact.tensors["coordinate_scale"], atol=0, rtol=1e-5
    )
    # Same components up to rounding (signs included), hence the same reconstruction.
    tolerance = 1e-3 if dtype == "float16" else 1e-4
    torch.testing.assert_close(
        gram.tensors["components"].float(), exact.tensors["components"].float(), atol=tolerance, rtol=0
    )
    assert relative_error(gram.decode(gram.encode(weights)), exact.decode(exact.encode(weights))) < 1e-5
    # Streaming over 7-column blocks (uneven last block) changes nothing beyond rounding.
    tensor_mean = exact.tensors["tensor_mean"].repeat_interleave(exact.tensors["tensor_sizes"])
    tensor_std = exact.tensors["tensor_std"].repeat_interleave(exact.tensors["tensor_sizes"])
    _, values, blocked = gram_pca(weights, tensor_mean, tensor_std, 12, torch.float32, block_columns=7)
    torch.testing.assert_close(blocked, exact.tensors["components"].float(), atol=tolerance, rtol=0)
    assert values[0] > values[-1] > 0


def test_gram_pca_refuses_more_components_than_the_data_spans() -> None:
    with pytest.raises(ValueError, match="fewer than n_components"):
        WeightEncoder.fit(low_rank_weights(), SIZES, EncoderConfig(n_components=RANK + 3, svd="gram"))


def test_size_rule_picks_exact_for_small_and_randomized_for_large_matrices() -> None:
    config = EncoderConfig(n_components=64)
    assert use_exact_svd(200, 50_000, config)
    assert not use_exact_svd(1000, 1_000_000, config)
    assert use_exact_svd(1000, 1_000_000, EncoderConfig(n_components=900))  # randomized would not be cheaper
    assert not use_exact_svd(10, 10, EncoderConfig(n_components=2, svd="randomized"))


def test_pca_with_more_components_than_rows_is_an_error() -> None:
    with pytest.raises(ValueError, match="n_components"):
        WeightEncoder.fit(low_rank_weights(rows=6), SIZES, EncoderConfig(n_components=7))
    with pytest.raises(ValueError, match="segment sizes"):
        WeightEncoder.fit(low_rank_weights(), [10, 10])


def test_save_load_round_trip_is_identical(tmp_path: Path) -> None:
    weights = low_rank_weights()
    encoder = WeightEncoder.fit(weights, SIZES, EncoderConfig(n_components=RANK, whiten="component"))
    encoder.save(tmp_path / "encoder.safetensors")
    loaded = WeightEncoder.load(tmp_path / "encoder.safetensors")
    assert loaded.config == encoder.config
    assert loaded.tensors.keys() == encoder.tensors.keys()
    for key, value in encoder.tensors.items():
        assert torch.equal(loaded.tensors[key], value), key
    codes = torch.randn(3, RANK)
    assert torch.equal(loaded.decode(codes), encoder.decode(codes))
    assert torch.equal(loaded.encode(weights), encoder.encode(weights))


def test_float16_components_stay_within_the_documented_tolerance(tmp_path: Path) -> None:
    weights = low_rank_weights()
    config = EncoderConfig(n_components=RANK, components_dtype="float16")
    encoder = WeightEncoder.fit(weights, SIZES, config)
    assert encoder.tensors["components"].dtype == torch.float16
    standardized = encoder.standardize(weights)
    error = relative_error(encoder.standardize(encoder.decode(encoder.encode(weights))), standardized)
    assert 0 < error < FLOAT16_RECONSTRUCTION_TOLERANCE
    encoder.save(tmp_path / "half.safetensors")
    half_size = (tmp_path / "half.safetensors").stat().st_size
    WeightEncoder.fit(weights, SIZES, EncoderConfig(n_components=RANK)).save(tmp_path / "full.safetensors")
    assert half_size < (tmp_path / "full.safetensors").stat().st_size
    loaded = WeightEncoder.load(tmp_path / "half.safetensors")
    assert torch.equal(loaded.decode(encoder.encode(weights)), encoder.decode(encoder.encode(weights)))


def test_load_rejects_a_foreign_safetensors_file(tmp_path: Path) -> None:
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a"):
        WeightEncoder.load(tmp_path / "other.safetensors")
