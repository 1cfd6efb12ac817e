"""ODE samplers: integrate dx/dt = v(x, t) from t = 0 (noise) to t = 1 (codes).

Fixed-step explicit Runge-Kutta methods on the uniform grid t_k = k / steps:
`euler` (order 1, one velocity call per step), `midpoint` (order 2, two calls)
and `rk4` (classical, order 4, four calls).

`generate_codes` draws the noise before any integration with `noise_rows`: row i
comes from its own CPU generator seeded by (seed, i), so it depends on the seed
and its index alone, and drawing a slice of the stream costs only its own rows. Matrix
kernels choose their summation order by the batch shape, so a row's velocity
can differ in the last bit between batches of different sizes; the network
therefore always sees blocks of exactly BLOCK_ROWS rows at fixed row offsets
(the last block zero-padded). On one machine the codes are then bit-identical
for every chunk size, and the first n codes of a request for N > n codes equal
a request for n codes. Across devices they agree up to floating-point rounding.
"""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from models.weightspace import eval_mode

# (x (N, d), t (1,): one time for every row) -> (N, d); the velocity network broadcasts t, so its
# time embedding is computed once per call, not once per row
VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Progress = Callable[[int, int], None]  # (codes done, codes total)
BLOCK_ROWS = 64  # rows per network call in generate_codes
PARALLEL_ROW_DIM = 4096  # noise_rows draws rows at least this long on several threads
ODE_STREAM = 0  # noise_rows stream of the ODE's starting points (models.generator uses others)


def noise_rows(count: int, dim: int, seed: int, start: int = 0, stream: int = ODE_STREAM) -> torch.Tensor:
    """N(0, I) rows (count, dim) float32: rows start .. start + count - 1 of the stream (seed, stream).

    Row i is drawn from a CPU generator seeded by numpy's SeedSequence((seed, stream, i)), so it
    depends on those three numbers alone: any slice of a stream equals the same rows of a longer one.
    """
    if seed < 0 or start < 0:
        raise ValueError(f"seed and start must be >= 0, got {seed} and {start}")
    rows = torch.empty(count, dim)

    def fill(first: int, step: int) -> None:
        generator = torch.Generator()
        for offset in range(first, count, step):
            entropy = np.random.SeedSequence((seed, stream, start + offset)).generate_state(2, np.uint32)
            generator.manual_seed(int(entropy[0]) << 32 | int(entropy[1]))
            torch.randn(dim, generator=generator, out=rows[offset])

    # long rows (residual noise over every weight) are drawn on torch's threads at once: each row
    # has its own generator, so the rows are the same whatever the thread count
    workers = min(torch.get_num_threads(), count) if dim >= PARALLEL_ROW_DIM else 1
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(fill, range(workers), [workers] * workers))
    else:
        fill(0, 1)
    return rows


def euler_step(v: VelocityFn, x: torch.Tensor, t: float, h: float) -> torch.Tensor:
    """One Euler step of size h from time t: x (N, d) -> (N, d)."""
    return x + h * v(x, _times(x, t))


def midpoint_step(v: VelocityFn, x: torch.Tensor, t: float, h: float) -> torch.Tensor:
    """One explicit midpoint step of size h from time t: x (N, d) -> (N, d)."""
    half = x + (h / 2) * v(x, _times(x, t))
    return x + h * v(half, _times(x, t + h / 2))


def rk4_step(v: VelocityFn, x: torch.Tensor, t: float, h: float) -> torch.Tensor:
    """One classical Runge-Kutta step of size h from time t: x (N, d) -> (N, d)."""
    k1 = v(x, _times(x, t))
    k2 = v(x + (h / 2) * k1, _times(x, t + h / 2))
    k3 = v(x + (h / 2) * k2, _times(x, t + h / 2))
    k4 = v(x + h * k3, _times(x, t + h))
    return x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)


METHODS: dict[str, Callable[[VelocityFn, torch.Tensor, float, float], torch.Tensor]] = {
    "euler": euler_step,
    "midpoint": midpoint_step,
    "rk4": rk4_step,
}


def _times(x: torch.Tensor, t: float) -> torch.Tensor:
    """The scalar time t as a (1,) tensor matching x's dtype and device (broadcast over the rows)."""
    return torch.full((1,), t, dtype=x.dtype, device=x.device)


def sample(velocity_fn: VelocityFn, x0: torch.Tensor, method: str = "rk4", steps: int = 20) -> torch.Tensor:
    """Integrate from x0 (N, d) at t = 0 to t = 1 with `steps` steps of `method`; returns x1 (N, d)."""
    if method not in METHODS:
        raise ValueError(f"unknown ODE method {method!r}; choose one of {sorted(METHODS)}")
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    step = METHODS[method]
    h = 1.0 / steps
    x = x0
    for k in range(steps):
        x = step(velocity_fn, x, k * h, h)
    return x


def fixed_block_velocity(model: nn.Module) -> VelocityFn:
    """v(x, t) calling `model` on consecutive slices of exactly BLOCK_ROWS rows (len(x) % BLOCK_ROWS == 0),
    each with the one time t (1,)."""

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.cat([model(x[s : s + BLOCK_ROWS], t) for s in range(0, len(x), BLOCK_ROWS)])

    return velocity


def generate_codes(
    model: nn.Module,
    count: int,
    dim: int,
    seed: int,
    method: str = "rk4",
    steps: int = 20,
    chunk_size: int = 1024,
    device: torch.device | str | None = None,
    progress: Progress | None = None,
    start: int = 0,
) -> torch.Tensor:
    """`count` codes (count, dim), float32 on CPU, from seeded N(0, I) noise through the flow:
    rows start .. start + count - 1 of the seed's stream (`noise_rows`).

    `model` is a velocity network v(x, t) already on `device` (default: the device
    of its parameters). It runs in eval mode without gradients. The ODE state is
    integrated `chunk_size` rows at a time (rounded down to a multiple of
    BLOCK_ROWS, at least BLOCK_ROWS); `progress(done, count)` is called after each chunk.
    """
    if count < 0 or chunk_size < 1:
        raise ValueError(f"count must be >= 0 and chunk_size >= 1, got {count} and {chunk_size}")
    model_device = next(model.parameters()).device
    wanted = torch.device(device) if device is not None else model_device
    if wanted.type != model_device.type or wanted.index not in (None, model_device.index):
        raise ValueError(f"the model is on {model_device}, not on the requested device {wanted}")
    padded = -(-count // BLOCK_ROWS) * BLOCK_ROWS
    noise = torch.zeros(padded, dim)
    noise[:count] = noise_rows(count, dim, seed, start)
    rows_per_chunk = max(BLOCK_ROWS, chunk_size // BLOCK_ROWS * BLOCK_ROWS)
    codes = torch.empty(padded, dim)
    with eval_mode(model):
        velocity = fixed_block_velocity(model)
        for start in range(0, padded, rows_per_chunk):
            chunk = noise[start : start + rows_per_chunk].to(model_device)
            codes[start : start + len(chunk)] = sample(velocity, chunk, method, steps).float().cpu()
            if progress is not None:
                progress(min(start + len(chunk), count), count)
    return codes[:count]
