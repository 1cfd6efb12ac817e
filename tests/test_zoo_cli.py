"""`dwf zoo train | merge | canonicalize | report`, including a build killed mid-way and resumed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from typer.testing import CliRunner

from deepweightflow.cli import app
from models.zoo.build import train_zoo
from models.zoo.store import load_zoo
from models.zoo.train import Recipe

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["zoo", "train", "mlp-digits", "--epochs", "1", "--lr", "0.01", "--batch-size", "32"]
runner = CliRunner()


def test_cli_imports_without_torch():
    code = "import sys, deepweightflow.cli; assert 'torch' not in sys.modules, 'cli imported torch'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_train_canonicalize_report(tmp_path):
    out = tmp_path / "zoo"
    result = runner.invoke(app, [*TRAIN, "--members", "4", "--chunk-size", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "mlp-digits zoo: 4 members" in result.output and "build wall time" in result.output
    assert load_zoo(out).size == 4

    result = runner.invoke(app, ["zoo", "canonicalize", str(out)])
    assert result.exit_code == 0, result.output
    assert "medoid" in result.output and "average" in result.output
    summary = json.loads((out / "canonical" / "summary.json").read_text())
    assert set(summary["templates"]) == {"medoid", "average"}

    result = runner.invoke(app, ["zoo", "report", str(out)])
    assert result.exit_code == 0, result.output
    for text in ("test", "mean %", "mean pairwise L2 distance", "(best)"):
        assert text in result.output
    assert (out / "accuracy_hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_merge_parts_built_apart_and_refuse_a_canonical_zoo(tmp_path):
    for name, first_seed in (("a", "0"), ("b", "2")):
        args = [*TRAIN, "--members", "2", "--first-seed", first_seed, "--out", str(tmp_path / name)]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["zoo", "merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "ab")]
    )
    assert result.exit_code == 0, result.output
    assert "merged 4 members" in result.output and "mlp-digits zoo: 4 members" in result.output
    assert load_zoo(tmp_path / "ab").manifest.seeds == [0, 1, 2, 3]

    assert (
        runner.invoke(app, ["zoo", "canonicalize", str(tmp_path / "a"), "--template", "medoid"]).exit_code
        == 0
    )
    canonical = tmp_path / "a" / "canonical" / "medoid"
    result = runner.invoke(
        app, ["zoo", "merge", str(canonical), str(tmp_path / "b"), "--out", str(tmp_path / "c")]
    )
    assert result.exit_code == 1
    assert "is a canonical zoo: merge the zoos it was made from" in " ".join(result.output.split())


def test_user_errors_exit_1_with_a_message_not_a_traceback(tmp_path):
    result = runner.invoke(app, ["zoo", "train", "mlp-nope", "--out", str(tmp_path / "z")])
    assert result.exit_code == 1
    assert "unknown architecture 'mlp-nope'; known architectures:" in result.output

    result = runner.invoke(app, ["zoo", "report", str(tmp_path)])
    assert result.exit_code == 1 and "manifest.json is missing" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_build_killed_mid_way_resumes_to_the_uninterrupted_zoo(tmp_path):
    out = tmp_path / "zoo"
    command = [sys.executable, "-m", "deepweightflow.cli", *TRAIN, "--members", "6", "--chunk-size", "2"]
    command += ["--threads", "1", "--out", str(out)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (out / "chunk-0000.safetensors").exists() or '"sha256"' not in manifest_text(out):
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no chunk completed within 120 s"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    killed = json.loads(manifest_text(out))
    assert not killed["complete"] and 1 <= len(killed["chunks"]) < 3

    result = runner.invoke(app, command[3:])  # resume, here in-process
    assert result.exit_code == 0, result.output
    assert "chunk chunk-0000" not in result.output and "chunk chunk-0002" in result.output  # only the rest
    resumed = load_zoo(out)
    train_zoo("mlp-digits", 6, Recipe(epochs=1, batch_size=32, lr=0.01), tmp_path / "reference", chunk_size=2)
    reference = load_zoo(tmp_path / "reference")
    for key, tensor in reference.stacked.items():
        assert torch.equal(resumed.stacked[key], tensor), key
    assert resumed.manifest.members == reference.manifest.members


def manifest_text(out: Path) -> str:
    try:
        return (out / "manifest.json").read_text()
    except FileNotFoundError:
        return ""


def test_evaluate_refuses_malformed_step_counts():
    for bad in ("0,4", "a,b", ","):
        result = runner.invoke(app, ["evaluate", "mlp-digits", "--steps", bad])
        assert result.exit_code == 2, result.output
        assert "--steps takes positive integers separated by commas" in result.output
