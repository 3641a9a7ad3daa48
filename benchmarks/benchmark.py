"""Benchmark: the usual PyTorch training loop against lth_helpers, side by side on this machine.

    python benchmarks/benchmark.py                 # CPU or GPU, whichever is present: about 2 minutes on a CPU
    python benchmarks/benchmark.py --full-seed     # also times the whole `seed` preset end to end
    python benchmarks/benchmark.py --full-paper    # on a GPU: also times the whole `paper` preset
    python benchmarks/benchmark.py --full-paper --keep runs/paper-gpu   # keeps (and resumes) that run's folder

(a) The usual loop: torchvision MNIST through a DataLoader with ToTensor + Normalize, one
    nn.Sequential LeNet-300-100 pruned with prune.l1_unstructured hooks, Adam, batch 60.
(b) lth_helpers: data on the device, each network's batches sliced from its own permutation, all
    networks of a level stacked into one model, fused Adam, and on CUDA the step in a CUDA graph.
Both do the same work (LeNet-300-100, batch 60, Adam, a pruned network); we count network-iterations
per second. GPU times use CUDA events after a warm-up. The table is printed as soon as it is measured (a run cut
off later still leaves it) and, when a whole preset was timed too, again at the end with that preset's result.
"""

from __future__ import annotations

import argparse
import itertools
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune
from torchvision import datasets, transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lth_helpers import (  # noqa: E402
    StackedMLP,
    build_model,
    data_dir,
    full_masks,
    init_params,
    layer_shapes,
    load_mnist,
    make_config,
)
from lth_helpers.data import MNIST_MEAN, MNIST_STD  # noqa: E402
from lth_helpers.experiment import run_experiment  # noqa: E402
from lth_helpers.pruning import prune_by_magnitude  # noqa: E402
from lth_helpers.runs import RunFolder  # noqa: E402
from lth_helpers.training import train_networks  # noqa: E402

BATCH = 60


class Timer:
    """Wall time on the CPU; CUDA events on the GPU, so that queued kernels are counted."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __enter__(self) -> Timer:
        if self.cuda:
            self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            self.end.record()
            self.end.synchronize()
            self.seconds = self.start.elapsed_time(self.end) / 1000
        else:
            self.seconds = time.perf_counter() - self.t0


def usual_loop(root: Path, device: torch.device, iterations: int, batch: int = BATCH, repeats: int = 3) -> float:
    """Network-iterations per second of the textbook loop: the median of `repeats` timings of `iterations`
    steps each, after 20 warm-up steps (one timing of a few seconds varied by about 8% on a 2-core CPU)."""
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
    loader = torch.utils.data.DataLoader(
        datasets.MNIST(str(root), train=True, transform=tf), batch_size=batch, shuffle=True
    )
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10)
    ).to(device)
    for layer in (model[1], model[3], model[5]):
        prune.l1_unstructured(layer, "weight", amount=0.2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.2e-3)
    batches = (b for _ in itertools.count() for b in loader)  # epoch after epoch

    def step() -> None:
        x, y = next(batches)
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    for _ in range(20):
        step()
    rates = []
    for _ in range(repeats):
        with Timer(device) as timer:
            for _ in range(iterations):
                step()
        rates.append(iterations / timer.seconds)
    return statistics.median(rates)


def level_one_stack(n_networks: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Initial weights of n LeNet-300-100s and the masks of one round of the paper's layer-wise pruning."""
    params = init_params(list(range(n_networks)), 300, 100, "glorot_normal")
    masks = prune_by_magnitude(
        build_model(params, full_masks(n_networks, layer_shapes(300, 100))), {"fc1": 0.2, "fc2": 0.2, "fc3": 0.1}
    )
    return params, masks


def ours(
    data,
    device: torch.device,
    n_networks: int,
    iterations: int,
    eval_every: int,
    pruned: bool = True,
) -> float:
    """Network-iterations per second of train_networks on n networks (evaluations included).

    pruned: one round of layer-wise pruning applied through prune (the masks every level has);
    otherwise plain StackedMLP parameters with no masks or hooks at all, the dense reference.
    """
    params, masks = level_one_stack(n_networks)
    common = dict(
        batch_size=BATCH,
        learning_rate=1.2e-3,
        batch_seeds=list(range(n_networks)),
        progress=False,
    )

    def fresh() -> StackedMLP:
        if pruned:
            return build_model(params, masks).to(device)
        model = StackedMLP(n_networks)
        model.load_state_dict(params)
        return model.to(device)

    train_networks(fresh(), data, iterations=50, eval_every=50, **common)  # warm-up: kernels, graph capture
    model = fresh()
    with Timer(device) as timer:
        train_networks(model, data, iterations=iterations, eval_every=eval_every, **common)
    return n_networks * iterations / timer.seconds


def trainings(cfg, first_level: int = 0) -> int:
    """Networks trained in a run from `first_level` on: the tickets at every level, the controls at every pruned one."""
    return cfg.trials * sum(1 + len(cfg.controls) * (level > 0) for level in range(first_level, cfg.rounds + 1))


def timed_preset(name: str, data, device: torch.device, keep: Path | None = None) -> tuple[float, float, int]:
    """Wall time (s) and peak GPU memory (MB, 0 on the CPU) of a whole preset, and the levels already done.

    The run folder is kept in `keep` if given, and a run cut off there resumes (then the time covers only
    the levels after the ones done); without `keep` the run starts from scratch in a temporary folder.
    """
    cfg = make_config(name)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as folder:
        path = keep or Path(folder)
        done = RunFolder(path).levels_done
        with Timer(device) as timer:
            run_experiment(cfg, path, data, progress=False)
    return timer.seconds, peak_memory_mb(device) if device.type == "cuda" else 0.0, done


