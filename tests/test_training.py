"""Training a stack of networks equals training each alone; the fast step equals the reference step; batches;
evaluation; divergence."""

from __future__ import annotations

import platform

import pytest
import torch
import torch.nn.functional as F

from lth_helpers.data import BatchSampler, get_batch
from lth_helpers.fast_step import FastStep
from lth_helpers.model import LAYERS, StackedMLP, concat, init_params, layer_shapes, select
from lth_helpers.pruning import build_model, current_params, full_masks, prune_by_magnitude
from lth_helpers.training import (
    DivergenceError,
    Evaluator,
    ReferenceStep,
    reference_step,
    train_networks,
)
from tests.conftest import synthetic_splits

SHAPES = layer_shapes(300, 100)


def _train(params, masks, data, seeds, iterations=30, step=FastStep):
    model = build_model(params, masks)
    return train_networks(
        model,
        data,
        iterations=iterations,
        batch_size=32,
        learning_rate=2e-3,
        eval_every=10,
        batch_seeds=seeds,
        step=step,
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


@pytest.mark.parametrize("pruning", ["none", "build_model", "prune_hooks", "fc2_only"])
def test_the_fast_steps_hand_written_gradients_equal_autograds_through_prunes_hooks(tiny_data, pruning):
    params = init_params([1, 2, 3], 300, 100, "kaiming_uniform")
    rates = {"fc1": 0.6, "fc2": 0.4, "fc3": 0.2}
    if pruning == "fc2_only":  # masks of all ones on fc1 and fc3: the step skips their multiply, not fc2's
        rates, pruning = {"fc1": 0.0, "fc2": 0.4, "fc3": 0.0}, "build_model"
    if pruning == "none":
        model = StackedMLP(3)
        model.load_state_dict(params)
    elif pruning == "build_model":
        model = build_model(params, prune_by_magnitude(build_model(params, full_masks(3, SHAPES)), rates))
    else:  # pruned in place: weight_orig keeps its values where the mask is 0 (the step zeroes them first)
        model = StackedMLP(3)
        model.load_state_dict(params)
        prune_by_magnitude(model, rates)
    if rates["fc1"] == 0:
        assert bool(model.fc1.weight_mask.all()) and not bool(model.fc2.weight_mask.all())
    indices = torch.arange(96).view(3, 32)
    expected_losses, expected = _autograd_loss_and_gradients(
        model, *get_batch(tiny_data.train_x, tiny_data.train_y, indices)
    )
    model.zero_grad(set_to_none=True)
    losses = FastStep(model, tiny_data, learning_rate=1e-3)(indices)  # the step leaves its gradients in .grad
    torch.testing.assert_close(losses, expected_losses)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-4, atol=1e-6)
        if name.endswith("weight_orig"):
            mask = getattr(model, name.split(".")[0]).weight_mask
            assert bool((param.grad[mask == 0] == 0).all())


@pytest.mark.parametrize("pruned", [False, True])
def test_the_fast_step_and_the_reference_step_train_alike_and_keep_pruned_weights_at_zero(tiny_data, pruned):
    params = init_params([1, 2, 3], 300, 100, "kaiming_uniform")
    masks = full_masks(3, SHAPES)
    if pruned:
        masks = prune_by_magnitude(build_model(params, masks), {"fc1": 0.6, "fc2": 0.4, "fc3": 0.2})
    reference_model, fast_model = build_model(params, masks), build_model(params, masks)
    reference, fast = ReferenceStep(reference_model, tiny_data, 2e-3), FastStep(fast_model, tiny_data, 2e-3)
    sampler = BatchSampler([4, 5, 4], len(tiny_data.train_y), 32)
    for it in range(10):
        indices = sampler.indices(it)
        torch.testing.assert_close(fast(indices), reference(indices), rtol=1e-5, atol=1e-6)
    trained = dict(fast_model.named_parameters())
    for name, param in reference_model.named_parameters():
        # A tenth of one Adam step (lr 2e-3): Adam divides by the gradient's running scale, so a weight whose
        # gradient is at rounding level may move a fraction of a step differently; a wrong gradient moves whole steps.
        torch.testing.assert_close(trained[name], param, rtol=1e-3, atol=2e-4)
    for model in (reference_model, fast_model):
        weights = current_params(model)
        for name in LAYERS:
            pruned_entries = masks[name] == 0
            assert bool((getattr(model, name).weight_orig[pruned_entries] == 0).all())
            assert bool((weights[f"{name}.weight"][pruned_entries] == 0).all())
            survivors = ~pruned_entries
            assert not torch.equal(weights[f"{name}.weight"][survivors], params[f"{name}.weight"][survivors])


