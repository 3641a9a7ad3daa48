"""Sweeps: the grid parsed as the run flags are, every point an ordinary run folder (the same folder and the same
results as a plain run), resume after an interruption, failed points recorded and retried, the summary, and the
submitit engine: its debug and local executors run, the Slurm executor is configured from the flags (Slurm itself
is not run: a fake `sbatch` records the script it is given).

Most tests use a tiny config on synthetic data (the sweep's MNIST loader is replaced); the end-to-end tests, the
plain-run comparison and the local executor's jobs (separate processes) use the smoke preset on the real files.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch

import lth_helpers.sweep as sweep
import lth_helpers.sweep_jobs as sweep_jobs
from lth_helpers.cli import build_parser, main
from lth_helpers.compare import compare_runs, matching_percent, plot_sweep
from lth_helpers.config import ConfigError, make_config
from lth_helpers.experiment import run_experiment
from lth_helpers.runs import RunFolder
from tests.conftest import REPO, synthetic_splits, tiny_config

SMOKE = ["--preset", "smoke", "--iterations", "100", "--eval-every", "50", "--no-progress"]  # real MNIST, smoke-sized
TINY = [  # tiny_config's values as flags, for synthetic data
    *("--preset smoke --fc1-width 40 --fc2-width 20 --iterations 30 --eval-every 10 --batch-size 32".split()),
    *("--val-size 200 --rounds 1 --trials 2 --no-progress".split()),
]
TINY_BASE = tiny_config(rounds=1, learning_rate=make_config("smoke").learning_rate)


def one_line(text: str) -> bool:
    return len(text.strip().splitlines()) == 1


@pytest.fixture
def run(capsys):
    """`python -m lth_helpers sweep ...` in this process: returns (exit status, stdout, stderr)."""

    def sweep_command(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = main(["sweep", *args])
        except SystemExit as exit_:
            code = exit_.code
        out, err = capsys.readouterr()
        return code, out, err

    return sweep_command


@pytest.fixture
def synthetic(monkeypatch):
    """The sweep reads synthetic data instead of MNIST (200 validation images, as tiny_config expects)."""
    for module in (sweep, sweep_jobs):  # the local engine's points, and a submitit job's
        monkeypatch.setattr(module, "load_mnist", lambda root, val_size, device: synthetic_splits())


def state_of(listing: str, run: str) -> str:
    """A point's state as --dry-run lists it: what its row shows after the point's folder."""
    row = next(line for line in listing.splitlines() if run in line and f"{run} failed:" not in line)
    return row.split(run, 1)[1].strip()


def files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def without_timing(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "results.csv").drop(columns="train_seconds")


# ---------------------------------------------------------------------------------------------
# The grid


BAD_INPUT = {  # the flags, and what the one line must say
    "no grid": ([], "the following arguments are required: --grid"),
    "an unknown preset": (["--grid", "seed=0,1", "--preset", "lenet5"], "unknown preset 'lenet5'"),
    "an unknown field": (["--grid", "momentum=0.9,0.99"], "unknown config field 'momentum'"),
    "no equals sign": (["--grid", "learning_rate"], "--grid takes FIELD=V1,V2,..., got 'learning_rate'"),
    "not a number": (["--grid", "learning_rate=1e-3,fast"], "--grid learning_rate: invalid value 'fast' (not float)"),
    "not a boolean": (["--grid", "global_pruning=true,maybe"], "expected true or false, got 'maybe'"),
    "an empty value": (["--grid", "learning_rate=1e-3,"], "has an empty value"),
    "the preset": (["--grid", "preset=smoke,seed"], "preset cannot be a grid field"),
    "a field twice": (["--grid", "seed=0", "--grid", "seed=1"], "--grid names seed twice"),
    "a value twice": (["--grid", "learning_rate=1e-3,0.001"], "holds the point learning_rate=0.001 twice"),
    "a field also given as a flag": (
        ["--learning-rate", "1e-3", "--grid", "learning_rate=1e-3,2e-3"],
        "learning_rate is given both as a flag and in --grid",
    ),
    "an invalid point": (
        ["--grid", "rewind_iteration=0,30"],
        "the point rewind_iteration=30 is not a valid config: rewind_iteration (30) must be below iterations (30)",
    ),
    "an unknown control": (["--grid", "controls=reinit/shuffel"], "unknown mask rule 'shuffel'"),
    "a model too big": (["--trials", "100000000", "--grid", "seed=0,1"], "the model does not fit"),
    "a Slurm flag without submitit": (
        ["--grid", "seed=0,1", "--slurm-partition", "gpu"],
        "--slurm-partition needs --engine submitit",
    ),
    "a Slurm flag on the debug executor": (
        ["--grid", "seed=0,1", "--engine", "submitit", "--cluster", "debug", "--gpus-per-job", "1"],
        "--gpus-per-job is for Slurm, and the sweep runs on the debug executor",
    ),
    "Slurm where there is none": (
        ["--grid", "seed=0,1", "--engine", "submitit", "--cluster", "slurm"],
        "no Slurm here (srun not found)",
    ),
    "no jobs": (["--grid", "seed=0,1", "--engine", "submitit", "--jobs", "0"], "--jobs must be positive"),
}


@pytest.mark.parametrize(("args", "says"), BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_exits_2_with_one_line_saying_what_is_wrong_and_writes_nothing(args, says, run, tmp_path):
    if "submitit" in args:
        pytest.importorskip("submitit")
    code, _, err = run(*TINY, "--out", str(tmp_path / "grid"), *args)
    assert code == 2 and one_line(err) and says in err, err
    assert not (tmp_path / "grid").exists()


def test_grid_values_are_parsed_as_their_flags_parse_them():
    grid = sweep.parse_grid(
        ["prune-rate=0.1,0.2", "global_pruning=true,no", "controls=reinit/reinit,random_prune/none", "trials=1,3"]
    )
    assert grid == {
        "prune_rate": [0.1, 0.2],
        "global_pruning": [True, False],
        "controls": [("reinit",), ("reinit", "random_prune"), ()],
        "trials": [1, 3],
    }


def test_the_points_are_every_combination_first_field_slowest_each_named_as_a_run_of_its_config(tmp_path):
    points = sweep.grid_points(TINY_BASE, {"learning_rate": [1e-3, 2], "global_pruning": [True, False]})
    assert [p.values for p in points] == [
        {"learning_rate": 1e-3, "global_pruning": True},
        {"learning_rate": 1e-3, "global_pruning": False},
        {"learning_rate": 2.0, "global_pruning": True},  # an integer learning rate is the float it means
        {"learning_rate": 2.0, "global_pruning": False},
    ]
    for point in points:
        expected = tiny_config(**{"rounds": 1, "learning_rate": 1.2e-3, **point.values})
        assert point.cfg == expected and point.name == expected.run_name()
    with pytest.raises(ConfigError, match="preset cannot be a grid field"):
        sweep.grid_points(TINY_BASE, {"preset": ["smoke", "seed"]})
    with pytest.raises(ConfigError, match="must be a list of one or more values"):
        sweep.grid_points(TINY_BASE, {"trials": 3})


def test_help_lists_the_sweep_flags_and_every_run_flag(run):
    code, out, _ = run("--help")
    assert code == 0
    for flag in ("--grid", "--dry-run", "--engine", "--cluster", "--jobs", "--timeout-min", "--gpus-per-job"):
        assert flag in out
    for flag in ("--slurm-partition", "--learning-rate", "--global-pruning", "--data-dir", "--device"):
        assert flag in out


# ---------------------------------------------------------------------------------------------
# The local engine on real MNIST


def test_a_sweep_runs_every_point_as_a_run_folder_and_resumes_after_an_interruption(run, tmp_path, monkeypatch):
    """A 2x1 grid of the smoke preset: the second point is interrupted in its last level, then the same command
    finishes it without training the first point or the finished level again."""
    out = tmp_path / "grid"
    command = [*SMOKE, "--grid", "learning_rate=1e-3,2e-3", "--grid", "global_pruning=true", "--out", str(out)]
    first, second = sweep.plan_sweep(
        make_config("smoke", iterations=100, eval_every=50),
        {"learning_rate": [1e-3, 2e-3], "global_pruning": [True]},
        out,
    ).points
    real_finish, finished = RunFolder.finish_level, []

    def interrupted_after_the_third_level(self, level, *args):
        real_finish(self, level, *args)
        finished.append(level)
        if len(finished) == 3:  # the second point's first level is finished, its last is not: Ctrl-C
            raise KeyboardInterrupt

    monkeypatch.setattr(RunFolder, "finish_level", interrupted_after_the_third_level)
    code, _, err = run(*command)
    assert code == 130 and one_line(err) and "the same command resumes" in err

    code, listing, _ = run(*command, "--dry-run")
    assert code == 0
    assert state_of(listing, first.name) == "done"
    assert state_of(listing, second.name) == "partial (1 of 2 levels finished)"
    before = {name: pd.read_csv(out / name / "results.csv") for name in (first.name, second.name)}

    monkeypatch.setattr(RunFolder, "finish_level", real_finish)
    code, printed, err = run(*command)
    assert code == 0, err
    pd.testing.assert_frame_equal(pd.read_csv(out / first.name / "results.csv"), before[first.name])  # not retrained
    resumed = pd.read_csv(out / second.name / "results.csv")
    pd.testing.assert_frame_equal(resumed[resumed.level == 0], before[second.name])  # timings too: level 0 kept
    assert sorted(resumed.level.unique()) == [0, 1]

    assert {p.name for p in out.iterdir()} == {
        first.name,
        second.name,
        "sweep.json",
        "failures.json",
        "sweep.csv",
        "sweep.png",
    }
    assert json.loads((out / "sweep.json").read_text()) == {
        "base": make_config("smoke", iterations=100, eval_every=50).to_dict(),
        "grid": {"learning_rate": [0.001, 0.002], "global_pruning": [True]},
    }
    assert json.loads((out / "failures.json").read_text()) == {}
    for point in (first, second):  # ordinary run folders: their config, every level, readable by compare
        assert RunFolder(out / point.name).saved_config() == point.cfg
        assert RunFolder(out / point.name).levels_done == 2
    assert (
        compare_runs([out / first.name, out / second.name]).run.tolist()
        == ["learning_rate=0.001"] * 2 + ["learning_rate=0.002"] * 2
    )

    table = pd.read_csv(out / "sweep.csv")
    assert len(table) == 4 and table.run.tolist() == [first.name] * 2 + [second.name] * 2
    assert table.columns[:5].tolist() == ["learning_rate", "global_pruning", "run", "state", "level"]
    for column in ("ticket", "reinit", "random_prune"):
        assert {f"{column}_accuracy_mean", f"{column}_stop_iteration_std"} <= set(table.columns)
    results = RunFolder(out / second.name).results()
    ticket = results[(results.condition == "ticket") & (results.level == 1)].iloc[0]
    row = table[(table.run == second.name) & (table.level == 1)].iloc[0]
    assert row.ticket_accuracy_mean == pytest.approx(ticket.early_stop_test_accuracy)
    assert row.ticket_stop_iteration_mean == ticket.early_stop_iteration and row.percent_remaining < 100
    assert row.reinit_accuracy_mean > 80 and np.isnan(table.reinit_accuracy_mean[0])  # no control at level 0
    assert (table.state == "done").all() and table.failure.isna().all()
    assert matplotlib.image.imread(out / "sweep.png").shape[2] in (3, 4)
    assert "wrote" in printed and ">= dense down to" in printed


def test_a_sweep_point_and_a_plain_run_of_its_config_are_one_folder_with_the_same_results(
    run, mnist, tmp_path, monkeypatch
):
    """The plain run's default folder runs/PRESET-HASH is the point's folder in a sweep of --out runs: the sweep finds
    it finished and leaves it as it is; a point the sweep trains has, bit for bit on the CPU, a plain run's results."""
    monkeypatch.chdir(tmp_path)
    plain = ["--preset", "smoke", "--iterations", "100", "--eval-every", "50", "--no-progress", "--device", "cpu"]
    assert main([*plain, "--learning-rate", "0.002"]) == 0
    (plain_folder,) = (tmp_path / "runs").iterdir()
    before = files(plain_folder)
    code, _, err = run(*plain, "--grid", "learning_rate=1e-3,2e-3", "--out", "runs")
    assert code == 0, err
    after = files(plain_folder)
    assert {p: after[p] for p in before} == before  # found finished: nothing rewritten
    cfg = make_config("smoke", iterations=100, eval_every=50, learning_rate=1e-3)
    run_experiment(cfg, tmp_path / "alone", mnist, progress=False)  # the same run from Python
    point = tmp_path / "runs" / cfg.run_name()
    pd.testing.assert_frame_equal(without_timing(point), without_timing(tmp_path / "alone"))
    for name in ("curves.csv", "init.pt", "masks/level_01.pt", "tickets/level_01.pt", "config.json"):
        assert (point / name).read_bytes() == (tmp_path / "alone" / name).read_bytes(), name


