"""The fast training step: the same Adam step as training.reference_step, with every speed trick in one place.

    with FastStep(model, data, learning_rate=1.2e-3) as step:   # the block flushes subnormal floats on the CPU
        losses = step(indices)                                  # indices (n, batch): one batch per network

`FastStep` is the only entry point; train_networks uses it by default, and takes it with options as its `step`,
e.g. `functools.partial(FastStep, compile=True)`. Each trick, and why it exists:

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
- Optionally (`compile=True`), the step's arithmetic compiled by torch.compile (Inductor): the hand-written
  gradients, the gradient mask and Adam's update (`_adam_update`, Adam's formulas on the optimizer's own state)
  become fewer, fused kernels, the mask folded into the update's one pass over each parameter, and on CUDA
  those kernels are what the graph captures. The compiled code takes tensors only, so every level's new step
  reuses it. The rule for the default: off unless measured faster on that device, and so off on the CPU and
  on CUDA alike (docs/performance.md). If compiling fails (no C++ compiler, no Triton, an op Inductor cannot handle),
  the step warns once and trains uncompiled, the same step. It rounds a little differently from the fused
  Adam kernel (fused arithmetic, another order of operations).
"""

from __future__ import annotations

import ctypes
import functools
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .data import MNISTSplits, get_batch
from .model import LAYERS, StackedMLP, stacked_linear

# torch.optim.Adam's state of a parameter, which the compiled step updates in place
ADAM_STATE = ("exp_avg", "exp_avg_sq", "step")


class FastStep:
    """One Adam step for every network of `model` on its own batch: `step(indices)` -> per-network losses (n,).

    `indices` (n, batch) pick each network's examples from `data`'s training set. The losses stay on the device
    (no host sync). Use it as a context manager to flush subnormal floats while training on the CPU; steps taken
    outside a `with` block are the same steps, only slower where subnormals occur. `cuda_graph` defaults to
    "the data is on CUDA"; `graph` is the captured CUDA graph once there is one. `compile` compiles the step's
    arithmetic with torch.compile from the second step on (the first, uncompiled, creates Adam's state); the
    first compiled step pays for the compile. `compiled` says whether steps now run compiled.
    """

    WARMUP = 3  # eager steps before capture, so that Adam's state and cuBLAS workspaces exist

    def __init__(
        self,
        model: StackedMLP,
        data: MNISTSplits,
        learning_rate: float,
        cuda_graph: bool | None = None,
        compile: bool = False,
    ):
        self.model, self.data = model, data
        self.use_graph = data.train_x.device.type == "cuda" if cuda_graph is None else cuda_graph
        # capturable: Adam's step count on the device, as a graph needs it and as the compiled update computes with it
        capturable = self.use_graph or (compile and data.train_x.device.type == "cuda")
        self.optimizer = torch.optim.Adam(
            model.parameters(), lr=learning_rate, capturable=capturable, fused=not compile, foreach=compile or None
        )
        self.graph: torch.cuda.CUDAGraph | None = None
        self.steps, self._flushing = 0, False
        self.compile, self.compiled = compile, False  # compiled: True once a compiled step has run
        self._compiled_step: Callable[..., torch.Tensor] | None = None
        self._compiled_arguments: tuple = ()  # all but the indices, gathered once at the first compiled step
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
        if not self.compile or not self.optimizer.state:  # uncompiled, or the first step, which makes Adam's state
            return self._eager_step(indices)
        if self.compiled:
            return self._compiled_step(*self._compiled_arguments, indices)
        try:  # the first compiled step compiles: a failure there trains on uncompiled, never stops the run
            self._compiled_arguments = self._tensors()
            self._compiled_step = torch.compile(_step_on_tensors, dynamic=False)
            losses = self._compiled_step(*self._compiled_arguments, indices)
        except Exception as error:  # noqa: BLE001 (Dynamo and Inductor raise many kinds; each means "no compile")
            warnings.warn(f"torch.compile failed, training uncompiled: {_first_line(error)}", stacklevel=4)
            self.compile, self._compiled_step = False, None
            return self._eager_step(indices)  # the gradients are rewritten whole; Adam had not stepped
        self.compiled = True
        return losses

    def _eager_step(self, indices: torch.Tensor) -> torch.Tensor:
        x, y = get_batch(self.data.train_x, self.data.train_y, indices)
        losses = _loss_and_gradients(self._weights, self._biases, self._masks, self._grads, x, y)
        self.optimizer.step()
        return losses

    def _tensors(self) -> tuple:
        """The compiled step's arguments but the indices: tensors and plain values only, never the model or the
        optimizer, so that the next level's step (new objects, the same shapes) reuses the compiled code instead of
        compiling again. The parameters go as aliases that do not require grad (what Adam's no_grad step sees)."""
        group = self.optimizer.param_groups[0]
        state = [self.optimizer.state[param] for param in group["params"]]
        adam = {key: [s[key] for s in state] for key in ADAM_STATE}
        adam["params"], adam["grads"] = [p.detach() for p in group["params"]], [p.grad for p in group["params"]]
        hyper = {key: group[key] for key in ("lr", "betas", "eps")}  # no weight decay, no amsgrad: Adam's defaults
        weights, biases = ([p.detach() for p in params] for params in (self._weights, self._biases))
        return weights, biases, self._masks, self._grads, self.data.train_x, self.data.train_y, adam, hyper

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


def _step_on_tensors(
    weights: list[torch.Tensor],
    biases: list[torch.Tensor],
    masks: list[torch.Tensor | None],
    grads: tuple[list[torch.Tensor], list[torch.Tensor]],
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    adam: dict[str, list[torch.Tensor]],
    hyper: dict,
    indices: torch.Tensor,
) -> torch.Tensor:
    """FastStep's eager step as one function of tensors, for torch.compile: the gradients, then Adam's update."""
    losses = _loss_and_gradients(weights, biases, masks, grads, *get_batch(train_x, train_y, indices))
    beta1, beta2 = hyper["betas"]
    for param, grad, exp_avg, exp_avg_sq, step in zip(*(adam[k] for k in ("params", "grads", *ADAM_STATE))):
        _adam_update(param, grad, exp_avg, exp_avg_sq, step, hyper["lr"], beta1, beta2, hyper["eps"])
    return losses


def _adam_update(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: torch.Tensor,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """torch.optim.Adam's update (no weight decay, no amsgrad), in place on one parameter and its state.

    Written out for the compiled step because torch's own multi-tensor Adam does not trace as a plain function
    on the CPU, and traced through the optimizer object it ties the compiled code to that one object (each level
    would compile again). The same formulas as Adam's; Inductor fuses them, with the gradient mask before them,
    into one pass over each parameter.
    """
    step.add_(1)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias_correction1, bias_correction2 = 1 - beta1**step, 1 - beta2**step
    denom = (exp_avg_sq.sqrt() / bias_correction2.sqrt()).add_(eps)
    param.sub_(lr / bias_correction1 * exp_avg / denom)


def _first_line(error: BaseException) -> str:
    """An exception's type and the first line of its message (the compiler's run to pages)."""
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0] if message else ''}"


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
