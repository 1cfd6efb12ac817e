"""Submissions per second the API sustains: POST /generate at a fixed concurrency on loopback.

The server is `dwf serve` with its embedded Redis and no worker, so jobs only queue and the
measurement is the API itself (validation, enqueue on Redis, the 202 answer). The aim is
>= 200 submissions/s at concurrency 32. The load generator shares the machine's cores.

Run: python -m bench.submit_throughput [--concurrency 32] [--requests 4000] [--architecture mlp-digits]
"""

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from bench.common import report
from bench.service_latency import embedded_server
from bench.service_load import limits_for

REPO = Path(__file__).resolve().parents[1]


async def _post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """One HTTP/1.1 keep-alive request on an open connection; returns the status code."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
    await reader.readexactly(length)
    return int(lines[0].split()[1])


async def load(url: str, architecture: str, total: int, concurrency: int) -> tuple[float, list[float], int]:
    """Send `total` POST /generate over `concurrency` keep-alive connections.

    A minimal HTTP/1.1 client on asyncio streams, so that the load generator (which shares the
    CPU with the server) costs far less than the server it measures. Returns the wall time,
    each request's latency (s) and how many answers were not 202.
    """
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    failures = 0
    seeds = iter(range(total))

    async def one_connection() -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for seed in seeds:
                body = json.dumps({"architecture": architecture, "count": 1, "seed": seed}).encode()
                request = (
                    f"POST /generate HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode() + body
                start = time.perf_counter()
                status = await _post(reader, writer, request)
                latencies.append(time.perf_counter() - start)
                failures += status != 202
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(one_connection() for _ in range(concurrency)))
    return time.perf_counter() - start, latencies, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--architecture", default="mlp-digits")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()

    artifact = REPO / "generators" / args.architecture
    if not (artifact / "card.json").is_file():
        sys.exit(f"no generator artifact at {artifact}: build it first")
    with limits_for(args.warmup + args.requests), embedded_server([artifact], workers=0) as url:
        asyncio.run(load(url, args.architecture, args.warmup, args.concurrency))
        wall, latencies, failures = asyncio.run(load(url, args.architecture, args.requests, args.concurrency))
    quantiles = statistics.quantiles(latencies, n=100)
    rows = [
        {
            "concurrency": args.concurrency,
            "requests": args.requests,
            "failed": failures,
            "submissions/s": (args.requests - failures) / wall,
            "p50 ms": quantiles[49] * 1000,
            "p95 ms": quantiles[94] * 1000,
            "p99 ms": quantiles[98] * 1000,
        }
    ]
    report(
        "submit_throughput",
        f"POST /generate on loopback, {args.concurrency} concurrent connections, no worker",
        rows,
        {"architecture": args.architecture, "wall_s": wall, "aim": ">= 200 submissions/s"},
    )


if __name__ == "__main__":
    main()
