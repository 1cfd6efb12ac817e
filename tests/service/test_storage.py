"""Result stores: the local directory, and S3 over real HTTP against moto's S3 server.

Each store is checked for what the service relies on: a result is invisible until it is
complete, reads back byte-identical, expires by age (and only results under its prefix),
and a store that cannot take a result says where and how to fix it.
"""

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from pydantic import ValidationError

from contract.files import current_umask, is_temporary
from service.settings import Settings
from service.storage import LocalResultStore, ResultStore, ResultStoreError, result_path, result_store
from service.storage_s3 import S3ResultStore, s3_result_store
from tests.worker.stack import moto_s3

BUCKET = "dwf-test-results"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3(BUCKET) as endpoint:
        yield endpoint


@pytest.fixture
def s3_store(s3_endpoint: str, tmp_path: Path) -> S3ResultStore:
    prefix = f"test-{uuid.uuid4().hex[:8]}/results"  # each test its own prefix in the shared bucket
    return s3_result_store(BUCKET, prefix, tmp_path / "scratch", s3_endpoint, "us-east-1")


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ResultStore:
    """Each backend in turn."""
    if request.param == "local":
        return LocalResultStore(tmp_path / "results")
    return request.getfixturevalue("s3_store")


def _stored_bytes(store: ResultStore, job_id: str) -> bytes | None:
    opened = store.open(job_id)
    return None if opened is None else b"".join(opened.chunks)


