"""Where a training step's time goes on a GPU: the eager and captured steps at 1 to 50
networks (microseconds and kernels a step), pruned against unpruned, an evaluation, TF32, and a kernel-by-kernel
profile of the eager step at 10 networks (the `paper` preset's stack).

    python benchmarks/gpu_step_profile.py --data-dir data     # CUDA only; a few minutes

benchmark.py measures throughput; this explains it. Times are CUDA events around `reps` calls after 10 warm-up
steps (the graph is captured during those); "host" is the host's time to issue the same
calls; kernels are counted by the profiler. The model is a `paper` level-1 stack (20% of fc1 and fc2 and 10% of
fc3 pruned), batch 60, on the real MNIST. A kind of step that fails is reported and left out; the rest still run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # the package, and benchmark.py beside this file
from benchmark import level_one_stack  # noqa: E402

from lth_helpers import FastStep, StackedMLP, build_model, data_dir, load_mnist  # noqa: E402
from lth_helpers.data import BatchSampler, MNISTSplits  # noqa: E402
from lth_helpers.training import Evaluator  # noqa: E402


def microseconds_per_call(fn, reps: int, *args) -> tuple[float, float]:
    """(GPU, host) microseconds per call of fn(*args), over `reps` calls."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    start.record()
    for _ in range(reps):
        fn(*args)
    end.record()
    host = time.perf_counter() - t0
    end.synchronize()
    return start.elapsed_time(end) / reps * 1000, host / reps * 1e6


def kernels_per_call(fn, calls: int, *args) -> float:
    """GPU kernels a call of fn(*args) runs, counted by the profiler over `calls` calls (0 where it sees none,
    as with a graph replay on a driver that reports no kernels inside graphs)."""
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn(*args)
        torch.cuda.synchronize()
    kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    return sum(e.count for e in kernels) / calls


VARIANTS = {"eager": dict(cuda_graph=False), "graph": dict()}


def warm_stepper(data: MNISTSplits, n: int, graph: bool = True, pruned: bool = True):
    """A training step for n networks, warmed up (and on CUDA graphs, captured), and one batch of indices.

    pruned: the masks of one round of the paper's pruning; otherwise plain StackedMLP parameters, no masks."""
    params, masks = level_one_stack(n)
    if pruned:
        model = build_model(params, masks).to(data.train_x.device)
    else:
        model = StackedMLP(n)
        model.load_state_dict(params)
        model = model.to(data.train_x.device)
    step = FastStep(model, data, 1.2e-3, cuda_graph=graph)
    indices = BatchSampler(list(range(n)), len(data.train_y), 60, data.train_x.device).indices(0)
    for _ in range(10):
        step(indices)
    return model, step, indices


def step_row(what: str, data: MNISTSplits, n: int, reps: int, **options) -> tuple:
    """(what, GPU us a step, host us a step, kernels a step, network-iterations/s) of one kind of step."""
    t0 = time.perf_counter()
    _, step, indices = warm_stepper(data, n, **options)
    warm = time.perf_counter() - t0
    gpu, host = microseconds_per_call(step, reps, indices)
    kernels = kernels_per_call(step, 20, indices)
    print(f"  {what}: {gpu:.1f} us a step, {kernels:.0f} kernels (made and warmed in {warm:.1f} s)", flush=True)
    return what, gpu, host, kernels, n / gpu * 1e6


def main(data: MNISTSplits, reps: int = 2000, profiled_steps: int = 50, networks=(1, 10, 20, 50)) -> list[tuple]:
    rows = []  # (what, GPU us a call, host us a call, kernels a call, network-iterations/s)
    for n in networks:
        for variant, options in VARIANTS.items():
            try:
                rows.append(step_row(f"{variant} step, {n} networks", data, n, reps, **options))
            except Exception as error:  # a variant that fails (a capture) leaves the others standing
                print(f"  {variant} step, {n} networks: failed: {type(error).__name__}: {error}", flush=True)
    try:  # masks for free? the paper's stack, pruned against unpruned
        rows.append(step_row("graph step, 10 networks, unpruned", data, 10, reps, pruned=False))
    except Exception as error:
        print(f"  graph step, 10 networks, unpruned: failed: {type(error).__name__}: {error}", flush=True)
    model, _, _ = warm_stepper(data, 10)
    evaluator = Evaluator.validation_and_test(data, 10)
    evaluation, host = microseconds_per_call(evaluator, max(1, reps // 40), model)
    kernels = kernels_per_call(evaluator, 2, model)
    rows.append(("evaluation on validation + test, 10 networks", evaluation, host, kernels, 0))
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        rows.append(step_row("graph step, 10 networks, TF32 matrix products", data, 10, reps))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False

    print(f"\n| {torch.cuda.get_device_name()} | GPU us/call | host us/call | kernels/call | net-it/s |")
    print("|---|---:|---:|---:|---:|")
    for what, gpu, host, kernels, rate in rows:
        print(f"| {what} | {gpu:.1f} | {host:.1f} | {kernels:.0f} | {rate:,.0f} |")

    _, step, indices = warm_stepper(data, 10, graph=False)  # eager: every kernel is reported as it is launched
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(profiled_steps):
            step(indices)
        torch.cuda.synchronize()
    kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    kernels.sort(key=lambda e: -e.self_device_time_total)
    total = sum(e.self_device_time_total for e in kernels) / profiled_steps
    print(
        f"\nkernels of an eager step at 10 networks ({total:.1f} us a step, 'Optimizer.step' is a range, not a kernel):"
    )
    for e in kernels[:14]:
        print(
            f"  {e.count / profiled_steps:5.1f}/step {e.self_device_time_total / profiled_steps:7.1f} us  {e.key[:90]}"
        )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="folder holding MNIST/raw (default: $LTH_DATA_DIR, else ./data)")
    parser.add_argument("--reps", type=int, default=2000, help="timed calls per measurement")
    parser.add_argument("--json", type=Path, help="also write the table's rows to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_step_profile.py needs a CUDA GPU; benchmark.py times the CPU")
    table = main(load_mnist(data_dir(args.data_dir), 5000, torch.device("cuda")), args.reps)
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))