def test_train_networks_with_the_reference_step_gives_what_the_fast_step_gives(tiny_data):
    params = init_params([1, 2], 300, 100, "kaiming_uniform")
    masks = prune_by_magnitude(build_model(params, full_masks(2, SHAPES)), {"fc1": 0.5, "fc2": 0.3, "fc3": 0.1})
    fast = _train(params, masks, tiny_data, [7, 8], iterations=20)
    reference = _train(params, masks, tiny_data, [7, 8], iterations=20, step=ReferenceStep)
    for key, value in reference.params.items():
        torch.testing.assert_close(fast.params[key], value, rtol=1e-3, atol=1e-4)
    for name, values in reference.metrics.items():
        torch.testing.assert_close(fast.metrics[name], values, rtol=1e-4, atol=1e-3)


def test_train_networks_trains_with_the_step_its_factory_makes_from_model_data_and_learning_rate(tiny_data):
    params = init_params([1, 2], 300, 100, "kaiming_uniform")
    masks = full_masks(2, SHAPES)
    made = []

    def factory(model, data, learning_rate):
        made.append((model, data, learning_rate, FastStep(model, data, learning_rate, cuda_graph=False)))
        return made[-1][-1]

    result = _train(params, masks, tiny_data, [7, 8], iterations=12, step=factory)
    ((model, data, learning_rate, step),) = made  # one step for the whole call
    assert data is tiny_data and learning_rate == 2e-3 and not step.use_graph
    assert all(int(state["step"]) == 12 for state in step.optimizer.state.values())  # every iteration took it
    for key, value in current_params(model).items():
        assert torch.equal(result.params[key], value)


def test_the_reference_step_returns_each_networks_loss_and_clears_the_gradients(tiny_data):
    model = build_model(init_params([1, 2], 300, 100, "kaiming_uniform"), full_masks(2, SHAPES))
    x, y = get_batch(tiny_data.train_x, tiny_data.train_y, torch.arange(64).view(2, 32))
    with torch.no_grad():
        logits = model(x)
    expected = torch.stack([F.cross_entropy(logits[i], y[i]) for i in range(2)])
    losses = reference_step(model, torch.optim.Adam(model.parameters(), lr=1e-3), x, y)
    torch.testing.assert_close(losses, expected)
    assert not losses.requires_grad
    assert all(param.grad is None for param in model.parameters())


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


def _evaluate(model, x, y, chunk=None):
    """Loss and accuracy of every network on one split, (n,) each, as an Evaluator of that split alone gives them."""
    losses, accuracies = Evaluator([(x, y)], model.n_networks, chunk)(model)
    return losses[0], accuracies[0]


def test_the_evaluator_reports_each_networks_loss_and_accuracy(tiny_data):
    model = StackedMLP(2)
    model.load_state_dict(init_params([1, 2], 300, 100, "glorot_normal"))
    loss, accuracy = _evaluate(model, tiny_data.test_x, tiny_data.test_y, chunk=64)
    logits = model(tiny_data.test_x)
    for i in range(2):
        assert loss[i].item() == pytest.approx(F.cross_entropy(logits[i], tiny_data.test_y).item(), rel=1e-5)
        assert accuracy[i].item() == pytest.approx(
            100 * (logits[i].argmax(1) == tiny_data.test_y).float().mean().item()
        )
    default_loss, default_accuracy = _evaluate(model, tiny_data.test_x, tiny_data.test_y)  # chunked by the device
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