# ---------------------------------------------------------------------------------------------
# Failures, and the folder's sweep


def test_a_failed_point_is_recorded_in_one_line_the_others_go_on_and_a_rerun_retries_it(
    run, synthetic, tmp_path, monkeypatch
):
    """Out of memory once (the first point), divergence every time (the second): both recorded, the third point
    finishes; the rerun trains the first again and it finishes, the second fails again."""
    out = tmp_path / "grid"
    command = [*TINY, "--grid", "learning_rate=1e-3,1e38,2e-3", "--out", str(out)]
    tried, real = [], sweep.run_experiment

    def out_of_memory_once(cfg, *args, **kwargs):
        tried.append(cfg.learning_rate)
        if cfg.learning_rate == 1e-3 and tried.count(1e-3) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(sweep, "run_experiment", out_of_memory_once)
    code, printed, err = run(*command)
    names = [p.name for p in sweep.plan_sweep(TINY_BASE, {"learning_rate": [1e-3, 1e38, 2e-3]}, out).points]
    assert code == 1 and tried == [1e-3, 1e38, 2e-3]
    assert f"failed: {names[0]}: out of memory (CUDA out of memory" in err
    assert f"failed: {names[1]}: training diverged" in err and "2 of 3 points failed" in err
    failures = json.loads((out / "failures.json").read_text())
    assert set(failures) == set(names[:2]) and all(one_line(reason) for reason in failures.values())
    table = pd.read_csv(out / "sweep.csv")
    assert table.drop_duplicates("run").state.tolist() == ["failed", "failed", "done"]
    assert table.failure.iloc[0].startswith("out of memory") and len(table) == 1 + 1 + 2  # no level, no level, two
    listing = run(*command, "--dry-run")[1]
    assert f"{names[0]} failed: out of memory" in listing and "failed (0 of 2 levels finished)" in listing

    code, _, err = run(*command)
    assert code == 1 and tried == [1e-3, 1e38, 2e-3, 1e-3, 1e38]  # the failed ones retried, the finished one not
    assert json.loads((out / "failures.json").read_text()).keys() == {names[1]}
    assert "1 of 3 points failed" in err
    assert pd.read_csv(out / "sweep.csv").drop_duplicates("run").state.tolist() == ["done", "failed", "done"]


