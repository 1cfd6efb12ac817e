"""The artifact's data batches: uint8 pixels that standardize back to exactly the dataset's images."""

import pytest
import torch

from models.generator.data_batches import pack_batches, unpack_batches
from models.zoo.datasets import load_dataset


def test_packed_batches_are_uint8_and_unpack_to_the_dataset_images():
    dataset = load_dataset("digits")
    tensors = pack_batches(dataset, calibration_size=100, screening_size=300, validation_size=50)
    assert tensors["train_images"].dtype == tensors["val_images"].dtype == torch.uint8
    assert len(tensors["train_images"]) == 300 and len(tensors["val_labels"]) == 50
    batches = unpack_batches(tensors, calibration_size=100, screening_size=300)
    assert torch.equal(batches.calibration, dataset.train.images[:100])
    assert torch.equal(batches.screening.images, dataset.train.images[:300])
    assert torch.equal(batches.screening.labels, dataset.train.labels[:300])
    assert torch.equal(batches.validation.images, dataset.val.images[:50])
    assert torch.equal(batches.validation.labels, dataset.val.labels[:50])
    unscreened = unpack_batches(pack_batches(dataset, 100, 0, 50), calibration_size=100, screening_size=0)
    assert len(unscreened.calibration) == 100 and len(unscreened.screening.labels) == 0


def test_a_card_asking_for_more_images_than_stored_is_refused():
    tensors = pack_batches(load_dataset("digits"), calibration_size=100, screening_size=0, validation_size=50)
    with pytest.raises(ValueError, match="holds 100 training images, its card asks for 300"):
        unpack_batches(tensors, calibration_size=100, screening_size=300)
