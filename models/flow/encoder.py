"""Weight encoder: flat canonical weights (N, D) <-> flow codes (N, d).

encode = per-tensor standardization -> optional PCA -> coordinate scaling.

- **Per-tensor standardization.** Each state-dict tensor (a segment of the flat
  vector, see `WeightLayout`) gets one mean and one std over all members and all
  its entries. A std of (almost) zero, e.g. a tensor that is constant across the
  zoo, is replaced by 1 so the tensor is only shifted.
- **PCA** (`n_components=None` switches it off; then d = D). Components are the
  top right singular vectors of the centered standardized matrix.
  Size rule (`svd="auto"`): with m = min(K, D) and l = n_components + oversamples,
  an exact thin SVD (`torch.linalg.svd`) costs about K*D*m flops and the
  randomized range finder about (2*power_iterations + 2)*K*D*l. The exact SVD is
  used when K*D*m <= EXACT_SVD_FLOPS (a few seconds on one CPU core) or when the
  randomized one would not be cheaper ((2q + 2)*l >= m); otherwise the seeded
  randomized one. Signs are fixed so that each component's largest-magnitude
  entry is positive, which makes the components reproducible.
  `svd="gram"` (never chosen by "auto") takes the Gram-matrix route of
  `models.flow.gram` instead: for K << D it streams over column blocks and holds
  only the input and the components, where the SVDs above also hold a
  standardized copy of the matrix and their workspace (bench/scale_run.py
  measures both on ResNet-18-sized zoos).
- **Coordinate scaling** (`whiten`), PCA only:
  `"global"` (default) divides all coordinates by one number, the root mean of
  the component variances, so the codes have the same average scale as the flow's
  N(0, I) noise while the geometry stays that of standardized weight space: the
  flow's squared error is proportional to the error in standardized weights, so
  training effort goes where the weights actually vary.
  `"component"` divides each coordinate by its own std (classic whitening):
  every direction, also the low-variance tail that is mostly zoo noise, weighs
  the same in the loss. `"none"` keeps raw PCA coordinates (the top ones can be
  tens of times larger than the noise).
- **float16 components** (`components_dtype="float16"`) halve the artifact. They
  are rounded once at fit time, so a fitted and a reloaded encoder agree exactly.
  Rounding costs a relative reconstruction error (Frobenius, standardized space)
  below FLOAT16_RECONSTRUCTION_TOLERANCE on the span.
"""

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from models.weightspace import WeightLayout

from .gram import gram_pca

EXACT_SVD_FLOPS = 2e10
ZERO_STD = 1e-8  # a per-tensor std below this is treated as zero (replaced by 1)
ZERO_COMPONENT_STD = 1e-6  # relative to the top component: directions without data keep scale 1
FLOAT16_RECONSTRUCTION_TOLERANCE = 1e-3  # measured about 2e-4, independent of D
FORMAT = "deepweightflow.encoder/1"


@dataclass(frozen=True)
class EncoderConfig:
    n_components: int | None = None  # PCA dimension d; None keeps all D standardized coordinates
    whiten: Literal["global", "component", "none"] = "global"  # PCA coordinate scaling, see module doc
    svd: Literal["auto", "exact", "randomized", "gram"] = "auto"  # "auto" applies the size rule
    components_dtype: Literal["float32", "float16"] = "float32"  # storage dtype of the PCA components
    oversamples: int = 10  # randomized SVD: extra random directions beyond n_components
    power_iterations: int = 4  # randomized SVD: subspace iterations (sharpen the spectrum)
    seed: int = 0  # randomized SVD: seed of the random test matrix

    def __post_init__(self) -> None:
        if self.n_components is not None and self.n_components < 1:
            raise ValueError(f"n_components must be positive or None, got {self.n_components}")
        if self.whiten not in ("global", "component", "none"):
            raise ValueError(f"whiten must be 'global', 'component' or 'none', got {self.whiten!r}")
        if self.svd not in ("auto", "exact", "randomized", "gram"):
            raise ValueError(f"svd must be 'auto', 'exact', 'randomized' or 'gram', got {self.svd!r}")
        if self.components_dtype not in ("float32", "float16"):
            raise ValueError(
                f"components_dtype must be 'float32' or 'float16', got {self.components_dtype!r}"
            )


