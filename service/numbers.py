"""Integers as JSON Schema means them: `2` and `2.0` are the same integer, `2.5`, `"2"` and `true` are not.

pydantic's strict int refuses `2.0`, although JSON Schema's `integer` includes it (and a fuzzer
generating from the schema sends it); its lax int takes `"2"` and `true`, which the schema rejects.
`WholeNumber` takes ints and floats with an integral value and refuses everything else, NaN and
the infinities included; its JSON Schema is still `{"type": "integer"}`.

Give bounds with `whole_number(ge=..., le=...)` rather than `Field(ge=...)` on an optional field:
pydantic writes bounds applied around a validator of an optional field as `ge`/`le` in the JSON
Schema instead of `minimum`/`maximum`; inside the type they land on the integer itself.
"""

import math
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, StrictInt
from pydantic_core import PydanticCustomError


def _whole(value: Any) -> Any:
    """An integral float as its int; any other float is refused here, anything else left to StrictInt."""
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        raise PydanticCustomError(
            "int_from_float", "Input should be a whole number (an integer, or a float without a fraction)"
        )
    return value


WholeNumber = Annotated[StrictInt, BeforeValidator(_whole)]


def whole_number(*, ge: int | None = None, le: int | None = None) -> Any:
    """`WholeNumber` between `ge` and `le` (inclusive; None: unbounded), documented as integer bounds."""
    return Annotated[StrictInt, Field(ge=ge, le=le), BeforeValidator(_whole)]
