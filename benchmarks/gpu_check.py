"""Every GPU measurement in one go, each part on its own, a summary table last.

    python benchmarks/gpu_check.py --data-dir /path/to/folder-holding-MNIST   # CUDA; at most --budget seconds

Installs nothing and downloads nothing. The parts, in order, each a separate process with its own time limit, so
that one failing or running long does not stop the rest:

1. tests: `python -m pytest -q tests/test_cuda.py`;
2. profile: `benchmarks/gpu_step_profile.py`, microseconds and kernels a step at 1, 10, 20 and 50 networks for the
   eager and captured steps, pruned against unpruned, an evaluation;
3. memory: six levels in a row at 10 networks (the `paper` preset's stack), the GPU memory allocated after each,
   and, after the last, which tensors are still alive (the memory a level leaves behind);
4. paper: `benchmarks/benchmark.py --full-paper`; it gets whatever time is left.

`python benchmarks/gpu_check.py --memory-levels` runs part 3 alone (it is how part 3 runs).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]
from benchmark import level_one_stack  # noqa: E402

from lth_helpers import build_model, data_dir, load_mnist  # noqa: E402
from lth_helpers.training import train_networks  # noqa: E402


def run_part(command: list[str], limit_s: float, env: dict[str, str]) -> tuple[int | None, float, str]:
    """(exit status or None when cut off, wall seconds, output) of one part, its output echoed as it comes."""
    print(f"\n$ {' '.join(command)}   (limit {limit_s:.0f} s)", flush=True)
    start, cut_off = time.perf_counter(), False
    with subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as p:
        try:
            out, _ = p.communicate(timeout=limit_s)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
            cut_off = True
    print(out, end="", flush=True)
    return None if cut_off else p.returncode, time.perf_counter() - start, out


def profile_summary(path: Path) -> str:
    """The profile's key figures in one line."""
    if not path.exists():
        return "no table written"
    rows = {what: (gpu, kernels) for what, gpu, _, kernels, _ in json.loads(path.read_text())}
    parts = []
    for n in (1, 10, 20, 50):
        figures = [
            f"{v} {rows[f'{v} step, {n} networks'][0]:.0f} us/{rows[f'{v} step, {n} networks'][1]:.0f} k"
            for v in ("eager", "graph")
            if f"{v} step, {n} networks" in rows
        ]
        parts.append(f"{n} nets: " + ", ".join(figures))
    pruned, dense = rows.get("graph step, 10 networks"), rows.get("graph step, 10 networks, unpruned")
    if pruned and dense:
        parts.append(f"graph pruned/dense at 10: {pruned[0] / dense[0]:.3f}")
    return "; ".join(parts)


def last_line_with(text: str, *needles: str) -> str:
    hits = [line.strip() for line in text.splitlines() if all(n in line for n in needles)]
    return hits[-1] if hits else ""


def memory_levels(data_root: Path, levels: int = 6, iterations: int = 500) -> None:
    """Six levels in a row at 10 networks, each with its own model, optimizer and graph as a run makes them:
    the GPU memory allocated after each, then the CUDA tensors still alive, by shape."""
    data = load_mnist(data_root, 5000, torch.device("cuda"))
    params, masks = level_one_stack(10)
    allocated = []
    for _ in range(levels):
        model = build_model(params, masks).cuda()
        common = dict(batch_size=60, learning_rate=1.2e-3, batch_seeds=list(range(10)), progress=False)
        train_networks(model, data, iterations=iterations, eval_every=100, **common)
        del model
        gc.collect()
        torch.cuda.synchronize()
        allocated.append(torch.cuda.memory_allocated() / 2**20)
    growth = [b - a for a, b in zip(allocated, allocated[1:])]
    print(f"MB allocated after each level: {', '.join(f'{a:.1f}' for a in allocated)}")
    print(f"growth per level, MB: {', '.join(f'{g:.1f}' for g in growth)}", flush=True)
    alive = Counter(
        (tuple(o.shape), str(o.dtype))
        for o in gc.get_objects()
        if isinstance(o, torch.Tensor) and o.is_cuda and o.numel() > 1000
    )
    print("CUDA tensors of over 1,000 elements alive after the levels, the data's included (shape dtype: count):")
    for (shape, dtype), count in alive.most_common(12):
        print(f"  {shape} {dtype}: {count}")
    print(f"peak allocated: {torch.cuda.max_memory_allocated() / 2**20:,.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="folder holding MNIST/raw (default: $LTH_DATA_DIR, else ./data)")
    parser.add_argument("--budget", type=float, default=530, help="seconds for all parts together")
    parser.add_argument("--memory-levels", action="store_true", help="run the memory part alone, in this process")
    args = parser.parse_args()
    root = data_dir(args.data_dir).resolve()
    if not torch.cuda.is_available():
        sys.exit("gpu_check.py needs a CUDA GPU")
    if args.memory_levels:
        memory_levels(root)
        return
    deadline = time.perf_counter() + args.budget
    env = {**os.environ, "LTH_DATA_DIR": str(root)}
    python = sys.executable
    summary = []  # (part, status, seconds, result)

    def part(name: str, command: list[str], limit_s: float) -> str:
        limit = max(1.0, min(limit_s, deadline - time.perf_counter() - 5))
        status, seconds, out = run_part(command, limit, env)
        summary.append([name, "cut off" if status is None else f"exit {status}", seconds, ""])
        return out

    with tempfile.TemporaryDirectory() as folder:
        out = part("tests/test_cuda.py", [python, "-m", "pytest", "-q", "tests/test_cuda.py"], 150)
        summary[-1][3] = last_line_with(out, " in ") or "no pytest summary"
        table = Path(folder) / "profile.json"
        profile = [python, "benchmarks/gpu_step_profile.py", "--data-dir", str(root), "--reps", "1000"]
        part("step profile", [*profile, "--json", str(table)], 200)
        summary[-1][3] = profile_summary(table)
        out = part(
            "memory, six levels", [python, "benchmarks/gpu_check.py", "--memory-levels", "--data-dir", str(root)], 70
        )
        summary[-1][3] = " | ".join(
            line
            for line in (
                last_line_with(out, "growth per level"),
                last_line_with(out, "peak allocated"),
            )
            if line
        )
        paper = [python, "benchmarks/benchmark.py", "--full-paper", "--data-dir", str(root)]
        out = part("benchmark --full-paper", paper, deadline - time.perf_counter())
        summary[-1][3] = (
            last_line_with(out, "paper preset, whole run") or last_line_with(out, "projected from") or "no result line"
        )

    print(f"\n| {torch.cuda.get_device_name()}, torch {torch.__version__} | status | s | result |\n|---|---|---:|---|")
    for name, status, seconds, result in summary:
        print(f"| {name} | {status} | {seconds:.0f} | {result} |")


if __name__ == "__main__":
    main()
