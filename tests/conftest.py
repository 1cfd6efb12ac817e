"""Shared pytest configuration."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The test networks are tiny: on a shared 2-core CPU extra torch threads only add
    synchronization, which made them 2-3x slower here. Session-wide, so module-scoped
    fixtures (zoos built once per module) run on one thread too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