def use_exact_svd(rows: int, cols: int, config: EncoderConfig) -> bool:
    """The size rule of the module docstring for a (rows, cols) matrix."""
    if config.svd != "auto":
        return config.svd == "exact"
    m = min(rows, cols)
    width = config.n_components + config.oversamples
    return rows * cols * m <= EXACT_SVD_FLOPS or (2 * config.power_iterations + 2) * width >= m


def top_right_singular(
    matrix: torch.Tensor, count: int, config: EncoderConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top `count` singular values (count,) and right singular vectors (count, D) of matrix (K, D)."""
    if use_exact_svd(*matrix.shape, config):
        _, values, vh = torch.linalg.svd(matrix, full_matrices=False)
        return values[:count], vh[:count]
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    width = min(count + config.oversamples, min(matrix.shape))
    test = torch.randn(matrix.shape[1], width, generator=generator).to(matrix)  # (D, l)
    basis = torch.linalg.qr(matrix @ test).Q  # (K, l): range of the matrix
    for _ in range(config.power_iterations):
        basis = torch.linalg.qr(matrix @ torch.linalg.qr(matrix.T @ basis).Q).Q
    _, values, vh = torch.linalg.svd(basis.T @ matrix, full_matrices=False)  # (l, D) projection
    return values[:count], vh[:count]


def fix_signs(components: torch.Tensor) -> torch.Tensor:
    """Flip rows of (n, D) so each row's largest-magnitude entry is positive."""
    pivots = components.gather(1, components.abs().argmax(dim=1, keepdim=True))  # (n, 1)
    return components * torch.where(pivots < 0, -1.0, 1.0)


class WeightEncoder:
    """Invertible map between flat weights W (N, D) and codes Z (N, d).

    Tensors (all float32 unless noted):
    - `tensor_sizes` (T,) int64, entries per state-dict tensor, summing to D
    - `tensor_mean`, `tensor_std` (T,): per-tensor standardization
    - with PCA: `pca_mean` (D,), `components` (d, D) in `components_dtype`,
      `coordinate_scale` (d,)
    Build one with `fit` or `load`.
    """

    def __init__(self, config: EncoderConfig, tensors: dict[str, torch.Tensor]):
        self.config = config
        # One memory layout (contiguous), so a fitted and a loaded encoder give the same bits.
        self.tensors = {k: v.contiguous() for k, v in tensors.items()}

    @classmethod
    def fit(
        cls,
        weights: torch.Tensor,
        segments: WeightLayout | Sequence[int],
        config: EncoderConfig | None = None,
    ) -> "WeightEncoder":
        """Fit on weights (K, D) of K canonical members; `segments` is the layout or its `sizes`."""
        config = config or EncoderConfig()
        sizes = torch.tensor(segments.sizes if isinstance(segments, WeightLayout) else list(segments))
        if weights.dim() != 2 or int(sizes.sum()) != weights.shape[1]:
            raise ValueError(
                f"weights must be (K, D) with D = sum of segment sizes = {int(sizes.sum())}, "
                f"got {tuple(weights.shape)}"
            )
        weights = weights.detach().float().cpu()
        stats = [
            (part.double().mean(), part.double().std(correction=0))
            for part in weights.split(sizes.tolist(), 1)
        ]
        mean = torch.stack([m for m, _ in stats]).float()
        std = torch.stack([s for _, s in stats]).float()
        tensors = {
            "tensor_sizes": sizes,
            "tensor_mean": mean,
            "tensor_std": torch.where(std > ZERO_STD, std, torch.ones_like(std)),
        }
        if config.n_components is not None:
            tensors |= cls._fit_pca(weights, cls(config, tensors), config)
        return cls(config, tensors)

    @staticmethod
    def _fit_pca(
        weights: torch.Tensor, standardizer: "WeightEncoder", config: EncoderConfig
    ) -> dict[str, torch.Tensor]:
        """PCA tensors from the training matrix (K, D) and an encoder that only standardizes."""
        rows, cols = weights.shape
        if config.n_components > min(rows, cols):
            raise ValueError(f"n_components={config.n_components} exceeds min(K, D) = {min(rows, cols)}")
        dtype = getattr(torch, config.components_dtype)
        if config.svd == "gram":
            mean, std = standardizer._expanded("tensor_mean"), standardizer._expanded("tensor_std")
            pca_mean, values, components = gram_pca(weights, mean, std, config.n_components, dtype)
        else:
            standardized = standardizer.standardize(weights)
            pca_mean = standardized.mean(dim=0)
            values, components = top_right_singular(standardized.sub_(pca_mean), config.n_components, config)
            components = fix_signs(components).to(dtype)
        component_std = values / max(rows - 1, 1) ** 0.5  # (d,)
        if config.whiten == "component":
            floor = ZERO_COMPONENT_STD * component_std.max()
            scale = torch.where(component_std > floor, component_std, torch.ones_like(component_std))
        elif config.whiten == "global":
            scale = torch.full_like(
                component_std, float(component_std.square().mean().sqrt().clamp_min(ZERO_STD))
            )
        else:
            scale = torch.ones_like(values)
        return {
            "pca_mean": pca_mean,
            "components": components,
            "coordinate_scale": scale,
        }

    @property
    def dim(self) -> int:
        """D, the length of a flat weight vector."""
        return int(self.tensors["tensor_sizes"].sum())

    @property
    def code_dim(self) -> int:
        """d, the length of a code."""
        return self.dim if "components" not in self.tensors else len(self.tensors["components"])

    def _expanded(self, name: str) -> torch.Tensor:
        """A per-tensor statistic repeated over its segment: (T,) -> (D,)."""
        return self.tensors[name].repeat_interleave(self.tensors["tensor_sizes"])

    def standardize(self, weights: torch.Tensor) -> torch.Tensor:
        """Weights (N, D) -> per-tensor standardized (N, D)."""
        return (weights - self._expanded("tensor_mean")).div_(self._expanded("tensor_std"))

    def encode(self, weights: torch.Tensor) -> torch.Tensor:
        """Flat weights (N, D) -> codes (N, d), float32."""
        x = self.standardize(weights.float())
        if "components" not in self.tensors:
            return x
        components = self.tensors["components"].float()  # (d, D)
        return x.sub_(self.tensors["pca_mean"]) @ components.T / self.tensors["coordinate_scale"]

    @cached_property
    def _decoder(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """decode as one affine map, codes @ matrix (d, D) + bias (D,): the coordinate scale, the
        components and the per-tensor std folded into one matrix, so decoding is a single pass
        over the output. None without PCA. Built on the first decode, so that fitting and
        encoding a zoo never hold it beside the components."""
        if "components" not in self.tensors:
            return None
        std = self._expanded("tensor_std")
        matrix = self.tensors["components"].to(torch.float32, copy=True)  # folded in place: one (d, D) copy
        matrix.mul_(self.tensors["coordinate_scale"][:, None]).mul_(std)
        return matrix, self.tensors["pca_mean"] * std + self._expanded("tensor_mean")

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (N, d) -> flat weights (N, D), float32."""
        if self._decoder is not None:
            matrix, bias = self._decoder
            return torch.addmm(bias, codes.float(), matrix)
        return codes.float() * self._expanded("tensor_std") + self._expanded("tensor_mean")

    def to(self, device: torch.device | str) -> "WeightEncoder":
        """A copy whose tensors live on `device`."""
        return WeightEncoder(self.config, {k: v.to(device) for k, v in self.tensors.items()})

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors listed in the class docstring, on CPU."""
        return {k: v.detach().cpu() for k, v in self.tensors.items()}

    def metadata(self) -> dict[str, str]:
        """Safetensors metadata: format tag and the JSON config."""
        return {"format": FORMAT, "config": json.dumps(asdict(self.config))}

    def save(self, path: str | Path) -> None:
        """Write `state_dict()` with `metadata()` to a safetensors file."""
        save_file(self.state_dict(), str(path), metadata=self.metadata())

    @classmethod
    def load(cls, path: str | Path) -> "WeightEncoder":
        """Read an encoder written by `save` (on CPU)."""
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise ValueError(f"{path} is not a {FORMAT} file (format={metadata.get('format')!r})")
        return cls(EncoderConfig(**json.loads(metadata["config"])), load_file(str(path)))
