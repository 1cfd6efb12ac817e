"""ODE samplers against exact solutions, and seeded code generation."""

import math

import pytest
import torch
from torch import nn

from models.flow.samplers import METHODS, PARALLEL_ROW_DIM, generate_codes, noise_rows, sample
from models.flow.velocity import VelocityConfig, VelocityMLP

ORDERS = {"euler": 1, "midpoint": 2, "rk4": 4}


def x0() -> torch.Tensor:
    return torch.randn(16, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize("method", METHODS)
def test_constant_field_is_exact_for_every_method(method: str) -> None:
    c = torch.linspace(-2, 3, 5, dtype=torch.float64)
    out = sample(lambda x, t: c.expand_as(x), x0(), method=method, steps=3)
    torch.testing.assert_close(out, x0() + c, rtol=0, atol=1e-12)


def linear_error(method: str, steps: int, a: float = 1.0) -> float:
    exact = x0() * math.exp(a)
    return (
        (sample(lambda x, t: a * x, x0(), method=method, steps=steps) - exact).norm() / exact.norm()
    ).item()


@pytest.mark.parametrize("method", METHODS)
def test_linear_field_converges_at_the_method_order(method: str) -> None:
    # Halving the step divides the global error by about 2**order.
    for steps in (8, 16):
        ratio = linear_error(method, steps) / linear_error(method, 2 * steps)
        assert ratio == pytest.approx(2 ** ORDERS[method], rel=0.15)


def test_rk4_with_20_steps_is_accurate() -> None:
    assert linear_error("rk4", 20) < 1e-6
    assert linear_error("rk4", 20, a=-1.5) < 1e-6


@pytest.mark.parametrize("method", METHODS)
def test_time_is_passed_once_per_stage(method: str) -> None:
    seen = []

    def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.shape == (1,) and t.dtype == x.dtype
        seen.append(t[0].item())
        return t[:, None].expand_as(x)  # (1, 1) broadcast over the rows

    steps = 4
    out = sample(v, x0(), method=method, steps=steps)
    # dx/dt = t integrates to x0 + 1/2; left-point Euler gives sum_k k h^2 = (1 - h) / 2.
    expected_shift = (1 - 1 / steps) / 2 if method == "euler" else 0.5
    torch.testing.assert_close(out, x0() + expected_shift, rtol=0, atol=1e-12)
    h = 1 / steps
    stage_offsets = {"euler": (0,), "midpoint": (0, h / 2), "rk4": (0, h / 2, h)}[method]
    assert sorted(set(seen)) == sorted({k * h + o for k in range(steps) for o in stage_offsets})


def test_rk4_stage_times_integrate_a_quadratic_exactly() -> None:
    # Simpson's rule is exact for t^2: x1 = x0 + 1/3. Midpoint is not.
    out = sample(lambda x, t: (t**2)[:, None].expand_as(x), x0(), method="rk4", steps=2)
    torch.testing.assert_close(out, x0() + 1 / 3, rtol=0, atol=1e-12)
    midpoint = sample(lambda x, t: (t**2)[:, None].expand_as(x), x0(), method="midpoint", steps=2)
    assert (midpoint - x0() - 1 / 3).abs().max() > 1e-3


def test_unknown_method_and_bad_steps_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown ODE method"):
        sample(lambda x, t: x, x0(), method="heun")
    with pytest.raises(ValueError, match="steps"):
        sample(lambda x, t: x, x0(), steps=0)


def random_velocity(dim: int = 6) -> VelocityMLP:
    torch.manual_seed(0)
    model = VelocityMLP(VelocityConfig(dim=dim, hidden=32, dropout=0.5))
    nn.init.normal_(model.out.weight, std=0.3)  # a non-zero field, so integration matters
    return model


def test_generate_codes_is_seeded_and_chunk_independent() -> None:
    model = random_velocity()
    reference = generate_codes(model, 200, 6, seed=7, method="midpoint", steps=5, chunk_size=200)
    assert reference.shape == (200, 6) and reference.dtype == torch.float32
    assert torch.equal(reference, generate_codes(model, 200, 6, seed=7, method="midpoint", steps=5))
    for chunk_size in (1, 64, 130, 1000):
        out = generate_codes(model, 200, 6, seed=7, method="midpoint", steps=5, chunk_size=chunk_size)
        assert torch.equal(out, reference), chunk_size
    assert not torch.allclose(generate_codes(model, 200, 6, seed=8, method="midpoint", steps=5), reference)
    # A smaller request is a prefix of a larger one.
    assert torch.equal(generate_codes(model, 5, 6, seed=7, method="midpoint", steps=5), reference[:5])
    assert generate_codes(model, 0, 6, seed=7).shape == (0, 6)
    # Any slice of the stream: rows start.. equal the same rows of a longer request.
    later = generate_codes(model, 70, 6, seed=7, method="midpoint", steps=5, start=130)
    assert torch.equal(later, reference[130:])
    assert model.training, "the model's train/eval mode is restored"


def test_noise_rows_depend_on_seed_stream_and_index_alone() -> None:
    rows = noise_rows(50, 1000, seed=3)
    assert rows.shape == (50, 1000) and rows.dtype == torch.float32
    assert torch.equal(noise_rows(20, 1000, seed=3, start=30), rows[30:])
    assert abs(rows.mean().item()) < 0.01 and abs(rows.std().item() - 1) < 0.01  # N(0, 1)
    other_seed, other_stream = noise_rows(50, 1000, seed=4), noise_rows(50, 1000, seed=3, stream=1)
    for other in (other_seed, other_stream):  # independent draws, not shifted copies
        assert abs(torch.corrcoef(torch.stack([rows.flatten(), other.flatten()]))[0, 1]) < 0.01
    assert abs(torch.corrcoef(rows)[0, 1:].abs().max().item()) < 0.15  # rows differ from each other
    with pytest.raises(ValueError, match="seed and start must be >= 0"):
        noise_rows(1, 3, seed=-1)


def test_long_noise_rows_are_the_same_on_any_number_of_threads() -> None:
    dim = PARALLEL_ROW_DIM  # long enough to be drawn on several threads
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = noise_rows(7, dim, seed=2, start=5)
        torch.set_num_threads(3)
        three = noise_rows(7, dim, seed=2, start=5)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, three)
    # row by row, each its own draw: the 4th row of the slice is row 8 of the stream alone
    assert torch.equal(noise_rows(1, dim, seed=2, start=8)[0], three[3])


def test_generate_codes_integrates_the_model_and_reports_progress() -> None:
    model = random_velocity()
    calls = []
    codes = generate_codes(
        model, 150, 6, seed=1, steps=4, chunk_size=64, progress=lambda d, n: calls.append((d, n))
    )
    assert calls == [(64, 150), (128, 150), (150, 150)]
    noise = noise_rows(150, 6, seed=1)
    with torch.no_grad():
        expected = sample(model.eval(), noise, "rk4", 4)
    torch.testing.assert_close(codes, expected)
    nn.init.zeros_(model.out.weight)
    nn.init.zeros_(model.out.bias)
    torch.testing.assert_close(generate_codes(model, 150, 6, seed=1), noise, rtol=0, atol=0)


def test_generate_codes_rejects_a_device_the_model_is_not_on() -> None:
    with pytest.raises(ValueError, match="requested device"):
        generate_codes(random_velocity(), 2, 6, seed=0, device="meta")
