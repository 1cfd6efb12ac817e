"""Decoding flat weights into ready networks: layout -> stacked state dict -> BatchNorm recalibration."""

import torch

from models.architectures import Architecture
from models.generator.data_batches import DataBatches
from models.weightspace import WeightLayout, predictions, recalibrate_batchnorm
from models.zoo.datasets import Split


class NetworkDecoder:
    """Turns flat parameter vectors (count, D) into finished stacked state dicts (count, ...)."""

    def __init__(
        self,
        architecture: Architecture,
        template: dict[str, torch.Tensor],
        batches: DataBatches,
        device: torch.device,
    ):
        self.device = device
        self.module = architecture.build().to(device)
        self.layout = WeightLayout.from_module(self.module)
        self.template = template  # supplies the buffers (BatchNorm statistics) before recalibration
        self.batches = batches.to(device)

    def assemble(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flat parameters (count, D) -> stacked state dict (count, ...) on the decoder's device.

        Buffers (BatchNorm statistics) are copied from the template, to be recalibrated by `finish`.
        """
        params = self.layout.unflatten_stacked(flat.to(self.device))
        return {
            key: params[key].contiguous()
            if key in params
            else value.to(self.device).expand(len(flat), *value.shape).clone()
            for key, value in self.template.items()
        }

    def finish(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Recalibrate BatchNorm statistics on the artifact's calibration images (training data)."""
        return recalibrate_batchnorm(self.module, state, self.batches.calibration)

    def networks(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flat parameters (count, D) -> finished stacked state dict (count, ...)."""
        return self.finish(self.assemble(flat))

    def correct(self, state: dict[str, torch.Tensor], split: Split) -> torch.Tensor:
        """(count,) int64: how many of a split's examples (already on the device) each network gets right."""
        return (predictions(self.module, state, split.images) == split.labels).sum(1).cpu()

    def accuracy(self, state: dict[str, torch.Tensor], split: Split) -> torch.Tensor:
        """(count,) accuracy in [0, 1] of stacked networks on a split already on the device."""
        return self.correct(state, split) / len(split.labels)
