"""The input contract of a generated network: what raw input it takes and how to prepare it.

It travels with every generator card, every `/architectures` entry and every result file,
so a downloaded network is usable without this repository's dataset code:

    x = raw inputs, shape (N, *shape), values of `dtype` within `value_range`
    inputs = (x / scale - mean) / std        # mean and std: one number, or one per feature
    logits = network(inputs)                 # (N, len(classes))
"""

import json

from pydantic import BaseModel, ConfigDict, Field


class Standardize(BaseModel):
    """`(x / scale - mean) / std`; `mean` and `std` are scalars or one value per feature (the
    flattened input), as for tabular data."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field(default="standardize", pattern="^standardize$")
    scale: float = 1.0
    mean: float | list[float] = 0.0
    std: float | list[float] = 1.0

    def formula(self) -> str:
        if isinstance(self.mean, list):
            return f"(x / {self.scale:g} - mean[f]) / std[f] per feature f (the lists in `preprocessing`)"
        return f"(x / {self.scale:g} - {self.mean:.6g}) / {self.std:.6g}"


class InputContract(BaseModel):
    """Raw input, its preprocessing, and what the outputs mean."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str = Field(description="the dataset the networks were trained on")
    shape: list[int] = Field(description="one raw example, without the batch axis")
    dtype: str = Field(description="dtype of the raw values, e.g. uint8 or float32")
    value_range: list[float] = Field(description="[low, high] of the raw values")
    preprocessing: Standardize
    classes: list[str] = Field(description="class name of each output logit, in order")
    trained_on: str = Field(description="which examples the zoo members were trained on")
    saw_validation: bool = Field(
        default=False,
        description="the zoo members were trained on (part of) the validation split, so validation "
        "accuracies are not held-out figures",
    )

    def usage(self) -> str:
        """One line telling a user how to feed a network."""
        shape = ", ".join(str(s) for s in self.shape)
        low, high = self.value_range
        caveat = "; validation accuracy is not held out (the zoo saw it)" if self.saw_validation else ""
        return (
            f"x: {self.dtype} (N, {shape}) in [{low:g}, {high:g}] ({self.dataset}); "
            f"feed {self.preprocessing.formula()}; logits (N, {len(self.classes)}) over classes "
            + ", ".join(self.classes)
            + caveat
        )

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "InputContract":
        return cls.model_validate(json.loads(text))
