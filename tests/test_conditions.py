"""The conditions' contract: names, the sparsity every mask rule keeps, where every start rule starts, and that a
stack of conditions trains each network as it would train alone."""

from __future__ import annotations

import re

import pytest
import torch

import lth_helpers.experiment as experiment
from lth_helpers import conditions
from lth_helpers.conditions import MASK_RULES, START_RULES, canonical, parse
from lth_helpers.config import Config, ConfigError, make_config
from lth_helpers.experiment import derive_seed, level_networks, run_experiment
from lth_helpers.files import RunFolderError
from lth_helpers.model import LAYERS, init_params, init_std, select
from lth_helpers.pruning import build_model, count_remaining
from lth_helpers.runs import RunFolder
from tests.conftest import synthetic_splits, tiny_config

MASKS = tuple(m for m in MASK_RULES if m != "ticket")
STARTS = tuple(f"ticket:{s}" for s in START_RULES if s != "rewind")


def test_a_condition_is_a_mask_rule_on_a_start_rule_and_todays_names_keep_their_meaning():
    assert parse("snip") == conditions.Condition("snip", "rewind")
    assert parse("reinit") == parse("ticket:reinit") == conditions.Condition("ticket", "reinit")
    assert canonical("ticket:reinit") == "reinit" and canonical("snip:rewind") == "snip"
    assert canonical("synflow:reinit") == "synflow:reinit"
    assert conditions.label("reinit") == "random reinit" and conditions.label("ticket") == "winning ticket"
    assert conditions.label("ticket:signed_constant") == "winning ticket, signed constant"
    assert make_config("smoke", controls=("ticket:reinit", "snip:rewind")).controls == ("reinit", "snip")


def test_one_condition_is_one_config_hash_and_old_configs_keep_their_names():
    assert make_config("seed").run_name() == "seed-599ec2dc"  # the names run folders were given before
    assert make_config("smoke").run_name() == "smoke-522d9a40"
    assert make_config("seed", controls=("reinit", "one_shot"), rewind_iteration=100).run_name() == "seed-07d94582"
    same = make_config("seed", controls=("ticket:reinit", "one_shot:rewind"), rewind_iteration=100)
    assert same.short_hash() == "07d94582"
    with_snip = make_config("seed", controls=("snip",))
    assert make_config("seed", controls=("snip",), saliency_batch_size=50).short_hash() != with_snip.short_hash()
    old = {k: v for k, v in make_config("seed").to_dict().items() if k != "saliency_batch_size"}
    assert Config.from_dict(old) == make_config("seed")  # a config.json written before the field existed


@pytest.mark.parametrize(
    "controls, words",
    [
        (("snipp",), ["unknown mask rule 'snipp'", "snip", "synflow"]),
        (("ticket:rewound",), ["unknown start rule 'rewound'", "signed_constant"]),
        (("ticket",), ["winning ticket itself"]),
        (("reinit", "ticket:reinit"), ["reinit is named twice (reinit and ticket:reinit are one condition)"]),
        (("snip", "snip:rewind"), ["snip is named twice (snip and snip:rewind are one condition)"]),
        (("snip:",), ["unknown start rule '' in 'snip:'"]),
        (("reinit", "", "snip"), ["unknown mask rule ''"]),
    ],
)
def test_a_name_that_is_no_condition_is_refused_in_one_line_naming_the_known_rules(controls, words):
    with pytest.raises(ConfigError) as error:
        make_config("smoke", controls=controls)
    assert "\n" not in str(error.value)
    assert all(word in str(error.value) for word in words)


def test_the_order_of_the_controls_is_not_a_config_of_its_own():
    assert make_config("smoke", controls=("snip", "reinit")).controls == ("reinit", "snip")
    assert (
        make_config("smoke", controls=("snip", "reinit")).short_hash()
        == make_config("smoke", controls=("reinit", "snip")).short_hash()
    )


