"""Training a stack of networks equals training each alone; batches; evaluation; divergence."""

from __future__ import annotations

import platform

import pytest
import torch
import torch.nn.functional as F

from lth_helpers.data import BatchSampler, get_batch
from lth_helpers.model import LAYERS, StackedMLP, concat, init_params, layer_shapes, select
from lth_helpers.pruning import build_model, full_masks, prune_by_magnitude
from lth_helpers.training import DivergenceError, evaluate, flush_denormals, loss_and_gradients, train_networks

SHAPES = layer_shapes(300, 100)


def _train(params, masks, data, seeds, iterations=30):
    model = build_model(params, masks)
    return train_networks(
        model,
        data,
        iterations=iterations,
        batch_size=32,
        learning_rate=2e-3,
        eval_every=10,
        batch_seeds=seeds,
        progress=False,
    )


def test_a_stack_trains_each_network_exactly_as_it_would_train_alone(tiny_data):
    params = init_params([1, 2, 3], 300, 100, "kaiming_uniform")
    masks = prune_by_magnitude(build_model(params, full_masks(3, SHAPES)), {"fc1": 0.5, "fc2": 0.3, "fc3": 0.1})
    seeds = [7, 8, 7]  # two networks share a batch order, as a trial's conditions do
    together = _train(params, masks, tiny_data, seeds)
    for i in range(3):
        alone = _train(select(params, [i]), select(masks, [i]), tiny_data, [seeds[i]])
        for key, value in alone.params.items():
            torch.testing.assert_close(together.params[key][i : i + 1], value, rtol=1e-3, atol=1e-4)
        for name, values in alone.metrics.items():
            torch.testing.assert_close(together.metrics[name][:, i : i + 1], values, rtol=1e-4, atol=1e-3)


def _autograd_loss_and_gradients(model, x, y):
    model.zero_grad(set_to_none=True)
    losses = F.cross_entropy(model(x).transpose(1, 2), y, reduction="none").mean(1)
    losses.sum().backward()
    return losses.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("pruning", ["none", "fixed_mask", "prune_hooks"])
def test_hand_written_gradients_equal_autograds(tiny_data, pruning):
    params = init_params([1, 2, 3], 300, 100, "kaiming_uniform")
    rates = {"fc1": 0.6, "fc2": 0.4, "fc3": 0.2}
    if pruning == "none":
        model = StackedMLP(3)
        model.load_state_dict(params)
    elif pruning == "fixed_mask":
        model = build_model(params, prune_by_magnitude(build_model(params, full_masks(3, SHAPES)), rates))
    else:  # prune's own forward hooks: weight_orig keeps its values where the mask is 0
        model = StackedMLP(3)
        model.load_state_dict(params)
        prune_by_magnitude(model, rates)
    x, y = tiny_data.train_x[:96].view(3, 32, 784), tiny_data.train_y[:96].view(3, 32)
    expected_losses, expected = _autograd_loss_and_gradients(model, x, y)
    model.zero_grad(set_to_none=True)
    torch.testing.assert_close(loss_and_gradients(model, x, y), expected_losses)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-4, atol=1e-6)
        if name.endswith("weight_orig"):
            mask = getattr(model, name.split(".")[0]).weight_mask
            assert bool((param.grad[mask == 0] == 0).all())


def test_stacked_forward_equals_each_network_as_plain_linear_layers():
    params = init_params([4, 5], 300, 100, "glorot_normal")
    model = StackedMLP(2)
    model.load_state_dict(params)
    x = torch.randn(2, 16, 784)
    for i in range(2):
        h = x[i]
        for name in LAYERS:
            h = F.linear(h, params[f"{name}.weight"][i], params[f"{name}.bias"][i])
            h = F.relu(h) if name != "fc3" else h
        torch.testing.assert_close(model(x)[i], h, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model(x[0])[i], model(x[0].expand(2, -1, -1))[i], rtol=1e-5, atol=1e-5)