def test_a_point_folder_holding_another_configs_run_is_named_and_recorded_as_failed_not_reported(
    run, synthetic, tmp_path
):
    """A finished sweep whose seed-1 folder is replaced by a copy of the seed-0 run: the seed-1 row shows no numbers
    of another run; the point is named, recorded and listed as failed, and the exit status is 1."""
    out = tmp_path / "grid"
    command = [*TINY, "--grid", "seed=0,1", "--out", str(out)]
    assert run(*command)[0] == 0
    zero, one = sweep.plan_sweep(TINY_BASE, {"seed": [0, 1]}, out).points
    shutil.rmtree(out / one.name)
    shutil.copytree(out / zero.name, out / one.name)
    code, _, err = run(*command)
    assert code == 1 and f"failed: {one.name}: " in err and "another config (differs in seed)" in err
    assert "another config" in json.loads((out / "failures.json").read_text())[one.name]
    table = pd.read_csv(out / "sweep.csv")
    assert table[table.run == one.name].state.tolist() == ["failed"]
    assert table[table.run == one.name].ticket_accuracy_mean.isna().all()
    assert state_of(run(*command, "--dry-run")[1], one.name).startswith("failed")


def test_a_point_whose_results_are_lost_is_named_recorded_and_retried(run, synthetic, tmp_path, monkeypatch):
    out = tmp_path / "grid"
    command = [*TINY, "--grid", "seed=0,1", "--out", str(out)]
    assert run(*command)[0] == 0
    zero, one = sweep.plan_sweep(TINY_BASE, {"seed": [0, 1]}, out).points
    (out / one.name / "results.csv").unlink()
    listing = run(*command, "--dry-run")[1]
    assert state_of(listing, one.name).startswith("failed") and f"{one.name} failed: " in listing
    assert state_of(listing, zero.name) == "done"

    tried, real = [], sweep.run_experiment
    monkeypatch.setattr(sweep, "run_experiment", lambda cfg, *a, **k: tried.append(cfg.seed) or real(cfg, *a, **k))
    code, _, err = run(*command)
    assert code == 1 and f"failed: {one.name}: " in err and "results.csv cannot be read" in err
    assert "results.csv" in json.loads((out / "failures.json").read_text())[one.name]
    code, _, _ = run(*command)
    assert code == 1 and tried == [1, 1]  # tried again by each rerun, the finished point never


