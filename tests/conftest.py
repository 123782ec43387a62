"""Shared test setup: Triton runs interpreted on CPU-only machines."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    """Every device present: CPU always, CUDA when there is one."""
    return torch.device(request.param)
