"""A job result file's metadata: what `__metadata__` of the safetensors file holds, typed.

safetensors metadata is a string -> string map; `ResultMetadata.to_strings` and
`from_strings` are the one place that turns it into typed fields and back.
`read_result_metadata` reads it from a file's header without torch.
"""

import json
import os
import struct
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from contract.inputs import InputContract

HEADER_LIMIT = 100_000_000  # bytes: a larger safetensors header is not a result file
SCREENING_FIELDS = ("screening_candidates", "screening_accepted", "screening_filled")


class ResultMetadata(BaseModel):
    """Who made a result file, how, and how to use it (DESIGN.md section 4)."""

    model_config = ConfigDict(frozen=True)

    format: str = "pt"
    job_id: str | None = None
    architecture: str
    generator_version: str
    count: int
    seed: int
    sampler: str
    steps: int
    val_accuracy: list[float] | None = None  # per network, on the artifact's validation batch
    screening_candidates: int | None = None  # candidates drawn (screening generators only)
    screening_accepted: int | None = None  # of them, as accurate as the zoo on training images
    screening_filled: int | None = None  # networks filled with the best rejected candidates
    input_contract: InputContract | None = None  # None only in files written before it existed

    def to_strings(self) -> dict[str, str]:
        """The safetensors `__metadata__` map (unset fields left out)."""
        strings = {
            key: str(value)
            for key, value in self.model_dump(exclude={"val_accuracy", "input_contract"}).items()
            if value is not None
        }
        if self.val_accuracy is not None:
            strings["val_accuracy"] = json.dumps([round(a, 6) for a in self.val_accuracy])
        if self.input_contract is not None:
            strings["input_contract"] = self.input_contract.to_json()
            strings["usage"] = self.input_contract.usage()
        return strings

    @classmethod
    def from_strings(cls, strings: dict[str, str]) -> "ResultMetadata":
        """Parse a `__metadata__` map (ValueError naming what is missing or malformed)."""
        if "architecture" not in strings:
            raise ValueError("not a DeepWeightFlow result: its metadata names no architecture")
        fields = {k: v for k, v in strings.items() if k in cls.model_fields and k != "usage"}
        if "val_accuracy" in fields:
            fields["val_accuracy"] = json.loads(fields["val_accuracy"])
        if "input_contract" in fields:
            fields["input_contract"] = InputContract.from_json(fields["input_contract"])
        return cls.model_validate(fields)

    def screening_counts(self) -> dict[str, int] | None:
        """{"candidates", "accepted", "filled"} when the generator screened, else None."""
        if self.screening_candidates is None:
            return None
        return {name.removeprefix("screening_"): getattr(self, name) for name in SCREENING_FIELDS}


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The `__metadata__` map of a safetensors file, from its JSON header (no tensors read)."""
    with Path(path).open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path} is not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", prefix)
        if length > HEADER_LIMIT:
            raise ValueError(f"{path} is not a safetensors file (header of {length} bytes)")
        header = json.loads(handle.read(length))
    return header.get("__metadata__") or {}


def read_result_metadata(path: str | os.PathLike) -> ResultMetadata:
    """The typed metadata of the result file at `path`."""
    try:
        return ResultMetadata.from_strings(read_safetensors_metadata(path))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
