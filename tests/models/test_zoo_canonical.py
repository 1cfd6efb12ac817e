"""Canonicalization of a zoo onto the medoid and the iterative average templates."""

import json
import shutil

import pytest
import torch

from models.architectures import Architecture
from models.architectures.cnn import CNNConfig
from models.weightspace import batched_forward, eval_mode
from models.zoo.build import train_zoo
from models.zoo.canonical import canonicalize_zoo, load_canonical_zoo
from models.zoo.datasets import load_dataset
from models.zoo.store import ZooError, load_zoo
from models.zoo.templates import average_template, flat_parameters, mean_pairwise_distance
from models.zoo.train import Recipe, train_members

RECIPE = Recipe(epochs=1, batch_size=32, lr=1e-2)


def logits(architecture: Architecture, stacked: dict, images: torch.Tensor) -> torch.Tensor:
    """(K, N, C) eval-mode logits of stacked members."""
    with eval_mode(architecture.build()) as module:
        return batched_forward(module, stacked, images)


@pytest.fixture(scope="module")
def canonicalized(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "mlp-digits"
    train_zoo("mlp-digits", 6, RECIPE, out, chunk_size=3)
    summary = canonicalize_zoo(out)
    return out, summary


@pytest.fixture
def canonical_copy(canonicalized, tmp_path):
    shutil.copytree(canonicalized[0], tmp_path / "zoo")
    return tmp_path / "zoo"


def test_both_templates_lower_the_mean_pairwise_distance(canonicalized):
    _, summary = canonicalized
    before = summary["mean_pairwise_distance_before"]
    for kind in ("medoid", "average"):
        assert summary["templates"][kind]["mean_pairwise_distance_after"] < 0.95 * before, kind
    best = min(summary["templates"], key=lambda k: summary["templates"][k]["mean_pairwise_distance_after"])
    assert summary["best"] == best


def test_canonical_members_compute_the_same_functions(canonicalized):
    out, summary = canonicalized
    source = load_zoo(out)
    images = load_dataset("digits").test.images
    expected = logits(source.architecture, source.stacked, images)
    for kind in ("medoid", "average"):
        canonical = load_canonical_zoo(out, kind)
        assert canonical.zoo.manifest.seeds == source.manifest.seeds
        assert summary["templates"][kind]["max_val_acc_change"] < 0.01  # ties may flip in the last bit
        torch.testing.assert_close(logits(source.architecture, canonical.zoo.stacked, images), expected)
        moved = [not torch.equal(canonical.zoo.stacked[k], source.stacked[k]) for k in source.stacked]
        assert any(moved), f"{kind}: alignment permuted nothing"


def test_average_template_is_the_mean_of_its_aligned_members(canonicalized):
    out, summary = canonicalized
    canonical = load_canonical_zoo(out, "average")
    for key, tensor in canonical.template.items():
        torch.testing.assert_close(tensor, canonical.zoo.stacked[key].mean(0))
    info = summary["templates"]["average"]
    assert info["rounds"] == len(info["movement"]) == len(info["members_changed"]) + 1 and info["rounds"] >= 2


def test_load_canonical_zoo_defaults_to_the_best_template(canonicalized):
    out, summary = canonicalized
    assert load_canonical_zoo(out).kind == summary["best"]


def test_canonical_zoo_of_another_source_version_is_refused(canonical_copy):
    path = canonical_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["content_hash"] = "0" * 64  # as if the source zoo had been rebuilt
    path.write_text(json.dumps(manifest))
    with pytest.raises(ZooError, match="made from another version of the zoo; run `dwf zoo canonicalize"):
        load_canonical_zoo(canonical_copy, "medoid")


def test_corrupted_template_is_refused(canonical_copy):
    template = canonical_copy / "canonical" / "medoid" / "template.safetensors"
    template.write_bytes(template.read_bytes()[:-8])
    with pytest.raises(ZooError, match="template.safetensors is missing or corrupted"):
        load_canonical_zoo(canonical_copy, "medoid")


def test_zoo_that_was_never_canonicalized_is_a_clear_error(tmp_path):
    with pytest.raises(ZooError, match="has not been canonicalized; run `dwf zoo canonicalize"):
        load_canonical_zoo(tmp_path)


def test_average_template_aligns_batchnorm_networks_and_averages_running_stats():
    cnn = Architecture("cnn-digits-test", "cnn", CNNConfig(channels=(4, 8)), "digits", (1, 8, 8))
    digits = load_dataset("digits")
    stacked = train_members(cnn, digits, [0, 1, 2, 3], Recipe(epochs=1, batch_size=32, train_subset=256))
    result = average_template(cnn, stacked, max_rounds=3)
    before = mean_pairwise_distance(flat_parameters(cnn, stacked))
    assert mean_pairwise_distance(flat_parameters(cnn, result.aligned)) < before
    images = digits.test.images
    torch.testing.assert_close(logits(cnn, result.aligned, images), logits(cnn, stacked, images))
    running_var = result.aligned["blocks.1.bn.running_var"]
    torch.testing.assert_close(result.template["blocks.1.bn.running_var"], running_var.mean(0))
