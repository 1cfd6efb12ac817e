"""Flow matching in weight space: encoder (standardize + PCA), velocity network,
straight probability path and loss, ODE samplers and the trainer.

`models.flow.plotting.plot_loss_curve` is imported from its module (it pulls in matplotlib).
"""

from .encoder import EncoderConfig, WeightEncoder
from .path import PathSample, cfm_loss, optimal_transport_pairing, sample_path
from .samplers import METHODS, generate_codes, noise_rows, sample
from .trainer import FlowTrainConfig, TrainedFlow, train_flow
from .velocity import VelocityConfig, VelocityMLP, load_velocity, save_velocity

__all__ = [
    "METHODS",
    "EncoderConfig",
    "FlowTrainConfig",
    "PathSample",
    "TrainedFlow",
    "VelocityConfig",
    "VelocityMLP",
    "WeightEncoder",
    "cfm_loss",
    "generate_codes",
    "load_velocity",
    "noise_rows",
    "optimal_transport_pairing",
    "sample",
    "sample_path",
    "save_velocity",
    "train_flow",
]
