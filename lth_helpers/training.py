"""Train a stack of networks together, each on its own batches, and evaluate them as it goes.

    result = train_networks(model, data, iterations=1000, batch_size=60, learning_rate=1.2e-3,
                            eval_every=100, batch_seeds=[1, 2])

One Adam optimizer over the stacked tensors is the same as one Adam per network, up to rounding: Adam
is elementwise, and the loss is the sum of the networks' own mean losses, so network i's gradient is
exactly the gradient of its own loss. (The rounding: torch's fused CPU Adam updates the elements past
the tensor's last full vector on a scalar path, so which network's last biases take it depends on the
stack size.)

A training step is one of two, the same step computed two ways (tested equal), chosen by train_networks' `step`:
`ReferenceStep`, plain autograd through the forward pre-hooks of `torch.nn.utils.prune`, which is the definition;
and fast_step.FastStep, the default, which adds every speed trick (hand-written gradients, fused Adam, subnormal
flushing, CUDA graphs). The host waits for the device only at evaluation points, where
`Evaluator` takes validation and test together.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .config import METRICS
from .data import BatchSampler, MNISTSplits, get_batch
from .fast_step import FastStep
from .model import LAYERS, Params, StackedMLP, stacked_linear
from .pruning import current_params, pruned_weight

DIVERGENCE_FACTOR = 100  # a training loss this many times its start (at least ln 10, a uniform guess) has diverged
# A diverged training loss, in words: what every divergence error says of the loss
DIVERGED_LOSS = f"NaN, infinite, or over {DIVERGENCE_FACTOR} times its starting value"


class DivergenceError(RuntimeError):
    """A network's training loss became NaN or infinite, or exploded: over DIVERGENCE_FACTOR times the larger of its
    loss before training and ln(10), the loss of a uniform guess over the ten classes. Adam at a sane learning rate
    never comes near that; an exploding run can reach 1e29 without becoming NaN, and learns nothing on the way."""

    def __init__(self, network: int, iteration: int):
        super().__init__(f"network {network} diverged: training loss {DIVERGED_LOSS} at iteration {iteration}")
        self.network, self.iteration = network, iteration


class TrainingStep(Protocol):
    """What train_networks trains with: `step(indices)` takes one Adam step for every network on the batches
    `indices` (n, batch) pick and returns the per-network losses (n,); training runs inside its `with` block."""

    def __enter__(self) -> TrainingStep: ...

    def __exit__(self, *exc: object) -> None: ...

    def __call__(self, indices: torch.Tensor) -> torch.Tensor: ...


StepFactory = Callable[[StackedMLP, MNISTSplits, float], TrainingStep]  # (model, data, learning_rate) -> a step


@dataclass
class TrainResult:
    params: Params  # the trained weights (weight_orig x mask) and biases, a stack
    snapshot: Params | None  # the weights after `snapshot_iteration` iterations, if asked for
    iterations: list[int]  # the iterations at which the metrics were taken (the first: before training)
    metrics: dict[str, torch.Tensor]  # METRICS name -> (len(iterations), n_networks); accuracies in %
    seconds: float  # wall-clock time of the whole call, evaluations included


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
    start_iteration: int = 0,
    step: StepFactory = FastStep,
    desc: str = "train",
    progress: bool = True,
) -> TrainResult:
    """Train every network of `model` from iteration `start_iteration` to `iterations` (that many Adam steps less
    `start_iteration`); network i draws batches with batch_seeds[i], those of iterations start_iteration onwards.

    Evaluates on validation and test before training, every `eval_every` iterations and at the end.
    Raises DivergenceError at the first non-finite or exploded training loss. `step(model, data, learning_rate)`
    makes the training step: FastStep (the default), ReferenceStep (plain autograd and Adam), or FastStep with its
    options, e.g. `functools.partial(FastStep, cuda_graph=False)`.
    """
    device = data.train_x.device
    sampler = BatchSampler(batch_seeds, len(data.train_y), batch_size, device)
    train_step = step(model, data, learning_rate)
    if not 0 <= start_iteration < iterations:
        raise ValueError(f"start_iteration ({start_iteration}) must lie in [0, iterations ({iterations}))")
    window = torch.zeros(min(eval_every, iterations), model.n_networks, device=device)  # losses since the last eval
    # Evaluations at the start, every eval_every iterations counted from 0 (the dense network's), and at the end.
    after = range(eval_every * (start_iteration // eval_every + 1), iterations, eval_every)
    checkpoints = sorted({start_iteration, *after, iterations})
    snapshot, start = None, time.perf_counter()
    evaluator = Evaluator.validation_and_test(data, model.n_networks)
    history = [evaluator.metrics(model)]
    total = iterations - start_iteration
    with train_step, tqdm(total=total, desc=desc, leave=False, disable=not progress) as bar:
        for begin, end in zip(checkpoints, checkpoints[1:]):
            for it in range(begin, end):
                window[it - begin] = train_step(sampler.indices(it))
                if it + 1 == snapshot_iteration:
                    snapshot = current_params(model)
            if begin == start_iteration:  # window[0]: each network's loss before its first step
                limit = DIVERGENCE_FACTOR * window[0].clamp(min=math.log(10))
            _check_finite(window[: end - begin], begin, limit)
            history.append(evaluator.metrics(model))
            bar.update(end - begin)
            bar.set_postfix(loss=f"{window[: end - begin].mean().item():.4f}")
    if device.type == "cuda":
        torch.cuda.synchronize()
    metrics = {name: torch.stack([h[name] for h in history]).cpu() for name in METRICS}
    return TrainResult(current_params(model), snapshot, checkpoints, metrics, time.perf_counter() - start)


def training_split_metrics(model: StackedMLP, data: MNISTSplits) -> dict[str, torch.Tensor]:
    """TRAIN_METRICS name -> (n,): loss and accuracy (%) of every network on the whole training split, which says,
    beside the test accuracy, how much of a network's fit to the images it learned from carries over to new ones."""
    (loss,), (accuracy,) = Evaluator([(data.train_x, data.train_y)], model.n_networks)(model)
    return {"train_accuracy": accuracy.cpu(), "train_loss": loss.cpu()}


