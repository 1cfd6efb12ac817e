"""Helpers for tests that run real servers: free ports and waiting for HTTP readiness.

(Redis itself comes from `service.embedded.embedded_redis`, the server `dwf serve` embeds.)
"""

import socket
import time
from collections.abc import Callable

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_ready(url: str, timeout: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Poll GET `url` until it answers 200; fail early if `alive()` turns False (the server died)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the server process exited while waiting for {url} ({last})")
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.TransportError as error:
            last = str(error)
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout} s: {last}")
