"""Zoo format: build, load, resume after a crash, and refuse corrupted or inconsistent zoos."""

import hashlib
import json
import shutil
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from models.zoo.build import train_zoo
from models.zoo.store import ZooError, content_hash, file_sha256, load_zoo, read_manifest, write_manifest
from models.zoo.train import Recipe

RECIPE = Recipe(epochs=1, batch_size=32, lr=1e-2)
MEMBERS, CHUNK = 5, 2  # chunks of 2, 2, 1


class SimulatedCrash(RuntimeError):
    pass


def build(out, **kwargs):
    return train_zoo("mlp-digits", MEMBERS, RECIPE, out, chunk_size=CHUNK, **kwargs)


@pytest.fixture(scope="module")
def reference_zoo(tmp_path_factory):
    """An uninterrupted build."""
    out = tmp_path_factory.mktemp("zoo") / "reference"
    build(out)
    return out


@pytest.fixture
def zoo_copy(reference_zoo, tmp_path):
    out = tmp_path / "zoo"
    shutil.copytree(reference_zoo, out)
    return out


def test_complete_zoo_loads_with_all_members_and_metrics(reference_zoo):
    zoo = load_zoo(reference_zoo)
    assert zoo.size == MEMBERS and zoo.manifest.seeds == [0, 1, 2, 3, 4]
    assert zoo.stacked["layers.0.weight"].shape == (MEMBERS, 32, 64)
    assert [c.count for c in zoo.manifest.chunks] == [2, 2, 1]
    assert zoo.manifest.recipe == RECIPE.to_dict()
    assert zoo.manifest.dataset["name"] == "digits" and len(zoo.manifest.dataset["fingerprint"]) == 64
    assert set(zoo.manifest.members[0]) >= {"seed", "train_acc", "val_acc", "test_acc"}
    assert zoo.metric("test_acc").min() > 0.5
    assert zoo.manifest.build_wall_time_s == pytest.approx(sum(c.wall_time_s for c in zoo.manifest.chunks))


def test_resume_after_crash_equals_uninterrupted_build(reference_zoo, tmp_path):
    out = tmp_path / "zoo"

    def crash_after_first_chunk(chunk):
        raise SimulatedCrash(chunk.file)

    with pytest.raises(SimulatedCrash):
        build(out, on_chunk=crash_after_first_chunk)
    with pytest.raises(ZooError, match=r"incomplete \(2 of 5 members built\); rerun `dwf zoo train"):
        load_zoo(out)
    # the crash also left a half-written next chunk behind: it must be ignored and overwritten
    (out / "chunk-0001.safetensors").write_bytes(b"half written")
    (out / ".chunk-0002.safetensors.tmp").write_bytes(b"half written")

    resumed_chunks = []
    build(out, on_chunk=resumed_chunks.append)
    assert [c.file for c in resumed_chunks] == ["chunk-0001.safetensors", "chunk-0002.safetensors"]
    resumed, reference = load_zoo(out), load_zoo(reference_zoo)
    for key, tensor in reference.stacked.items():
        assert torch.equal(resumed.stacked[key], tensor), key
    assert resumed.manifest.members == reference.manifest.members
    assert resumed.manifest.content_hash == reference.manifest.content_hash


def test_rerunning_a_complete_build_trains_nothing(zoo_copy):
    chunks = []
    manifest = build(zoo_copy, on_chunk=chunks.append)
    assert chunks == [] and manifest.complete


def test_resume_with_different_settings_is_refused(zoo_copy):
    with pytest.raises(ZooError, match=r"cannot resume .*\(recipe.epochs: zoo has 1, requested 2\)"):
        train_zoo("mlp-digits", MEMBERS, replace(RECIPE, epochs=2), zoo_copy, chunk_size=CHUNK)
    with pytest.raises(ZooError, match=r"seeds: zoo has 5 members \(seeds 0..4\), requested 6 members"):
        train_zoo("mlp-digits", MEMBERS + 1, RECIPE, zoo_copy, chunk_size=CHUNK)


def test_flipped_bytes_in_a_chunk_are_refused(zoo_copy):
    path = zoo_copy / "chunk-0001.safetensors"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ZooError, match=r"chunk-0001.safetensors: sha256 mismatch, the file is corrupted"):
        load_zoo(zoo_copy)


def test_missing_chunk_is_refused(zoo_copy):
    (zoo_copy / "chunk-0002.safetensors").unlink()
    with pytest.raises(ZooError, match="chunk-0002.safetensors is listed in the manifest but missing"):
        load_zoo(zoo_copy)


def test_edited_manifest_is_refused(zoo_copy):
    manifest = json.loads((zoo_copy / "manifest.json").read_text())
    manifest["members"][0]["test_acc"] = 0.99
    (zoo_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ZooError, match="content hash mismatch, the manifest was edited or corrupted"):
        load_zoo(zoo_copy)


def test_truncated_manifest_is_refused(zoo_copy):
    text = (zoo_copy / "manifest.json").read_text()
    (zoo_copy / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(ZooError, match="is not valid JSON .* the manifest is corrupted"):
        load_zoo(zoo_copy)


def test_chunk_with_wrong_shapes_is_refused_even_with_consistent_hashes(zoo_copy):
    """A chunk from another architecture, re-hashed into the manifest: caught by the shape check."""
    path = zoo_copy / "chunk-0000.safetensors"
    save_file({"layers.0.weight": torch.zeros(2, 16, 64)}, str(path))
    manifest = read_manifest(zoo_copy)
    manifest.chunks[0].sha256 = file_sha256(path)
    manifest.content_hash = content_hash(manifest)
    write_manifest(zoo_copy, manifest)
    with pytest.raises(ZooError, match="missing keys: layers.0.bias.*mis-shaped tensors: layers.0.weight"):
        load_zoo(zoo_copy)


def test_missing_zoo_and_foreign_directory_are_clear_errors(tmp_path):
    with pytest.raises(ZooError, match="no zoo at .*manifest.json is missing"):
        load_zoo(tmp_path)
    (tmp_path / "notes.txt").write_text("not a zoo")
    with pytest.raises(ZooError, match="is not empty and holds no zoo"):
        build(tmp_path)


def test_a_manifest_from_before_the_import_fields_still_verifies(zoo_copy):
    """Zoos written before `imported` and `input` existed hash without those keys."""
    path = zoo_copy / "manifest.json"
    data = json.loads(path.read_text())
    for key in ("imported", "input"):
        data.pop(key)
    hashed = {k: v for k, v in data.items() if k not in ("content_hash", "build_wall_time_s")}
    hashed["chunks"] = [{k: v for k, v in c.items() if k != "wall_time_s"} for c in data["chunks"]]
    data["content_hash"] = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()
    path.write_text(json.dumps(data))
    assert load_zoo(zoo_copy).manifest.content_hash == data["content_hash"]