def test_a_sweep_of_another_grid_that_locks_the_folder_first_keeps_it(synthetic, tmp_path, monkeypatch):
    """Two sweeps of different grids started together on one folder: the one that locks it second finds the first's
    sweep.json, and is refused."""
    out, real_lock, calls = tmp_path / "grid", sweep.lock_folder, []

    def another_sweep_locks_first(folder, lock_file):
        calls.append(folder)
        if len(calls) == 1:  # just before the sweep below locks the folder, another runs there to its end
            sweep.run_sweep(TINY_BASE, {"seed": [0]}, out, progress=False)
        return real_lock(folder, lock_file)

    monkeypatch.setattr(sweep, "lock_folder", another_sweep_locks_first)
    with pytest.raises(ConfigError, match="holds a sweep of another grid"):
        sweep.run_sweep(TINY_BASE, {"seed": [1]}, out, progress=False)
    assert json.loads((out / "sweep.json").read_text())["grid"] == {"seed": [0]}


def test_a_grid_other_than_the_folders_is_refused_unless_overwrite_which_keeps_the_points_it_shares(
    run, synthetic, tmp_path
):
    out = tmp_path / "grid"
    assert run(*TINY, "--grid", "learning_rate=1e-3,2e-3", "--out", str(out))[0] == 0
    before = files(out)
    code, _, err = run(*TINY, "--grid", "learning_rate=2e-3,3e-3", "--out", str(out))
    assert code == 2 and one_line(err) and "holds a sweep of another grid (learning_rate=0.001,0.002)" in err
    code, _, err = run(*TINY, "--iterations", "20", "--grid", "learning_rate=1e-3,2e-3", "--out", str(out))
    assert code == 2 and "another base config (differs in iterations)" in err and "--overwrite" in err
    assert files(out) == before

    code, _, err = run(*TINY, "--grid", "learning_rate=2e-3,3e-3", "--out", str(out), "--overwrite")
    assert code == 0, err
    kept = sweep.plan_sweep(TINY_BASE, {"learning_rate": [2e-3]}, out).points[0].name
    assert all(after == before[p] for p, after in files(out / kept).items() if p in before)  # not trained again
    assert json.loads((out / "sweep.json").read_text())["grid"] == {"learning_rate": [0.002, 0.003]}
    assert pd.read_csv(out / "sweep.csv").learning_rate.unique().tolist() == [0.002, 0.003]


