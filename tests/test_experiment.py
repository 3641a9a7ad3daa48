"""The experiment's half of the contract: densities, rewinding, controls, determinism, resuming."""

from __future__ import annotations

import re
import subprocess
import sys

import pandas as pd
import pytest
import torch

import lth_helpers.experiment as experiment
import lth_helpers.files as files
import lth_helpers.training as training
from lth_helpers.experiment import ExperimentError, level_networks, run_experiment
from lth_helpers.files import RunFolderError
from lth_helpers.model import LAYERS, select
from lth_helpers.pruning import build_model, count_remaining
from lth_helpers.runs import RunFolder
from lth_helpers.training import DivergenceError
from tests.conftest import REPO
from tests.conftest import tiny_config as small


def run(cfg, path, data):
    return run_experiment(cfg, path, data, progress=False)


def test_density_follows_the_rounds_and_masks_only_shrink(tmp_path, tiny_data):
    cfg = small(global_pruning=True)
    results = run(cfg, tmp_path, tiny_data)
    folder = RunFolder(tmp_path)
    total = 784 * 40 + 40 * 20 + 20 * 10
    expected = [total]
    for _ in range(cfg.rounds):
        expected.append(expected[-1] - round(0.2 * expected[-1]))
    ticket = results[results.condition == "ticket"]
    assert ticket.groupby("level").weights_remaining.unique().map(list).tolist() == [[n] for n in expected]
    assert ticket.percent_remaining.round(6).tolist() == sorted(
        [round(100 * n / total, 6) for n in expected] * 2, reverse=True
    )
    previous = None
    for level in range(1, cfg.rounds + 1):
        masks = folder.load_masks(level)
        if previous is not None:
            for condition in ("ticket", "random_prune"):
                assert all(bool((masks[condition][n] <= previous[condition][n]).all()) for n in LAYERS)
        previous = masks


def test_every_level_starts_from_init_times_mask_and_controls_differ_as_they_should(tmp_path, tiny_data):
    cfg = small()
    run(cfg, tmp_path, tiny_data)
    folder = RunFolder(tmp_path)
    theta_0 = folder.load("init.pt")
    for level in range(1, cfg.rounds + 1):
        masks = folder.load_masks(level)
        networks = {(n.condition, n.trial): n for n in level_networks(cfg, level, theta_0, masks)}
        for trial in range(cfg.trials):
            ticket, reinit, random = (networks[c, trial] for c in ("ticket", "reinit", "random_prune"))
            model = build_model(ticket.params, ticket.masks)
            for name in LAYERS:
                init_w = theta_0[f"{name}.weight"][trial : trial + 1]
                assert torch.equal(model.get_submodule(name).weight, init_w * masks["ticket"][name][trial : trial + 1])
                assert torch.equal(model.get_submodule(name).bias, theta_0[f"{name}.bias"][trial : trial + 1])
                assert torch.equal(reinit.masks[name], ticket.masks[name])
                assert not torch.equal(reinit.params[f"{name}.weight"], ticket.params[f"{name}.weight"])
                assert torch.equal(random.params[f"{name}.weight"], ticket.params[f"{name}.weight"])
                assert torch.equal(count_remaining(random.masks)[name], count_remaining(ticket.masks)[name])
                assert not torch.equal(random.masks[name], ticket.masks[name])
            assert reinit.batch_seed == ticket.batch_seed == random.batch_seed


def test_late_rewinding_starts_every_level_from_the_iteration_k_weights(tmp_path, tiny_data):
    cfg = small(rewind_iteration=7, rounds=1, trials=1)
    run(cfg, tmp_path, tiny_data)
    folder = RunFolder(tmp_path)
    rewind_point, theta_0 = folder.load("rewind.pt"), folder.load("init.pt")
    assert not torch.equal(rewind_point["fc1.weight"], theta_0["fc1.weight"])
    model = build_model(theta_0, {n: torch.ones_like(theta_0[f"{n}.weight"]) for n in LAYERS})
    replay = experiment.train_networks(
        model,
        tiny_data,
        iterations=7,
        batch_size=32,
        learning_rate=2e-3,
        eval_every=10,
        batch_seeds=[experiment.derive_seed(0, "batches", 0, 0)],
        progress=False,
    )
    for key in theta_0:
        torch.testing.assert_close(rewind_point[key], replay.params[key])
    ticket = level_networks(cfg, 1, rewind_point, folder.load_masks(1))[0]
    assert torch.equal(
        build_model(ticket.params, ticket.masks).fc1.weight, rewind_point["fc1.weight"] * ticket.masks["fc1"]
    )


