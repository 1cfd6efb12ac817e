"""`dwf generate` without a server: a result file with the usual permissions and its input contract."""

import os
import stat
from pathlib import Path

from typer.testing import CliRunner

from contract.result_file import read_result_metadata
from deepweightflow.cli import app


def test_local_generation_writes_a_readable_file_that_says_how_to_use_it(tmp_path: Path) -> None:
    out = tmp_path / "nets.safetensors"
    mask = os.umask(0o022)
    try:
        result = CliRunner().invoke(app, ["generate", "mlp-digits", "-n", "2", "--seed", "0", "-o", str(out)])
    finally:
        os.umask(mask)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o644, "safetensors alone would leave 0600"
    metadata = read_result_metadata(out)
    assert metadata.count == 2 and metadata.input_contract is not None
    assert metadata.input_contract.preprocessing.scale == 16
    assert [p.name for p in tmp_path.iterdir()] == ["nets.safetensors"], "no temporary file left"