def peak_memory_mb(device: torch.device) -> float:
    """GPU: the most memory allocated since the last reset; CPU: the process's peak resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="folder holding MNIST/raw (default: $LTH_DATA_DIR, else ./data)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--iterations", type=int, default=0, help="iterations per measurement (default: by device)")
    parser.add_argument("--full-seed", action="store_true", help="also time the whole seed preset")
    parser.add_argument("--full-paper", action="store_true", help="also time the whole paper preset")
    parser.add_argument(
        "--keep", type=Path, help="with --full-paper: keep the paper run in this folder (a cut-off run resumes there)"
    )
    args = parser.parse_args()
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else "cpu"
        if args.device == "auto"
        else args.device
    )
    gpu = device.type == "cuda"
    iterations = args.iterations or (3000 if gpu else 600)
    usual_iterations = min(iterations, 1000)  # on a GPU the usual loop runs ~100 it/s: 3 timings of 3000 take minutes
    root = data_dir(args.data_dir)
    data = load_mnist(root, 5000, device)
    name = torch.cuda.get_device_name() if gpu else f"{torch.get_num_threads()}-thread CPU"
    print(f"torch {torch.__version__} on {name}; {iterations} iterations per measurement", flush=True)

    rows = [("usual loop: DataLoader + transforms, prune hooks, 1 network", usual_loop(root, device, usual_iterations))]
    print(f"{rows[-1][0]}: {rows[-1][1]:,.0f} net-it/s", flush=True)
    # The seed preset stacks 2 networks a level (ticket + reinit); the paper's stacks 10 (5 trials x 2).
    # eval_every None: no evaluation between the one before training and the one after it.
    for n, eval_every, pruned in (
        (1, None, True),
        (2, None, True),
        (2, 215, True),
        (10, None, False),
        (10, None, True),
        (10, 100, True),
    ):
        label = (
            f"lth_helpers: {n} stacked"
            + ("" if pruned else ", unpruned (no masks, no hooks)")
            + (f", evaluating every {eval_every}" if eval_every else "")
        )
        if eval_every and eval_every >= iterations:  # it would time training alone again, under another label
            print(f"{label}: skipped, needs --iterations above {eval_every}", flush=True)
            continue
        rows.append((label, ours(data, device, n, iterations, eval_every or iterations, pruned)))
        print(f"{label}: {rows[-1][1]:,.0f} net-it/s", flush=True)

    # The table first, so that a whole-preset run cut off by a time limit still leaves it.
    base = rows[0][1]
    print(f"\n| way of training ({name}) | network-iterations/s | vs usual loop |\n|---|---:|---:|")
    for label, rate in rows:
        print(f"| {label} | {rate:,.0f} | {rate / base:.1f}x |")
    paper = make_config("paper")
    paper_work = paper.iterations * trainings(paper)
    print(
        f"\npaper preset: {paper_work:,} network-iterations; projected from '{rows[-1][0]}': "
        f"{paper_work / rows[-1][1] / 60:,.1f} min (the usual loop: {paper_work / base / 3600:,.1f} h)"
    )
    print(f"peak memory so far: {peak_memory_mb(device):,.0f} MB ({'GPU, allocated' if gpu else 'CPU, resident'})")
    finals = []  # (what, result) of each whole-preset run, for the summary printed last
    if args.full_seed:
        seed = make_config("seed")
        usual_seed = usual_loop(root, device, usual_iterations, seed.batch_size) * seed.batch_size / 55_000
        seconds, memory, _ = timed_preset("seed", data, device)
        epochs = seed.iterations * seed.batch_size / 55_000 * trainings(seed)
        finals.append(
            (
                "seed preset, whole run",
                f"{seconds:.1f} s{f', peak GPU memory {memory:,.0f} MB' if gpu else ''}; {epochs:.0f} network-epochs = "
                f"{epochs / seconds:.3f} network-epochs/s; the usual loop at batch {seed.batch_size}: "
                f"{usual_seed:.3f} network-epochs/s; ratio {epochs / seconds / usual_seed:.1f}x",
            )
        )
        print(f"{finals[-1][0]}: {finals[-1][1]}", flush=True)
    if args.full_paper:
        seconds, memory, done = timed_preset("paper", data, device, args.keep)
        work = paper.iterations * trainings(paper, done)
        what = "paper preset, " + (
            "whole run" if not done else f"levels {done}-{paper.rounds} (resumed in {args.keep})"
        )
        finals.append(
            (
                what,
                f"{seconds / 60:.2f} min = {work / seconds:,.0f} network-iterations/s, evaluations included"
                f"{f'; peak GPU memory {memory:,.0f} MB' if gpu else ''}"
                if work
                else f"the run in {args.keep} is already complete; nothing was timed",
            )
        )
        print(f"{finals[-1][0]}: {finals[-1][1]}", flush=True)
    if finals:  # the short table, last: every measurement of this run
        print(f"\n| {name} | result |\n|---|---|")
        for label, rate in rows:
            print(f"| {label} | {rate:,.0f} network-iterations/s, {rate / base:.1f}x the usual loop |")
        for what, result in finals:
            print(f"| {what} | {result} |")


if __name__ == "__main__":
    main()
