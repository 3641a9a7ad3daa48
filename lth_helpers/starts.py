"""Starting points for a masked network other than theta_0 itself, from Zhou, Lan, Liu & Yosinski (NeurIPS 2019),
"Deconstructing Lottery Tickets: Zeros, Signs, and the Supermask", Section 3: which part of the initial weights a
ticket needs.

Each function returns the `Params` of a stack to train under `masks`: the kept weights set by the rule, the pruned
ones 0. The biases are theta_0's, unchanged: Zhou et al. vary the weights only, so a start differs from the ticket's
rewind in its weights alone.
"""

from __future__ import annotations

import torch

from .model import LAYERS, Params, init_std
from .pruning import Masks


def _with_weights(init: Params, weights: dict[str, torch.Tensor]) -> Params:
    """theta_0's biases (copies) with new weights."""
    params = {f"{name}.weight": weights[name] for name in LAYERS}
    params.update({f"{name}.bias": init[f"{name}.bias"].clone() for name in LAYERS})
    return params


def reshuffle(init: Params, masks: Masks, generator: torch.Generator) -> Params:
    """Zhou et al. 2019, "reshuffle": per network and layer, theta_0's values at the kept positions permuted at
    random among the kept positions; pruned positions 0. It keeps the layer's distribution of kept initial values
    (and so their signs' proportion) but not which weight had which. Permutations are drawn on `generator`'s device,
    network by network and layer by layer in order."""
    weights = {}
    for name in LAYERS:
        w, mask = init[f"{name}.weight"], masks[name].to(init[f"{name}.weight"].device)
        flat, new = w.flatten(1), torch.zeros_like(w).flatten(1)
        for row, kept, out in zip(flat, mask.flatten(1).bool(), new):
            positions = kept.nonzero().squeeze(1)
            order = torch.randperm(positions.numel(), generator=generator, device=generator.device).to(w.device)
            out[positions] = row[positions[order]]
        weights[name] = new.view_as(w)
    return _with_weights(init, weights)


def signed_constant(init: Params, masks: Masks, scheme: str) -> Params:
    """Zhou et al. 2019, "signed constant": each kept weight set to sign(theta_0) * c, c the standard deviation of the
    layer's initialization under `scheme` (`model.init_std`); pruned positions 0. A theta_0 weight of exactly 0 has no
    sign; it gets +c, so that every kept weight is +-c and none is silently pruned."""
    weights = {}
    for name in LAYERS:
        w = init[f"{name}.weight"]
        fan_out, fan_in = w.shape[1:]
        sign = torch.where(w < 0, -1.0, 1.0).to(w.dtype)
        kept = masks[name].to(w.device).bool()
        weights[name] = torch.where(kept, sign * init_std(scheme, fan_in, fan_out), torch.zeros_like(w))
    return _with_weights(init, weights)
