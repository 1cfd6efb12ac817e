"""service.numbers: integers as JSON Schema means them."""

import math

import pytest
from pydantic import BaseModel, Field, ValidationError

from service.numbers import WholeNumber, whole_number


class Request(BaseModel):
    count: WholeNumber = Field(ge=1)
    seed: whole_number(ge=0, le=2**32 - 1) | None = None
    steps: whole_number(ge=1) | None = None


@pytest.mark.parametrize("value", [2, 2.0, 1e3, 4294967295.0])
def test_ints_and_integral_floats_are_ints(value: float) -> None:
    request = Request(count=value, seed=value, steps=value)
    assert request.count == request.seed == request.steps == int(value)
    assert all(type(v) is int for v in (request.count, request.seed, request.steps))


@pytest.mark.parametrize(
    "value", [2.5, -0.5, math.nan, math.inf, -math.inf, float("1e400"), "2", "2.0", True, False, None, [2]]
)
def test_everything_else_is_refused(value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        Request(count=value)
    assert [e["loc"] for e in caught.value.errors()] == [("count",)]


def test_bounds_hold_for_floats_too() -> None:
    for field, value in (("count", 0.0), ("seed", -1.0), ("seed", 2.0**32), ("steps", 0)):
        with pytest.raises(ValidationError):
            Request(**{"count": 1, field: value})


def test_the_schema_says_integer_with_its_bounds() -> None:
    properties = Request.model_json_schema()["properties"]
    assert properties["count"] == {"minimum": 1, "title": "Count", "type": "integer"}
    assert properties["seed"]["anyOf"][0] == {"minimum": 0, "maximum": 2**32 - 1, "type": "integer"}
    assert properties["steps"]["anyOf"][0] == {"minimum": 1, "type": "integer"}