def _without_timing(path):
    return pd.read_csv(path / "results.csv").drop(columns="train_seconds")


def test_same_seed_same_results_and_another_seed_other_results(tmp_path, tiny_data):
    cfg = small(rounds=2)
    run(cfg, tmp_path / "a", tiny_data)
    run(cfg, tmp_path / "b", tiny_data)
    run(small(rounds=2, seed=1), tmp_path / "c", tiny_data)
    pd.testing.assert_frame_equal(_without_timing(tmp_path / "a"), _without_timing(tmp_path / "b"))
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "a" / "curves.csv"), pd.read_csv(tmp_path / "b" / "curves.csv")
    )
    assert not _without_timing(tmp_path / "a").equals(_without_timing(tmp_path / "c"))


def kill_at_level_2(cfg, path, data, monkeypatch) -> None:
    """Run `cfg` in `path` until a KeyboardInterrupt ends it as level 2 starts (the folder holds two finished levels),
    as Ctrl-C or a killed process would."""
    real_train = experiment.train_networks

    def dies_at_level_2(*args, **kwargs):
        if RunFolder(path).levels_done == 2:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(experiment, "train_networks", dies_at_level_2)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, path, data)
    monkeypatch.setattr(experiment, "train_networks", real_train)


def test_a_run_killed_after_a_level_resumes_to_the_uninterrupted_result(tmp_path, tiny_data, monkeypatch, capsys):
    cfg = small(rounds=3)
    run(cfg, tmp_path / "whole", tiny_data)
    kill_at_level_2(cfg, tmp_path / "cut", tiny_data, monkeypatch)
    assert RunFolder(tmp_path / "cut").levels_done == 2
    capsys.readouterr()
    run_experiment(cfg, tmp_path / "cut", tiny_data, progress=True)
    counts = re.findall(r"levels: +\d+%\|[^|]*\| (\d+)/(\d+)", capsys.readouterr().err)
    assert counts[0] == ("2", "4") and counts[-1] == ("4", "4")  # the bar starts at the levels done, ends full
    pd.testing.assert_frame_equal(_without_timing(tmp_path / "whole"), _without_timing(tmp_path / "cut"))
    for level in range(1, cfg.rounds + 1):
        whole, cut = RunFolder(tmp_path / "whole").load_masks(level), RunFolder(tmp_path / "cut").load_masks(level)
        assert all(torch.equal(whole[c][n], cut[c][n]) for c in whole for n in LAYERS)


def test_masks_are_stored_as_booleans_and_float_masks_of_older_versions_resume_alike(tmp_path, tiny_data, monkeypatch):
    cfg = small(rounds=3)
    run(cfg, tmp_path / "whole", tiny_data)
    assert all(m.dtype == torch.bool for m in torch.load(tmp_path / "whole/masks/level_01.pt").values())
    kill_at_level_2(cfg, tmp_path / "old", tiny_data, monkeypatch)
    for file in (tmp_path / "old/masks").glob("level_*.pt"):  # as older versions saved them: float32 0.0 / 1.0
        torch.save({k: v.float() for k, v in torch.load(file).items()}, file)
    run(cfg, tmp_path / "old", tiny_data)
    pd.testing.assert_frame_equal(_without_timing(tmp_path / "whole"), _without_timing(tmp_path / "old"))
    for level in range(cfg.rounds + 1):
        whole, old = RunFolder(tmp_path / "whole").load_masks(level), RunFolder(tmp_path / "old").load_masks(level)
        assert all(whole[c][n].dtype == old[c][n].dtype == torch.float32 for c in whole for n in LAYERS)
        assert all(torch.equal(whole[c][n], old[c][n]) for c in whole for n in LAYERS)


def test_a_folder_of_another_config_is_refused_unless_overwritten(tmp_path, tiny_data):
    run(small(rounds=1), tmp_path, tiny_data)
    with pytest.raises(RunFolderError, match="differs in rounds"):
        run(small(rounds=2), tmp_path, tiny_data)
    results = run_experiment(small(rounds=2), tmp_path, tiny_data, overwrite=True, progress=False)
    assert sorted(results.level.unique()) == [0, 1, 2]


