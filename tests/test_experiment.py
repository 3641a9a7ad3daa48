"""The experiment's half of the contract: densities, rewinding, controls, determinism, resuming."""

from __future__ import annotations

import re
import subprocess
import sys

import pandas as pd
import pytest
import torch

import lth_helpers.experiment as experiment
import lth_helpers.runs as runs
from lth_helpers.experiment import ExperimentError, level_networks, run_experiment
from lth_helpers.model import LAYERS, select
from lth_helpers.pruning import build_model, count_remaining
from lth_helpers.runs import RunFolder, RunFolderError
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


def test_a_run_killed_after_a_level_resumes_to_the_uninterrupted_result(tmp_path, tiny_data, monkeypatch, capsys):
    cfg = small(rounds=3)
    run(cfg, tmp_path / "whole", tiny_data)
    real_train = experiment.train_networks

    def dies_at_level_2(*args, desc, **kwargs):
        if desc == "level 2":
            raise KeyboardInterrupt
        return real_train(*args, desc=desc, **kwargs)

    monkeypatch.setattr(experiment, "train_networks", dies_at_level_2)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path / "cut", tiny_data)
    assert RunFolder(tmp_path / "cut").levels_done == 2
    monkeypatch.setattr(experiment, "train_networks", real_train)
    capsys.readouterr()
    run_experiment(cfg, tmp_path / "cut", tiny_data, progress=True)
    counts = re.findall(r"levels: +\d+%\|[^|]*\| (\d+)/(\d+)", capsys.readouterr().err)
    assert counts[0] == ("2", "4") and counts[-1] == ("4", "4")  # the bar starts at the levels done, ends full
    pd.testing.assert_frame_equal(_without_timing(tmp_path / "whole"), _without_timing(tmp_path / "cut"))
    for level in range(1, cfg.rounds + 1):
        whole, cut = RunFolder(tmp_path / "whole").load_masks(level), RunFolder(tmp_path / "cut").load_masks(level)
        assert all(torch.equal(whole[c][n], cut[c][n]) for c in whole for n in LAYERS)


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


@pytest.mark.skipif(runs.fcntl is None, reason="run folders are locked with flock, a POSIX call")
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
