"""Permutation symmetries of weight space: specs as plain data, Git Re-Basin weight
matching, TransFusion for attention heads, and zoo canonicalization."""

from .architecture_spec import spec_for
from .canonicalize import CanonicalizationResult, canonicalize
from .matching import MatchingResult, match_stacked, run_weight_matching, weight_matching
from .permute import (
    Permutations,
    apply_member_permutations,
    apply_permutation,
    identity_permutation,
    perm_sizes,
    random_permutation,
)
from .spec import (
    HeadGroup,
    PermutationSpec,
    cnn_spec,
    mlp_spec,
    resnet_spec,
    vit_spec,
)

__all__ = [
    "CanonicalizationResult",
    "HeadGroup",
    "MatchingResult",
    "PermutationSpec",
    "Permutations",
    "apply_member_permutations",
    "apply_permutation",
    "canonicalize",
    "cnn_spec",
    "identity_permutation",
    "match_stacked",
    "mlp_spec",
    "perm_sizes",
    "random_permutation",
    "resnet_spec",
    "run_weight_matching",
    "spec_for",
    "vit_spec",
    "weight_matching",
]
