"""Zhou et al. 2019's starting points (reshuffle, signed constant) and the layers' init standard deviation."""

from __future__ import annotations

import math

import pytest
import torch

from lth_helpers.model import LAYERS, init_params, init_std
from lth_helpers.starts import reshuffle, signed_constant


def stack(scheme: str = "glorot_normal") -> dict[str, torch.Tensor]:
    return init_params([7, 8], 30, 20, scheme)


def random_masks(params, keep: float = 0.3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: (torch.rand(params[f"{name}.weight"].shape, generator=g) < keep).float() for name in LAYERS}


@pytest.mark.parametrize("scheme", ["glorot_normal", "kaiming_uniform"])
def test_init_std_is_the_empirical_std_of_init_params(scheme):
    params = init_params([0, 1], 300, 100, scheme)
    for name, fan_in, fan_out in (("fc1", 784, 300), ("fc2", 300, 100)):  # 470,400 and 60,000 weights
        empirical = params[f"{name}.weight"].std().item()
        assert init_std(scheme, fan_in, fan_out) == pytest.approx(empirical, rel=0.01), name


def test_init_std_formulas_and_unknown_scheme():
    assert init_std("glorot_normal", 784, 300) == pytest.approx(math.sqrt(2 / 1084))
    assert init_std("kaiming_uniform", 784, 300) == pytest.approx(1 / math.sqrt(3 * 784))
    with pytest.raises(ValueError, match="unknown init scheme"):
        init_std("xavier", 784, 300)


def test_reshuffle_permutes_each_layers_kept_initial_values_among_the_kept_positions():
    init, masks = stack("kaiming_uniform"), random_masks(stack())
    shuffled = reshuffle(init, masks, torch.Generator().manual_seed(0))
    for name in LAYERS:
        w, new, kept = init[f"{name}.weight"], shuffled[f"{name}.weight"], masks[name].bool()
        assert bool((new[~kept] == 0).all())
        for i in range(2):
            assert torch.equal(new[i][kept[i]].sort().values, w[i][kept[i]].sort().values), (name, i)
            assert not torch.equal(new[i][kept[i]], w[i][kept[i]])  # moved, not left in place
        assert torch.equal(shuffled[f"{name}.bias"], init[f"{name}.bias"])  # theta_0's biases


def test_reshuffle_depends_on_the_generators_seed_alone():
    init, masks = stack(), random_masks(stack())
    a, again, b = (reshuffle(init, masks, torch.Generator().manual_seed(s)) for s in (0, 0, 1))
    for name in LAYERS:
        assert torch.equal(a[f"{name}.weight"], again[f"{name}.weight"])
        assert not torch.equal(a[f"{name}.weight"], b[f"{name}.weight"])


@pytest.mark.parametrize("scheme", ["glorot_normal", "kaiming_uniform"])
def test_signed_constant_sets_kept_weights_to_the_sign_of_theta_0_times_the_layers_init_std(scheme):
    init = stack(scheme)
    init["fc2.weight"][0, 0, :5] = 0.0  # no sign: +c
    masks = random_masks(init)
    masks["fc2"][0, 0, :5] = 1.0
    start = signed_constant(init, masks, scheme)
    for name in LAYERS:
        w, new, kept = init[f"{name}.weight"], start[f"{name}.weight"], masks[name].bool()
        fan_out, fan_in = w.shape[1:]
        c = init_std(scheme, fan_in, fan_out)
        assert sorted(new[kept].unique().tolist()) == pytest.approx([-c, c])
        assert bool((new[~kept] == 0).all())
        assert torch.equal(new[kept] > 0, w[kept] >= 0)  # theta_0's signs, +c where theta_0 is 0
        assert torch.equal(start[f"{name}.bias"], init[f"{name}.bias"])
    assert bool((start["fc2.weight"][0, 0, :5] > 0).all())
