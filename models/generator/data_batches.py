"""The data a generator artifact carries (calibration.safetensors), stored as uint8 pixels.

    train_images (S, C, H, W) uint8  the first S training images: BatchNorm recalibration uses
                                     the first `calibration` of them, screening all of them
    train_labels (S,) int64
    val_images   (V, C, H, W) uint8  held-out validation batch (per-network accuracy in results)
    val_labels   (V,) int64
    pixel_stats  (3,) float64        (scale, mean, std) of models.zoo.datasets.standardize

Raw pixels take a quarter of the bytes of float32 images and are standardized
exactly as the dataset does, so a network sees the same inputs as in training.
Tabular rows (a dataset with `feature_stats`) are stored as their standardized
float32 features, with identity `pixel_stats`.
"""

from dataclasses import dataclass

import torch

from models.zoo.datasets import Dataset, Split, raw_pixels, standardize


@dataclass(frozen=True)
class DataBatches:
    calibration: torch.Tensor  # (n, C, H, W) float32 training images for BatchNorm statistics
    screening: Split  # training images and labels a candidate network is screened on (may be empty)
    validation: Split  # held-out images and labels, per-network accuracy

    def to(self, device: torch.device) -> "DataBatches":
        def move(split: Split) -> Split:
            return Split(split.images.to(device), split.labels.to(device))

        return DataBatches(self.calibration.to(device), move(self.screening), move(self.validation))


def pack_batches(
    dataset: Dataset, calibration_size: int, screening_size: int, validation_size: int
) -> dict[str, torch.Tensor]:
    """The tensors of calibration.safetensors: deterministic slices of the training and validation splits."""
    train_rows = max(calibration_size, screening_size)

    def stored(inputs: torch.Tensor) -> torch.Tensor:
        tabular = dataset.feature_stats is not None
        return (inputs if tabular else raw_pixels(inputs, dataset.pixel_stats)).contiguous()

    return {
        "train_images": stored(dataset.train.images[:train_rows]),
        "train_labels": dataset.train.labels[:train_rows].contiguous(),
        "val_images": stored(dataset.val.images[:validation_size]),
        "val_labels": dataset.val.labels[:validation_size].contiguous(),
        "pixel_stats": torch.tensor(dataset.pixel_stats, dtype=torch.float64),
    }


def unpack_batches(
    tensors: dict[str, torch.Tensor], calibration_size: int, screening_size: int
) -> DataBatches:
    """calibration.safetensors tensors -> standardized float32 batches (KeyError if one is missing)."""
    scale, mean, std = tensors["pixel_stats"].tolist()
    stored = len(tensors["train_labels"])
    if stored < max(calibration_size, screening_size):
        raise ValueError(
            f"the artifact holds {stored} training images, its card asks for "
            f"{max(calibration_size, screening_size)}"
        )

    def images(key: str, rows: int | None = None) -> torch.Tensor:
        return standardize(tensors[key][:rows], scale, mean, std)

    return DataBatches(
        calibration=images("train_images", calibration_size),
        screening=Split(images("train_images", screening_size), tensors["train_labels"][:screening_size]),
        validation=Split(images("val_images"), tensors["val_labels"]),
    )