READERS = {  # each file of a run folder, and what reads it back
    "progress.json": lambda folder: folder.levels_done,
    "init.pt": lambda folder: folder.load("init.pt"),
    "masks/level_01.pt": lambda folder: folder.load_masks(1),
    "results.csv": lambda folder: folder.results(),
    "curves.csv": lambda folder: folder.curves(),
}


@pytest.mark.parametrize("name", READERS)
def test_a_file_of_the_run_folder_cut_short_is_named_not_misread(name, tmp_path, tiny_data):
    run(small(rounds=1), tmp_path, tiny_data)
    file = tmp_path / name
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])  # a copy or a sync that stopped halfway
    with pytest.raises(RunFolderError, match=f"^{re.escape(str(file))} cannot be read .*--overwrite"):
        READERS[name](RunFolder(tmp_path))


def test_rows_lost_at_a_row_boundary_are_noticed_and_rows_of_an_unfinished_level_are_dropped(tmp_path, tiny_data):
    run(small(rounds=1), tmp_path, tiny_data)
    folder, file = RunFolder(tmp_path), tmp_path / "results.csv"
    results = folder.results()
    file.write_text(pd.concat([results, results.assign(level=2)]).to_csv(index=False))  # killed before progress.json
    pd.testing.assert_frame_equal(folder.results(), results)
    file.write_text(results.iloc[:-1].to_csv(index=False))
    with pytest.raises(RunFolderError, match="7 rows of finished levels, progress.json recorded 8"):
        folder.results()


