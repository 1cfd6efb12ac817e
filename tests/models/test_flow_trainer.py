"""Velocity network, path and loss, OT pairing, the trainer (real learning on a toy mixture), loss plot."""

import itertools
from pathlib import Path

import matplotlib.image
import pytest
import torch

from models.flow.path import cfm_loss, optimal_transport_pairing, sample_path
from models.flow.plotting import plot_loss_curve
from models.flow.samplers import generate_codes
from models.flow.trainer import FlowTrainConfig, learning_rate_factor, train_flow
from models.flow.velocity import VelocityConfig, VelocityMLP, load_velocity, save_velocity

DIM = 8
SMALL_NET = VelocityConfig(dim=DIM, hidden=64, time_embed_dim=16, dropout=0.0)


def mixture(count: int, seed: int) -> torch.Tensor:
    """(count, 8): four well-separated Gaussian clusters (std 0.3) around (1, ..., 1)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.ones(4, DIM)
    centers[0, 0], centers[1, 0], centers[2, 1], centers[3, 1] = 4.0, -2.0, 4.0, -2.0
    return centers[torch.randint(4, (count,), generator=g)] + 0.3 * torch.randn(count, DIM, generator=g)


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    return (2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()).item()


def test_velocity_starts_at_zero_and_has_the_right_shapes() -> None:
    model = VelocityMLP(VelocityConfig(dim=5, hidden=32, depth=3))
    out = model(torch.randn(7, 5), torch.rand(7))
    assert out.shape == (7, 5) and torch.equal(out, torch.zeros(7, 5))
    assert len(model.blocks) == 3 and model.blocks[0].down.out_features == 16


def test_one_time_for_every_row_equals_the_time_repeated_per_row() -> None:
    torch.manual_seed(0)
    model = VelocityMLP(VelocityConfig(dim=5, hidden=32, depth=2)).eval()
    torch.nn.init.normal_(model.out.weight)  # a non-zero velocity
    x = torch.randn(7, 5)
    with torch.no_grad():
        torch.testing.assert_close(model(x, torch.full((1,), 0.3)), model(x, torch.full((7,), 0.3)))


def test_velocity_save_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = VelocityMLP(VelocityConfig(dim=5, hidden=32))
    torch.nn.init.normal_(model.out.weight)
    save_velocity(model, tmp_path / "flow.safetensors", extra_metadata={"note": "hi"})
    loaded = load_velocity(tmp_path / "flow.safetensors")
    assert loaded.config == model.config and not loaded.training
    x, t = torch.randn(4, 5), torch.rand(4)
    assert torch.equal(loaded(x, t), model.eval()(x, t))


def test_untrained_loss_is_the_squared_path_velocity() -> None:
    x1 = torch.randn(32, 4)
    loss = cfm_loss(VelocityMLP(VelocityConfig(dim=4, hidden=16)), x1, torch.Generator().manual_seed(3))
    path = sample_path(x1, torch.Generator().manual_seed(3))
    assert loss.item() == pytest.approx((path.x1 - path.x0).square().mean().item())
    torch.testing.assert_close(path.xt, (1 - path.t[:, None]) * path.x0 + path.t[:, None] * x1)


def test_minibatch_ot_repairs_the_same_noise_at_lower_cost() -> None:
    x1 = mixture(64, seed=0)
    plain = sample_path(x1, torch.Generator().manual_seed(5))
    paired = sample_path(x1, torch.Generator().manual_seed(5), minibatch_ot=True)
    assert torch.equal(plain.t, paired.t)
    assert not torch.equal(plain.x0, paired.x0)
    assert torch.equal(
        plain.x0[plain.x0[:, 0].argsort()], paired.x0[paired.x0[:, 0].argsort()]
    )  # a permutation
    cost = (plain.target.square().sum(1).mean(), paired.target.square().sum(1).mean())
    assert cost[1] < 0.8 * cost[0]


def test_optimal_transport_pairing_is_the_brute_force_optimum() -> None:
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    best = min((x0[list(p)] - x1).square().sum().item() for p in itertools.permutations(range(6)))
    assert (optimal_transport_pairing(x0, x1) - x1).square().sum().item() == pytest.approx(best)


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    assert learning_rate_factor(0, 10, 100) == pytest.approx(0.1)
    assert learning_rate_factor(9, 10, 100) == pytest.approx(1.0)
    assert learning_rate_factor(10, 10, 100) == pytest.approx(1.0)
    assert learning_rate_factor(55, 10, 100) == pytest.approx(0.5)
    assert learning_rate_factor(100, 10, 100) == pytest.approx(0.0, abs=1e-12)


def test_trained_flow_matches_the_data_distribution(tmp_path: Path) -> None:
    data, held_out = mixture(512, seed=0), mixture(1000, seed=1)
    config = FlowTrainConfig(
        iterations=300, batch_size=128, lr=3e-3, warmup=20, ema_decay=0.99, device="cpu", log_every=100
    )
    reports = []
    trained = train_flow(data, config, SMALL_NET, progress=lambda *r: reports.append(r))
    assert [r[:2] for r in reports] == [(100, 300), (200, 300), (300, 300)]
    assert len(trained.history) == 300 and not trained.model.training
    assert sum(trained.history[-50:]) < 0.7 * sum(trained.history[:50])

    samples = generate_codes(trained.model, 1000, DIM, seed=2, steps=10)
    untrained = generate_codes(VelocityMLP(SMALL_NET), 1000, DIM, seed=2, steps=10)  # = its noise
    assert energy_distance(samples, held_out) < 0.05 * energy_distance(untrained, held_out)
    assert (samples.mean(0) - held_out.mean(0)).norm() < 0.5
    covariance = torch.cov(held_out.T)
    assert (torch.cov(samples.T) - covariance).norm() < 0.15 * covariance.norm()

    plot_loss_curve(trained.history, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(tmp_path / "loss.png").shape == (400, 640, 4)


def test_training_is_deterministic_for_a_seed() -> None:
    data = mixture(64, seed=0)
    net = VelocityConfig(dim=DIM, hidden=32, time_embed_dim=8, dropout=0.2)

    def run(seed: int) -> tuple[dict[str, torch.Tensor], list[float]]:
        config = FlowTrainConfig(
            iterations=30, batch_size=48, warmup=5, minibatch_ot=True, seed=seed, device="cpu"
        )
        trained = train_flow(data, config, net)
        return trained.model.state_dict(), trained.history

    (first, history), (second, history_again), (other, _) = run(0), run(0), run(1)
    assert history == history_again
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["in_proj.weight"], other["in_proj.weight"])


def test_codes_of_the_wrong_width_are_rejected() -> None:
    with pytest.raises(ValueError, match="codes must be"):
        train_flow(torch.randn(10, 3), FlowTrainConfig(iterations=1, device="cpu"), SMALL_NET)