def test_training_from_iteration_k_continues_the_batches_of_a_run_from_zero_and_evaluates_on_its_grid(tiny_data):
    """Late rewinding trains from k to T: the steps after a snapshot at k, started from it, are those of the
    uninterrupted run (same batches, same Adam steps up to the fresh optimizer state), and the evaluations fall on
    the same iterations."""
    params = init_params([0], 300, 100, "glorot_normal")
    common = dict(batch_size=32, learning_rate=2e-3, eval_every=10, batch_seeds=[0], progress=False)
    walked = BatchSampler([0], n_examples=len(tiny_data.train_y), batch_size=32)
    jumped = BatchSampler([0], n_examples=len(tiny_data.train_y), batch_size=32)
    steps = walked.steps_per_epoch
    assert torch.equal(torch.cat([walked.indices(i) for i in range(2 * steps + 3)])[-1:], jumped.indices(2 * steps + 2))
    whole = train_networks(build_model(params, full_masks(1, SHAPES)), tiny_data, iterations=25, **common)
    late = train_networks(
        build_model(params, full_masks(1, SHAPES)), tiny_data, iterations=25, start_iteration=7, **common
    )
    assert whole.iterations == [0, 10, 20, 25] and late.iterations == [7, 10, 20, 25]
    assert late.metrics["test_accuracy"].shape == (4, 1)
    with pytest.raises(ValueError, match="start_iteration"):
        train_networks(
            build_model(params, full_masks(1, SHAPES)), tiny_data, iterations=25, start_iteration=25, **common
        )


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


def test_the_fast_step_flushes_subnormals_only_inside_its_block_on_every_cpu_thread(tiny_data):
    # 1e-20 squared is subnormal; a million elements are split across torch's threads, so a worker
    # thread that missed the flag leaves its share of the product nonzero.
    tiny = torch.full((2**20,), 1e-20)
    torch.ones(2**20).sum()  # torch's thread pool exists before the block, as in any real session
    with FastStep(StackedMLP(1), tiny_data, learning_rate=1e-3):  # the block training runs in
        inside = tiny * tiny
    outside = tiny * tiny
    assert (outside > 0).all()  # the default is back, on every thread
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert (inside == 0).all()


def _evaluate_each_split_alone(model, x, y, chunk):
    """The evaluation written plainly: the model's own forward (prune's hooks), chunk by chunk, one split."""
    n, loss_sum, correct = model.n_networks, torch.zeros(model.n_networks, dtype=torch.float64), 0
    with torch.no_grad():
        for start in range(0, len(y), chunk):
            logits = model(x[start : start + chunk]).transpose(1, 2)
            target = y[start : start + chunk].expand(n, -1)
            loss_sum += F.cross_entropy(logits, target, reduction="none").sum(1).double()
            correct += (logits.argmax(1) == target).sum(1)
    return loss_sum / len(y), 100 * correct / len(y)


@pytest.mark.parametrize("n_networks", [1, 3, 12])
def test_evaluating_validation_and_test_together_gives_bit_for_bit_what_each_gives_alone(n_networks):
    data = synthetic_splits(n_eval=2500, seed=n_networks)  # 2,500 examples: several chunks a split at 3 networks
    params = init_params(list(range(n_networks)), 300, 100, "kaiming_uniform")
    model = build_model(params, full_masks(n_networks, SHAPES))
    prune_by_magnitude(model, {"fc1": 0.6, "fc2": 0.4, "fc3": 0.2})  # in place: weight_orig keeps its pruned values
    chunk = min(5000, max(1000, 10_000 // n_networks))  # the CPU's default chunk
    metrics = Evaluator.validation_and_test(data, n_networks).metrics(model)  # what train_networks records
    for split in ("val", "test"):
        loss, accuracy = _evaluate_each_split_alone(
            model, getattr(data, f"{split}_x"), getattr(data, f"{split}_y"), chunk
        )
        assert torch.equal(metrics[f"{split}_loss"], loss), split
        assert torch.equal(metrics[f"{split}_accuracy"], accuracy), split


def test_one_forward_across_validation_and_test_as_on_a_gpu_gives_each_splits_own_figures(tiny_data):
    model = build_model(init_params([1, 2], 300, 100, "kaiming_uniform"), full_masks(2, SHAPES))
    evaluator = Evaluator.validation_and_test(tiny_data, 2)
    evaluator.pieces = [(0, 400)]  # the GPU's default: one chunk holding both splits (200 examples each)
    (val_loss, test_loss), (val_acc, test_acc) = evaluator(model)
    for split, loss, accuracy in (("val", val_loss, val_acc), ("test", test_loss, test_acc)):
        expected_loss, expected_accuracy = _evaluate(
            model, getattr(tiny_data, f"{split}_x"), getattr(tiny_data, f"{split}_y")
        )
        torch.testing.assert_close(loss, expected_loss, rtol=1e-6, atol=0)
        assert torch.equal(accuracy, expected_accuracy), split
