"""The pruning half of the lottery-ticket contract: counts, which weights go, masks, rewinding."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from lth_helpers.fast_step import FastStep
from lth_helpers.model import LAYERS, init_params, layer_shapes
from lth_helpers.pruning import (
    build_model,
    count_remaining,
    current_params,
    full_masks,
    get_masks,
    prune_by_magnitude,
    random_masks_like,
    rewind_,
)

SHAPES = layer_shapes(300, 100)
RATES = {"fc1": 0.2, "fc2": 0.2, "fc3": 0.1}


def fresh(n: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    return init_params([seed + i for i in range(n)], 300, 100, "glorot_normal")


def test_layerwise_rounds_keep_prunes_rounding_and_remove_the_smallest_survivors():
    model = build_model(fresh(), full_masks(1, SHAPES))
    expected_fc1 = [188_160, 150_528, 120_422]
    for round_, fc1_count in enumerate(expected_fc1, start=1):
        rewind_(model, fresh(seed=100 + round_))  # new values, as training would give, same masks
        before = {name: m[0].numpy().astype(bool) for name, m in get_masks(model).items()}
        weights = {name: current_params(model)[f"{name}.weight"][0].numpy() for name in LAYERS}
        after = prune_by_magnitude(model, RATES)
        assert int(count_remaining(after)["fc1"]) == fc1_count
        for name in LAYERS:
            alive = np.flatnonzero(before[name])
            k = round(RATES[name] * alive.size)
            smallest = alive[np.argsort(np.abs(weights[name].ravel()[alive]), kind="stable")[:k]]
            expected = before[name].ravel().copy()
            expected[smallest] = False
            np.testing.assert_array_equal(after[name][0].numpy().ravel().astype(bool), expected, err_msg=name)
    assert {n: int(c) for n, c in count_remaining(get_masks(model)).items()} == {
        "fc1": 120_422,
        "fc2": 15_360,
        "fc3": 729,
    }


def test_stacked_pruning_equals_torch_l1_unstructured_on_a_plain_linear_layer():
    params = fresh()
    model = build_model(params, full_masks(1, SHAPES))
    plain = nn.Linear(784, 300)
    with torch.no_grad():
        plain.weight.copy_(params["fc1.weight"][0])
    for _ in range(3):
        prune.l1_unstructured(plain, "weight", amount=0.2)
        ours = prune_by_magnitude(model, RATES)
        assert torch.equal(ours["fc1"][0], plain.weight_mask)


def test_global_pruning_gives_the_seed_table_counts_and_equals_global_unstructured():
    params = fresh()
    model = build_model(params, full_masks(1, SHAPES))
    plain = [nn.Linear(*reversed(SHAPES[name])) for name in LAYERS]
    with torch.no_grad():
        for layer, name in zip(plain, LAYERS):
            layer.weight.copy_(params[f"{name}.weight"][0])
    totals = []
    for _ in range(5):
        masks = prune_by_magnitude(model, RATES, global_rate=0.2)
        prune.global_unstructured([(layer, "weight") for layer in plain], prune.L1Unstructured, amount=0.2)
        totals.append(sum(int(c) for c in count_remaining(masks).values()))
        for layer, name in zip(plain, LAYERS):
            assert torch.equal(masks[name][0], layer.weight_mask)
    assert totals == [212_960, 170_368, 136_294, 109_035, 87_228]


def test_each_network_of_a_stack_is_pruned_on_its_own():
    params = fresh(n=3)
    params["fc1.weight"][1] *= 100  # a network with far larger weights must not steal the others' pruning
    stacked = prune_by_magnitude(build_model(params, full_masks(3, SHAPES)), RATES, global_rate=0.2)
    for i in range(3):
        alone = prune_by_magnitude(
            build_model({k: v[i : i + 1] for k, v in params.items()}, full_masks(1, SHAPES)), RATES, global_rate=0.2
        )
        for name in LAYERS:
            assert torch.equal(stacked[name][i], alone[name][0])


def test_masks_only_shrink_and_pruned_weights_stay_exactly_zero_through_training(tiny_data):
    model = build_model(fresh(n=2), full_masks(2, SHAPES))
    previous = get_masks(model)
    for _ in range(3):
        masks = prune_by_magnitude(model, RATES)
        assert all(bool((masks[n] <= previous[n]).all()) for n in LAYERS)
        model = build_model(current_params(model), masks)
        step = FastStep(model, tiny_data, learning_rate=1e-2)  # the step training takes
        for it in range(5):
            step(torch.arange(it * 20, it * 20 + 40).view(2, 20))
        model(tiny_data.val_x)
        for name in LAYERS:
            layer = getattr(model, name)
            assert bool((layer.weight[masks[name] == 0] == 0).all())
            assert bool((layer.weight_orig[masks[name] == 0] == 0).all())
            assert bool((layer.weight[masks[name] == 1] != 0).any())  # and the survivors did train
        previous = masks


def test_the_fast_step_trains_exactly_like_autograd_through_custom_from_mask_on_plain_linear_layers(tiny_data):
    """The fast step's shortcuts must change nothing: same steps, same weights as nn.Linear + prune.custom_from_mask
    + autograd + Adam."""
    params = fresh()
    masks = prune_by_magnitude(build_model(params, full_masks(1, SHAPES)), RATES)
    ours = build_model(params, masks)
    reference = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    linears = [reference[0], reference[2], reference[4]]
    with torch.no_grad():
        for layer, name in zip(linears, LAYERS):
            layer.weight.copy_(params[f"{name}.weight"][0])
            layer.bias.copy_(params[f"{name}.bias"][0])
            prune.custom_from_mask(layer, "weight", masks[name][0])
    step = FastStep(ours, tiny_data, learning_rate=1e-3)
    opt_ref = torch.optim.Adam(reference.parameters(), lr=1e-3)
    for it in range(10):
        step(torch.arange(it * 32, (it + 1) * 32)[None])
        x, y = tiny_data.train_x[it * 32 : (it + 1) * 32], tiny_data.train_y[it * 32 : (it + 1) * 32]
        opt_ref.zero_grad()
        nn.functional.cross_entropy(reference(x), y).backward()
        opt_ref.step()
    for layer, name in zip(linears, LAYERS):
        effective = layer.weight_orig * layer.weight_mask
        torch.testing.assert_close(current_params(ours)[f"{name}.weight"][0], effective, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(getattr(ours, name).bias[0], layer.bias, rtol=1e-4, atol=1e-6)


def _train_a_little(model, data, steps: int = 5) -> None:
    step = FastStep(model, data, learning_rate=1e-2)
    for it in range(steps):
        step(torch.arange(it * 32, (it + 1) * 32).expand(model.n_networks, -1))


def test_rewind_sets_every_effective_weight_to_init_times_mask_and_every_bias_to_init(tiny_data):
    init = fresh(n=2)
    model = build_model(init, full_masks(2, SHAPES))
    _train_a_little(model, tiny_data)
    masks = prune_by_magnitude(model, RATES)
    _train_a_little(model, tiny_data)
    rewind_(model, init)
    model(tiny_data.val_x)  # the pre-hooks recompute `weight`: a rewind must survive them
    for name in LAYERS:
        layer = getattr(model, name)
        assert torch.equal(layer.weight, init[f"{name}.weight"] * masks[name])
        assert torch.equal(layer.bias, init[f"{name}.bias"])
        assert torch.equal(layer.weight_mask, masks[name])


def test_assigning_weight_data_does_not_rewind_a_pruned_layer(tiny_data):
    """A common pitfall: prune's pre-hook recomputes `weight` at the next forward, so this is no rewind."""
    init = fresh()
    model = build_model(init, full_masks(1, SHAPES))
    _train_a_little(model, tiny_data)
    prune_by_magnitude(model, RATES)
    model = build_model(current_params(model), get_masks(model))
    with torch.no_grad():
        model.fc1.weight.data = init["fc1.weight"] * model.fc1.weight_mask
    model(tiny_data.val_x)
    assert not torch.equal(model.fc1.weight, init["fc1.weight"] * model.fc1.weight_mask)


def test_random_masks_have_the_tickets_counts_but_other_positions_and_only_shrink():
    ticket_1 = prune_by_magnitude(build_model(fresh(n=2), full_masks(2, SHAPES)), RATES)
    generator = torch.Generator().manual_seed(0)
    random_1 = random_masks_like(ticket_1, full_masks(2, SHAPES), generator)
    ticket_2 = prune_by_magnitude(build_model(fresh(n=2), ticket_1), RATES)
    random_2 = random_masks_like(ticket_2, random_1, generator)
    for ticket, random in ((ticket_1, random_1), (ticket_2, random_2)):
        for name in LAYERS:
            assert torch.equal(count_remaining(random)[name], count_remaining(ticket)[name])
            assert not torch.equal(random[name], ticket[name])
    assert all(bool((random_2[n] <= random_1[n]).all()) for n in LAYERS)