def test_a_saliency_batch_no_control_uses_is_refused_as_a_choice_that_changes_nothing():
    with pytest.raises(ConfigError, match="snip and grasp mask rules only"):
        make_config("smoke", saliency_batch_size=50)
    assert make_config("smoke", controls=("grasp_shuffled",), saliency_batch_size=50).saliency_batch_size == 50


def test_every_condition_has_its_own_look_in_the_figures():
    names = ["ticket", *MASKS, *STARTS]
    looks = {tuple(sorted((k, str(v)) for k, v in conditions.style(n).items())) for n in names}
    assert len(looks) == len(names)
    assert len({conditions.label(n) for n in names}) == len(names)


@pytest.fixture(scope="module")
def every_rule(tmp_path_factory):
    """A tiny run of every mask rule and every start rule, layer-wise and global, late rewinding at 5."""
    runs = {}
    for global_pruning in (False, True):
        cfg = tiny_config(
            controls=(*MASKS, *STARTS, "one_shot:fine_tune"),
            rounds=2,
            global_pruning=global_pruning,
            rewind_iteration=5,
        )
        path = tmp_path_factory.mktemp("every_rule")
        run_experiment(cfg, path, synthetic_splits(), progress=False)
        runs[global_pruning] = cfg, RunFolder(path)
    return runs


@pytest.mark.parametrize("global_pruning", [False, True])
def test_every_mask_rule_keeps_the_tickets_sparsity_and_nested_rules_only_shrink(every_rule, global_pruning):
    cfg, folder = every_rule[global_pruning]
    for level in range(1, cfg.rounds + 1):
        masks, before = folder.load_masks(level), folder.load_masks(level - 1)
        ticket = count_remaining(masks["ticket"])
        for rule in MASKS:
            counts = count_remaining(masks[rule])
            assert torch.equal(sum(counts.values()), sum(ticket.values())), rule
            if not global_pruning or rule in ("random_prune", "shuffle"):  # these keep the ticket's layer counts
                assert all(torch.equal(counts[n], ticket[n]) for n in LAYERS), rule
            if MASK_RULES[rule].nested:
                assert all(bool((masks[rule][n] <= before[rule][n]).all()) for n in LAYERS), rule


def test_an_inverted_rule_keeps_other_weights_than_its_rule(every_rule):
    cfg, folder = every_rule[False]
    masks = folder.load_masks(cfg.rounds)
    for rule in [m for m in MASKS if m.endswith(conditions.INVERTED)]:
        base = rule.removesuffix(conditions.INVERTED)
        overlap = sum(float((masks[rule][n] * masks[base][n]).sum()) for n in LAYERS)
        assert overlap < 0.9 * sum(float(masks[base][n].sum()) for n in LAYERS), rule


def test_every_start_rule_starts_where_it_says(every_rule, tiny_data):
    cfg, folder = every_rule[False]
    level = 2
    rewind_point, masks = folder.load("rewind.pt"), folder.load_masks(level)
    trained = {"ticket": folder.load(f"trained/level_{level - 1:02d}.pt"), "dense": folder.load("dense.pt")}
    networks = {(n.condition, n.trial): n for n in level_networks(cfg, level, rewind_point, masks, trained)}
    for trial in range(cfg.trials):
        mask = select(masks["ticket"], [trial])

        def start(condition, trial=trial):
            model = build_model(networks[condition, trial].params, networks[condition, trial].masks)
            return {n: getattr(model, n).weight.detach() for n in LAYERS}

        fresh = init_params([derive_seed(cfg.seed, "reinit", trial, level)], cfg.fc1_width, cfg.fc2_width, cfg.init)
        for n in LAYERS:
            w_k, kept = rewind_point[f"{n}.weight"][trial : trial + 1], mask[n].bool()
            assert torch.equal(start("ticket")[n], w_k * mask[n])
            assert torch.equal(start("reinit")[n], fresh[f"{n}.weight"] * mask[n])
            reshuffled = start("ticket:reshuffle")[n]
            assert torch.equal(reshuffled[kept].sort().values, w_k[kept].sort().values)
            assert not torch.equal(reshuffled, w_k * mask[n])
            fan_out, fan_in = mask[n].shape[1:]
            constant = init_std(cfg.init, fan_in, fan_out)
            assert torch.allclose(start("ticket:signed_constant")[n][kept], w_k[kept].sign() * constant)
            ticket_before = trained["ticket"][f"{n}.weight"][trial : trial + 1]
            assert torch.equal(start("ticket:fine_tune")[n], ticket_before * mask[n])
            dense = trained["dense"][f"{n}.weight"][trial : trial + 1]
            one_shot_mask = masks["one_shot"][n][trial : trial + 1]
            assert torch.equal(start("one_shot:fine_tune")[n], dense * one_shot_mask)


