"""Magnitude pruning, rewinding and the control masks, all through `torch.nn.utils.prune`.

After `prune`, a layer holds `weight_orig` (a parameter), `weight_mask` (a buffer) and a forward
pre-hook that recomputes `weight = weight_orig * weight_mask` before every forward. So a rewind must
write `weight_orig`: assigning `weight.data` is overwritten at the next forward, a common pitfall that
rewinds nothing and just fine-tunes the pruned network round after round.

Every function works on stacks of networks (see model.py) and treats each network on its own.
"""

from __future__ import annotations

import torch
from torch.nn.utils import prune

from .model import LAYERS, Params, StackedMLP

Masks = dict[str, torch.Tensor]  # "fc1" -> (n, out, in) of 0.0 / 1.0


def n_to_prune(amount: float, alive: torch.Tensor) -> torch.Tensor:
    """How many of `alive` weights to prune, rounded exactly as torch.nn.utils.prune rounds."""
    if not 0 <= amount <= 1:
        raise ValueError(f"a pruning rate is a fraction of the surviving weights, from 0 to 1; got {amount}")
    return torch.tensor([round(amount * int(a)) for a in alive])


def prune_lowest(scores: torch.Tensor, mask: torch.Tensor, n_prune: torch.Tensor) -> torch.Tensor:
    """For each row, zero the mask at the `n_prune[row]` lowest scores among the entries still alive.

    scores, mask: (n, k); n_prune: (n,). Returns the new mask; entries already pruned stay pruned.
    """
    alive_scores = scores.masked_fill(mask == 0, float("inf"))  # dead entries sort last, never chosen
    order = alive_scores.argsort(dim=1, stable=True)
    rank_is_pruned = torch.arange(scores.shape[1], device=scores.device) < n_prune.to(scores.device)[:, None]
    pruned = torch.zeros_like(rank_is_pruned).scatter_(1, order, rank_is_pruned)
    return mask.masked_fill(pruned, 0)


def get_masks(model: StackedMLP) -> Masks:
    """Every layer's mask, copied; an unpruned layer's is all ones."""
    return {name: _mask(getattr(model, name)).detach().clone() for name in LAYERS}


def _mask(layer: torch.nn.Module) -> torch.Tensor:
    return layer.weight_mask if hasattr(layer, "weight_mask") else torch.ones_like(layer.weight)


def pruned_weight(layer: torch.nn.Module) -> torch.Tensor:
    """The weight a layer computes with: what prune's forward pre-hook makes of weight_orig and weight_mask, or
    `weight` itself when the layer is not pruned. Fresh, unlike `layer.weight`, which is stale after an optimizer
    step until the next forward."""
    if hasattr(layer, "weight_mask"):
        return layer.weight_mask.to(dtype=layer.weight_orig.dtype) * layer.weight_orig  # prune's very product
    return layer.weight


def current_params(model: StackedMLP) -> Params:
    """The weights the network computes with (`pruned_weight`) and biases, detached copies."""
    params = {}
    for name in LAYERS:
        layer = getattr(model, name)
        params[f"{name}.weight"] = pruned_weight(layer).detach().clone()
        params[f"{name}.bias"] = layer.bias.detach().clone()
    return params


def rewind_(model: StackedMLP, params: Params) -> StackedMLP:
    """Reset a pruned model's surviving weights and all biases to `params`, keeping its masks."""
    with torch.no_grad():
        for name in LAYERS:
            layer = getattr(model, name)
            layer.weight_orig.copy_(params[f"{name}.weight"] * layer.weight_mask)
            layer.bias.copy_(params[f"{name}.bias"])
            layer.weight = pruned_weight(layer)  # what the pre-hook computes
    return model


def build_model(params: Params, masks: Masks) -> StackedMLP:
    """A stacked model pruned to `masks` (prune.custom_from_mask) whose survivors start at `params`.

    The rewind leaves the pruned entries of `weight_orig` exactly zero, so `weight_orig` equals the weight the
    network computes with (what the fast training step relies on); training keeps them zero (zero gradient).
    """
    n, fc1_width, _ = params["fc1.weight"].shape
    model = StackedMLP(n, fc1_width, params["fc2.weight"].shape[1]).to(params["fc1.weight"].device)
    for name in LAYERS:
        prune.custom_from_mask(getattr(model, name), "weight", masks[name])
    return rewind_(model, params)


def prune_by_magnitude(model: StackedMLP, rates: dict[str, float], global_rate: float | None = None) -> Masks:
    """One pruning round on every network of `model`, in place; returns the new masks.

    Layer-wise: layer L loses `rates[L]` of its surviving weights with the smallest magnitude, as
    `prune.l1_unstructured` chooses them for a single network. Global (`global_rate` given): all layers are
    ranked together, per network, as `prune.global_unstructured` ranks them for a single network. Either
    way each network is ranked on its own (`prune_lowest`) and the new masks go on with `prune.custom_from_mask`.
    """
    weights = current_params(model)  # not `layer.weight`: that is stale after the last optimizer step
    old = get_masks(model)
    groups = [LAYERS] if global_rate is not None else [(name,) for name in LAYERS]
    for group in groups:
        rate = global_rate if global_rate is not None else rates[group[0]]
        scores = torch.cat([weights[f"{name}.weight"].abs().flatten(1) for name in group], dim=1)
        mask = torch.cat([old[name].flatten(1) for name in group], dim=1)
        new = prune_lowest(scores, mask, n_to_prune(rate, mask.sum(1)))
        for name, part in zip(group, new.split([old[name][0].numel() for name in group], dim=1)):
            prune.custom_from_mask(getattr(model, name), "weight", part.view_as(old[name]))
    return get_masks(model)


def random_masks_like(target: Masks, previous: Masks, generator: torch.Generator) -> Masks:
    """Random masks with the per-network, per-layer counts of `target`, nested inside `previous`.

    The random-pruning control: the same sparsity as the ticket in every layer, the weights chosen at
    random among those the control still has (so its masks, like the ticket's, only shrink).
    """
    masks = {}
    for name in LAYERS:
        prev = previous[name].flatten(1)
        scores = torch.rand(prev.shape, generator=generator).to(prev.device)
        n_prune = prev.sum(1) - target[name].flatten(1).sum(1)
        masks[name] = prune_lowest(scores, prev, n_prune.long().cpu()).view_as(previous[name])
    return masks


def full_masks(n: int, shapes: dict[str, tuple[int, int]], device: torch.device | str = "cpu") -> Masks:
    return {name: torch.ones(n, *shape, device=device) for name, shape in shapes.items()}


def count_remaining(masks: Masks) -> dict[str, torch.Tensor]:
    """Surviving weights per layer, one count per network."""
    return {name: m.flatten(1).sum(1).long() for name, m in masks.items()}
