"""The fast training step: the same Adam step as training.reference_step, with every speed trick in one place.

    with FastStep(model, data, learning_rate=1.2e-3) as step:   # the block flushes subnormal floats on the CPU
        losses = step(indices)                                  # indices (n, batch): one batch per network

`FastStep` is the only entry point; train_networks uses it by default, and takes it with options as its `step`,
e.g. `functools.partial(FastStep, cuda_graph=False)`. Each trick, and why it exists:

- Hand-written gradients. The three layers' gradients are written out (`_loss_and_gradients`) instead of
  recorded and replayed by autograd: for a network this small, autograd's bookkeeping is a large share of a
  step. They are tested equal to autograd's through prune's forward pre-hooks.
- The mask rule, written explicitly. A pruned layer's weight is `weight_orig * weight_mask`; by the chain
  rule through prune's hook, the gradient reaching `weight_orig` is the weight's gradient times the mask.
  The step computes with `weight_orig` itself, which equals `weight_orig * weight_mask` because its pruned
  entries are zero (build_model leaves them so, and the step zeroes them once when it is made), and so skips
  the hook's masked copy of every weight before every forward. It multiplies the gradient by the mask, so
  pruned entries get exactly zero gradient, and Adam, whose state for them stays zero, never moves them.
- ReLU backward via ATen's `threshold_backward`, the kernel autograd itself runs: one pass over the
  tensors, where `grad * (h > 0)` builds a bool tensor and then takes a type-promoting multiply.
- Fused Adam: one kernel for every parameter instead of a loop of small ones.
- Subnormal floats flushed to zero on the CPU, inside the `with` block. Adam's running averages of a weight
  whose gradient stays exactly zero (one feeding a dead ReLU unit) decay geometrically into the subnormal
  range, where x86 arithmetic is many times slower. The flag lives in each thread's floating-point control
  register, so it is set on every OpenMP worker thread too (through libgomp, where torch runs on it).
- On CUDA, a CUDA graph: the step is captured once and replayed, because a network this small is bound by
  kernel launches, not arithmetic. The host does not wait for the device inside a step.
- A layer whose mask keeps every weight (level 0, and any layer pruned at rate 0) skips the gradient-mask
  multiply: multiplying by one changes nothing, and the multiply is a whole pass over the weight's gradient.
"""

from __future__ import annotations

import ctypes
import functools
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .data import MNISTSplits, get_batch
from .model import LAYERS, StackedMLP, stacked_linear


class FastStep:
    """One Adam step for every network of `model` on its own batch: `step(indices)` -> per-network losses (n,).

    `indices` (n, batch) pick each network's examples from `data`'s training set. The losses stay on the device
    (no host sync). Use it as a context manager to flush subnormal floats while training on the CPU; steps taken
    outside a `with` block are the same steps, only slower where subnormals occur. `cuda_graph` defaults to
    "the data is on CUDA"; `graph` is the captured CUDA graph once there is one.
    """

    WARMUP = 3  # eager steps before capture, so that Adam's state and cuBLAS workspaces exist

    def __init__(
        self,
        model: StackedMLP,
        data: MNISTSplits,
        learning_rate: float,
        cuda_graph: bool | None = None,
    ):
        self.model, self.data = model, data
        self.use_graph = data.train_x.device.type == "cuda" if cuda_graph is None else cuda_graph
        # capturable: Adam's step count on the device, as a graph needs it
        self.optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, capturable=self.use_graph, fused=True)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.steps, self._flushing = 0, False
        _zero_pruned_entries(model)
        layers = [getattr(model, name) for name in LAYERS]
        self._weights, self._biases = [_trainable_weight(layer) for layer in layers], [layer.bias for layer in layers]
        self._masks = _gradient_masks(model)
        # Each parameter's .grad, made here once and overwritten in place every step (a CUDA graph needs fixed buffers)
        self._grads = [_grad_buffer(param) for param in self._weights], [_grad_buffer(param) for param in self._biases]

    def __enter__(self) -> FastStep:
        self._flushing = _set_flush_denormal_on_every_thread(True)  # False where the CPU cannot: nothing changes
        return self

    def __exit__(self, *exc: object) -> None:
        if self._flushing:
            _set_flush_denormal_on_every_thread(False)
            self._flushing = False

    def __call__(self, indices: torch.Tensor) -> torch.Tensor:
        if not self.use_graph:
            return self._step(indices)
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

    def _step(self, indices: torch.Tensor) -> torch.Tensor:
        x, y = get_batch(self.data.train_x, self.data.train_y, indices)
        losses = _loss_and_gradients(self._weights, self._biases, self._masks, self._grads, x, y)
        self.optimizer.step()
        return losses

    def _eager_on_side_stream(self) -> torch.Tensor:
        stream = _side_stream(self.data.train_x.device)
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            loss = self._step(self.static_indices)
        torch.cuda.current_stream().wait_stream(stream)
        return loss

    def _capture(self) -> None:
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):  # records, does not run: the replay in __call__ is the step
            self.static_loss = self._step(self.static_indices)


