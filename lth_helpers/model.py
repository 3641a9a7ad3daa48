"""LeNet-300-100 as a stack: n independent 784-300-100-10 MLPs held in one set of tensors.

    model = StackedMLP(n_networks=10)
    logits = model(x)      # x: (10, batch, 784), a batch per network -> (10, batch, 10)
    logits = model(x)      # x: (batch, 784), one batch shared by all -> (10, batch, 10)

A stack of one is simply the network. Stacking lets every network of a pruning level (trials x
conditions) train in the same few matrix multiplies, which is what makes the paper's figure cheap.
Network i's weights are `fc1.weight[i]`, and they never mix with another network's.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LAYERS = ("fc1", "fc2", "fc3")  # the prunable layers, input to output
INPUT_SIZE, N_CLASSES = 784, 10

Params = dict[str, torch.Tensor]  # "fc1.weight" -> (n, out, in), "fc1.bias" -> (n, out), ...


class StackedLinear(nn.Module):
    """`n` independent linear layers: weight (n, out, in), bias (n, out), as nn.Linear's, stacked.

    Activations are feature-major, (n, features, batch): then the forward is W @ h and the weight
    gradient, grad @ h^T, comes out in the weight's own layout, with no transposed copy per step.
    """

    def __init__(self, n: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(n, out_features))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: (n, in, batch), or (in, batch) shared by all networks -> (n, out, batch)."""
        return stacked_linear(self.weight, self.bias, h)


def stacked_linear(weight: torch.Tensor, bias: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The stacked layer's function: weight (n, out, in), bias (n, out), h (n, in, batch) or (in, batch) shared by
    all networks -> (n, out, batch). Public so that the fast training step computes with the very same function."""
    n, out_features, in_features = weight.shape
    if h.dim() == 2:  # one input for all networks: a single wide matrix multiply
        return torch.addmm(bias.reshape(-1, 1), weight.reshape(n * out_features, in_features), h).view(
            n, out_features, -1
        )
    return torch.baddbmm(bias[:, :, None], weight, h)


class StackedMLP(nn.Module):
    """n networks of shape 784-fc1_width-fc2_width-10 with ReLU between layers."""

    def __init__(self, n_networks: int, fc1_width: int = 300, fc2_width: int = 100):
        super().__init__()
        self.fc1 = StackedLinear(n_networks, INPUT_SIZE, fc1_width)
        self.fc2 = StackedLinear(n_networks, fc1_width, fc2_width)
        self.fc3 = StackedLinear(n_networks, fc2_width, N_CLASSES)

    @property
    def n_networks(self) -> int:
        return self.fc3.bias.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (n, batch, 784), a batch per network, or (batch, 784) for all -> logits (n, batch, 10)."""
        h = self.fc3(self.fc2(self.fc1(x.transpose(-1, -2)).relu_()).relu_())  # in place: no copy per layer
        return h.transpose(1, 2)  # a view: logits.transpose(1, 2) is the contiguous (n, 10, batch) again


def layer_shapes(fc1_width: int, fc2_width: int) -> dict[str, tuple[int, int]]:
    """(out, in) of each layer's weight matrix."""
    return {"fc1": (fc1_width, INPUT_SIZE), "fc2": (fc2_width, fc1_width), "fc3": (N_CLASSES, fc2_width)}


def init_params(seeds: list[int], fc1_width: int, fc2_width: int, scheme: str) -> Params:
    """Fresh weights for one network per seed, drawn on the CPU so that every device starts alike.

    glorot_normal: N(0, 2 / (fan_in + fan_out)), zero biases (the paper, via TensorFlow's defaults).
    kaiming_uniform: PyTorch's nn.Linear default, weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """
    per_network = []
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        params = {}
        for name, (fan_out, fan_in) in layer_shapes(fc1_width, fc2_width).items():
            weight, bias = torch.empty(fan_out, fan_in), torch.zeros(fan_out)
            if scheme == "glorot_normal":
                weight.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)), generator=g)
            elif scheme == "kaiming_uniform":
                bound = 1 / math.sqrt(fan_in)
                weight.uniform_(-bound, bound, generator=g)
                bias.uniform_(-bound, bound, generator=g)
            else:
                raise ValueError(f"unknown init scheme {scheme!r}")
            params[f"{name}.weight"], params[f"{name}.bias"] = weight[None], bias[None]
        per_network.append(params)
    return concat(per_network)


def init_std(scheme: str, fan_in: int, fan_out: int) -> float:
    """The standard deviation of a layer's initial weights under `scheme` (see `init_params`).

    glorot_normal: sqrt(2 / (fan_in + fan_out)). kaiming_uniform: U(-b, b) with b = 1/sqrt(fan_in) has std b/sqrt(3).
    The signed-constant start (Zhou et al. 2019) sets every kept weight to plus or minus this value.
    """
    if scheme == "glorot_normal":
        return math.sqrt(2.0 / (fan_in + fan_out))
    if scheme == "kaiming_uniform":
        return 1 / math.sqrt(fan_in) / math.sqrt(3)
    raise ValueError(f"unknown init scheme {scheme!r}")


def concat(stacks: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Join stacks (of params or masks) into one, networks in order."""
    return {key: torch.cat([s[key] for s in stacks]) for key in stacks[0]}


def select(stack: dict[str, torch.Tensor], index: list[int]) -> dict[str, torch.Tensor]:
    """The sub-stack of networks `index` (of params or masks)."""
    return {key: value[index] for key, value in stack.items()}


def to_device(stack: dict[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
    """The stack (of params or masks) on `device`."""
    return {key: value.to(device) for key, value in stack.items()}