def _save_checking_invisibility(store: ResultStore, job_id: str, content: bytes) -> None:
    """Save `content`, checking mid-write that nothing of it is visible yet."""

    def write(path: Path) -> None:
        with path.open("wb") as handle:
            handle.write(content[: len(content) // 2])
            handle.flush()
            assert store.stat(job_id) is None and store.open(job_id) is None
            handle.write(content[len(content) // 2 :])

    stored = store.save(job_id, write)
    assert stored.size == len(content) and abs(stored.stored_at - time.time()) < 5


def test_local_results_are_flushed_to_disk_after_they_are_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename does not wait for the disk; a background thread then fsyncs the published file."""
    flushed: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: (flushed.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd))
    )
    store = LocalResultStore(tmp_path / "results")
    store.save("job-1", lambda path: path.write_bytes(b"weights"))
    for thread in threading.enumerate():
        if thread.name.startswith("flush "):
            thread.join(timeout=10)
    assert flushed == [str(result_path(tmp_path / "results", "job-1"))]
    assert _stored_bytes(store, "job-1") == b"weights"


def test_save_read_stat_and_delete(store: ResultStore, tmp_path: Path) -> None:
    content = os.urandom(9 * 2**20 + 123)  # over boto3's 8 MiB multipart threshold
    _save_checking_invisibility(store, "job-1", content)
    assert _stored_bytes(store, "job-1") == content
    assert store.stat("job-1").size == len(content)
    assert list(store.scratch_dir.glob(".*")) == []  # the temporary file is gone
    opened = store.open("job-1")
    if isinstance(store, LocalResultStore):
        assert opened.path == result_path(tmp_path / "results", "job-1")
    else:
        assert opened.path is None and store.key("job-1").endswith("/results/job-1.safetensors")
        opened.chunks.close()
    store.delete("job-1")
    store.delete("job-1")  # deleting what is gone is not an error
    assert store.stat("job-1") is None and store.open("job-1") is None


def test_a_failed_write_publishes_nothing(store: ResultStore) -> None:
    def write_then_fail(path: Path) -> None:
        path.write_bytes(b"half a result")
        raise OSError(28, "No space left on device")

    with pytest.raises(ResultStoreError, match="is not writable or is full.*No space left on device"):
        store.save("job-2", write_then_fail)
    assert store.stat("job-2") is None and list(store.scratch_dir.iterdir()) == []


def test_results_expire_by_age_and_only_under_the_prefix(s3_store: S3ResultStore, s3_endpoint: str) -> None:
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    test_root = s3_store.prefix.split("/")[0]  # the prefix is <test_root>/results/
    outside = f"{test_root}/other-app/keep.safetensors"  # another application's object
    client.put_object(Bucket=BUCKET, Key=outside, Body=b"not ours")
    client.put_object(Bucket=BUCKET, Key=f"{s3_store.prefix}notes.txt", Body=b"not a result")
    s3_store.save("old", lambda path: path.write_bytes(b"old"))
    time.sleep(1.1)  # S3's LastModified has one-second resolution
    s3_store.save("new", lambda path: path.write_bytes(b"new"))
    new_at = s3_store.stat("new").stored_at

    assert s3_store.expire(result_ttl=3600, now=new_at + 3600 - 0.5) == 1
    assert s3_store.stat("old") is None and _stored_bytes(s3_store, "new") == b"new"
    assert s3_store.expire(result_ttl=3600) == 0
    assert s3_store.expire(result_ttl=3600, now=new_at + 3600) == 1 and s3_store.stat("new") is None
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=test_root)
    assert sorted(item["Key"] for item in listed["Contents"]) == sorted(
        [outside, f"{s3_store.prefix}notes.txt"]
    )


def test_local_results_expire_by_modification_time(tmp_path: Path) -> None:
    store = LocalResultStore(tmp_path)
    for job_id, age in (("old", 120), ("new", 30)):
        store.save(job_id, lambda path: path.write_bytes(b"x"))
        moment = time.time() - age
        os.utime(result_path(tmp_path, job_id), (moment, moment))
    assert store.expire(result_ttl=60) == 1
    assert store.stat("old") is None and store.stat("new") is not None


def test_an_unwritable_results_directory_is_named_with_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file where the results directory's parent should be")
    store = LocalResultStore(blocker / "results")  # no one, not even root, can create this directory
    message = rf"results directory {blocker / 'results'} is not writable or is full .*DWF_RESULTS_DIR"
    with pytest.raises(ResultStoreError, match=message):
        store.check()
    with pytest.raises(ResultStoreError, match=message):
        store.save("job-3", lambda path: path.write_bytes(b"x"))
    blocker.unlink()
    store.check()
    store.save("job-3", lambda path: path.write_bytes(b"x"))
    assert _stored_bytes(store, "job-3") == b"x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_results_directory_is_refused(tmp_path: Path) -> None:
    store = LocalResultStore(tmp_path / "results")
    store.check()
    store.scratch_dir.chmod(0o500)
    try:
        with pytest.raises(ResultStoreError, match="is not writable"):
            store.save("job-4", lambda path: path.write_bytes(b"x"))
    finally:
        store.scratch_dir.chmod(0o700)


def test_a_missing_bucket_is_named_with_the_fix(s3_endpoint: str, tmp_path: Path) -> None:
    store = s3_result_store("no-such-bucket", "results/", tmp_path, s3_endpoint, "us-east-1")
    with pytest.raises(ResultStoreError, match="s3://no-such-bucket/results/ failed to answer.*bucket"):
        store.check()
    with pytest.raises(ResultStoreError, match="failed to store result job-5.*credentials"):
        store.save("job-5", lambda path: path.write_bytes(b"x"))
    assert list(tmp_path.iterdir()) == []  # nothing left behind locally either


def test_settings_choose_the_backend(s3_endpoint: str, tmp_path: Path) -> None:
    local = result_store(Settings(results_dir=tmp_path))
    assert isinstance(local, LocalResultStore) and local.location == str(tmp_path)
    s3 = Settings(
        storage_backend="s3",
        s3_bucket=BUCKET,
        s3_prefix="/a/b",
        s3_endpoint_url=s3_endpoint,
        s3_region="us-east-1",
        results_dir=tmp_path,
    )
    store = result_store(s3)
    assert isinstance(store, S3ResultStore) and store.location == f"s3://{BUCKET}/a/b/"
    assert result_store(s3) is store  # one client per configuration
    store.check()
    with pytest.raises(ValidationError, match="DWF_S3_BUCKET"):
        Settings(storage_backend="s3", s3_bucket=" ")


def test_the_writer_writes_one_temporary_path_once_and_the_result_gets_the_umask_mode(
    store: ResultStore,
) -> None:
    """The worker hands the store a writer that writes the path it is given, once; the store names it
    (a temporary name, `contract.files`'), and publishes it with the mode `open` would give (safetensors
    writes 0600)."""
    paths: list[Path] = []

    def write(path: Path) -> None:
        paths.append(path)
        path.write_bytes(b"weights")
        path.chmod(0o600)

    store.save("job-6", write)
    assert len(paths) == 1 and paths[0].parent == store.scratch_dir and is_temporary(paths[0])
    assert not paths[0].exists() and _stored_bytes(store, "job-6") == b"weights"
    if isinstance(store, LocalResultStore):
        assert result_path(store.scratch_dir, "job-6").stat().st_mode & 0o777 == 0o666 & ~current_umask()


def test_stored_bytes_count_results_only(store: ResultStore) -> None:
    assert store.stored_bytes() == 0
    store.save("a", lambda path: path.write_bytes(b"x" * 10))
    store.save("b", lambda path: path.write_bytes(b"y" * 5))
    (store.scratch_dir / ".c.safetensors.tmp-1-abc").write_bytes(b"z" * 100)  # being written: not yet
    assert store.stored_bytes() == 15
    store.delete("a")
    assert store.stored_bytes() == 5
