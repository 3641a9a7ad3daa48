"""The package's engine computes the lottery-ticket loop as plain PyTorch does with torch.nn.utils.prune.

The textbook loop (nn.Sequential, autograd, torch.optim.Adam, prune.l1_unstructured or prune.global_unstructured,
the rewind written into weight_orig) against build_model + train_networks + prune_by_magnitude, from the same initial
weights, batches and rates, on the real MNIST files. In float64, so that both agree to rounding: in float32 the
hand-written gradients round differently in the last bit, and Adam can turn that into a visible difference.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from lth_helpers import (
    build_model,
    full_masks,
    init_params,
    layer_shapes,
    make_config,
    prune_by_magnitude,
    train_networks,
)
from lth_helpers.data import BatchSampler, MNISTSplits

ITERATIONS, LEVELS, BATCH_SEED = 100, 3, 1


@pytest.fixture(scope="module")
def mnist64(mnist) -> MNISTSplits:
    """MNIST in float64, with 2,000 validation and test images: evaluation is not what is compared here."""
    return MNISTSplits(
        mnist.train_x.double(),
        mnist.train_y,
        mnist.val_x[:2000].double(),
        mnist.val_y[:2000],
        mnist.test_x[:2000].double(),
        mnist.test_y[:2000],
    )


def by_hand(cfg, theta_0, data: MNISTSplits) -> tuple[list[float], list[dict[str, torch.Tensor]]]:
    """The paper's loop in plain PyTorch: the test loss after training at each level, and the masks pruning found."""
    net = nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(784, cfg.fc1_width),
            relu1=nn.ReLU(),
            fc2=nn.Linear(cfg.fc1_width, cfg.fc2_width),
            relu2=nn.ReLU(),
            fc3=nn.Linear(cfg.fc2_width, 10),
        )
    ).double()
    net.load_state_dict(theta_0)
    layers = {"fc1": net.fc1, "fc2": net.fc2, "fc3": net.fc3}
    rates = {"fc1": cfg.prune_rate, "fc2": cfg.prune_rate, "fc3": cfg.prune_rate_output}
    losses, masks = [], []
    for _ in range(LEVELS):
        optimizer = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
        batches = BatchSampler([BATCH_SEED], len(data.train_y), cfg.batch_size)
        for i in range(ITERATIONS):
            index = batches.indices(i)[0]
            optimizer.zero_grad()
            F.cross_entropy(net(data.train_x[index]), data.train_y[index]).backward()
            optimizer.step()
        with torch.no_grad():  # the forward pass also recomputes weight = weight_orig * weight_mask, which prune ranks
            losses.append(F.cross_entropy(net(data.test_x), data.test_y).item())
        if cfg.global_pruning:
            targets = [(layer, "weight") for layer in layers.values()]
            prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=cfg.prune_rate)
        else:
            for name, layer in layers.items():
                prune.l1_unstructured(layer, "weight", amount=rates[name])
        with torch.no_grad():
            for name, layer in layers.items():
                layer.weight_orig.copy_(theta_0[f"{name}.weight"])
                layer.bias.copy_(theta_0[f"{name}.bias"])
        masks.append({name: layer.weight_mask.clone() for name, layer in layers.items()})
    return losses, masks


def by_package(cfg, theta_0, data: MNISTSplits) -> tuple[list[float], list[dict[str, torch.Tensor]]]:
    stack = {name: value[None] for name, value in theta_0.items()}
    masks = full_masks(1, layer_shapes(cfg.fc1_width, cfg.fc2_width))
    rates = {"fc1": cfg.prune_rate, "fc2": cfg.prune_rate, "fc3": cfg.prune_rate_output}
    losses, found = [], []
    for _ in range(LEVELS):
        model = build_model(stack, masks).double()
        result = train_networks(
            model,
            data,
            iterations=ITERATIONS,
            batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate,
            eval_every=ITERATIONS,
            batch_seeds=[BATCH_SEED],
            progress=False,
        )
        losses.append(result.metrics["test_loss"][-1, 0].item())
        masks = prune_by_magnitude(model, rates, cfg.prune_rate if cfg.global_pruning else None)
        found.append({name: mask[0] for name, mask in masks.items()})
    return losses, found


@pytest.mark.parametrize("preset", ["paper", "seed"])  # layer-wise (20%, output 10%) and global (20%) pruning
def test_the_package_finds_the_masks_and_losses_of_the_loop_by_hand(preset, mnist64):
    cfg = make_config(preset)
    theta_0 = {k: v[0].double() for k, v in init_params([cfg.seed], cfg.fc1_width, cfg.fc2_width, cfg.init).items()}
    hand_losses, hand_masks = by_hand(cfg, theta_0, mnist64)
    package_losses, package_masks = by_package(cfg, theta_0, mnist64)
    assert package_losses == pytest.approx(hand_losses, rel=0, abs=1e-9)
    for level, (hand, package) in enumerate(zip(hand_masks, package_masks)):
        for name in hand:
            assert torch.equal(hand[name], package[name].to(hand[name].dtype)), (level, name)
    assert hand_losses[0] < 0.6 and len({int(m["fc1"].sum()) for m in hand_masks}) == LEVELS  # it learned, it pruned