def reference_step(
    model: StackedMLP, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """One training step for every network on its own batch, x (n, b, 784), y (n, b), the plain way: the forward
    through prune's pre-hooks (weight = weight_orig * weight_mask), the sum of the networks' mean cross-entropies
    backward by autograd, an optimizer step, gradients cleared. Returns the per-network losses (n,), detached.

    The definition the fast step is tested against: autograd's chain rule through the hook gives weight_orig the
    weight's gradient times the mask, so pruned entries get exactly zero gradient.
    """
    losses = F.cross_entropy(model(x).transpose(1, 2), y, reduction="none").mean(1)
    losses.sum().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return losses.detach()


class ReferenceStep:
    """`reference_step` with plain Adam on the batches `indices` (n, batch) pick: `step(indices)` -> losses (n,).

    A context manager like FastStep, so that train_networks holds either step alike; this one changes nothing.
    """

    def __init__(self, model: StackedMLP, data: MNISTSplits, learning_rate: float):
        self.model, self.data = model, data
        self.optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)

    def __enter__(self) -> ReferenceStep:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __call__(self, indices: torch.Tensor) -> torch.Tensor:
        return reference_step(self.model, self.optimizer, *get_batch(self.data.train_x, self.data.train_y, indices))


class Evaluator:
    """Mean cross-entropy and accuracy (%) of every network on one or more splits, (x, y) each, in one pass.

        evaluator = Evaluator([(data.val_x, data.val_y), (data.test_x, data.test_y)], n_networks)
        losses, accuracies = evaluator(model)      # each (splits, n)

    Made once per training call and called at every evaluation: the splits are joined into one tensor on their
    device here, once, so that an evaluation goes over them in one loop. `chunk` examples go through at a time,
    never across a split's boundary, so every split is computed exactly as on its own. By default: all of them at
    once on a GPU (one forward, one set of kernels for validation and test together); on a CPU 10,000 / n_networks
    examples, held between 1,000 and 5,000, so that a chunk's activations stay in cache: 10,000 network-examples
    from 2 to 10 networks, 5,000 for one network, and beyond 10 networks 1,000 examples (50,000 network-examples at
    50). Each layer's masked weight (what prune's hook computes before every forward) is made once per evaluation,
    not once per chunk.
    """

    def __init__(self, splits: list[tuple[torch.Tensor, torch.Tensor]], n_networks: int, chunk: int | None = None):
        self.x = torch.cat([x for x, _ in splits]) if len(splits) > 1 else splits[0][0]
        self.y = torch.cat([y for _, y in splits]) if len(splits) > 1 else splits[0][1]
        self.sizes = torch.tensor([len(y) for _, y in splits], device=self.y.device)[:, None]
        edges = list(itertools.accumulate((len(y) for _, y in splits), initial=0))
        self.bounds = list(zip(edges, edges[1:]))
        if chunk is None and self.x.device.type == "cuda":
            self.pieces = [(0, edges[-1])]  # one forward over every split: fewest kernel launches
        else:
            chunk = chunk or min(5000, max(1000, 10_000 // n_networks))
            self.pieces = [(s, min(s + chunk, end)) for begin, end in self.bounds for s in range(begin, end, chunk)]

    @torch.no_grad()
    def __call__(self, model: StackedMLP) -> tuple[torch.Tensor, torch.Tensor]:
        """(losses, accuracies) of every network on every split, each (splits, n); accuracies in %."""
        n, device = model.n_networks, self.x.device
        weights = [pruned_weight(getattr(model, name)) for name in LAYERS]
        biases = [getattr(model, name).bias for name in LAYERS]
        loss_sum = torch.zeros(len(self.bounds), n, dtype=torch.float64, device=device)
        correct = torch.zeros(len(self.bounds), n, dtype=torch.int64, device=device)
        for start, end in self.pieces:
            logits = _logits(weights, biases, self.x[start:end])  # (n, classes, chunk), as the model computes it
            target = self.y[start:end].expand(n, -1)
            losses = F.cross_entropy(logits, target, reduction="none")
            hits = logits.argmax(1) == target
            for split, (begin, end_of_split) in enumerate(self.bounds):
                first, last = max(begin, start) - start, min(end_of_split, end) - start
                if first < last:
                    loss_sum[split] += losses[:, first:last].sum(1).double()
                    correct[split] += hits[:, first:last].sum(1)
        return loss_sum / self.sizes, 100 * correct / self.sizes

    @classmethod
    def validation_and_test(cls, data: MNISTSplits, n_networks: int) -> Evaluator:
        return cls([(data.val_x, data.val_y), (data.test_x, data.test_y)], n_networks)

    def metrics(self, model: StackedMLP) -> dict[str, torch.Tensor]:
        """METRICS name -> (n,), for an evaluator made by `validation_and_test`."""
        (val_loss, test_loss), (val_acc, test_acc) = self(model)
        return dict(val_loss=val_loss, val_accuracy=val_acc, test_loss=test_loss, test_accuracy=test_acc)


def _logits(weights: list[torch.Tensor], biases: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """StackedMLP's forward with the given weights, x (batch, 784) shared by all networks -> (n, classes, batch)."""
    h = x.transpose(0, 1)
    for weight, bias in zip(weights[:-1], biases[:-1]):
        h = stacked_linear(weight, bias, h).relu_()
    return stacked_linear(weights[-1], biases[-1], h)


def _check_finite(losses: torch.Tensor, first_iteration: int, limit: torch.Tensor) -> None:
    bad = ~torch.isfinite(losses) | (losses > limit)
    if bad.any():
        rows, networks = bad.nonzero(as_tuple=True)
        first = rows.argmin()
        raise DivergenceError(int(networks[first]), first_iteration + int(rows[first]))