def test_a_second_sweep_in_a_folder_in_use_is_refused(synthetic, tmp_path):
    out = tmp_path / "grid"
    out.mkdir()
    with sweep.plan_sweep(TINY_BASE, {"trials": [2]}, out).locked():
        with pytest.raises(sweep.SweepError, match="is in use by another sweep"):
            sweep.run_sweep(TINY_BASE, {"trials": [1]}, out, progress=False)


def test_a_damaged_sweep_json_is_named_in_one_line_and_exit_1(run, synthetic, tmp_path):
    out = tmp_path / "grid"
    assert run(*TINY, "--grid", "seed=0", "--out", str(out))[0] == 0
    (out / "sweep.json").write_text('{"base": {"rounds": "one"}, "grid": {}}')
    code, _, err = run(*TINY, "--grid", "seed=0", "--out", str(out))
    assert code == 1 and one_line(err) and f"{out / 'sweep.json'} cannot be read" in err


# ---------------------------------------------------------------------------------------------
# The summary


def test_matching_percent_is_where_the_ticket_first_falls_below_dense():
    def levels(*accuracies):
        return pd.DataFrame(
            {
                "level": range(len(accuracies)),
                "percent_remaining": [100 * 0.8**k for k in range(len(accuracies))],
                "ticket_accuracy_mean": accuracies,
            }
        )

    assert matching_percent(levels(97, 97.5, 97.2, 96.9, 97.8)) == pytest.approx(64)  # not the later 40.96
    assert matching_percent(levels(97, 96, 98)) == 100  # below dense at once: no pruned level matches
    assert matching_percent(levels(97, 97, 97)) == pytest.approx(64)  # as accurate counts
    assert np.isnan(matching_percent(levels(97)))