def test_every_pruned_level_trains_from_the_rewind_iteration_to_the_end(every_rule):
    cfg, folder = every_rule[False]
    first = folder.curves().groupby(["level", "condition"]).iteration.agg(["min", "max"])
    assert (first.loc[0, "min"] == 0).all()
    pruned = first.drop(index=0, level="level")
    assert (pruned["min"] == cfg.rewind_iteration).all() and (pruned["max"] == cfg.iterations).all()


def test_a_stack_of_every_start_rule_trains_each_network_as_it_would_train_alone(every_rule, tiny_data):
    cfg, folder = every_rule[False]
    level = 2
    trained = {"ticket": folder.load("trained/level_01.pt"), "dense": folder.load("dense.pt")}
    networks = level_networks(cfg, level, folder.load("rewind.pt"), folder.load_masks(level), trained)
    chosen = [i for i, n in enumerate(networks) if n.trial == 1 and n.condition in ("ticket", "snip", *STARTS)]
    together, _ = experiment._train_level(cfg, level, [networks[i] for i in chosen], tiny_data, progress=False)
    for j, i in enumerate(chosen):
        alone, _ = experiment._train_level(cfg, level, networks[i : i + 1], tiny_data, progress=False)
        for key, value in alone.params.items():
            torch.testing.assert_close(together.params[key][j : j + 1], value, rtol=1e-3, atol=1e-4)


def test_an_unfinished_late_rewinding_run_of_the_older_rule_is_refused_and_a_finished_one_still_reads(
    tmp_path, tiny_data, monkeypatch
):
    """Runs made before pruned levels trained from k to T trained k + T iterations after a late rewind: resuming one
    under the new rule would mix the two, so it is refused; a finished one reads as what it is."""
    cfg = tiny_config(rewind_iteration=5, rounds=2, trials=1, controls=("reinit",))
    real_train = experiment.train_networks

    def stops_at_level_2(*args, desc, **kwargs):
        if desc == "level 2":
            raise experiment.DivergenceError(network=0, iteration=3)
        return real_train(*args, desc=desc, **kwargs)

    for name, stop in (("cut", True), ("whole", False)):
        with monkeypatch.context() as patch:
            if stop:
                patch.setattr(experiment, "train_networks", stops_at_level_2)
            try:
                run_experiment(cfg, tmp_path / name, tiny_data, progress=False)
            except experiment.ExperimentError:
                pass
        config = tmp_path / name / "config.json"
        config.write_text(re.sub(r',\s*"format": 2', "", config.read_text()))  # as the older version wrote it
    before = {p: p.read_bytes() for p in (tmp_path / "cut").rglob("*") if p.is_file()}
    with pytest.raises(RunFolderError, match="older version.*from iteration 5 to 30.*--overwrite"):
        run_experiment(cfg, tmp_path / "cut", tiny_data, progress=False)
    assert before == {p: p.read_bytes() for p in (tmp_path / "cut").rglob("*") if p.is_file()}
    assert RunFolder(tmp_path / "whole").format == 1
    assert len(run_experiment(cfg, tmp_path / "whole", tiny_data, progress=False)) == 1 + 2 * 2
