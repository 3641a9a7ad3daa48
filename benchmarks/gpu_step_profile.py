"""Where a training step's time goes on a GPU: the captured step at 1 to 50 networks, an evaluation, TF32, the
eager step, and a kernel-by-kernel profile of the eager step at 10 networks (the `paper` preset's stack).

    python benchmarks/gpu_step_profile.py --data-dir data     # CUDA only; about 30 s on an H200

benchmark.py measures throughput; this explains it. Times are CUDA events around `reps` calls after 10 warm-up
steps (the graph is captured during those); "host" is the host's time to issue the same calls. The model is
a `paper` level-1 stack (20% of fc1 and fc2 and 10% of fc3 pruned), batch 60, on the real MNIST.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # the package, and benchmark.py beside this file
from benchmark import level_one_stack  # noqa: E402

from lth_helpers import FastStep, build_model, data_dir, evaluate_all, load_mnist  # noqa: E402
from lth_helpers.data import BatchSampler, MNISTSplits  # noqa: E402


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


def warm_stepper(data: MNISTSplits, n: int, graph: bool = True):
    """A training step for n networks, warmed up (and on CUDA graphs, captured), and one batch of indices."""
    params, masks = level_one_stack(n)
    model = build_model(params, masks).to(data.train_x.device)
    step = FastStep(model, data, 1.2e-3, cuda_graph=graph)
    indices = BatchSampler(list(range(n)), len(data.train_y), 60, data.train_x.device).indices(0)
    for _ in range(10):
        step(indices)
    return model, step, indices


def main(data: MNISTSplits, reps: int = 2000, profiled_steps: int = 50) -> list[tuple]:
    rows = []  # (what, GPU us a call, host us a call, graph replay alone us, network-iterations/s)
    for n in (1, 10, 20, 50):
        model, step, indices = warm_stepper(data, n)
        gpu, host = microseconds_per_call(step, reps, indices)
        replay, _ = microseconds_per_call(step.graph.replay, reps)
        rows.append((f"graph step, {n} networks", gpu, host, replay, n / gpu * 1e6))
        if n == 10:
            evaluation, _ = microseconds_per_call(evaluate_all, max(1, reps // 40), model, data)
            rows.append(("evaluation on validation + test, 10 networks", evaluation, 0, 0, 0))
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        _, step, indices = warm_stepper(data, 10)
        gpu, host = microseconds_per_call(step, reps, indices)
        rows.append(("graph step, 10 networks, TF32 matrix products", gpu, host, 0, 10 / gpu * 1e6))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
    _, step, indices = warm_stepper(data, 10, graph=False)
    gpu, host = microseconds_per_call(step, max(1, reps // 4), indices)
    rows.append(("eager step, 10 networks", gpu, host, 0, 10 / gpu * 1e6))

    print(f"\n| {torch.cuda.get_device_name()} | GPU us/call | host us/call | replay alone us | net-it/s |")
    print("|---|---:|---:|---:|---:|")
    for what, gpu, host, replay, rate in rows:
        print(f"| {what} | {gpu:.1f} | {host:.1f} | {replay:.1f} | {rate:,.0f} |")

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
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_step_profile.py needs a CUDA GPU; benchmark.py times the CPU")
    main(load_mnist(data_dir(args.data_dir), 5000, torch.device("cuda")), args.reps)
