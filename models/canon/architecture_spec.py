"""The permutation spec of an Architecture: hand-written for the built-in families, traced and
checked for plugins."""

from functools import cache

from models.architectures import Architecture

from .invariance import check_permutation_invariance
from .spec import SPEC_BUILDERS, PermutationSpec
from .trace import trace_spec


@cache
def traced_spec(architecture: Architecture) -> PermutationSpec:
    """The spec traced from a freshly built module, once it passed the permutation-invariance test.

    Raises TraceError (models.canon.trace) or PermutationInvarianceError (models.canon.invariance).
    """
    spec = trace_spec(architecture.build(), architecture.input_shape)
    check_permutation_invariance(architecture.build, spec, architecture.input_shape, architecture.name)
    return spec


def spec_for(architecture: Architecture) -> PermutationSpec:
    """The permutation spec of a registered, plugin or ad hoc Architecture."""
    if architecture.builder is not None:
        return traced_spec(architecture)
    try:
        builder = SPEC_BUILDERS[architecture.family]
    except KeyError:
        raise ValueError(
            f"no permutation spec for family {architecture.family!r}; known: {', '.join(SPEC_BUILDERS)}. "
            "An architecture of another family sets `builder` to its module class and gets a traced spec"
        ) from None
    return builder(architecture.config)
