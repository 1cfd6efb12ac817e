"""Generators: build one from a canonical zoo, store it as an artifact folder, load it, and
sample networks through one pipeline (sampling -> decoding -> screening).

    recipe        GeneratorRecipe: nested configs of a build
    build         canonical zoo -> encoder + flow -> artifact folder
    artifact      the folder on disk: write, read (typed card), verify, discover
    data_batches  the uint8 training / validation images an artifact carries
    sampling      seeded noise -> ODE -> codes -> flat candidate weights
    decoding      flat weights -> finished networks (BatchNorm recalibrated)
    screening     keep candidates as accurate as the zoo on training images
    pipeline      Generator: load an artifact, generate an ensemble
    result        GeneratedEnsemble and its safetensors result file
    evaluation    zoo vs generated vs baselines, on one table (plots in evaluation_plots)
"""

from models.generator.artifact import ArtifactError, discover_generators, read_card
from models.generator.pipeline import Generator
from models.generator.result import GeneratedEnsemble, write_result

__all__ = [
    "ArtifactError",
    "GeneratedEnsemble",
    "Generator",
    "discover_generators",
    "read_card",
    "write_result",
]
