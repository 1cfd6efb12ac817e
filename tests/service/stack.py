"""Helpers for tests that run real servers: free ports, waiting for HTTP readiness, uvicorn in a thread.

(Redis itself comes from `service.embedded.embedded_redis`, the server `dwf serve` embeds.)
"""

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp

from service.limits import problem_http_protocol
from service.main import create_app
from service.settings import Settings, get_settings


def app_for(settings: Settings) -> FastAPI:
    """The API with `settings` in place of the environment's."""
    app = create_app(settings)
    app.dependency_overrides[get_settings] = lambda: settings
    return app


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


@contextmanager
def serve_in_thread(app: ASGIApp) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port from a background thread; yields its base URL.

    Real HTTP and real concurrency (the sync routes run in uvicorn's thread pool), in this process,
    so tests can still override the app's dependencies.
    """
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", http=problem_http_protocol()
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{url}/healthz", timeout=30, alive=thread.is_alive)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
