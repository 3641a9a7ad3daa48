"""Shared fixtures: tiny synthetic MNIST-shaped data, and the real MNIST files.

The real files are read from $LTH_DATA_DIR; unset, from ../shared/data beside the repository where
that exists (CI), else from ./data, where the first run downloads them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lth_helpers import make_config, run_experiment
from lth_helpers.data import MNISTSplits, load_mnist

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
os.environ.setdefault("LTH_DATA_DIR", str(SHARED_DATA if SHARED_DATA.exists() else REPO / "data"))


def synthetic_splits(n_train: int = 600, n_eval: int = 200, seed: int = 0) -> MNISTSplits:
    """Ten noisy clusters in 784 dimensions, one per class: learnable in a few dozen steps."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(10, 784, generator=g) * 0.3

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 10, (n,), generator=g)
        return centers[y] + torch.randn(n, 784, generator=g), y

    return MNISTSplits(*split(n_train), *split(n_eval), *split(n_eval))


@pytest.fixture
def tiny_data() -> MNISTSplits:
    return synthetic_splits()


@pytest.fixture(scope="session")
def mnist() -> MNISTSplits:
    return load_mnist(Path(os.environ["LTH_DATA_DIR"]), val_size=5000, device=torch.device("cpu"))


def make_run(path: Path, **overrides) -> Path:
    """A finished run folder of a tiny config (4 levels, 2 trials, both controls) on synthetic data, in about a
    second: for tests that read run folders."""
    values = dict(fc1_width=40, fc2_width=20, iterations=30, eval_every=10, batch_size=32, rounds=3, trials=2)
    cfg = make_config("smoke", **{**values, "learning_rate": 2e-3, **overrides})
    run_experiment(cfg, path, synthetic_splits(), progress=False)
    return path
