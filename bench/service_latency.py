"""Time from POST /generate to a downloaded result, through the embedded service (`dwf serve`:
real Redis, one worker process, uvicorn), against the same generation in process.

The ratio is the service's overhead (queueing, the worker's result write, polling, HTTP
download); the aim is <= 1.5x. Every path is the median over `--repeats` rounds; a round runs
the three paths in turn on one seed (1000, 1001, ...: the same networks, so the same screening
work), after a warm-up run of each.

Run: python -m bench.service_latency [--architecture mlp-fashion] [--count 100] [--repeats 5]
"""

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.common import report
from deepweightflow.client import Client
from models.generator import GeneratedEnsemble, Generator, write_result

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

    generator = Generator.load(artifact)
    generator.generate(1, seed=0)  # warm-up, as the worker does when it starts
    times: dict[str, list[float]] = {"generate": [], "generate_write": [], "service": []}

    def in_process(seed: int) -> GeneratedEnsemble:
        return generator.generate(args.count, seed, evaluate=False)  # no validation: the service's default

    with embedded_server([artifact]) as url, Client(url) as client, tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        client.generate(args.architecture, args.count, seed=0).wait(timeout=600)  # warm-up
        # the three paths take turns on each seed, so a slower or faster spell of this shared
        # machine falls on all of them alike
        for seed in range(1000, 1000 + args.repeats):
            start = time.perf_counter()
            in_process(seed)
            times["generate"].append(time.perf_counter() - start)
            start = time.perf_counter()
            write_result(folder / "in-process.safetensors", in_process(seed))
            times["generate_write"].append(time.perf_counter() - start)
            start = time.perf_counter()
            client.generate(args.architecture, args.count, seed=seed).wait(timeout=600).download(folder)
            times["service"].append(time.perf_counter() - start)
    generate_s, generate_write_s, service_s = (statistics.median(times[name]) for name in times)

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
            "seconds_per_round": times,
            "aim": "<= 1.5",
        },
    )


if __name__ == "__main__":
    main()
