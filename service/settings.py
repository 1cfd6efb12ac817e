"""Configuration shared by the API, the workers and `dwf serve`, read from the environment.

Every field can be set as `DWF_<FIELD>` (for example `DWF_MAX_COUNT=500`); the Redis
address is the conventional `REDIS_URL`. Without `REDIS_URL`, `dwf serve` starts an
embedded Redis server and points everything at it.
"""

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DWF_", extra="ignore")

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

    @field_validator("redis_url", "device", "api_key", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """`REDIS_URL=` (set but empty) means unset, as in a shell or a compose file."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _records_outlive_results(self) -> "Settings":
        if self.job_ttl < self.result_ttl:
            raise ValueError(
                f"job_ttl ({self.job_ttl}s) must be at least result_ttl ({self.result_ttl}s), "
                "so that an expired result answers 410 Gone rather than 404"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (a FastAPI dependency; tests override it)."""
    return Settings()
