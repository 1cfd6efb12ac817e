"""Merging zoos built apart: the parts of a seed range merge into the zoo one build gives."""

import json
from dataclasses import replace

import pytest
import torch

from models.zoo.build import train_zoo
from models.zoo.merging import merge_zoos
from models.zoo.store import ZooError, load_zoo
from models.zoo.train import Recipe

RECIPE = Recipe(epochs=1, batch_size=32, lr=1e-2, train_subset=256)
CHUNK = 2


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """Seeds 0-3 and 4-5 built apart, and seeds 0-5 built at once."""
    root = tmp_path_factory.mktemp("merge")
    train_zoo("mlp-digits", 4, RECIPE, root / "first", chunk_size=CHUNK)
    train_zoo("mlp-digits", 2, RECIPE, root / "second", first_seed=4, chunk_size=CHUNK)
    train_zoo("mlp-digits", 6, RECIPE, root / "whole", chunk_size=CHUNK)
    return root


def test_merged_parts_equal_the_zoo_built_at_once(parts, tmp_path):
    manifest = merge_zoos([parts / "first", parts / "second"], tmp_path / "merged")
    merged, whole = load_zoo(tmp_path / "merged"), load_zoo(parts / "whole")
    assert merged.manifest.seeds == whole.manifest.seeds == [0, 1, 2, 3, 4, 5]
    assert all(torch.equal(merged.stacked[k], whole.stacked[k]) for k in whole.stacked)
    assert merged.manifest.members == whole.manifest.members
    assert [c.count for c in merged.manifest.chunks] == [2, 2, 2]
    sources = manifest.environment["merged_from"]
    assert [s["content_hash"] for s in sources] == [
        load_zoo(parts / "first").manifest.content_hash,
        load_zoo(parts / "second").manifest.content_hash,
    ]
    # the build command of the whole zoo finds the merged one complete: nothing to train
    train_zoo("mlp-digits", 6, RECIPE, tmp_path / "merged", chunk_size=CHUNK, on_step=pytest.fail)


def test_repeated_seeds_are_refused_by_name(parts, tmp_path):
    with pytest.raises(ZooError, match=r"repeats 4 seeds .*disjoint --first-seed"):
        merge_zoos([parts / "whole", parts / "first"], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_a_different_recipe_is_refused_naming_the_field(parts, tmp_path):
    other = replace(RECIPE, lr=5e-3)
    train_zoo("mlp-digits", 2, other, tmp_path / "other", first_seed=10, chunk_size=CHUNK)
    with pytest.raises(ZooError, match=r"recipe: .*'lr': 0\.01.*'lr': 0\.005"):
        merge_zoos([parts / "first", tmp_path / "other"], tmp_path / "merged")


def test_a_broken_source_or_a_full_target_is_refused(parts, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(ZooError, match="not empty"):
        merge_zoos([parts / "first", parts / "second"], tmp_path / "full")
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"
    with pytest.raises(ZooError, match="at least two"):
        merge_zoos([parts / "first"], tmp_path / "merged")
    broken = tmp_path / "broken"
    broken.mkdir()
    manifest = json.loads((parts / "second" / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(ZooError, match="incomplete"):
        merge_zoos([parts / "first", broken], tmp_path / "merged")
