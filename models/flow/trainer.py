"""Train a velocity network on codes with conditional flow matching.

AdamW with a linear warmup then a cosine decay to zero, gradient-norm clipping,
and an exponential moving average (EMA) of the weights, which is the result.
The EMA decay ramps up as min(decay, (1 + n) / (10 + n)) after n updates so that
short runs are not pulled back toward the initialization.

Deterministic on CPU for a fixed seed: the initialization and dropout use the
seeded global generator inside `torch.random.fork_rng` (the caller's RNG state
is untouched), minibatches, noise and times a seeded CPU generator.
"""

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .path import cfm_loss
from .velocity import VelocityConfig, VelocityMLP

TrainProgress = Callable[[int, int, float], None]  # (iterations done, total, mean loss since last call)


@dataclass(frozen=True)
class FlowTrainConfig:
    iterations: int = 10_000  # optimizer steps
    batch_size: int = 128  # codes per step (drawn without replacement, epoch after epoch)
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    warmup: int = 200  # linear warmup steps before the cosine decay
    ema_decay: float = 0.999  # final decay of the weight EMA
    grad_clip: float = 1.0  # max global gradient norm
    minibatch_ot: bool = False  # pair noise to data by exact OT within each minibatch
    seed: int = 0
    device: str = "auto"  # "auto" = CUDA when present, else CPU; or any torch device string
    log_every: int = 100  # steps between progress calls

    def __post_init__(self) -> None:
        if min(self.iterations, self.batch_size, self.log_every) < 1 or self.warmup < 0:
            raise ValueError(f"iterations, batch_size and log_every must be positive, warmup >= 0: {self}")


@dataclass
class TrainedFlow:
    model: VelocityMLP  # EMA weights, eval mode, on the training device
    velocity_config: VelocityConfig
    config: FlowTrainConfig
    history: list[float]  # training loss at every step (of the raw, not the EMA, weights)


def resolve_device(name: str) -> torch.device:
    """ "auto" -> cuda if available else cpu; anything else as torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def learning_rate_factor(step: int, warmup: int, total: int) -> float:
    """Multiplier of the peak lr at `step`: linear warmup to 1, then cosine to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def minibatch_indices(count: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless (batch_size,) index batches cut from consecutive random permutations of range(count)."""
    pool = torch.empty(0, dtype=torch.long)
    while True:
        while len(pool) < batch_size:
            pool = torch.cat([pool, torch.randperm(count, generator=generator)])
        yield pool[:batch_size]
        pool = pool[batch_size:]


@torch.no_grad()
def update_ema(averaged: list[torch.Tensor], current: list[torch.Tensor], decay: float) -> None:
    """averaged <- decay * averaged + (1 - decay) * current, for matching parameter lists."""
    torch._foreach_lerp_(averaged, current, 1 - decay)


def train_flow(
    codes: torch.Tensor,
    config: FlowTrainConfig | None = None,
    velocity_config: VelocityConfig | None = None,
    progress: TrainProgress | None = None,
) -> TrainedFlow:
    """Fit a VelocityMLP to codes (K, d); `velocity_config` defaults to VelocityConfig(dim=d)."""
    config = config or FlowTrainConfig()
    velocity_config = velocity_config or VelocityConfig(dim=codes.shape[1])
    if codes.dim() != 2 or codes.shape[1] != velocity_config.dim or len(codes) == 0:
        raise ValueError(f"codes must be (K, {velocity_config.dim}) with K > 0, got {tuple(codes.shape)}")
    device = resolve_device(config.device)
    data = codes.detach().float().to(device)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        model = VelocityMLP(velocity_config).to(device).train()
        ema = copy.deepcopy(model).eval().requires_grad_(False)
        parameters, averaged = list(model.parameters()), list(ema.parameters())
        optimizer = torch.optim.AdamW(
            parameters, lr=config.lr, weight_decay=config.weight_decay, foreach=True
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: learning_rate_factor(step, config.warmup, config.iterations)
        )
        losses = torch.zeros(config.iterations, device=device)
        batches = minibatch_indices(len(data), config.batch_size, generator)
        reported = 0
        for step in range(config.iterations):
            loss = cfm_loss(model, data[next(batches).to(device)], generator, config.minibatch_ot)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(parameters, config.grad_clip, foreach=True)
            optimizer.step()
            schedule.step()
            update_ema(averaged, parameters, min(config.ema_decay, (1 + step) / (10 + step)))
            losses[step] = loss.detach()
            done = step + 1
            if progress is not None and (done % config.log_every == 0 or done == config.iterations):
                progress(done, config.iterations, losses[reported:done].mean().item())
                reported = done
    return TrainedFlow(model=ema, velocity_config=velocity_config, config=config, history=losses.tolist())
