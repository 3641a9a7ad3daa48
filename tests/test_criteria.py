"""The pruning criteria against independent oracles: hand examples, formulas written out, autograd on a plain
nn.Sequential, and SynFlow's flow computed by matrix products."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.autograd.functional import hvp
from torch.func import functional_call

from lth_helpers import criteria
from lth_helpers.model import LAYERS, init_params
from lth_helpers.pruning import count_remaining


def masks_of(*rows_per_layer) -> dict[str, torch.Tensor]:
    return {name: torch.tensor(rows, dtype=torch.float32) for name, rows in zip(LAYERS, rows_per_layer)}


def tiny_stack(n_seeds: tuple[int, ...] = (3, 4), scheme: str = "kaiming_uniform") -> dict[str, torch.Tensor]:
    """A 784-8-6-10 stack in float64 (kaiming_uniform: nonzero biases too)."""
    return {k: v.double() for k, v in init_params(list(n_seeds), 8, 6, scheme).items()}


def random_target(params, keep: float, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: (torch.rand(params[f"{name}.weight"].shape, generator=g) < keep).float() for name in LAYERS}


# keep_top


# Two networks, fc1 (2, 3), fc2 (1, 2), fc3 (1, 1). Network 0 keeps 2 + 1 + 1, network 1 keeps 1 + 2 + 0.
SCORES = masks_of(
    [[[5, 1, 3], [0, 2, 4]], [[1, 2, 3], [4, 5, 6]]],
    [[[9, 8]], [[0.5, 7]]],
    [[[-1.0]], [[100.0]]],
)
TARGET = masks_of(
    [[[1, 1, 0], [0, 0, 0]], [[1, 0, 0], [0, 0, 0]]],
    [[[0, 1]], [[1, 1]]],
    [[[1]], [[0]]],
)


def test_keep_top_layer_wise_keeps_each_layers_count_of_the_highest_scores():
    expected = masks_of(
        [[[1, 0, 0], [0, 0, 1]], [[0, 0, 0], [0, 0, 1]]],  # 5 and 4; 6
        [[[1, 0]], [[1, 1]]],  # 9; both
        [[[1]], [[0]]],  # kept even at a score of -1; pruned even at 100
    )
    masks = criteria.keep_top(SCORES, TARGET, global_ranking=False)
    for name in LAYERS:
        assert torch.equal(masks[name], expected[name]), name
        assert masks[name].dtype == torch.float32


def test_keep_top_global_keeps_the_total_ranked_across_layers():
    # network 0 keeps 4 of 9, 8, 5, 4, 3, ..., -1: fc2 takes both, fc1 two, fc3 none; network 1 keeps 3: 100, 7, 6.
    expected = masks_of(
        [[[1, 0, 0], [0, 0, 1]], [[0, 0, 0], [0, 0, 1]]],
        [[[1, 1]], [[0, 1]]],
        [[[0]], [[1]]],
    )
    masks = criteria.keep_top(SCORES, TARGET, global_ranking=True)
    for name in LAYERS:
        assert torch.equal(masks[name], expected[name]), name
    assert not torch.equal(count_remaining(masks)["fc2"], count_remaining(TARGET)["fc2"])  # global shares out anew


def test_keep_top_breaks_ties_toward_the_higher_index_layers_in_order():
    ties = masks_of([[[1, 1, 1, 1]]], [[[1, 1]]], [[[1]]])
    target = masks_of([[[1, 1, 0, 0]]], [[[1, 0]]], [[[1]]])
    layer_wise = criteria.keep_top(ties, target, global_ranking=False)
    assert layer_wise["fc1"].tolist() == [[[0, 0, 1, 1]]] and layer_wise["fc2"].tolist() == [[[0, 1]]]
    global_ = criteria.keep_top(ties, target, global_ranking=True)  # 4 of 7 equal scores: the last four
    assert [global_[name].tolist() for name in LAYERS] == [[[[0, 0, 0, 1]]], [[[1, 1]]], [[[1]]]]


@pytest.mark.parametrize("global_ranking", [False, True])
def test_keep_top_on_random_scores_keeps_the_counts_and_no_pruned_weight_outscores_a_kept_one(global_ranking):
    params = tiny_stack()
    g = torch.Generator().manual_seed(0)
    scores = {name: torch.randn(params[f"{name}.weight"].shape, generator=g) for name in LAYERS}
    target = random_target(params, 0.3, seed=1)
    masks = criteria.keep_top(scores, target, global_ranking)
    kept, wanted = count_remaining(masks), count_remaining(target)
    groups = [LAYERS] if global_ranking else [(name,) for name in LAYERS]
    for group in groups:
        assert torch.equal(sum(kept[n] for n in group), sum(wanted[n] for n in group))
        for i in range(2):
            s = torch.cat([scores[n][i].flatten() for n in group])
            m = torch.cat([masks[n][i].flatten() for n in group]).bool()
            assert s[m].min() > s[~m].max()


def test_invert_keeps_the_lowest_scores():
    scores = masks_of([[[4, 1, 3, 2]]], [[[2, 1]]], [[[1]]])
    target = masks_of([[[1, 0, 0, 0]]], [[[1, 0]]], [[[1]]])
    masks = criteria.keep_top(criteria.invert(scores), target, global_ranking=False)
    assert masks["fc1"].tolist() == [[[0, 1, 0, 0]]] and masks["fc2"].tolist() == [[[0, 1]]]


def test_shuffle_masks_keeps_each_layers_count_and_moves_the_weights_by_seed():
    target = random_target(tiny_stack(), 0.3, seed=2)
    a = criteria.shuffle_masks(target, torch.Generator().manual_seed(0))
    again = criteria.shuffle_masks(target, torch.Generator().manual_seed(0))
    b = criteria.shuffle_masks(target, torch.Generator().manual_seed(1))
    for name in LAYERS:
        assert torch.equal(count_remaining(a)[name], count_remaining(target)[name])
        assert set(a[name].unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(a[name], again[name])
    for other in (target, b):
        assert not torch.equal(a["fc1"], other["fc1"]) and not torch.equal(a["fc2"], other["fc2"])


# Zhou et al. 2019's criteria, on a 2x3 weight per layer


W_I = torch.tensor([[[1.0, -2.0, 0.5], [0.0, -1.0, 3.0]]])
W_F = torch.tensor([[[-3.0, -1.0, 2.0], [4.0, 0.5, 3.5]]])
ZHOU = {
    "large_final": [[3, 1, 2], [4, 0.5, 3.5]],
    "large_init": [[1, 2, 0.5], [0, 1, 3]],
    "magnitude_increase": [[2, -1, 1.5], [4, -0.5, 0.5]],
    "movement": [[4, 1, 1.5], [4, 1.5, 0.5]],
    "large_final_same_sign": [[0, 1, 2], [0, 0, 3.5]],  # signs differ, same, same, w_i = 0, differ, same
}


@pytest.mark.parametrize("criterion", sorted(ZHOU))
def test_zhou_criteria_equal_their_formulas_by_hand(criterion):
    def params(w):  # each layer a scaled copy, to tell the layers apart
        return {f"{name}.weight": w * (k + 1) for k, name in enumerate(LAYERS)} | {
            f"{name}.bias": torch.ones(1, 2) for name in LAYERS
        }

    scores = getattr(criteria, criterion)(params(W_I), params(W_F))
    for k, name in enumerate(LAYERS):
        torch.testing.assert_close(scores[name], torch.tensor([ZHOU[criterion]]) * (k + 1), rtol=0, atol=0)


# SNIP and GraSP against autograd on a plain nn.Sequential


def sequential(params, i: int) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(784, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 10)).double()
    with torch.no_grad():
        for layer, name in zip(net[::2], LAYERS):
            layer.weight.copy_(params[f"{name}.weight"][i])
            layer.bias.copy_(params[f"{name}.bias"][i])
    return net


def batch(seed: int = 0, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(size, 784, generator=g, dtype=torch.float64), torch.randint(0, 10, (size,), generator=g)


def test_snip_scores_equal_weight_times_gradient_of_each_networks_own_mean_loss():
    params, (x, y) = tiny_stack(), batch()
    scores = criteria.snip_scores(params, x, y)
    for i in range(2):
        net = sequential(params, i)
        nn.functional.cross_entropy(net(x), y).backward()
        for layer, name in zip(net[::2], LAYERS):
            torch.testing.assert_close(scores[name][i], (layer.weight * layer.weight.grad).abs())
    assert not torch.allclose(scores["fc1"][0], scores["fc1"][1])


@pytest.mark.parametrize("temperature", [1.0, 200.0])
def test_grasp_scores_equal_weight_times_hessian_gradient_product_from_torch_hvp(temperature):
    params, (x, y) = tiny_stack(), batch()
    scores = criteria.grasp_scores(params, x, y, temperature=temperature)
    for i in range(2):
        net = sequential(params, i)
        names = [f"{k}.weight" for k in (0, 2, 4)]

        def loss(*weights, net=net, names=names):  # the biases stay the network's own
            logits = functional_call(net, dict(zip(names, weights)), (x,))
            return nn.functional.cross_entropy(logits / temperature, y)

        weights = tuple(net.get_parameter(n).detach() for n in names)
        g = torch.autograd.grad(loss(*[w.requires_grad_() for w in weights]), weights)
        _, hg = hvp(loss, tuple(w.detach() for w in weights), g)
        for w, product, name in zip(weights, hg, LAYERS):
            expected = w.detach() * product
            torch.testing.assert_close(scores[name][i], expected)
            assert expected.abs().max() > 0


# SynFlow against R = 1^T |W3| (|W2| (|W1| 1 + |b1|) + |b2|) + |b3| by matrix products


def synflow_by_hand(params, masks, i: int) -> dict[str, torch.Tensor]:
    a1, a2, a3 = (params[f"{n}.weight"][i].double().abs() * masks[n][i].double() for n in LAYERS)
    b1, b2, _ = (params[f"{n}.bias"][i].double().abs() for n in LAYERS)
    h1 = a1 @ torch.ones(784, dtype=torch.float64) + b1
    h2 = a2 @ h1 + b2
    up3 = torch.ones(10, dtype=torch.float64)  # dR/d(output)
    up2 = a3.T @ up3  # dR/dh2
    up1 = a2.T @ up2  # dR/dh1
    grads = {"fc1": torch.outer(up1, torch.ones(784, dtype=torch.float64)), "fc2": torch.outer(up2, h1)}
    grads["fc3"] = torch.outer(up3, h2)
    return {"fc1": (a1 * grads["fc1"]).abs(), "fc2": (a2 * grads["fc2"]).abs(), "fc3": (a3 * grads["fc3"]).abs()}


def test_synflow_scores_equal_the_flow_gradient_by_hand_on_a_masked_network_with_biases():
    params = {k: v.float() for k, v in tiny_stack().items()}
    masks = random_target(params, 0.6, seed=3)
    scores = criteria.synflow_scores(params, masks)
    for i in range(2):
        expected = synflow_by_hand(params, masks, i)
        for name in LAYERS:
            assert scores[name].dtype == torch.float64
            torch.testing.assert_close(scores[name][i], expected[name], rtol=1e-12, atol=0)
            assert bool((scores[name][i][masks[name][i] == 0] == 0).all())


@pytest.mark.parametrize("global_ranking", [False, True])
def test_synflow_in_one_iteration_keeps_the_top_of_the_flow_scores_by_hand_and_invert_the_bottom(global_ranking):
    params = tiny_stack()
    target = random_target(params, 0.2, seed=4)
    full = {name: torch.ones_like(m) for name, m in target.items()}
    by_hand = {name: torch.stack([synflow_by_hand(params, full, i)[name] for i in range(2)]) for name in LAYERS}
    for invert in (False, True):
        masks = criteria.synflow_masks(params, target, global_ranking, iterations=1, invert=invert)
        expected = criteria.keep_top(criteria.invert(by_hand) if invert else by_hand, target, global_ranking)
        for name in LAYERS:
            assert torch.equal(masks[name], expected[name]), (invert, name)


@pytest.mark.parametrize("global_ranking", [False, True])
@pytest.mark.parametrize("invert", [False, True])
def test_synflow_prunes_on_the_exponential_schedule_in_nested_masks_to_the_targets_counts(global_ranking, invert):
    params, iterations = tiny_stack(), 5
    target = random_target(params, 0.1, seed=5)
    steps = list(criteria.synflow_iterations(params, target, global_ranking, iterations, invert))
    assert len(steps) == iterations
    groups = [LAYERS] if global_ranking else [(name,) for name in LAYERS]
    sizes = {name: target[name][0].numel() for name in LAYERS}
    previous = {name: torch.ones_like(m) for name, m in target.items()}
    for j, masks in enumerate(steps, start=1):
        for group in groups:
            n = sum(sizes[name] for name in group)
            for i in range(2):
                k = sum(int(target[name][i].sum()) for name in group)
                kept = sum(int(masks[name][i].sum()) for name in group)
                assert kept == round(n * (k / n) ** (j / iterations)), (j, group, i)
        assert all(bool((masks[name] <= previous[name]).all()) for name in LAYERS)
        previous = masks
    final, wanted = steps[-1], count_remaining(target)
    again = criteria.synflow_masks(params, target, global_ranking, iterations, invert)
    assert all(torch.equal(final[n], again[n]) for n in LAYERS)
    kept = count_remaining(final)
    for group in groups:
        assert torch.equal(sum(kept[n] for n in group), sum(wanted[n] for n in group))
    other = criteria.synflow_masks(params, target, global_ranking, iterations, not invert)
    assert not torch.equal(other["fc1"], final["fc1"])
