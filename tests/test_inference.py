"""Inference forms of a pruned network: the same function, fewer units, smaller files."""

from __future__ import annotations

import pandas as pd
import torch

from lth_helpers.inference import (
    add_best_forms,
    compact,
    dead_units,
    first_network,
    inference_forms,
    load_ticket,
    median_latencies,
    smallest_form,
)
from lth_helpers.model import init_params, layer_shapes
from tests.conftest import pruned_network_with_dead_units


def test_every_form_computes_the_pruned_networks_function_on_the_test_set(mnist):
    params, masks, model = pruned_network_with_dead_units()
    expected = model(mnist.test_x)[0]
    for form, module in inference_forms(params, masks).items():
        torch.testing.assert_close(module(mnist.test_x), expected, rtol=1e-4, atol=1e-4, msg=form)
        torch.testing.assert_close(module(mnist.test_x[:1]), expected[:1], rtol=1e-4, atol=1e-4, msg=form)


def test_compaction_removes_every_dead_unit():
    params, masks, _ = pruned_network_with_dead_units()
    dead = dead_units(masks)
    assert dead["dead_inputs"] >= 100 and dead["fc1_dead_in"] >= 20 and dead["fc1_dead_out"] >= 20
    assert dead["fc2_dead_out"] >= 10
    small = compact(params, masks)
    n_inputs, n_fc1, n_fc2, _ = (int(n) for n in small.shape().split("-"))
    assert n_inputs == 784 - dead["dead_inputs"]
    assert n_fc1 <= 300 - 40 and n_fc2 <= 100 - 10
    for name in ("fc1", "fc2"):  # what is left has live inputs and outputs
        weight = small.get_buffer(f"{name}_weight")
        assert bool((weight != 0).any(1).all())
    assert bool((small.get_buffer("fc2_weight") != 0).any(0).all())


def test_dead_units_counts_units_without_weights():
    masks = {name: torch.ones(shape) for name, shape in layer_shapes(300, 100).items()}
    masks["fc1"][:, [3, 5]] = 0
    masks["fc1"][7] = 0
    masks["fc2"][:, [7, 8, 9]] = 0
    masks["fc3"][:, 0] = 0
    assert dead_units(masks) == {  # fc1 unit 7 has neither weights in nor out: it counts once, as dead in
        "dead_inputs": 2,
        "fc1_dead_in": 1,
        "fc1_dead_out": 2,
        "fc2_dead_in": 0,
        "fc2_dead_out": 1,
    }


def test_each_dead_unit_counts_once_in_layers_one_unit_wide():
    masks = {name: torch.zeros(shape) for name, shape in layer_shapes(1, 1).items()}
    dead = dead_units(masks)
    assert dead["fc1_dead_in"] + dead["fc1_dead_out"] == 1 and dead["fc2_dead_in"] + dead["fc2_dead_out"] == 1


def test_a_ticket_saved_in_its_smallest_form_loads_to_the_same_outputs(tmp_path, mnist):
    params, masks, model = pruned_network_with_dead_units()
    path = tmp_path / "ticket.pt"
    saved = smallest_form(params, masks)
    torch.save(saved, path)
    forms = inference_forms(params, masks)
    assert saved["form"] == min(forms, key=lambda f: forms[f].n_bytes())
    loaded = load_ticket(path)
    torch.testing.assert_close(loaded(mnist.test_x), model(mnist.test_x)[0], rtol=1e-4, atol=1e-4)
    assert path.stat().st_size < forms["dense"].n_bytes() / 4


def test_a_network_without_dead_units_compacts_to_itself(mnist):
    params = first_network(init_params([3], 300, 100, "kaiming_uniform"))
    masks = {name: torch.ones(shape) for name, shape in layer_shapes(300, 100).items()}
    small = compact(params, masks)
    assert small.shape() == "784-300-100-10" and small.inputs is None  # no gather when every pixel is read
    torch.testing.assert_close(small(mnist.test_x), inference_forms(params, masks)["dense"](mnist.test_x))


def test_a_compact_network_with_nothing_removed_is_not_credited_as_faster():
    table = pd.DataFrame(
        {
            "dense_macs": [266_200, 266_200],
            "compact_macs": [266_200, 200_000],  # level 0: compaction removed nothing
            **{f"dense_ms_batch{b}": [2.0, 2.0] for b in (1, 1000)},
            **{f"compact_ms_batch{b}": [1.5, 1.5] for b in (1, 1000)},  # level 0: noise, the same computation
            "sparse_ms_batch1": [3.0, 3.0],
            "sparse_ms_batch1000": [3.0, 1.0],
        }
    )
    table = add_best_forms(table)
    assert list(table.best_form_batch1) == ["dense", "compact"]
    assert list(table.speedup_batch1) == [1.0, 2.0 / 1.5]
    assert list(table.best_form_batch1000) == ["dense", "sparse"]


def test_latency_forms_take_turns_in_rotating_order():
    calls = []

    class Recorder(torch.nn.Module):
        def __init__(self, name: str):
            super().__init__()
            self.name = name

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(self.name)
            return x

    medians = median_latencies({n: Recorder(n) for n in "abc"}, torch.zeros(1), repeats=6, warmup=2)
    assert set(medians) == {"a", "b", "c"} and all(m >= 0 for m in medians.values())
    timed = calls[6:]  # after 2 warm-up passes of each
    assert [timed[i : i + 3] for i in range(0, 18, 3)] == [list("abc"), list("bca"), list("cab")] * 2
