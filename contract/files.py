"""Writing files and folders so that a reader sees the old version or the new one, never a part.

Every writer in the project goes through `atomic_write` (one file) or `replace_directory`
(a folder of files): the content is written under a temporary name in the same directory,
flushed to disk (or, where a caller chooses, flushed later), given the usual permissions
(0666 less the umask, as `open` would; some writers, safetensors among them, create 0600
files), and renamed over the target.
"""

import contextlib
import os
import shutil
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

TEMPORARY_MARK = ".tmp-"  # in the name of every temporary file or folder written here
_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask (os.umask can only be read by setting it, so briefly under a lock)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def temporary_name(target: Path) -> Path:
    """A fresh hidden name beside `target`: `.<name>.tmp-<pid>-<random>`."""
    return target.with_name(f".{target.name}{TEMPORARY_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and TEMPORARY_MARK in path.name


def publish(temporary: Path, target: Path, flush: bool = True) -> None:
    """Flush a finished temporary file, give it the umask's mode and rename it over `target`.

    `flush=False` renames at once and leaves the flush to the caller (`flush_in_background`):
    readers still see the whole file, but until it is flushed a power loss may truncate it.
    """
    if flush:
        fsync(temporary)
    os.chmod(temporary, 0o666 & ~current_umask())
    os.replace(temporary, target)


def fsync(path: Path) -> None:
    """Wait until `path`'s content is on disk."""
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def flush_in_background(path: Path) -> threading.Thread:
    """Flush `path` to disk on a new thread (not a daemon: the process waits for it at exit).
    A file deleted or replaced meanwhile needs no flush."""

    def flush() -> None:
        with contextlib.suppress(FileNotFoundError):
            fsync(path)

    thread = threading.Thread(target=flush, name=f"flush {path.name}")
    thread.start()
    return thread


def atomic_write(target: str | os.PathLike, write: Callable[[Path], None], flush: bool = True) -> Path:
    """Call `write(path)` on a temporary path beside `target`, then publish it as `target`
    (`flush=False`: without waiting for the disk, as a download tool writes).

    Whatever `write` raises propagates and leaves neither the temporary file nor a partial
    target behind (an existing target is kept as it was).
    """
    target = Path(target)
    temporary = temporary_name(target)
    try:
        write(temporary)
        publish(temporary, target, flush)
    finally:
        temporary.unlink(missing_ok=True)
    return target


def atomic_write_text(target: str | os.PathLike, text: str) -> Path:
    return atomic_write(target, lambda path: path.write_text(text))


def replace_directory(target: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Call `fill(folder)` on a new temporary folder beside `target`, then swap it into place.

    An existing `target` is replaced whole (renamed away, then removed): a reader sees the old
    folder or the new one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_name(target)
    staging.mkdir()
    try:
        fill(staging)
        os.chmod(staging, 0o777 & ~current_umask())
        retired = temporary_name(target)
        if target.exists():
            target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
