"""Time from POST /generate to a downloaded result, through the embedded service (`dwf serve`:
real Redis, one worker process, uvicorn), against the same generation in process.

The ratio is the service's overhead (queueing, the worker's result write, polling, HTTP
download); the aim is <= 1.5x. Every path is the median over `--repeats` runs of the same seeds
(1000, 1001, ...: the same networks, so the same screening work), after a warm-up run.

Run: python -m bench.service_latency [--architecture mlp-fashion] [--count 100] [--repeats 5]
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import count as counter
from pathlib import Path

import httpx

from bench.common import report, timed
from deepweightflow.client import Client
from models.generator import Generator, write_result

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def embedded_server(generators: list[Path], workers: int = 1) -> Iterator[str]:
    """`dwf serve` in a subprocess on a free port, offering only `generators`; yields the base URL."""
    with tempfile.TemporaryDirectory(prefix="dwf-bench-") as scratch:
        root = Path(scratch)
        (root / "generators").mkdir()
        for artifact in generators:
            (root / "generators" / artifact.name).symlink_to(artifact.resolve(), target_is_directory=True)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DWF_REDIS_URL"}}
        env |= {"DWF_GENERATORS_DIR": str(root / "generators"), "DWF_RESULTS_DIR": str(root / "results")}
        command = [sys.executable, "-m", "deepweightflow.service_cli", "serve", "--port", str(port)]
        command += ["--workers", str(workers), "--data-dir", str(root / "var")]
        with (root / "serve.log").open("w") as log:
            process = subprocess.Popen(command, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
            url = f"http://127.0.0.1:{port}"
            try:
                _wait_ready(f"{url}/readyz" if workers else f"{url}/healthz", process)
                yield url
            except Exception:
                print((root / "serve.log").read_text()[-3000:], file=sys.stderr)
                raise
            finally:
                process.send_signal(signal.SIGINT)
                process.wait(timeout=60)


def _wait_ready(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("dwf serve exited before it was ready")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--architecture", default="mlp-fashion")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    artifact = REPO / "generators" / args.architecture
    if not (artifact / "card.json").is_file():
        sys.exit(f"no generator artifact at {artifact}: build it first")

    def seeds() -> Iterator[int]:
        return counter(1000)

    generator = Generator.load(artifact)
    generator.generate(1, seed=0)  # warm-up, as the worker does when it starts
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / "result.safetensors"
        # no validation pass, like a job that does not ask for one (the service's default)
        plain = seeds()
        generate_s, _ = timed(
            lambda: generator.generate(args.count, next(plain), evaluate=False), args.repeats
        )
        written = seeds()
        generate_write_s, _ = timed(
            lambda: write_result(target, generator.generate(args.count, next(written), evaluate=False)),
            args.repeats,
        )

    with embedded_server([artifact]) as url, Client(url) as client, tempfile.TemporaryDirectory() as scratch:

        def through_service() -> Path:
            job = client.generate(args.architecture, args.count, seed=next(served))
            return job.wait(timeout=600).download(Path(scratch) / f"{job.id}.safetensors")

        client.generate(args.architecture, args.count, seed=0).wait(timeout=600)  # warm-up
        served = seeds()
        service_s, _ = timed(through_service, args.repeats)

    rows = [
        {"path": "in process: generate()", "seconds": generate_s, "ratio": 1.0},
        {
            "path": "in process: generate() + write_result()",
            "seconds": generate_write_s,
            "ratio": generate_write_s / generate_s,
        },
        {"path": "service: POST -> poll -> download", "seconds": service_s, "ratio": service_s / generate_s},
    ]
    report(
        "service_latency",
        f"{args.count} x {args.architecture}: POST to downloaded vs in process (median of {args.repeats})",
        rows,
        {
            "architecture": args.architecture,
            "count": args.count,
            "repeats": args.repeats,
            "overhead_ratio": service_s / generate_s,
            "aim": "<= 1.5",
        },
    )


if __name__ == "__main__":
    main()
