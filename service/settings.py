"""Configuration shared by the API, the workers and `dwf serve`, read from the environment.

Every field can be set as `DWF_<FIELD>` (for example `DWF_MAX_COUNT=500`); the Redis
address is the conventional `REDIS_URL`. Without `REDIS_URL`, `dwf serve` starts an
embedded Redis server and points everything at it.
"""

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    # An empty variable (`REDIS_URL=`, as a shell or a compose file may set it) counts as unset.
    model_config = SettingsConfigDict(env_prefix="DWF_", extra="ignore", env_ignore_empty=True)

    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "DWF_REDIS_URL"),
        description="redis:// or unix:// address; unset means `dwf serve` embeds a Redis server",
    )
    queue_name: str = "generate"  # the rq queue jobs go to
    results_dir: Path = Path("var/results")  # job results: <results_dir>/<job_id>.safetensors
    generators_dir: Path = REPO_ROOT / "generators"  # one artifact folder per generator
    device: str | None = None  # torch device for workers; None = CUDA when present, else CPU
    max_count: int = Field(default=1000, ge=1)  # most networks one job may ask for
    max_steps: int = Field(default=1000, ge=1)  # most ODE steps one job may ask for
    max_body_bytes: int = Field(default=16 * 1024, ge=256)  # largest accepted request body
    result_ttl: int = Field(default=24 * 3600, ge=1)  # seconds a finished job's weights stay downloadable
    job_ttl: int = Field(default=7 * 24 * 3600, ge=1)  # seconds a job record outlives its end
    job_timeout: int = Field(default=30 * 60, ge=1)  # seconds a job may run before the worker kills it
    api_key: str | None = None  # when set, every job route needs `Authorization: Bearer <api_key>`
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)

    # access control and limits (issue 6)
    # API keys: `DWF_API_KEYS` is a comma-separated or JSON list; `DWF_API_KEY` (above) adds one more.
    # With no key at all the API is open (the embedded default) and nothing checks job owners.
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    rate_limit_per_minute: int = Field(default=600, ge=0)  # POST /generate per key per minute; 0 = off
    max_queued_jobs_per_key: int = Field(default=100, ge=0)  # jobs of one key not yet ended; 0 = off

    # bounded disk for results (issue 11, service.result_budget)
    max_result_bytes: int = Field(default=2**30, ge=1)  # largest result one job may store (count x network)
    # all stored and pending results together; None = half of the results directory's free space
    # (plus what the results take); each API key may take result_budget_owner_share of it
    result_budget_bytes: int | None = Field(default=None, ge=1)
    result_budget_owner_share: float = Field(default=0.5, gt=0, le=1)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _key_list(cls, value: object) -> object:
        """`DWF_API_KEYS=a,b` or `DWF_API_KEYS='["a", "b"]'`; blanks around and between keys are dropped."""
        if isinstance(value, str):
            value = json.loads(value) if value.strip().startswith("[") else value.split(",")
        if isinstance(value, list):
            value = [key.strip() if isinstance(key, str) else key for key in value]
            return [key for key in value if key != ""]
        return value

    @property
    def all_api_keys(self) -> tuple[str, ...]:
        """Every accepted key, `api_key` included, without duplicates; empty means auth is off."""
        keys = [*self.api_keys, *([self.api_key] if self.api_key else [])]
        return tuple(dict.fromkeys(keys))

    @field_validator(
        "redis_url",
        "device",
        "api_key",
        "s3_bucket",
        "s3_endpoint_url",
        "s3_region",
        "result_budget_bytes",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """A blank optional setting (spaces only) means unset, as an empty one does."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _records_outlive_results(self) -> "Settings":
        if self.job_ttl < self.result_ttl:
            raise ValueError(
                f"job_ttl ({self.job_ttl}s) must be at least result_ttl ({self.result_ttl}s), "
                "so that an expired result answers 410 Gone rather than 404"
            )
        return self

    # result storage and faults (issue 6)
    # Results go to `results_dir` (local, the default) or to an S3-compatible bucket shared by
    # workers on several machines; with S3, `results_dir` only holds files being uploaded.
    # Credentials come from the standard AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...).
    storage_backend: Literal["local", "s3"] = "local"
    s3_bucket: str | None = None  # the bucket (must exist); required with storage_backend=s3
    s3_prefix: str = "results/"  # object keys are <s3_prefix><job_id>.safetensors
    s3_endpoint_url: str | None = None  # e.g. http://minio:9000; None = AWS S3
    s3_region: str | None = None  # None = boto3's default (AWS_DEFAULT_REGION, ~/.aws/config)
    # A running job's worker refreshes its heartbeat every job_heartbeat_ttl/4 s; without one for
    # job_heartbeat_ttl s the worker counts as dead and another worker fails (or retries) its job.
    job_heartbeat_ttl: int = Field(default=60, ge=2)
    job_retries: int = Field(default=0, ge=0)  # times a job whose worker died is run again before failing
    # GET /jobs/{id}?wait=S holds its answer until the job changes, at most min(S, long_poll_max_s) s
    long_poll_max_s: float = Field(default=30.0, ge=0, le=30.0)

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> "Settings":
        if self.storage_backend == "s3" and not self.s3_bucket:
            raise ValueError("storage_backend=s3 needs a bucket: set DWF_S3_BUCKET")
        return self


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (a FastAPI dependency; tests override it)."""
    return Settings()
