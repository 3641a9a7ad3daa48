"""Pruning criteria beyond magnitude: scores per weight and the masks that keep the best of them.

A criterion scores every weight of every network of a stack (`Scores`: layer -> (n, out, in), HIGHER = KEEP), and
`keep_top` turns scores into masks with the counts of a target mask (usually the iterative ticket's), so that a
criterion's network differs from the ticket only in which weights it keeps. The criteria:

- Zhou, Lan, Liu & Yosinski (NeurIPS 2019), "Deconstructing Lottery Tickets": `large_final`, `large_init`,
  `magnitude_increase`, `movement`, `large_final_same_sign`, each from theta_0 and the trained dense network.
- Pruning at initialization: SNIP (`snip_scores`), GraSP (`grasp_scores`) and the data-free, iterative SynFlow
  (`synflow_masks`, `synflow_iterations`, `synflow_scores`).
- The sanity checks of Frankle, Dziugaite, Roy & Carbin (ICLR 2021): `shuffle_masks` (each layer's mask permuted) and
  `invert` (keep the lowest scores instead of the highest).

Every function treats each network of the stack on its own and computes on its inputs' device.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import torch
from torch.nn import functional as F

from .model import LAYERS, Params, stacked_linear
from .pruning import Masks, prune_lowest

Scores = dict[str, torch.Tensor]  # "fc1" -> (n, out, in), higher = keep

Group = tuple[str, ...]  # the layers ranked together: one layer, or all of them under global ranking


def _groups(layers: list[str], global_ranking: bool) -> list[Group]:
    return [tuple(layers)] if global_ranking else [(name,) for name in layers]


def _counts(masks: Masks, groups: list[Group]) -> dict[Group, torch.Tensor]:
    """Per group, the weights each network keeps: (n,) int64 on the CPU."""
    return {group: sum(masks[name].flatten(1).sum(1).long().cpu() for name in group) for group in groups}


def _keep_within(scores: Scores, alive: Masks, keep: dict[Group, torch.Tensor]) -> Masks:
    """Per network and group, the `keep[group]` highest-scoring weights among those `alive` keeps (a subset of it).

    Ranking and ties as `pruning.prune_lowest`: the lowest scores go first, and of equal scores the one at the lower
    index (layers in order, then row-major within a layer) goes first.
    """
    masks = {}
    for group, n_keep in keep.items():
        ranked = torch.cat([scores[name].flatten(1) for name in group], dim=1)
        mask = torch.cat([alive[name].flatten(1) for name in group], dim=1).to(ranked.device)
        new = prune_lowest(ranked, mask, mask.sum(1).long().cpu() - n_keep)
        for name, part in zip(group, new.split([alive[name][0].numel() for name in group], dim=1)):
            masks[name] = part.view_as(alive[name]).to(alive[name].device)
    return masks


def keep_top(scores: Scores, target: Masks, global_ranking: bool) -> Masks:
    """Per network, keep the highest-scoring weights, as many as `target` keeps; float 0/1 masks like `target`'s.

    Layer-wise, each layer keeps `target`'s count in that layer. Global (`global_ranking`), all layers are ranked
    together and keep `target`'s total over the layers, shared out between them by the ranking. Ties are broken as
    `pruning.prune_lowest` breaks them: of equal scores, the one at the lower index is pruned first.
    """
    groups = _groups(list(target), global_ranking)
    alive = {name: torch.ones_like(mask) for name, mask in target.items()}
    return _keep_within(scores, alive, _counts(target, groups))


def invert(scores: Scores) -> Scores:
    """The same criterion, keep-the-lowest: the negated scores (the inversion check of Frankle et al. 2021, which
    asks whether a criterion's choice matters by keeping the weights it would prune)."""
    return {name: -s for name, s in scores.items()}


def shuffle_masks(masks: Masks, generator: torch.Generator) -> Masks:
    """Each network's mask permuted at random within each layer: the same count in every layer, other positions.

    Frankle, Dziugaite, Roy & Carbin (ICLR 2021), "Pruning Neural Networks at Initialization: Why Are We Missing the
    Mark?", Section 5: a pruning method whose masks can be shuffled within layers at no loss of accuracy has found
    per-layer sparsities, not which weights to keep. Permutations are drawn on `generator`'s device, network by
    network and layer by layer in order.
    """
    shuffled = {}
    for name, mask in masks.items():
        flat = mask.flatten(1)
        order = [torch.randperm(flat.shape[1], generator=generator, device=generator.device) for _ in flat]
        shuffled[name] = torch.stack([row[o.to(row.device)] for row, o in zip(flat, order)]).view_as(mask)
    return shuffled


# Zhou, Lan, Liu & Yosinski (NeurIPS 2019), "Deconstructing Lottery Tickets: Zeros, Signs, and the Supermask",
# Section 2 and Figure 2: mask criteria from w_i, the initial weight (theta_0), and w_f, the trained dense network's
# final weight. Weights only: biases are never pruned.


def _weights(params: Params, name: str) -> torch.Tensor:
    return params[f"{name}.weight"]


def large_final(init: Params, final: Params) -> Scores:
    """Zhou et al. 2019, "large final": |w_f|, the magnitude pruning of Frankle & Carbin."""
    return {name: _weights(final, name).abs() for name in LAYERS}


def large_init(init: Params, final: Params) -> Scores:
    """Zhou et al. 2019, "large init": |w_i|."""
    return {name: _weights(init, name).abs() for name in LAYERS}


def magnitude_increase(init: Params, final: Params) -> Scores:
    """Zhou et al. 2019, "magnitude increase": |w_f| - |w_i|."""
    return {name: _weights(final, name).abs() - _weights(init, name).abs() for name in LAYERS}


def movement(init: Params, final: Params) -> Scores:
    """Zhou et al. 2019, "movement": |w_f - w_i|."""
    return {name: (_weights(final, name) - _weights(init, name)).abs() for name in LAYERS}


def large_final_same_sign(init: Params, final: Params) -> Scores:
    """Zhou et al. 2019, "large final, same sign": max(0, w_i * w_f / |w_i|), that is |w_f| where w_f has the sign of
    w_i and 0 elsewhere. A zero w_i has no sign to keep: its score is 0 (where the formula divides by zero)."""
    scores = {}
    for name in LAYERS:
        w_i, w_f = _weights(init, name), _weights(final, name)
        scores[name] = torch.where(w_i * w_f > 0, w_f.abs(), torch.zeros_like(w_f))
    return scores


# Pruning at initialization, from theta_0 alone (and for SNIP and GraSP, one batch of training data).


def _logits(weights: dict[str, torch.Tensor], biases: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The stack's logits, (n, 10, batch), for one input batch x (batch, 784) shared by all networks."""
    first = weights[LAYERS[0]]
    h = x.to(device=first.device, dtype=first.dtype).T
    for name in LAYERS:
        h = stacked_linear(weights[name], biases[name], h)
        if name != LAYERS[-1]:
            h = h.relu()
    return h


def _loss(weights: dict[str, torch.Tensor], biases: dict[str, torch.Tensor], x, y, temperature: float = 1.0):
    """The sum over networks of each network's mean cross-entropy on the batch: so each network's gradient (and
    Hessian) is that of its own loss, as if it were trained alone."""
    logits = _logits(weights, biases, x) / temperature
    n, batch = logits.shape[0], x.shape[0]
    return F.cross_entropy(logits, y.to(logits.device).expand(n, batch), reduction="sum") / batch


def _split(params: Params) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Detached weights that require grad, and detached biases, by layer."""
    weights = {name: params[f"{name}.weight"].detach().clone().requires_grad_() for name in LAYERS}
    biases = {name: params[f"{name}.bias"].detach() for name in LAYERS}
    return weights, biases


def snip_scores(init: Params, x: torch.Tensor, y: torch.Tensor) -> Scores:
    """SNIP, Lee, Ajanthan & Torr (ICLR 2019), "SNIP: Single-shot Network Pruning based on Connection Sensitivity",
    Equation 6: the connection sensitivity |w * dL/dw| at the dense network theta_0, L the mean cross-entropy on the
    batch x (b, 784), y (b,). (The paper normalizes by the sum over all weights, which changes no ranking.) Every
    network of the stack is scored on the same batch, from its own loss. Computed in `init`'s dtype."""
    weights, biases = _split(init)
    grads = torch.autograd.grad(_loss(weights, biases, x, y), list(weights.values()))
    return {name: (w * g).abs().detach() for (name, w), g in zip(weights.items(), grads)}


def grasp_scores(init: Params, x: torch.Tensor, y: torch.Tensor, temperature: float = 1.0) -> Scores:
    """GraSP, Wang, Zhang & Grosse (ICLR 2020), "Picking Winning Tickets Before Training by Preserving Gradient Flow",
    Equation 8: with g = dL/dw and H the Hessian of L at theta_0 (over the weights, biases held fixed, as their code
    does), the paper's score is S(-w) = -w * Hg, and GraSP removes the weights of HIGHEST S(-w). So this returns
    w * Hg, higher = keep, for `keep_top`.

    Hg is the double backward Hg = d(g.detach() . g)/dw, on the one batch x (b, 784), y (b,) that also gives g. The
    authors' code divides the logits by a temperature T = 200 before the loss; `temperature` is that T, default 1,
    the paper's equation. Each network of the stack is scored from its own loss. Computed in `init`'s dtype.
    """
    weights, biases = _split(init)
    ws = list(weights.values())
    grads = torch.autograd.grad(_loss(weights, biases, x, y, temperature), ws, create_graph=True)
    gradient_norm = sum((g.detach() * g).sum() for g in grads)
    hessian_grads = torch.autograd.grad(gradient_norm, ws)
    return {name: (w * hg).detach() for (name, w), hg in zip(weights.items(), hessian_grads)}


def synflow_scores(init: Params, masks: Masks) -> Scores:
    """SynFlow's synaptic saliency, Tanaka, Kunin, Yamins & Ganguli (NeurIPS 2020), "Pruning neural networks without
    any data by iteratively conserving synaptic flow", Algorithm 1: |theta * dR/dtheta|, with
    R = 1^T (prod_l |theta_l|) 1 the summed output of the masked network made linear: every parameter replaced by its
    absolute value, the input a vector of ones (1, 784). With all values positive, ReLU changes nothing.

    Biases are replaced by their absolute values too, as the authors' code makes every parameter positive; they add
    to R and to the scores of the layers above them (a zero bias, glorot_normal's, adds nothing). Pruned weights
    score 0. Computed in float64: the products of SynFlow's many layers overflow float32 on deeper networks.
    """
    device = init[f"{LAYERS[0]}.weight"].device
    weights = {
        name: (init[f"{name}.weight"].detach().double().abs() * masks[name].to(device)).requires_grad_()
        for name in LAYERS
    }
    biases = {name: init[f"{name}.bias"].detach().double().abs() for name in LAYERS}
    ones = torch.ones(1, weights[LAYERS[0]].shape[2], dtype=torch.float64, device=device)
    flow = _logits(weights, biases, ones).sum()
    grads = torch.autograd.grad(flow, list(weights.values()))
    return {name: (w * g).abs().detach() for (name, w), g in zip(weights.items(), grads)}


def synflow_iterations(
    init: Params, target: Masks, global_ranking: bool, iterations: int = 100, invert: bool = False
) -> Iterator[Masks]:
    """SynFlow's masks after each of its `iterations` (Tanaka et al. 2020, Algorithm 1), the last with `target`'s
    counts (per layer, or in total under `global_ranking`).

    Each iteration scores the current masked network (`synflow_scores`) and prunes it, among the weights it still
    keeps, to the exponential schedule: at iteration j = 1..iterations a group (a layer, or all layers together under
    global ranking) of n weights of which the target keeps k keeps round(n * (k/n)^(j/iterations)). So every mask is
    inside the one before. `invert` keeps the lowest scores at each iteration instead (Frankle et al. 2021's check).
    """
    if iterations < 1:
        raise ValueError(f"SynFlow needs at least one iteration; got {iterations}")
    groups = _groups(list(target), global_ranking)
    final = _counts(target, groups)
    total = {group: sum(target[name][0].numel() for name in group) for group in groups}
    masks = {name: torch.ones_like(mask) for name, mask in target.items()}
    for j in range(1, iterations + 1):
        scores = synflow_scores(init, masks)
        if invert:
            scores = {name: -s for name, s in scores.items()}
        keep = {
            group: final[group]
            if j == iterations
            else torch.round(total[group] * (final[group].double() / total[group]) ** (j / iterations)).long()
            for group in groups
        }
        masks = _keep_within(scores, masks, keep)
        yield masks


def synflow_masks(
    init: Params, target: Masks, global_ranking: bool, iterations: int = 100, invert: bool = False
) -> Masks:
    """SynFlow's final masks (see `synflow_iterations`): per network, `target`'s counts, chosen without data."""
    return deque(synflow_iterations(init, target, global_ranking, iterations, invert), maxlen=1)[0]  # last alone