HOLD_THE_FOLDER = """
import sys, time
from pathlib import Path
from lth_helpers.runs import RunFolder
folder = Path(sys.argv[1])
run = RunFolder.open(folder, RunFolder(folder).saved_config())  # held until this process ends
print("held", flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(files.fcntl is None, reason="run folders are locked with flock, a POSIX call")
def test_a_folder_in_use_by_another_run_is_refused_untouched_and_free_once_that_run_is_killed(tmp_path, tiny_data):
    cfg = small(rounds=1)
    run(cfg, tmp_path, tiny_data)
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_FOLDER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "held\n"
        for overwrite in (False, True):  # --overwrite must not wipe a folder that a run is writing
            with pytest.raises(RunFolderError, match=f"^{re.escape(str(tmp_path))} is in use by another run"):
                run_experiment(cfg, tmp_path, tiny_data, overwrite=overwrite, progress=False)
        assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files
    finally:
        holder.kill()  # SIGKILL: no clean-up code runs, the OS alone drops the lock
        holder.wait()
    assert run(cfg, tmp_path, tiny_data).equals(RunFolder(tmp_path).results())  # free again: not refused


def test_divergence_names_level_condition_trial_and_iteration_and_keeps_finished_levels(
    tmp_path, tiny_data, monkeypatch
):
    real_train = experiment.train_networks

    def diverges_at_level_1(*args, desc, **kwargs):
        if desc == "level 1":
            raise DivergenceError(network=3, iteration=17)  # networks: ticket 0, ticket 1, reinit 0, reinit 1
        return real_train(*args, desc=desc, **kwargs)

    monkeypatch.setattr(experiment, "train_networks", diverges_at_level_1)
    with pytest.raises(ExperimentError, match="level 1, condition reinit, trial 1, iteration 17"):
        run(small(), tmp_path, tiny_data)
    assert RunFolder(tmp_path).results().level.unique().tolist() == [0]


def test_a_ticket_sees_the_same_data_as_its_controls_and_the_levels_differ(tiny_data):
    cfg = small()
    theta_0 = experiment.init_params([1, 2], 40, 20, "glorot_normal")
    ones = {n: torch.ones_like(theta_0[f"{n}.weight"]) for n in LAYERS}
    one_level = level_networks(cfg, 1, theta_0, {"ticket": ones, "random_prune": ones})
    next_level = level_networks(cfg, 2, theta_0, {"ticket": ones, "random_prune": ones})
    assert len({n.batch_seed for n in one_level}) == cfg.trials
    assert {n.batch_seed for n in one_level}.isdisjoint({n.batch_seed for n in next_level})
    assert torch.equal(select(theta_0, [1])["fc1.weight"], one_level[1].params["fc1.weight"])


# ---------------------------------------------------------------------------------------------
# The one-shot control: the trained dense network pruned once, straight to each level's sparsity


def one_shot(**overrides):
    return small(controls=("reinit", "random_prune", "one_shot"), **overrides)


@pytest.mark.parametrize("global_pruning", [False, True])
def test_the_one_shot_mask_is_the_tickets_at_level_1_and_keeps_its_sparsity_at_every_level(
    global_pruning, tmp_path, tiny_data
):
    """Layer-wise, one-shot pruning keeps the ticket's count in every layer; globally, the ticket's total, ranked
    across the layers of the trained dense network once (so its layers may part from the ticket's)."""
    cfg = one_shot(global_pruning=global_pruning, rounds=3)
    run(cfg, tmp_path, tiny_data)
    folder = RunFolder(tmp_path)
    first = folder.load_masks(1)
    assert all(torch.equal(first["one_shot"][name], first["ticket"][name]) for name in LAYERS)
    differs = layers_differ = False
    for level in range(2, cfg.rounds + 1):
        masks = folder.load_masks(level)
        one_shot_counts, ticket_counts = count_remaining(masks["one_shot"]), count_remaining(masks["ticket"])
        assert torch.equal(sum(one_shot_counts.values()), sum(ticket_counts.values()))
        layers_differ |= any(not torch.equal(one_shot_counts[n], ticket_counts[n]) for n in LAYERS)
        differs |= any(not torch.equal(masks["one_shot"][name], masks["ticket"][name]) for name in LAYERS)
    assert differs  # one-shot and iterative pruning keep the same number of weights, not the same weights
    assert layers_differ == global_pruning


def test_global_one_shot_masks_keep_the_largest_trained_dense_weights_across_layers(tmp_path, tiny_data):
    cfg = one_shot(global_pruning=True, rounds=3)
    run(cfg, tmp_path, tiny_data)
    folder = RunFolder(tmp_path)
    dense = folder.load("dense.pt")
    masks = folder.load_masks(cfg.rounds)["one_shot"]
    for trial in range(cfg.trials):
        magnitude = torch.cat([dense[f"{n}.weight"][trial].abs().flatten() for n in LAYERS])
        kept = torch.cat([masks[n][trial].flatten() for n in LAYERS]).bool()
        assert magnitude[kept].min() >= magnitude[~kept].max()


def test_the_layer_wise_one_shot_mask_keeps_each_layers_largest_trained_dense_weights(tmp_path, tiny_data):
    cfg = one_shot(global_pruning=False, rounds=3)
    run(cfg, tmp_path, tiny_data)
    folder = RunFolder(tmp_path)
    dense = folder.load("dense.pt")
    for level in range(1, cfg.rounds + 1):
        masks = folder.load_masks(level)["one_shot"]
        for name in LAYERS:
            for trial in range(cfg.trials):
                magnitude, kept = dense[f"{name}.weight"][trial].abs(), masks[name][trial].bool()
                assert magnitude[kept].min() >= magnitude[~kept].max()


def test_the_dense_networks_of_every_trial_are_kept_as_trained(tmp_path, tiny_data):
    cfg = one_shot(rounds=1)
    run(cfg, tmp_path, tiny_data)
    folder = RunFolder(tmp_path)
    dense, ticket = folder.load("dense.pt"), folder.load("tickets/level_00.pt")  # the latter: trial 0's
    assert dense["fc1.weight"].shape[0] == cfg.trials
    assert all(torch.equal(dense[key][:1], ticket[key]) for key in ticket)
    assert not torch.equal(dense["fc1.weight"][0], dense["fc1.weight"][1])


def test_the_one_shot_masks_depend_only_on_level_0(tmp_path, tiny_data, monkeypatch):
    cfg = one_shot(rounds=3)
    run(cfg, tmp_path / "a", tiny_data)
    real_train = experiment.train_networks

    def trains_otherwise_after_level_0(*args, desc, **kwargs):
        result = real_train(*args, desc=desc, **kwargs)
        if desc != "level 0":  # every trained weight of the later levels moved: other tickets
            generator = torch.Generator().manual_seed(0)
            result.params = {k: v + torch.randn(v.shape, generator=generator) for k, v in result.params.items()}
        return result

    monkeypatch.setattr(experiment, "train_networks", trains_otherwise_after_level_0)
    run(cfg, tmp_path / "b", tiny_data)
    a, b = RunFolder(tmp_path / "a"), RunFolder(tmp_path / "b")
    for level in range(2, cfg.rounds + 1):
        masks_a, masks_b = a.load_masks(level), b.load_masks(level)
        assert all(torch.equal(masks_a["one_shot"][n], masks_b["one_shot"][n]) for n in LAYERS)
        assert not all(torch.equal(masks_a["ticket"][n], masks_b["ticket"][n]) for n in LAYERS)


@pytest.mark.parametrize("rewind_iteration", [0, 7])
def test_a_one_shot_network_starts_from_the_rewind_point_with_its_mask_and_the_tickets_batches(
    rewind_iteration, tmp_path, tiny_data
):
    cfg = one_shot(rounds=2, rewind_iteration=rewind_iteration)
    run(cfg, tmp_path, tiny_data)
    folder = RunFolder(tmp_path)
    start = folder.load("rewind.pt") if rewind_iteration else folder.load("init.pt")
    masks = folder.load_masks(2)
    networks = {(n.condition, n.trial): n for n in level_networks(cfg, 2, start, masks)}
    for trial in range(cfg.trials):
        net, ticket = networks["one_shot", trial], networks["ticket", trial]
        assert all(torch.equal(net.masks[n], masks["one_shot"][n][trial : trial + 1]) for n in LAYERS)
        assert all(torch.equal(net.params[k], start[k][trial : trial + 1]) for k in start)
        assert net.batch_seed == ticket.batch_seed


def test_a_run_with_the_one_shot_control_killed_after_a_level_resumes_to_the_uninterrupted_result(
    tmp_path, tiny_data, monkeypatch
):
    cfg = one_shot(rounds=3)
    run(cfg, tmp_path / "whole", tiny_data)
    kill_at_level_2(cfg, tmp_path / "cut", tiny_data, monkeypatch)
    run(cfg, tmp_path / "cut", tiny_data)
    pd.testing.assert_frame_equal(_without_timing(tmp_path / "whole"), _without_timing(tmp_path / "cut"))
    whole, cut = RunFolder(tmp_path / "whole"), RunFolder(tmp_path / "cut")
    for level in range(1, cfg.rounds + 1):
        masks_whole, masks_cut = whole.load_masks(level), cut.load_masks(level)
        assert all(torch.equal(masks_whole["one_shot"][n], masks_cut["one_shot"][n]) for n in LAYERS)


def test_a_stack_with_the_one_shot_control_trains_each_network_as_it_would_train_alone(tmp_path, tiny_data):
    cfg = one_shot(rounds=2)
    run(cfg, tmp_path, tiny_data)
    folder = RunFolder(tmp_path)
    networks = level_networks(cfg, 2, folder.load("init.pt"), folder.load_masks(2))
    together, together_train = experiment._train_level(cfg, 2, networks, tiny_data, progress=False)
    for i in [i for i, net in enumerate(networks) if net.condition in ("one_shot", "ticket")]:
        alone, alone_train = experiment._train_level(cfg, 2, networks[i : i + 1], tiny_data, progress=False)
        for key, value in alone.params.items():
            torch.testing.assert_close(together.params[key][i : i + 1], value, rtol=1e-3, atol=1e-4)
        for name, values in {**alone.metrics, **alone_train}.items():
            both = {**together.metrics, **together_train}[name]
            torch.testing.assert_close(both[..., i : i + 1], values, rtol=1e-4, atol=1e-3)


def test_training_accuracy_is_taken_at_the_end_of_each_level_on_the_whole_training_split(tmp_path, tiny_data):
    cfg = small(rounds=1)
    results = run(cfg, tmp_path, tiny_data)
    curves = pd.read_csv(tmp_path / "curves.csv")  # the evaluations during training: validation and test only
    assert not {"train_accuracy", "train_loss"} & set(curves.columns)
    folder = RunFolder(tmp_path)
    ticket = results[(results.condition == "ticket") & (results.trial == 0)].set_index("level")
    for level in range(cfg.rounds + 1):
        model = build_model(
            folder.load(f"tickets/level_{level:02d}.pt"), select(folder.load_masks(level)["ticket"], [0])
        )
        (loss,), (accuracy,) = training.Evaluator([(tiny_data.train_x, tiny_data.train_y)], 1)(model)
        assert ticket.final_train_accuracy[level] == pytest.approx(float(accuracy[0]))
        assert ticket.final_train_loss[level] == pytest.approx(float(loss[0]), rel=1e-5)
