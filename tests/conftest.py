"""Shared fixtures and helpers: tiny synthetic MNIST-shaped data, the real MNIST files, a pruned network with
every kind of dead unit, a results table, and the benchmark scripts as modules.

The real files are read from $LTH_DATA_DIR; unset, from ../shared/data beside the repository where
that exists (CI), else from ./data, where the first run downloads them.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
import torch

import lth_helpers.cli as cli
from lth_helpers import run_experiment
from lth_helpers.config import Config, make_config
from lth_helpers.data import MNISTSplits, load_mnist
from lth_helpers.inference import first_network
from lth_helpers.model import Params, StackedMLP, init_params, layer_shapes
from lth_helpers.pruning import Masks, build_model, full_masks, prune_by_magnitude

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


def tiny_config(**overrides) -> Config:
    """The smoke preset shrunk to a second on `synthetic_splits()` (whose 200 validation images it expects)."""
    values = dict(
        fc1_width=40,
        fc2_width=20,
        iterations=30,
        eval_every=10,
        batch_size=32,
        val_size=200,
        rounds=3,
        trials=2,
        controls=("reinit", "random_prune"),
        learning_rate=2e-3,
    )
    return make_config("smoke", **{**values, **overrides})


# A run of the command line on synthetic data: every kind of file (rewind.pt and every control's masks too), in a
# second. CFG is its config.
CFG = tiny_config(
    rounds=1, trials=1, iterations=20, rewind_iteration=5, controls=("reinit", "random_prune", "one_shot")
)
FLAGS = [
    *("--preset smoke --fc1-width 40 --fc2-width 20 --iterations 20 --eval-every 10 --batch-size 32".split()),
    *("--val-size 200 --rounds 1 --learning-rate 0.002 --rewind-iteration 5 --no-progress".split()),
    *("--controls reinit,random_prune,one_shot".split()),
]


def one_line(text: str) -> bool:
    return len(text.strip().splitlines()) == 1


@pytest.fixture
def command(monkeypatch, capsys):
    """Run the command line with FLAGS on synthetic data: `command(out, *extra)` returns (exit status, stderr)."""
    monkeypatch.setattr(cli, "load_mnist", lambda root, val_size, device: synthetic_splits())

    def run(out: Path, *extra: str) -> tuple[int, str]:
        capsys.readouterr()
        try:
            code = cli.main([*FLAGS, "--out", str(out), *extra])
        except SystemExit as exit_:
            code = exit_.code
        return code, capsys.readouterr().err

    return run


@pytest.fixture
def tiny_data() -> MNISTSplits:
    return synthetic_splits()


@pytest.fixture(scope="session")
def mnist() -> MNISTSplits:
    return load_mnist(Path(os.environ["LTH_DATA_DIR"]), val_size=5000, device=torch.device("cpu"))


def pruned_network_with_dead_units(seed: int = 0) -> tuple[Params, Masks, StackedMLP]:
    """A heavily pruned network with every kind of dead unit, and non-zero biases to fold: its params and masks
    without the stack dimension, and the same network as a stacked model of one."""
    params = init_params([seed], 300, 100, "kaiming_uniform")  # kaiming_uniform: biases are not zero
    model = build_model(params, full_masks(1, layer_shapes(300, 100)))
    for _ in range(4):
        masks = prune_by_magnitude(model, {"fc1": 0.5, "fc2": 0.5, "fc3": 0.2})
    masks = {name: m.clone() for name, m in masks.items()}
    masks["fc1"][0][:, :100] = 0  # 100 input pixels with no outgoing weight
    masks["fc1"][0][:20] = 0  # 20 fc1 units with no incoming weight: they output relu(bias), a constant
    masks["fc2"][0][:, 20:40] = 0  # 20 fc1 units with no outgoing weight
    masks["fc3"][0][:, :10] = 0  # 10 fc2 units with no outgoing weight
    return first_network(params), first_network(masks), build_model(params, masks)


def results(ticket: list[float], reinit: list[float], trials: int = 1) -> pd.DataFrame:
    """A results.csv table: the ticket's and reinit's test accuracy per level (reinit's level 0 is skipped),
    the weights halved every level; trial t adds 0.1 x t to the accuracy at early stopping; the training accuracy at
    the end is 99% plus 0.1 a level."""
    rows = []
    for level, (t_acc, r_acc) in enumerate(zip(ticket, reinit)):
        for condition, acc in (("ticket", t_acc), ("reinit", r_acc)):
            if condition == "reinit" and level == 0:
                continue
            for trial in range(trials):
                rows.append(
                    dict(
                        level=level,
                        condition=condition,
                        trial=trial,
                        weights_remaining=1000 // 2**level,
                        percent_remaining=100 / 2**level,
                        early_stop_iteration=100 * (level + 1),
                        early_stop_test_accuracy=acc + 0.1 * trial,
                        final_test_accuracy=acc,
                        final_test_loss=0.1,
                        final_train_accuracy=99.0 + 0.1 * level,
                        final_train_loss=0.05,
                        train_seconds=1.0,
                    )
                )
    return pd.DataFrame(rows)


def load_script(name: str) -> ModuleType:
    """A script of benchmarks/ as a module (the folder is no package)."""
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), REPO / "benchmarks" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_run(path: Path, **overrides) -> Path:
    """A finished run folder of a tiny config (4 levels, 2 trials, both controls) on synthetic data, in about a
    second: for tests that read run folders."""
    run_experiment(tiny_config(**overrides), path, synthetic_splits(), progress=False)
    return path