def test_the_figure_is_a_line_per_value_for_one_field_and_a_heatmap_of_matching_percent_for_two(synthetic, tmp_path):
    one = sweep.run_sweep(TINY_BASE, {"learning_rate": [1e-3, 2e-3]}, tmp_path / "one", progress=False)
    figure = plot_sweep(one)
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == ["0.001", "0.002"]
    assert legend.get_title().get_text() == "winning ticket, learning_rate"
    assert len(figure.axes) == 2  # accuracy and early-stopping iteration

    two = sweep.run_sweep(
        TINY_BASE, {"learning_rate": [1e-3, 1e38], "global_pruning": [True, False]}, tmp_path / "two", progress=False
    )
    heatmap = plot_sweep(two).axes[0].images[0].get_array()
    expected = [
        [matching_percent(two[two.run == run]) for run in runs]
        for runs in np.array(two.drop_duplicates("run").run).reshape(2, 2)
    ]
    assert np.ma.getdata(heatmap)[0].tolist() == pytest.approx(expected[0])
    assert np.ma.getmaskarray(heatmap)[1].all()  # the diverged points: no level, no value
    texts = [t.get_text() for t in plot_sweep(two).axes[0].texts]
    assert texts.count("failed") == 2


def test_the_summary_can_be_read_and_written_again_from_python(synthetic, tmp_path):
    table = sweep.run_sweep(TINY_BASE, {"trials": [1, 2]}, tmp_path, progress=False)
    (tmp_path / "sweep.csv").unlink()
    pd.testing.assert_frame_equal(sweep.sweep_table(tmp_path), table)
    assert not (tmp_path / "sweep.csv").exists()  # reading writes nothing
    again = sweep.write_summary(tmp_path)
    pd.testing.assert_frame_equal(again, table)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "sweep.csv"), table, check_dtype=False)
    assert not list(tmp_path.glob("*.tmp"))


# ---------------------------------------------------------------------------------------------
# submitit


def test_submitit_is_imported_only_when_a_sweep_asks_for_it():
    code = "import sys, lth_helpers, lth_helpers.sweep, lth_helpers.cli; print('submitit' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_missing_submitit_is_one_line_naming_the_install_command_and_exit_2(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit now raises ImportError
    code, _, err = run(*TINY, "--grid", "seed=0,1", "--out", str(tmp_path / "grid"), "--engine", "submitit")
    assert code == 2 and one_line(err) and "pip install 'submitit>=1.5'" in err and ".[cluster]" in err
    assert not (tmp_path / "grid").exists()


def test_the_debug_executor_runs_the_points_as_the_local_engine_does(run, synthetic, tmp_path):
    pytest.importorskip("submitit")
    grid = ["--grid", "learning_rate=1e-3,2e-3"]
    assert run(*TINY, *grid, "--out", str(tmp_path / "local"))[0] == 0
    code, printed, err = run(
        *TINY, *grid, "--out", str(tmp_path / "debug"), "--engine", "submitit", "--cluster", "debug"
    )
    assert code == 0, err
    assert "submitted 2 job(s) to submitit's debug executor" in printed
    for point in sweep.open_sweep(tmp_path / "debug").points:
        pd.testing.assert_frame_equal(
            without_timing(tmp_path / "debug" / point.name), without_timing(tmp_path / "local" / point.name)
        )
    local, debug = pd.read_csv(tmp_path / "local" / "sweep.csv"), pd.read_csv(tmp_path / "debug" / "sweep.csv")
    pd.testing.assert_frame_equal(local, debug)


