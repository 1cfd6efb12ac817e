"""PCA through the Gram matrix, streamed over column blocks: for K rows << D columns.

For the standardized, centered matrix X (K, D), G = X X^T (K, K) has eigenvalues
s_i^2 and eigenvectors u_i, where s_i are X's singular values and u_i its left
singular vectors; the right singular vectors (the PCA components) are
v_i = X^T u_i / s_i. Both G and the components are built one block of columns
at a time from the raw weights, standardizing and centering each block on the
fly. Besides the input, only the (d, D) components in their storage dtype and
one block's temporaries are held: no standardized copy of the matrix and no SVD
workspace. Cost: two passes, about 2 K^2 D + 2 d K D flops.

G is accumulated in float64: an eigenvalue's absolute error is about
1e-16 * s_1^2, so s_i and v_i keep a relative accuracy of about
1e-16 * (s_1 / s_i)^2. A component with s_i below ZERO_SINGULAR * s_1 (the data
has fewer directions than asked for) is an error rather than noise.
"""

import torch

BLOCK_COLUMNS = 1 << 16  # columns standardized at a time: (K, 65,536) float64 is 52 MB for K = 100
ZERO_SINGULAR = 1e-6  # relative to s_1


def column_blocks(dim: int, width: int) -> list[slice]:
    """Consecutive slices of at most `width` columns covering range(dim)."""
    return [slice(start, min(start + width, dim)) for start in range(0, dim, width)]


def gram_pca(
    weights: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    count: int,
    dtype: torch.dtype,
    block_columns: int = BLOCK_COLUMNS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top `count` principal directions of (weights - mean) / std.

    weights (K, D); mean, std (D,) per-column standardization. Returns the column
    means of the standardized matrix (D,) float32, the singular values of the
    centered standardized matrix (count,) float32, and the components (count, D)
    in `dtype`, each row's largest-magnitude entry positive (as `fix_signs`).
    """
    rows, dim = weights.shape
    blocks = column_blocks(dim, block_columns)
    pca_mean = torch.empty(dim)
    gram = torch.zeros(rows, rows, dtype=torch.float64)
    for cols in blocks:
        block = ((weights[:, cols] - mean[cols]) / std[cols]).double()  # (K, B)
        pca_mean[cols] = block.mean(dim=0).float()
        block -= pca_mean[cols].double()
        gram.addmm_(block, block.T)
    eigenvalues, eigenvectors = torch.linalg.eigh(gram)  # ascending
    values = eigenvalues.flip(0)[:count].clamp_min(0).sqrt()  # (count,)
    if values[-1] <= ZERO_SINGULAR * values[0]:
        raise ValueError(
            f"the data spans fewer than n_components={count} directions; ask for fewer components"
        )
    projector = (eigenvectors.flip(1)[:, :count] / values).T  # (count, K): row i is u_i / s_i
    components = torch.empty(count, dim, dtype=dtype)
    peak = torch.zeros(count)  # largest |entry| of each component so far, and its sign
    sign = torch.ones(count)
    for cols in blocks:
        block = ((weights[:, cols] - mean[cols]) / std[cols]).double() - pca_mean[cols].double()
        part = (projector @ block).float()  # (count, B)
        magnitude, where = part.abs().max(dim=1)
        larger = magnitude > peak  # strict: the first occurrence wins, as with argmax
        peak = torch.where(larger, magnitude, peak)
        sign = torch.where(larger, part.gather(1, where[:, None]).squeeze(1).sign(), sign)
        components[:, cols] = part.to(dtype)
    return pca_mean, values.float(), components.mul_(sign[:, None].to(dtype))
