"""Train a stack of networks together, each on its own batches, and evaluate them as it goes.

    result = train_networks(model, data, iterations=1000, batch_size=60, learning_rate=1.2e-3,
                            eval_every=100, batch_seeds=[1, 2])

One Adam optimizer over the stacked tensors is the same as one Adam per network, up to rounding: Adam
is elementwise, and the loss is the sum of the networks' own mean losses, so network i's gradient is
exactly the gradient of its own loss. (The rounding: torch's fused CPU Adam updates the elements past
the tensor's last full vector on a scalar path, so which network's last biases take it depends on the
stack size.) The gradients of the three layers are written out by hand
(`loss_and_gradients`, tested equal to autograd's). On CUDA the training step is captured once in a
CUDA graph and replayed, because a network this small is bound by kernel launches, not arithmetic.
The host waits for the device only at evaluation points.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data import BatchSampler, MNISTSplits, get_batch
from .model import LAYERS, Params, StackedMLP
from .pruning import current_params

METRICS = ("val_loss", "val_accuracy", "test_loss", "test_accuracy")


DIVERGENCE_FACTOR = 100  # a training loss this many times its start (at least ln 10, a uniform guess) has diverged
DIVERGED = f"NaN, infinite, or over {DIVERGENCE_FACTOR} times its starting value"


class DivergenceError(RuntimeError):
    """A network's training loss became NaN or infinite, or exploded: over DIVERGENCE_FACTOR times the larger of its
    loss before training and ln(10), the loss of a uniform guess over the ten classes. Adam at a sane learning rate
    never comes near that; an exploding run can reach 1e29 without becoming NaN, and learns nothing on the way."""

    def __init__(self, network: int, iteration: int):
        super().__init__(f"network {network} diverged: training loss {DIVERGED} at iteration {iteration}")
        self.network, self.iteration = network, iteration


@dataclass
class TrainResult:
    params: Params  # the trained weights (weight_orig x mask) and biases, a stack
    snapshot: Params | None  # the weights after `snapshot_iteration` iterations, if asked for
    iterations: list[int]  # the iterations at which the metrics were taken (0 = before training)
    metrics: dict[str, torch.Tensor]  # METRICS name -> (len(iterations), n_networks); accuracies in %
    seconds: float  # wall-clock time of the whole call, evaluations included


@torch.no_grad()
def evaluate(
    model: StackedMLP, x: torch.Tensor, y: torch.Tensor, chunk: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy and accuracy (%) of every network on (x, y): two tensors of shape (n,).

    `chunk` examples go through at a time. By default: all at once on a GPU (fewest kernel launches);
    on a CPU about 10,000 network-examples, whose activations stay in cache (at 10 networks, 1,000
    examples a chunk made an evaluation 20% faster than 5,000).
    """
    n = model.n_networks
    if chunk is None:
        chunk = len(y) if x.device.type == "cuda" else min(5000, max(1000, 10_000 // n))
    loss_sum = torch.zeros(n, dtype=torch.float64, device=x.device)
    correct = torch.zeros(n, dtype=torch.int64, device=x.device)
    for start in range(0, len(y), chunk):
        logits = model(x[start : start + chunk]).transpose(1, 2)  # (n, classes, chunk), as the model computes it
        target = y[start : start + chunk].expand(n, -1)
        loss_sum += F.cross_entropy(logits, target, reduction="none").sum(1).double()
        correct += (logits.argmax(1) == target).sum(1)
    return loss_sum / len(y), 100 * correct / len(y)


def train_step(model: StackedMLP, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One Adam step for every network on its own batch; returns the per-network training loss (no host sync)."""
    losses = loss_and_gradients(model, x, y)
    optimizer.step()
    return losses


@torch.no_grad()
def loss_and_gradients(model: StackedMLP, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each network on its own batch, x (n, b, 784), y (n, b); sets every parameter's .grad.

    The gradients are those of `loss.sum().backward()` (tested), written out by hand: for a network this
    small, autograd's bookkeeping took about a quarter of a training step on a 2-core CPU. A pruned
    layer's gradient reaches `weight_orig` multiplied by `weight_mask`, as through prune's forward hook,
    so pruned weights get exactly zero gradient and Adam never moves them.
    """
    layers = [getattr(model, name) for name in LAYERS]
    inputs = [x.transpose(1, 2)]  # feature-major: (n, features, b)
    for layer in layers[:-1]:
        inputs.append(layer(inputs[-1]).relu_())
    log_p = layers[-1](inputs[-1]).log_softmax(1)  # (n, classes, b)
    target = y[:, None, :]
    losses = -log_p.gather(1, target).mean((1, 2))
    # d(mean cross-entropy)/d(logits) = (softmax - one_hot(y)) / b
    grad = log_p.exp_().scatter_add_(1, target, torch.full_like(log_p[:, :1], -1.0)).div_(y.shape[1])
    for layer, h in reversed(list(zip(layers, inputs))):
        weight_grad, bias_grad = _grad_buffers(layer)
        torch.bmm(grad, h.transpose(1, 2), out=weight_grad)
        if hasattr(layer, "weight_mask"):
            weight_grad.mul_(layer.weight_mask)
        torch.sum(grad, 2, out=bias_grad)
        if layer is not layers[0]:  # back through the layer, then the ReLU that made h: zero where h = 0
            grad = _relu_backward(torch.bmm(layer.weight.transpose(1, 2), grad), h)
    return losses


def _relu_backward(grad: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """grad where the ReLU's output h is positive, else 0: ATen's ReLU backward, the kernel autograd runs.

    One pass over the tensors. `grad.mul_(h > 0)` built a bool tensor and then took a type-promoting
    multiply: 60 against 11 us a 2-network step on a 2-core CPU, 185 against 22 us at 10 networks.
    """
    return torch.ops.aten.threshold_backward(grad, h, 0)


def _grad_buffers(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The .grad tensors of a layer's trainable weight (weight_orig when pruned) and bias, created once."""
    weight = layer.weight_orig if hasattr(layer, "weight_orig") else layer.weight
    for param in (weight, layer.bias):
        if param.grad is None:
            param.grad = torch.empty_like(param)
    return weight.grad, layer.bias.grad


class _Stepper:
    """Runs train_step eagerly, or on CUDA replays it from a CUDA graph with static input buffers."""

    WARMUP = 3  # eager steps before capture, so that Adam's state and cuBLAS workspaces exist

    def __init__(self, model: StackedMLP, optimizer: torch.optim.Optimizer, data: MNISTSplits, use_graph: bool):
        self.model, self.optimizer, self.data = model, optimizer, data
        self.use_graph, self.steps = use_graph, 0
        self.graph: torch.cuda.CUDAGraph | None = None

    @classmethod
    def with_adam(cls, model: StackedMLP, data: MNISTSplits, learning_rate: float, use_graph: bool) -> _Stepper:
        """The step train_networks takes: fused Adam over every parameter, capturable when the step is a graph."""
        optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, capturable=use_graph, fused=True)
        return cls(model, optimizer, data, use_graph)

    def __call__(self, indices: torch.Tensor) -> torch.Tensor:
        if not self.use_graph:
            return train_step(self.model, self.optimizer, *get_batch(self.data.train_x, self.data.train_y, indices))
        if self.graph is None:
            self.static_indices = indices.clone()
            if self.steps < self.WARMUP:
                self.steps += 1
                return self._eager_on_side_stream()
            try:
                self._capture()
            except RuntimeError as error:  # e.g. an op that cannot be captured: train eagerly instead
                warnings.warn(f"CUDA graph capture failed, training without it: {error}", stacklevel=3)
                self.use_graph, self.graph = False, None
                return self(indices)
        self.static_indices.copy_(indices)
        self.graph.replay()
        return self.static_loss

    def _eager_on_side_stream(self) -> torch.Tensor:
        stream = _side_stream(self.data.train_x.device)
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            loss = train_step(
                self.model, self.optimizer, *get_batch(self.data.train_x, self.data.train_y, self.static_indices)
            )
        torch.cuda.current_stream().wait_stream(stream)
        return loss

    def _capture(self) -> None:
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):  # records, does not run: the replay below is the step
            x, y = get_batch(self.data.train_x, self.data.train_y, self.static_indices)
            self.static_loss = train_step(self.model, self.optimizer, x, y)


@functools.cache
def _side_stream(device: torch.device) -> torch.cuda.Stream:
    """The one stream every warm-up before a capture runs on (CUDA graphs want their warm-up off the main stream).

    One for the whole process, not a new one per level: torch hands out its 32 pooled streams in turn, and
    cuBLAS keeps a workspace for every stream it has run on, for good. With a new stream per level, each level at
    10 networks left 128 MB more allocated on an H200 (six levels in a row), against 31 MB with this one.
    """
    return torch.cuda.Stream(device)


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Treat subnormal floats (below 1.2e-38) as zero on the CPU inside the block; restore the default after.

    Adam's running averages of a weight whose gradient stays exactly zero (one feeding a dead ReLU unit)
    decay geometrically into the subnormal range, where x86 arithmetic is many times slower: without
    this the `seed` preset trained 12% slower on a 2-core CPU, with the same results to the printed digit.
    """
    flushing = _set_flush_denormal_on_every_thread(True)  # False where the CPU cannot (then nothing changes)
    try:
        yield
    finally:
        if flushing:
            _set_flush_denormal_on_every_thread(False)


_PARALLEL_REGION = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def _set_flush_denormal_on_every_thread(on: bool) -> bool:
    """`torch.set_flush_denormal(on)` on this thread and on every thread of the OpenMP pool torch computes with.

    The flag lives in each thread's own floating-point control register, and libgomp's worker threads
    copy it only when they are created: once torch has run a parallel op, setting it here alone left
    half of a 2-thread fused Adam step on subnormals (373 instead of 208 us a step in a seed run).
    So the flag is set again inside one OpenMP parallel region, which runs on every worker.
    """
    flushing = torch.set_flush_denormal(on)
    openmp = _loaded_libgomp()
    if flushing and openmp is not None and torch.get_num_threads() > 1:

        def on_each_thread(_: int | None) -> None:
            torch.set_flush_denormal(on)

        openmp.GOMP_parallel(_PARALLEL_REGION(on_each_thread), None, torch.get_num_threads(), 0)
    return flushing


@functools.cache
def _loaded_libgomp() -> ctypes.CDLL | None:
    """The libgomp that torch runs its CPU threads with (Linux builds), or None: never loads a second copy.

    Other builds mostly use LLVM's or Intel's OpenMP, whose workers copy the primary thread's control register
    at the start of every parallel region (KMP_INHERIT_FP_CONTROL, on by default): the flag reaches them anyway.
    """
    if not hasattr(os, "RTLD_NOLOAD"):
        return None
    bundled = sorted(str(path) for path in (Path(torch.__file__).parent / "lib").glob("libgomp*.so*"))
    for name in (*bundled, "libgomp.so.1"):
        try:
            return ctypes.CDLL(name, mode=os.RTLD_NOLOAD)
        except OSError:
            continue
    return None


def train_networks(
    model: StackedMLP,
    data: MNISTSplits,
    *,
    iterations: int,
    batch_size: int,
    learning_rate: float,
    eval_every: int,
    batch_seeds: list[int],
    snapshot_iteration: int | None = None,
    cuda_graph: bool | None = None,
    desc: str = "train",
    progress: bool = True,
) -> TrainResult:
    """Train every network of `model` for `iterations` Adam steps; network i draws batches with batch_seeds[i].

    Evaluates on validation and test before training, every `eval_every` iterations and at the end.
    Raises DivergenceError at the first non-finite or exploded training loss. `cuda_graph` defaults to "on CUDA".
    """
    device = data.train_x.device
    use_graph = device.type == "cuda" if cuda_graph is None else cuda_graph
    sampler = BatchSampler(batch_seeds, len(data.train_y), batch_size, device)
    step = _Stepper.with_adam(model, data, learning_rate, use_graph)
    window = torch.zeros(min(eval_every, iterations), model.n_networks, device=device)  # losses since the last eval
    checkpoints = sorted({0, *range(eval_every, iterations, eval_every), iterations})
    snapshot, start = None, time.perf_counter()
    history = [_evaluate_all(model, data)]
    with flush_denormals(), tqdm(total=iterations, desc=desc, leave=False, disable=not progress) as bar:
        for begin, end in zip(checkpoints, checkpoints[1:]):
            for it in range(begin, end):
                window[it - begin] = step(sampler.indices(it))
                if it + 1 == snapshot_iteration:
                    snapshot = current_params(model)
            if begin == 0:  # window[0]: each network's loss before its first step
                limit = DIVERGENCE_FACTOR * window[0].clamp(min=math.log(10))
            _check_finite(window[: end - begin], begin, limit)
            history.append(_evaluate_all(model, data))
            bar.update(end - begin)
            bar.set_postfix(loss=f"{window[: end - begin].mean().item():.4f}")
    if device.type == "cuda":
        torch.cuda.synchronize()
    metrics = {name: torch.stack([h[name] for h in history]).cpu() for name in METRICS}
    return TrainResult(current_params(model), snapshot, checkpoints, metrics, time.perf_counter() - start)


def _evaluate_all(model: StackedMLP, data: MNISTSplits) -> dict[str, torch.Tensor]:
    val_loss, val_acc = evaluate(model, data.val_x, data.val_y)
    test_loss, test_acc = evaluate(model, data.test_x, data.test_y)
    return dict(val_loss=val_loss, val_accuracy=val_acc, test_loss=test_loss, test_accuracy=test_acc)


def _check_finite(losses: torch.Tensor, first_iteration: int, limit: torch.Tensor) -> None:
    bad = ~torch.isfinite(losses) | (losses > limit)
    if bad.any():
        rows, networks = bad.nonzero(as_tuple=True)
        first = rows.argmin()
        raise DivergenceError(int(networks[first]), first_iteration + int(rows[first]))