def test_the_local_executor_runs_jobs_in_processes_and_a_killed_job_fails_its_points_until_rerun(
    run, tmp_path, monkeypatch
):
    """submitit's local executor on the real files: two jobs; the first is cancelled as soon as it is submitted (a
    killed job), so its point is recorded as failed naming the job and its log, and the other finishes; the rerun
    submits only the failed point, which then finishes."""
    pytest.importorskip("submitit")
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the jobs' processes import lth_helpers from this checkout
    out = tmp_path / "grid"
    command = [*SMOKE, "--rounds", "0", "--grid", "learning_rate=1e-3,2e-3", "--out", str(out)]
    command += ["--engine", "submitit", "--cluster", "local", "--jobs", "2"]
    real_submit, submitted = sweep.submit_points, []

    def submit_then_kill_the_first(*args, **kwargs):
        jobs, chunks, cluster = real_submit(*args, **kwargs)
        submitted.append([p.name for chunk in chunks for p in chunk])
        jobs[0].cancel()
        return jobs, chunks, cluster

    monkeypatch.setattr(sweep, "submit_points", submit_then_kill_the_first)
    code, printed, err = run(*command)
    first, second = submitted[0]
    assert code == 1 and "1 of 2 points failed" in err
    reason = json.loads((out / "failures.json").read_text())[first]
    assert one_line(reason) and "ended without a result" in reason and str(out / "submitit") in reason
    assert RunFolder(out / second).levels_done == 1

    monkeypatch.setattr(sweep, "submit_points", real_submit)
    code, printed, err = run(*command)
    assert code == 0, err
    assert "submitted 1 job(s) to submitit's local executor" in printed
    assert json.loads((out / "failures.json").read_text()) == {}
    assert RunFolder(out / first).levels_done == 1 and len(RunFolder(out / first).results()) == 1


FAKE_SBATCH = """#!/bin/sh
cp "$1" "$(dirname "$0")/submitted.sh"
echo "Submitted batch job 4242"
"""


def test_the_slurm_executor_is_configured_from_the_flags_without_running_slurm(tmp_path, monkeypatch):
    """A fake srun (so that Slurm looks present) and a fake sbatch that keeps the script it is given: the script of
    the job array asks Slurm for what the flags say, and each job is given one point's config."""
    pytest.importorskip("submitit")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", "#!/bin/sh\nexit 0\n"), ("sbatch", FAKE_SBATCH)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    flags = [
        *"--preset smoke --grid learning_rate=1e-3,2e-3,3e-3 --out".split(),
        str(tmp_path / "grid"),
        *("--engine submitit --cluster slurm --slurm-partition gpu --slurm-account lab --timeout-min 90".split()),
        *("--gpus-per-job 1 --cpus-per-job 4 --mem-gb 16 --jobs 2".split()),
    ]
    args = build_parser().parse_args(["sweep", *flags])
    options = sweep_jobs.make_engine(
        args.engine, {"cluster": args.cluster} | {k: getattr(args, k) for k in sweep_jobs.JOB_FLAGS}
    )
    assert options.resolve_cluster() == "slurm"
    todo = sweep.plan_sweep(make_config("smoke"), sweep.parse_grid(args.grid), tmp_path / "grid").points
    jobs, chunks, cluster = sweep.submit_points(options, tmp_path / "grid", todo, tmp_path / "data", "auto")

    script = (bin_dir / "submitted.sh").read_text().splitlines()
    for line in (
        "#SBATCH --array=0-2%2",  # three points, at most two at once
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --time=90",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=16GB",
        "#SBATCH --job-name=lth-sweep",
    ):
        assert line in script, line
    assert cluster == "slurm" and [job.job_id for job in jobs] == ["4242_0", "4242_1", "4242_2"]
    assert [[p.name for p in chunk] for chunk in chunks] == [[p.name] for p in todo]
    for job, point in zip(jobs, todo):  # what each array task will run
        submission = pickle.loads(job.paths.submitted_pickle.read_bytes())
        assert submission.function is sweep_jobs.run_points
        assert submission.args == ([point.cfg], str((tmp_path / "grid").resolve()), str(tmp_path / "data"), "auto")


def test_an_output_layer_rate_on_a_globally_pruned_base_is_refused_not_swept_as_new_points():
    with pytest.raises(ConfigError, match="prune_rate_output applies to layer-wise pruning only"):
        sweep.grid_points(make_config("seed"), {"prune_rate_output": [0.1, 0.2]})
    points = sweep.grid_points(make_config("paper"), {"prune_rate_output": [0.1, 0.2]})
    assert [point.cfg.prune_rate_output for point in points] == [0.1, 0.2]


