"""On a GPU: the CUDA-graph training step gives what the eager step gives, the host waits for the GPU only at
evaluations, the inference forms run there as on the CPU, and the command line runs the smoke preset end to end.
Skipped without CUDA."""

from __future__ import annotations

import functools
import gc
import warnings

import pandas as pd
import pytest
import torch

from lth_helpers.cli import main
from lth_helpers.data import MNISTSplits
from lth_helpers.fast_step import FastStep
from lth_helpers.inference import BATCH_SIZES, FORMS, add_best_forms, inference_forms, level_inference_row
from lth_helpers.model import init_params, layer_shapes
from lth_helpers.pruning import build_model, full_masks, prune_by_magnitude
from lth_helpers.training import train_networks
from tests.conftest import load_script, pruned_network_with_dead_units

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def tiny_cuda_data(tiny_data) -> MNISTSplits:
    return MNISTSplits(*(t.cuda() for t in vars(tiny_data).values()))


@pytest.mark.filterwarnings("error:CUDA graph capture failed")  # the eager fallback would compare eager with eager
def test_cuda_graph_training_equals_eager_training(tiny_cuda_data):
    data = tiny_cuda_data
    params = init_params([1, 2, 3], 300, 100, "glorot_normal")
    masks = prune_by_magnitude(
        build_model(params, full_masks(3, layer_shapes(300, 100))), {"fc1": 0.5, "fc2": 0.5, "fc3": 0.2}
    )
    results = {}
    for graph in (False, True):
        model = build_model({k: v.cuda() for k, v in params.items()}, {k: v.cuda() for k, v in masks.items()})
        results[graph] = train_networks(
            model,
            data,
            iterations=57,
            batch_size=32,
            learning_rate=2e-3,
            eval_every=20,
            batch_seeds=[4, 5, 4],
            snapshot_iteration=10,
            step=functools.partial(FastStep, cuda_graph=graph),
            progress=False,
        )
    for key, value in results[False].params.items():
        torch.testing.assert_close(results[True].params[key], value, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(results[True].snapshot[key], results[False].snapshot[key], rtol=1e-4, atol=1e-5)
        if key.endswith("weight"):
            assert bool((results[True].params[key][masks[key.split(".")[0]].cuda() == 0] == 0).all())
    torch.testing.assert_close(results[True].metrics["test_accuracy"], results[False].metrics["test_accuracy"])


def host_syncs_while_training(data: MNISTSplits, iterations: int) -> int:
    """How many times the host waits for the GPU in a training run with evaluations at 0, iterations/2 and the end."""
    model = build_model(init_params([1, 2], 300, 100, "glorot_normal"), full_masks(2, layer_shapes(300, 100))).cuda()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")  # a warning at every synchronizing operation
        try:
            train_networks(
                model,
                data,
                iterations=iterations,
                batch_size=2,  # 600 examples: 300 batches an epoch, so both runs stay in the first epoch
                learning_rate=2e-3,
                eval_every=iterations // 2,
                batch_seeds=[1, 2],
                progress=False,
            )
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert not [w for w in caught if "CUDA graph capture failed" in str(w.message)]  # else eager is what we measured
    return sum("synchroniz" in str(w.message) for w in caught)


def test_the_host_waits_for_the_gpu_at_evaluations_not_at_training_steps(tiny_cuda_data):
    data = tiny_cuda_data
    host_syncs_while_training(data, 100)  # once first: one-time initialisation may wait too
    # twice the steps, the same three evaluations: a wait inside the step would add 100
    assert host_syncs_while_training(data, 100) == host_syncs_while_training(data, 200) > 0


def test_a_level_leaves_little_gpu_memory_behind(tiny_cuda_data):
    seeds, params = [1, 2], init_params([1, 2], 300, 100, "glorot_normal")

    def train_a_level() -> None:
        model = build_model(params, full_masks(len(seeds), layer_shapes(300, 100))).cuda()
        common = dict(batch_size=32, learning_rate=2e-3, batch_seeds=seeds, progress=False)
        train_networks(model, tiny_cuda_data, iterations=10, eval_every=5, **common)
        gc.collect()  # the model, optimizer and graph are garbage now, even if some reference cycle held them

    train_a_level()  # the first level may create what every later one reuses (workspaces, the warm-up stream)
    held = torch.cuda.memory_allocated()
    for _ in range(3):  # the paper preset trains 21 levels, each with its own model, optimizer and graph
        train_a_level()
    parameter_bytes = 4 * sum(p.numel() for p in params.values())
    # About three parameter-sized tensors stay allocated after each level, for a reason not known; the bound allows
    # them and no more, so that a cuBLAS workspace left behind per level (a new warm-up stream each) fails the test.
    # No growth at all would be better still.
    assert torch.cuda.memory_allocated() - held <= 3 * 4 * parameter_bytes


def test_every_inference_form_computes_on_cuda_what_it_computes_on_the_cpu(tiny_data):
    params, masks, _ = pruned_network_with_dead_units()
    x = tiny_data.test_x
    for form, module in inference_forms(params, masks).items():
        on_cpu = module(x)
        torch.testing.assert_close(module.to("cuda")(x.cuda()).cpu(), on_cpu, rtol=1e-4, atol=1e-4, msg=form)
    table = add_best_forms(pd.DataFrame([level_inference_row(params, masks, x, repeats=3, cuda=True)]))
    for form in FORMS:
        for batch in BATCH_SIZES:
            assert table.loc[0, f"{form}_ms_batch{batch}_cuda"] > 0
    assert table.loc[0, "best_form_batch1000_cuda"] in FORMS


@pytest.mark.filterwarnings("error:CUDA graph capture failed")
def test_the_smoke_preset_runs_end_to_end_on_cuda(tmp_path):
    out = tmp_path / "smoke"
    assert main(["--preset", "smoke", "--device", "cuda", "--out", str(out), "--no-progress"]) == 0
    results, inference = pd.read_csv(out / "results.csv"), pd.read_csv(out / "inference.csv")
    assert len(results) == 4 and (results.final_test_accuracy > 90).all()
    assert (inference.dense_ms_batch1000_cuda > 0).all()


@pytest.mark.filterwarnings("error:CUDA graph capture failed")
def test_the_gpu_step_profile_runs(tiny_cuda_data, capsys):
    rows = load_script("gpu_step_profile.py").main(tiny_cuda_data, reps=4, profiled_steps=2, networks=(2,))
    # eager and graph at 2 networks; graph unpruned at 10; an evaluation; TF32
    assert len(rows) == 5 and all(gpu_us > 0 for _, gpu_us, *_ in rows)
    assert "kernels of an eager step at 10 networks" in capsys.readouterr().out
