"""The command line: every kind of bad input is refused with exit 2 and nothing written; the smoke
preset runs end to end on the real MNIST files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import lth_helpers.cli as cli
from lth_helpers.cli import build_parser, main
from lth_helpers.config import make_config
from lth_helpers.data import MNIST_FILES
from lth_helpers.experiment import run_experiment
from tests.conftest import REPO

BAD_INPUT = {
    "unknown preset": ["--preset", "lenet5"],
    "unknown field": ["--momentum", "0.9"],
    "unknown control": ["--controls", "reinit,shuffel"],
    "rate of zero": ["--prune-rate", "0"],
    "rate of one": ["--prune_rate_output", "1"],
    "output rate with global pruning": ["--preset", "seed", "--prune-rate-output", "0.2"],
    "negative rate": ["--prune_rate", "-0.2"],
    "zero iterations": ["--iterations", "0"],
    "negative trials": ["--trials", "-1"],
    "zero batch": ["--batch-size", "0"],
    "not a number": ["--learning_rate", "fast"],
    "not a boolean": ["--global_pruning", "maybe"],
    "rewind past the end": ["--iterations", "100", "--rewind_iteration", "100"],
    "batch above the training set": ["--batch-size", "55001"],
    "no training images left": ["--val-size", "60000"],
    "unknown device": ["--device", "tpu"],
    **({} if torch.cuda.is_available() else {"cuda without a GPU": ["--device", "cuda"]}),
}


@pytest.mark.parametrize("args", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_exits_2_with_one_line_and_writes_nothing(args, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        main(["--preset", "smoke", "--out", str(out), *args])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "error:" in error
    assert not out.exists()


def test_a_folder_of_another_config_exits_2_and_is_left_alone(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(make_config("smoke", rounds=7).to_dict()))
    with pytest.raises(SystemExit) as exit_:
        main(["--preset", "smoke", "--out", str(out)])
    assert exit_.value.code == 2 and "--overwrite" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["config.json"]


@pytest.mark.parametrize("inside", [False, True], ids=["out is a file", "out is under a file"])
def test_a_run_folder_where_a_file_is_exits_2_and_leaves_the_file_alone(inside, tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("keep me")
    with pytest.raises(SystemExit) as exit_:
        main(["--preset", "smoke", "--out", str(file / "run" if inside else file)])
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and error.count("\n") == 1 and f"{file} is a file" in error
    assert file.read_text() == "keep me"


def test_a_run_folder_that_cannot_be_written_exits_1_with_one_line(tmp_path, capsys, monkeypatch):
    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("lth_helpers.runs.RunFolder.open", refuse)
    assert main(["--preset", "smoke", "--no-progress", "--out", str(tmp_path / "run")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Permission denied" in error and str(tmp_path / "run") in error


def test_a_batch_too_big_for_the_training_set_is_blamed_on_the_batch(capsys):
    with pytest.raises(SystemExit):
        main(["--preset", "smoke", "--batch-size", "55001"])
    assert "batch_size (55001) is more than the 55,000 training images" in capsys.readouterr().err


def test_missing_data_names_the_files_and_the_folder_in_one_line(tmp_path, capsys, monkeypatch):
    offline = RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://mirror/, got:\nno network\n")
    monkeypatch.setattr("torchvision.datasets.MNIST.download", lambda self: (_ for _ in ()).throw(offline))
    code = main(["--preset", "smoke", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")])
    error = capsys.readouterr().err
    assert code == 1 and error.count("\n") == 1 and "got: no network" in error
    assert "train-images-idx3-ubyte" in error and str(tmp_path / "nowhere" / "MNIST" / "raw") in error


DAMAGE = {  # how the train images file is spoiled, and what the error must then say
    "truncated": (lambda data: data[:1_000_000], "train-images-idx3-ubyte is 1,000,000 bytes, not 47,040,016"),
    "another format": (lambda data: b"\0\0\0\0" + data[4:], "starts with 0, not the magic number 2051"),  # right size
}


@pytest.mark.parametrize(("damage", "message"), DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_mnist_file_is_named_in_one_line_not_called_missing(damage, message, tmp_path, capsys):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    real = Path(os.environ["LTH_DATA_DIR"]) / "MNIST" / "raw"
    for name in MNIST_FILES:
        (raw / name).symlink_to(real / name)
    (raw / "train-images-idx3-ubyte").unlink()
    (raw / "train-images-idx3-ubyte").write_bytes(damage((real / "train-images-idx3-ubyte").read_bytes()))
    code = main(["--preset", "smoke", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "run")])
    error = capsys.readouterr().err
    assert code == 1 and error.count("\n") == 1
    assert f"MNIST in {raw}" in error and message in error and "downloaded" not in error


def test_a_damaged_run_folder_exits_1_with_one_line_and_is_left_as_it_was(tmp_path, tiny_data, capsys):
    out = tmp_path / "run"
    run_experiment(make_config("smoke", val_size=200), out, tiny_data, progress=False)
    (out / "init.pt").write_bytes((out / "init.pt").read_bytes()[:1000])
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    assert main(["--preset", "smoke", "--val-size", "200", "--out", str(out), "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"{out / 'init.pt'} cannot be read" in error and "--overwrite" in error
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before


def test_help_lists_every_config_field_with_each_presets_value(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for field in ("--iterations", "--prune-rate-output", "--rewind_iteration", "--controls", "--global-pruning"):
        assert field in text
    assert "paper: 50000" in text.replace("\n", " ").replace("  ", " ")
    flat = " ".join(text.split())
    assert "Mask rules: ticket, random_prune, one_shot, shuffle" in flat and "signed_constant" in flat  # the rules
    assert "python -m lth_helpers compare" in flat and "python -m lth_helpers instability [-h]" in flat


def test_a_field_takes_its_flag_with_dashes_or_with_its_own_underscores():
    for spelling in ("--prune-rate-output", "--prune_rate_output"):
        assert build_parser().parse_args(["run", spelling, "0.3"]).prune_rate_output == 0.3


def test_a_command_line_that_names_no_subcommand_is_the_subcommand_run(monkeypatch):
    seen = []
    monkeypatch.setattr(cli, "run_command", lambda args, parser: seen.append((vars(args), parser.prog)) or 0)
    for argv in (["--preset", "smoke", "--out", "compare"], ["run", "--preset", "smoke", "--out", "compare"], []):
        assert main(argv) == 0
    assert seen[0] == seen[1] and seen[0][0]["out"] == "compare"  # an argument, not the subcommand compare
    assert seen[0][1] == "python -m lth_helpers" and seen[2][0]["preset"] is None


def test_a_misspelt_subcommand_is_named_with_the_nearest_one_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["comapre", "runs/a", "runs/b"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2
    assert error.endswith(
        "unknown subcommand 'comapre'; choose one of: run, compare, sweep, instability (did you mean compare?)"
    )


def test_every_subcommand_has_its_parser_its_function_and_a_place_in_runs_help(capsys):
    parser = build_parser()
    assert list(parser.commands) == ["run", "compare", "sweep", "instability"]
    for name, subparser in parser.commands.items():
        assert isinstance(subparser, cli.Parser) and callable(subparser.get_default("run")), name
    with pytest.raises(SystemExit):
        main(["--help"])
    shown = capsys.readouterr().out.replace("\n", " ")
    assert "python -m lth_helpers compare" in shown and "python -m lth_helpers sweep" in shown
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--out"])  # a subcommand's parser errors on one line too
    error = capsys.readouterr().err
    assert (
        exit_.value.code == 2 and error.count("\n") == 1 and error.startswith("python -m lth_helpers compare: error:")
    )


def test_smoke_preset_end_to_end_on_real_mnist(tmp_path):
    """The README's command on the real MNIST files: sane accuracy, every output written, and a rerun resumes."""
    out = tmp_path / "smoke"
    command = [sys.executable, "-m", "lth_helpers", "--preset", "smoke", "--out", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = pd.read_csv(out / "results.csv")
    required = [
        "level",
        "condition",
        "trial",
        "weights_remaining",
        "percent_remaining",
        "fc1_remaining",
        "fc2_remaining",
        "fc3_remaining",
        "early_stop_iteration",
        "early_stop_test_accuracy",
        "final_test_accuracy",
        "final_test_loss",
        "final_train_accuracy",
        "final_train_loss",
        "train_seconds",
    ]
    assert set(required) <= set(results.columns)
    assert sorted(zip(results.level, results.condition)) == [
        (0, "ticket"),
        (1, "random_prune"),
        (1, "reinit"),
        (1, "ticket"),
    ]
    assert (results.final_test_accuracy > 90).all()
    assert (results.final_train_accuracy > 90).all() and (results.final_train_loss > 0).all()
    assert results.fc1_remaining.tolist()[-1] == 188_160 and results.fc3_remaining.tolist()[-1] == 900
    curves = pd.read_csv(out / "curves.csv")
    assert len(curves) == 4 * 5  # four networks, evaluated at 0, 100, 200, 300, 400
    for name in (
        "config.json",
        "init.pt",
        "masks/level_00.pt",
        "masks/level_01.pt",
        "accuracy_vs_weights.png",
        "early_stop_vs_weights.png",
        "accuracy_curves.png",
        "generalization.png",
        "dense.pt",
        "inference.csv",
        "inference_latency.png",
        "tickets/level_01.pt",
        "ticket_level_01.pt",
    ):
        assert (out / name).stat().st_size > 0, name
    assert "stop acc" in done.stdout and "random reinit control" in done.stdout and "speedup b1000" in done.stdout
    assert "a generalization gap of" in done.stdout and "train acc" in done.stdout
    inference = pd.read_csv(out / "inference.csv")
    assert inference.level.tolist() == [0, 1] and (inference.dense_ms_batch1000 > 0).all()
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"), results)  # train_seconds too: nothing retrained


def test_a_diverging_run_stops_with_exit_1_naming_level_condition_trial_and_iteration(tmp_path, capsys):
    code = main(["--preset", "smoke", "--learning_rate", "1e38", "--out", str(tmp_path / "run"), "--no-progress"])
    error = capsys.readouterr().err
    assert code == 1
    assert "diverged" in error and "level 0, condition ticket, trial 0, iteration" in error


def run_unread(command: list[str]) -> subprocess.CompletedProcess:
    """`command` with its stdout a pipe that nobody reads any more, as `| head -1` leaves it once its line is read:
    closed before the command prints, so that every line it prints meets a closed pipe."""
    read, write = os.pipe()
    os.close(read)
    try:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        return subprocess.run(command, cwd=REPO, env=env, stdout=write, stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write)


def test_a_run_whose_reader_has_gone_trains_to_its_end_writes_every_file_and_ends_quietly(tmp_path):
    out = tmp_path / "run"
    flags = ["--preset", "smoke", "--iterations", "40", "--eval-every", "20", "--no-progress", "--out", str(out)]
    done = run_unread([sys.executable, "-m", "lth_helpers", *flags])
    assert (done.returncode, done.stderr) == (0, "")
    cfg = make_config("smoke", iterations=40, eval_every=20)
    assert sorted(pd.read_csv(out / "results.csv").level.unique()) == list(range(cfg.rounds + 1))
    for name in (
        "inference.csv",
        "inference_latency.png",
        "accuracy_vs_weights.png",
        f"ticket_level_{cfg.rounds:02d}.pt",
    ):
        assert (out / name).stat().st_size > 0, name


def test_the_ladder_gives_each_kind_of_error_its_documented_exit_status():
    from lth_helpers.compare import CompareError
    from lth_helpers.runs import DamagedFileError

    assert cli.exit_status_of(CompareError("not a run folder")) == 2  # bad input
    assert cli.exit_status_of(DamagedFileError("results.csv cannot be read")) == 1
    assert cli.exit_status_of(PermissionError(13, "Permission denied", "runs/a")) == 1
    assert cli.exit_status_of(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 8 GB")) == 1
    assert cli.exit_status_of(RuntimeError("a bug")) is None  # its traceback shows
