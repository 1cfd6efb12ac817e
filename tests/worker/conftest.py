"""Worker tests: a real GeneratorWorker in this process (burst mode) on a real Redis server."""

import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rq import Queue

import worker.runtime
from service.embedded import embedded_redis
from service.queue import generation_queue
from service.settings import Settings
from service.storage import LocalResultStore
from worker.process import GeneratorWorker
from worker.runtime import Runtime


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with embedded_redis(tmp_path_factory.mktemp("redis") / "test.rdb") as url:
        yield url


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_url,
        queue_name=f"test-{uuid.uuid4().hex[:8]}",
        results_dir=tmp_path / "results",
        generators_dir=tmp_path / "generators",
        job_timeout=10,
        result_ttl=3600,
    )


@pytest.fixture
def queue(settings: Settings) -> Queue:
    return generation_queue(settings)


@pytest.fixture
def run_worker(
    settings: Settings, queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., GeneratorWorker]]:
    """run_worker({name: generator}, broken={name: why}, **GeneratorWorker options) installs a
    runtime with those generators and works the queue empty."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}

    def run(generators: dict, broken: dict[str, str] | None = None, **options) -> GeneratorWorker:
        settings.results_dir.mkdir(parents=True, exist_ok=True)
        store = LocalResultStore(settings.results_dir)
        runtime = Runtime(generators, broken or {}, store, settings.result_ttl)
        monkeypatch.setattr(worker.runtime, "_runtime", runtime)
        process = GeneratorWorker([queue], runtime=runtime, connection=queue.connection, **options)
        process.work(burst=True, logging_level="WARNING")
        return process

    yield run
    for signum, handler in handlers.items():  # the worker installs its own; give pytest its back
        signal.signal(signum, handler)
