"""Request and response bodies of the API (pydantic models; the OpenAPI schema comes from them)."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from contract.inputs import InputContract
from contract.jobs import SEED_MAX, JobRequest
from service.numbers import whole_number

Sampler = Literal["euler", "midpoint", "rk4"]


class GenerateRequest(BaseModel):
    """POST /generate. `count` and `steps` upper bounds are settings, checked by the route."""

    model_config = ConfigDict(extra="forbid")

    architecture: str = Field(min_length=1, max_length=100, examples=["mlp-fashion"])
    count: whole_number(ge=1) = Field(examples=[100], description="networks to generate")
    seed: whole_number(ge=0, le=SEED_MAX) | None = Field(
        default=None, description="omit for a random seed, echoed back"
    )
    sampler: Sampler | None = Field(default=None, description="ODE method; the generator card's by default")
    steps: whole_number(ge=1) | None = Field(default=None, description="ODE steps; the card's by default")
    validation: StrictBool = Field(
        default=False,
        description="also measure every network on the generator's validation batch (result val_accuracy); "
        "costs one more forward pass per network",
    )


class Progress(BaseModel):
    done: int = 0
    total: int | None = None  # unknown until the worker starts


class JobResult(BaseModel):
    """What a finished job produced."""

    val_accuracy: list[float] | None = Field(
        default=None,
        description="per-network accuracy on the generator's held-out validation batch; "
        "null unless the job was submitted with validation: true",
    )
    metadata: dict[str, str] = Field(
        default_factory=dict, description="the result file's __metadata__ (less val_accuracy)"
    )
    size_bytes: int
    expires_at: datetime
    expired: bool


class JobResource(BaseModel):
    """A generation job; `status` keeps rq's names: queued, started, finished, failed, stopped, canceled."""

    id: str
    status: str
    request: JobRequest
    progress: Progress
    created_at: datetime | None
    enqueued_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    error: str | None = None
    result: JobResult | None = None
    url: str
    result_url: str | None = None


class ArchitectureCard(BaseModel):
    """One available generator: the headline numbers of its card.json, and the card itself."""

    name: str = Field(description="what POST /generate takes as `architecture`")
    architecture: dict[str, Any] = Field(description="architecture name, family and config")
    input: InputContract = Field(description="what raw input the networks take and how to preprocess it")
    usage: str = Field(description="the input contract in one line")
    parameter_count: int | None = None
    zoo_accuracy: dict[str, float] | None = Field(
        default=None, description="test accuracy of the training zoo: mean, std, min, max"
    )
    generated_accuracy: dict[str, float] | None = Field(
        default=None, description="test accuracy of generated networks: mean, std, min, max"
    )
    sampler: dict[str, Any] | None = Field(default=None, description="default ODE method and steps")
    card: dict[str, Any] = Field(description="the whole card.json")


class ArchitectureList(BaseModel):
    architectures: list[ArchitectureCard]


class Problem(BaseModel):
    """RFC 9457 problem details (media type application/problem+json)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="validation errors (each `loc` names a field)"
    )
