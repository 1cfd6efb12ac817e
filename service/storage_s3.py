"""Results in an S3-compatible object store (AWS S3, MinIO, Ceph, ...), shared by workers anywhere.

Objects are `<prefix><job_id>.safetensors` in one bucket. A worker uploads a complete local
file; S3 makes an object visible only when its PUT (or multipart upload) completes, so a
download never sees part of one. Expiry lists the prefix and deletes objects whose
LastModified is `result_ttl` or more seconds old. Credentials come from boto3's usual
sources: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance role, ...
"""

import time
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from service.storage_base import CHUNK_BYTES, OpenedResult, ResultStore, ResultStoreError, StoredResult

S3_ERRORS = (BotoCoreError, ClientError, S3UploadFailedError)
NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


def _missing(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in NOT_FOUND


def _body_chunks(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(CHUNK_BYTES)
    finally:
        body.close()


class S3ResultStore(ResultStore):
    """Results as objects `s3://<bucket>/<prefix><job_id>.safetensors`; `client` is a boto3 S3 client."""

    def __init__(self, client: Any, bucket: str, prefix: str, scratch_dir: Path):
        super().__init__(scratch_dir)
        self.client, self.bucket = client, bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def key(self, job_id: str) -> str:
        return f"{self.prefix}{job_id}.safetensors"

    def _error(self, action: str, error: Exception) -> ResultStoreError:
        return ResultStoreError(
            f"result store {self.location} failed to {action} ({error}); check that the bucket exists, "
            "DWF_S3_ENDPOINT_URL and DWF_S3_REGION, and the AWS credentials"
        )

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except S3_ERRORS as error:
            raise self._error("answer", error) from error

    def stat(self, job_id: str) -> StoredResult | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(job_id))
        except ClientError as error:
            if _missing(error):
                return None
            raise self._error(f"find result {job_id}", error) from error
        except BotoCoreError as error:
            raise self._error(f"find result {job_id}", error) from error
        return StoredResult(head["ContentLength"], head["LastModified"].timestamp())

    def open(self, job_id: str) -> OpenedResult | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(job_id))
        except ClientError as error:
            if _missing(error):
                return None
            raise self._error(f"read result {job_id}", error) from error
        except BotoCoreError as error:
            raise self._error(f"read result {job_id}", error) from error
        return OpenedResult(response["ContentLength"], _body_chunks(response["Body"]))

    def delete(self, job_id: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(job_id))
        except S3_ERRORS as error:
            raise self._error(f"delete result {job_id}", error) from error

    def expire(self, result_ttl: float, now: float | None = None) -> int:
        now = time.time() if now is None else now
        removed = 0
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            ):
                for item in page.get("Contents", []):
                    key = item["Key"]
                    if key.endswith(".safetensors") and now - item["LastModified"].timestamp() >= result_ttl:
                        self.client.delete_object(Bucket=self.bucket, Key=key)
                        removed += 1
        except S3_ERRORS as error:
            raise self._error("expire old results", error) from error
        return removed

    def stored_bytes(self) -> int:
        try:
            return sum(
                item["Size"]
                for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=self.prefix
                )
                for item in page.get("Contents", [])
                if item["Key"].endswith(".safetensors")
            )
        except S3_ERRORS as error:
            raise self._error("list results", error) from error

    def _publish(self, job_id: str, temporary: Path) -> StoredResult:
        try:
            self.client.upload_file(str(temporary), self.bucket, self.key(job_id))
        except S3_ERRORS as error:
            raise self._error(f"store result {job_id}", error) from error
        stored = self.stat(job_id)
        if stored is None:
            raise ResultStoreError(f"result {job_id} is missing from {self.location} right after its upload")
        return stored


@lru_cache(maxsize=8)
def s3_result_store(
    bucket: str, prefix: str, scratch_dir: Path, endpoint_url: str | None, region: str | None
) -> S3ResultStore:
    """One store (and one thread-safe boto3 client) per configuration. A custom endpoint (MinIO,
    ...) is addressed path-style (`http://host:9000/bucket/key`), which every S3 clone serves."""
    config = Config(s3={"addressing_style": "path"}) if endpoint_url else None
    client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
    return S3ResultStore(client, bucket, prefix, scratch_dir)
