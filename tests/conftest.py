"""Shared test set-up: one torch thread per test process (the machine has 2 cores), a data root."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The mini data root (``make test`` prepares it and exports BENCHMARK_DATA)."""
    root = Path(os.environ.get("BENCHMARK_DATA", REPO_ROOT / "data"))
    if not (root / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").is_file():
        pytest.fail(f"Fashion-MNIST not prepared under {root}: run `make data` (make test does)")
    return root