def test_evaluate_reports_each_networks_loss_and_accuracy(tiny_data):
    model = StackedMLP(2)
    model.load_state_dict(init_params([1, 2], 300, 100, "glorot_normal"))
    loss, accuracy = evaluate(model, tiny_data.test_x, tiny_data.test_y, chunk=64)
    logits = model(tiny_data.test_x)
    for i in range(2):
        assert loss[i].item() == pytest.approx(F.cross_entropy(logits[i], tiny_data.test_y).item(), rel=1e-5)
        assert accuracy[i].item() == pytest.approx(
            100 * (logits[i].argmax(1) == tiny_data.test_y).float().mean().item()
        )
    default_loss, default_accuracy = evaluate(model, tiny_data.test_x, tiny_data.test_y)  # chunked by the device
    torch.testing.assert_close(default_loss, loss, rtol=1e-6, atol=0)
    assert torch.equal(default_accuracy, accuracy)


def test_training_learns_and_records_every_evaluation(tiny_data):
    params = init_params([0], 300, 100, "glorot_normal")
    result = _train(params, full_masks(1, SHAPES), tiny_data, [0], iterations=45)
    assert result.iterations == [0, 10, 20, 30, 40, 45]
    assert result.metrics["test_accuracy"].shape == (6, 1)
    assert result.metrics["test_accuracy"][-1, 0] > result.metrics["test_accuracy"][0, 0] + 20


def test_snapshot_holds_the_weights_after_k_iterations(tiny_data):
    params = init_params([0], 300, 100, "glorot_normal")
    model = build_model(params, full_masks(1, SHAPES))
    result = train_networks(
        model,
        tiny_data,
        iterations=20,
        batch_size=32,
        learning_rate=2e-3,
        eval_every=10,
        batch_seeds=[0],
        snapshot_iteration=5,
        progress=False,
    )
    short = _train(params, full_masks(1, SHAPES), tiny_data, [0], iterations=5)
    for key in params:
        torch.testing.assert_close(result.snapshot[key], short.params[key])


def test_a_non_finite_loss_stops_training_and_names_network_and_iteration(tiny_data):
    params = concat([init_params([0], 300, 100, "glorot_normal"), init_params([1], 300, 100, "glorot_normal")])
    params["fc3.bias"][1, 0] = float("inf")
    with pytest.raises(DivergenceError) as error:
        _train(params, full_masks(2, SHAPES), tiny_data, [0, 1])
    assert (error.value.network, error.value.iteration) == (1, 0)


def test_batch_sampler_walks_a_fresh_permutation_each_epoch_per_seed():
    sampler = BatchSampler([3, 4, 3], n_examples=100, batch_size=30)
    epoch = torch.cat([sampler.indices(i) for i in range(3)], dim=1)  # 3 batches of 30: 10 examples dropped
    assert all(len(set(row.tolist())) == 90 for row in epoch)
    assert torch.equal(epoch[0], epoch[2]) and not torch.equal(epoch[0], epoch[1])
    assert not torch.equal(sampler.indices(3), epoch[:, :30])  # epoch 2 is a new permutation
    x, y = get_batch(torch.arange(100.0)[:, None], torch.arange(100), sampler.indices(4))
    assert x.shape == (3, 30, 1) and torch.equal(x[..., 0].long(), y)


def test_subnormals_are_flushed_only_inside_the_block_on_every_cpu_thread():
    # 1e-20 squared is subnormal; a million elements are split across torch's threads, so a worker
    # thread that missed the flag leaves its share of the product nonzero.
    tiny = torch.full((2**20,), 1e-20)
    torch.ones(2**20).sum()  # torch's thread pool exists before the block, as in any real session
    with flush_denormals():
        inside = tiny * tiny
    outside = tiny * tiny
    assert (outside > 0).all()  # the default is back, on every thread
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert (inside == 0).all()
