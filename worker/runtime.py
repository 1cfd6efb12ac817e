"""What a worker process holds between jobs: the loaded generators and the stop flag of the running job."""

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from contract.card import CardStamp, card_stamp
from models.generator import ArtifactError, Generator, discover_generators
from service.settings import Settings, get_settings
from service.storage import ResultStore, ResultStoreError, result_store

log = logging.getLogger(__name__)
STOP_SIGNAL = signal.SIGUSR1  # interrupts the main thread's job, as rq's SIGALRM does for timeouts


class JobStopped(Exception):
    """The running job was asked to stop (DELETE /jobs/<id>); rq then marks it `stopped`."""


@dataclass
class Runtime:
    """Generators loaded once, where results go, and how a running job is stopped.

    With `generators_dir` set, the generators follow that folder while the worker runs: each job
    first stats its generator's card (contract.card.card_stamp) and loads the artifact anew when
    it is new or was replaced (Generator.load reads one published version whole). A job uses the
    generator it got at its start throughout, so it never mixes two versions. A generator whose
    folder was removed keeps being served to the jobs already queued for it (the API no longer
    offers it).

    rq delivers a stop request on its pub/sub thread (`request_stop`). The job runs on the main
    thread: inside `interruptible()` (while the generator computes) the request is a signal whose
    handler raises JobStopped there at once, the way rq's own timeouts interrupt a job; outside
    it, the job sees the flag at its next `check_stop()`.
    """

    generators: dict[str, Generator]
    broken: dict[str, str]  # generator name -> why its artifact could not be loaded
    store: ResultStore  # where job results go
    result_ttl: int  # seconds a stored result stays downloadable
    generators_dir: Path | None = None  # followed for new and replaced artifacts; None: a fixed set
    device: str | None = None  # where generators are loaded (None: CUDA when present)
    stamps: dict[str, CardStamp] = field(default_factory=dict)  # the version each name was loaded from
    stop_requested: threading.Event = field(default_factory=threading.Event)
    in_interruptible: bool = False

    def generator(self, name: str) -> Generator:
        """The generator `name`, as its artifact folder is now."""
        if self.generators_dir is not None and not name.startswith(".") and "/" not in name:
            self.follow(name)
        if name in self.generators:
            return self.generators[name]
        if name in self.broken:
            raise ArtifactError(f"generator {name!r} could not be loaded: {self.broken[name]}")
        available = ", ".join(sorted(self.generators)) or "none"
        raise ValueError(f"this worker has no generator {name!r}; it has: {available}")

    def follow(self, name: str) -> None:
        """(Re)load `name` if its artifact is new or was replaced since it was loaded."""
        directory = self.generators_dir / name
        stamp = card_stamp(directory)
        if stamp is not None and stamp != self.stamps.get(name):
            log.info("loading generator %s from %s (new or replaced)", name, directory)
            self.load(name, directory, stamp)

    def load(self, name: str, directory: Path, stamp: CardStamp | None) -> None:
        """Load and warm up one generator; an unusable artifact is remembered as broken, not raised.
        `stamp` is the version seen before loading (kept for a broken one, so it is not retried)."""
        try:
            generator = Generator.load(directory, device=self.device)
            generator.generate(1, seed=0, screen=False)  # warm-up: one-off setup costs
        except Exception as error:  # one bad artifact must not stop the worker serving the others
            self.generators.pop(name, None)
            self.broken[name] = _unusable(directory, error)
            if stamp is not None:
                self.stamps[name] = stamp
            log.error("skipping generator %s: %s", name, self.broken[name])
            return
        self.generators[name] = generator
        self.broken.pop(name, None)
        if generator.stamp is not None:
            self.stamps[name] = generator.stamp

    def check_stop(self) -> None:
        """Raise JobStopped if a stop was requested for the running job."""
        if self.stop_requested.is_set():
            raise JobStopped("stopped on request")

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """A block (on the main thread) that a stop request may interrupt at any point."""
        self.in_interruptible = True
        try:
            yield
        finally:
            self.in_interruptible = False

    def request_stop(self) -> None:
        """Ask the running job to stop (from any thread)."""
        self.stop_requested.set()
        if self.in_interruptible:
            os.kill(os.getpid(), STOP_SIGNAL)

    def on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        """STOP_SIGNAL's handler (main thread): stop the job now if it is interruptible."""
        if self.in_interruptible:
            raise JobStopped("stopped on request")


def _unusable(directory: Path, error: Exception) -> str:
    """Why an artifact could not be loaded: ArtifactError says it all; anything else (a truncated
    file whose hash was recomputed, a tensor of the wrong shape) gets the folder and the fix."""
    if isinstance(error, ArtifactError):
        return str(error)
    return (
        f"generator artifact {directory} is unusable ({type(error).__name__}: {error}); "
        f"rebuild it with `make generators` or restore the folder {directory}"
    )


def load_runtime(settings: Settings) -> Runtime:
    """Load (and warm up) every generator under `settings.generators_dir` onto `settings.device`
    (CUDA when present), and follow that folder from then on (Runtime). An unusable artifact, or a
    result store that cannot take results now, is logged (and the artifact remembered as broken),
    never fatal: the worker serves the rest."""
    store = result_store(settings)
    runtime = Runtime({}, {}, store, settings.result_ttl, settings.generators_dir, settings.device)
    for name, directory in discover_generators(settings.generators_dir).items():
        runtime.load(name, directory, card_stamp(directory))
    if not runtime.generators:
        log.warning("no usable generator under %s: jobs fail until one is installed", settings.generators_dir)
    else:
        device = next(iter(runtime.generators.values())).device
        log.info("loaded generators %s on %s", ", ".join(sorted(runtime.generators)), device)
    try:
        store.check()
    except ResultStoreError as error:
        log.error("%s; until this is fixed, every job will fail as it stores its result", error)
    return runtime


_runtime: Runtime | None = None
_lock = threading.Lock()


def install_runtime(runtime: Runtime) -> None:
    """Make `runtime` the one job functions use in this process."""
    global _runtime
    _runtime = runtime


def current_runtime() -> Runtime:
    """The installed runtime; a plain `rq worker` (which installs none) loads it on first use."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = load_runtime(get_settings())
        return _runtime
