"""Stopping `dwf serve` (embedded Redis, one worker, the API) with a signal to its process alone, as
`kill`, `docker stop`, systemd or a closed terminal send it: nothing it started keeps running, and
nothing it created outside its data directory is left. SIGKILL leaves it no say: its children then
stop on their own (Linux's parent-death signal)."""

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from tests.service.stack import free_port, wait_until_ready

REPO = Path(__file__).resolve().parents[2]


def _started(root: Path) -> tuple[subprocess.Popen, str]:
    (root / "generators").mkdir()  # no generator: the worker starts in seconds, and idles
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DWF_REDIS_URL"}}
    env |= {
        "DWF_GENERATORS_DIR": str(root / "generators"),
        "DWF_RESULTS_DIR": str(root / "results"),
        "DWF_PORT": str(port),
        "PYTHONPATH": str(REPO),  # this tree's code, in dwf serve and in the worker it starts
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-m", "deepweightflow.service_cli", "serve", "--data-dir", str(root / "var")]
    with (root / "serve.log").open("w") as log:
        process = subprocess.Popen(
            command, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return process, f"http://127.0.0.1:{port}"


def _ours(root: Path) -> list[psutil.Process]:
    """Every process whose command line names something under `root` (dwf serve's, Redis's config),
    or whose environment does (the worker's)."""
    found = []
    for process in psutil.process_iter(["cmdline", "environ"]):
        with_root = " ".join(process.info["cmdline"] or []) + " ".join(
            (process.info["environ"] or {}).values()
        )
        if str(root) in with_root:
            found.append(process)
    return found


SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL]


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_a_signal_to_dwf_serve_alone_stops_everything_it_started(tmp_path: Path, signum: int) -> None:
    temporary_before = set(Path(tempfile.gettempdir()).glob("dwf-redis-*"))
    process, url = _started(tmp_path)
    children: list[psutil.Process] = []
    try:
        wait_until_ready(f"{url}/readyz", timeout=120, alive=lambda: process.poll() is None)
        children = psutil.Process(process.pid).children(recursive=True)
        commands = sorted(" ".join(child.cmdline()) for child in children)
        assert len(children) == 2, commands
        assert "redis-server" in commands[0] or "redis-server" in commands[1], commands
        assert any(command.endswith("-m worker") for command in commands), commands

        process.send_signal(signum)
        code = process.wait(timeout=60)
        assert code == (-signal.SIGKILL if signum == signal.SIGKILL else 0)
        _, alive = psutil.wait_procs(children, timeout=30)
        assert alive == [], [" ".join(child.cmdline()) for child in alive]
        assert _ours(tmp_path) == []
        redis_dir = tmp_path / "var" / "redis"
        assert (redis_dir / "dwf.rdb").is_file()  # Redis saved its data as it stopped
        assert not (redis_dir / "redis.sock").exists()
        assert set(Path(tempfile.gettempdir()).glob("dwf-redis-*")) == temporary_before
    except BaseException:
        print((tmp_path / "serve.log").read_text()[-5000:])
        raise
    finally:
        for leftover in [*children, psutil.Process(process.pid)] if process.poll() is None else children:
            if leftover.is_running():
                leftover.kill()