@torch.no_grad()
def _gradient_masks(model: StackedMLP) -> list[torch.Tensor | None]:
    """Each layer's weight_mask, or None where there is none or it keeps every weight (its multiply would change
    nothing). Read once, when the step is made: masks do not change while a level trains."""
    masks = [getattr(getattr(model, name), "weight_mask", None) for name in LAYERS]
    return [None if mask is None or bool(mask.all()) else mask for mask in masks]


@torch.no_grad()
def _zero_pruned_entries(model: StackedMLP) -> None:
    """weight_orig *= weight_mask in every pruned layer: the same network, and weight_orig is then the weight."""
    for name in LAYERS:
        layer = getattr(model, name)
        if hasattr(layer, "weight_mask"):
            layer.weight_orig.mul_(layer.weight_mask)


def _trainable_weight(layer: nn.Module) -> torch.Tensor:
    """The parameter a layer's weight is trained as: weight_orig when pruned, else weight."""
    return layer.weight_orig if hasattr(layer, "weight_orig") else layer.weight


@torch.no_grad()
def _loss_and_gradients(
    weights: list[torch.Tensor],
    biases: list[torch.Tensor],
    masks: list[torch.Tensor | None],
    grads: tuple[list[torch.Tensor], list[torch.Tensor]],
    x: torch.Tensor,
    y: torch.Tensor,
) -> torch.Tensor:
    """Mean cross-entropy of each network on its own batch, x (n, b, 784), y (n, b); writes into `grads` (the
    weights' and the biases' .grad) the gradients of `loss.sum().backward()` through prune's hooks. The layers'
    trainable weights (`_trainable_weight`, whose pruned entries must be zero), biases and gradient masks
    (`_gradient_masks`), input to output."""
    inputs = [x.transpose(1, 2)]  # feature-major: (n, features, b)
    for weight, bias in zip(weights[:-1], biases[:-1]):
        inputs.append(stacked_linear(weight, bias, inputs[-1]).relu_())
    log_p = stacked_linear(weights[-1], biases[-1], inputs[-1]).log_softmax(1)  # (n, classes, b)
    target = y[:, None, :]
    losses = -log_p.gather(1, target).mean((1, 2))
    # d(mean cross-entropy)/d(logits) = (softmax - one_hot(y)) / b
    grad = log_p.exp_().scatter_add_(1, target, torch.full_like(log_p[:, :1], -1.0)).div_(y.shape[1])
    for weight, mask, h, weight_grad, bias_grad in reversed(list(zip(weights, masks, inputs, *grads))):
        torch.bmm(grad, h.transpose(1, 2), out=weight_grad)
        if mask is not None:  # the chain rule through weight = weight_orig * weight_mask
            weight_grad.mul_(mask)
        torch.sum(grad, 2, out=bias_grad)
        if weight is not weights[0]:  # back through the layer, then the ReLU that made h (ATen's ReLU backward)
            grad = torch.ops.aten.threshold_backward(torch.bmm(weight.transpose(1, 2), grad), h, 0)
    return losses


def _grad_buffer(param: torch.Tensor) -> torch.Tensor:
    """A parameter's .grad, created once and then overwritten in place every step (a CUDA graph needs fixed buffers)."""
    if param.grad is None:
        param.grad = torch.empty_like(param)
    return param.grad


@functools.cache
def _side_stream(device: torch.device) -> torch.cuda.Stream:
    """The one stream every warm-up before a capture runs on (CUDA graphs want their warm-up off the main stream).

    One for the whole process, not a new one per level: torch hands out its pooled streams in turn, and cuBLAS
    keeps a workspace for every stream it has run on, for good, so a new stream per level would leave one more
    workspace allocated after every level.
    """
    return torch.cuda.Stream(device)


_PARALLEL_REGION = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def _set_flush_denormal_on_every_thread(on: bool) -> bool:
    """`torch.set_flush_denormal(on)` on this thread and on every thread of the OpenMP pool torch computes with.

    libgomp's worker threads copy the flag only when they are created: once torch has run a parallel op,
    setting it on this thread alone leaves the workers' share of every parallel op on subnormals. So the flag
    is set again inside one OpenMP parallel region, which runs on every worker. Returns whether the CPU flushes.
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