# ---------------------------------------------------------------------------------------------
# The command in a terminal: a reader that stops reading, Ctrl-C, stopping a job


def command_line(*args: str) -> list[str]:
    return [sys.executable, "-m", "lth_helpers", "sweep", *args]


QUICK = ["--preset", "smoke", "--iterations", "40", "--eval-every", "20", "--no-progress", "--device", "cpu"]
LONG = ["--preset", "smoke", "--iterations", "3000", "--eval-every", "1000", "--no-progress", "--rounds", "1"]


@pytest.mark.parametrize("dry_run", [True, False], ids=["--dry-run", "a local sweep"])
def test_a_reader_that_stops_reading_ends_the_output_quietly_and_the_sweep_goes_on(dry_run, tmp_path):
    out = tmp_path / "grid"
    args = [*QUICK, "--grid", "seed=0,1", "--out", str(out), *(["--dry-run"] if dry_run else [])]
    shell = " ".join(command_line(*args)) + ' | head -1; echo "status ${PIPESTATUS[0]}" >&2'
    done = subprocess.run(["bash", "-c", shell], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.stderr.strip().splitlines()[-1] == "status 0", done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
    assert done.stdout.startswith(f"{out}: 2 points")
    if not dry_run:  # the sweep trained every point and wrote its summary
        assert (pd.read_csv(out / "sweep.csv").state == "done").all()


def job_processes(jobs_folder: Path) -> list[int]:
    """The processes whose command line names `jobs_folder`: submitit's job controllers and workers."""
    found = []
    for process in Path("/proc").iterdir():
        with suppress(OSError):
            if process.name.isdigit() and str(jobs_folder).encode() in (process / "cmdline").read_bytes():
                found.append(int(process.name))
    return found


@pytest.fixture
def local_sweep(tmp_path):
    """Starts a sweep of one long point on submitit's local executor and returns, once its job trains, the process
    and the line it printed on submitting; whatever is left of it at the end of the test is killed."""
    pytest.importorskip("submitit")
    started = []
    yield lambda **popen: started.append(started_local_sweep(tmp_path / "grid", **popen)) or started[-1]
    for pid in job_processes(tmp_path / "grid" / "submitit"):  # first: they hold the sweep's output open
        with suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    for sweep_process, _ in started:
        sweep_process.kill()
        sweep_process.communicate(timeout=60)


def started_local_sweep(out: Path, **popen) -> tuple[subprocess.Popen, str]:
    args = [*LONG, "--grid", "seed=0", "--out", str(out), "--engine", "submitit", "--cluster", "local"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    sweep_process = subprocess.Popen(
        command_line(*args), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )
    submitted = ""
    while "submitted" not in submitted:
        submitted = sweep_process.stdout.readline()
        assert submitted or sweep_process.poll() is None, sweep_process.stderr.read()
    for _ in range(600):  # the job's worker has started training: its point's folder has a config
        if list(out.glob("*/config.json")):
            break
        time.sleep(0.1)
    return sweep_process, submitted


def test_ctrl_c_ends_a_submitit_sweep_in_one_line_with_exit_130_and_stops_its_jobs(local_sweep, tmp_path):
    out = tmp_path / "grid"
    sweep_process, _ = local_sweep(start_new_session=True)
    os.killpg(sweep_process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    stdout, stderr = sweep_process.communicate(timeout=120)
    assert sweep_process.returncode == 130 and one_line(stderr) and "the same command resumes" in stderr, stderr
    for _ in range(100):
        if not job_processes(out / "submitit"):
            break
        time.sleep(0.1)
    assert not job_processes(out / "submitit")


def test_the_id_a_local_job_is_printed_with_stops_its_point(local_sweep, tmp_path):
    out = tmp_path / "grid"
    sweep_process, submitted = local_sweep()
    job_id, stop = re.search(r"\((\S+); to stop one: ([^)]*)\)", submitted).groups()
    subprocess.run(stop.replace("JOB_ID", job_id).split(), check=True)
    stdout, stderr = sweep_process.communicate(timeout=120)
    assert sweep_process.returncode == 1 and "1 of 1 points failed" in stderr, stderr
    assert f"job {job_id} ended without a result" in stderr
    for _ in range(100):
        if not job_processes(out / "submitit"):
            break
        time.sleep(0.1)
    assert not job_processes(out / "submitit")  # the job's worker is stopped, not left training
