"""Nothing outside the run folder is ever touched, `--overwrite` never keeps an old run's results, values are checked
as they are read, and every edge case (empty flags, absurd budgets, races, permissions, Ctrl-C at the very end) ends
in one line with the exit status docs/run-folder.md gives.

Each case is reproduced from the outside: through the command line (`cli.main`, or `python -m lth_helpers` where the
operating system must refuse something) and the public Python API, asserting the line, the exit status, and that
nothing inside or outside the folder changed (every path, its bytes, every symbolic link and its target).
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg

import lth_helpers.cli as cli
import lth_helpers.files as file_io
import lth_helpers.instability as instability
from lth_helpers.compare import compare_runs, plot_comparison, run_labels
from lth_helpers.config import ConfigError, make_config
from lth_helpers.data import MNIST_FILES, DataError, load_mnist
from lth_helpers.experiment import run_experiment
from lth_helpers.files import DamagedFileError, RunFolderError
from lth_helpers.runs import RunFolder
from tests.conftest import CFG, FLAGS, REPO, one_line, synthetic_splits, tiny_config

OTHER = ["--rounds", "0", "--rewind-iteration", "0", "--iterations", "10"]  # another config of the same size
READ_BACK = ["rewind.pt", "masks/level_01.pt", "tickets/level_01.pt"]  # files a run reads back that OTHER never writes
REAL_REPLACE, REAL_MKDIR = os.replace, os.mkdir


def tree(root: Path) -> dict[str, tuple]:
    """Everything under `root`, links not followed: each file's bytes, each link's target, each folder."""
    entries = {}
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(folder) / name
            key = path.relative_to(root).as_posix()
            if path.is_symlink():
                entries[key] = ("link", os.readlink(path))
            elif path.is_dir():
                entries[key] = ("folder",)
            else:
                entries[key] = ("file", path.read_bytes())
    return entries


def without_timing(folder: Path, name: str = "results.csv") -> pd.DataFrame:
    table = pd.read_csv(folder / name)
    return table.drop(columns="train_seconds") if "train_seconds" in table else table


def listed(folder: Path) -> set[str]:
    return set(json.loads((folder / "manifest.json").read_text())["files"])


def list_in_manifest(folder: Path, *names: str) -> None:
    (folder / "manifest.json").write_text(json.dumps({"files": sorted(listed(folder) | set(names))}))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A run folder the command line finished (figures, inference table, exported ticket and all) and analysed
    (instability.csv and .png); tests copy it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "load_mnist", lambda root, val_size, device: synthetic_splits())
        patch.setattr(instability, "load_mnist", lambda root, val_size, device: synthetic_splits())
        assert cli.main([*FLAGS, "--out", str(out)]) == 0
        assert cli.main(["instability", str(out), "--levels", "1", "--points", "2"]) == 0
    return out


@pytest.fixture
def copy(finished, tmp_path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "run", symlinks=True))


@pytest.fixture
def outside(tmp_path) -> Path:
    """A folder beside the run folder: the user's, which no command may change."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "x").write_bytes(b"the user's x")
    (folder / "level_01.pt").write_bytes(b"the user's file, with the name of a mask file")
    return folder


# ---------------------------------------------------------------------------------------------
# Never outside the folder


def test_overwrite_does_not_remove_a_file_behind_a_link_that_the_manifest_lists(command, copy, outside):
    (copy / "link").symlink_to(outside, target_is_directory=True)
    list_in_manifest(copy, "link/x")
    before = tree(copy.parent)
    code, error = command(copy, "--overwrite")
    assert code == 2 and one_line(error) and f"{copy / 'link'} is a symbolic link" in error, error
    assert tree(copy.parent) == before
    with pytest.raises(RunFolderError, match=f"^{copy / 'link'} is a symbolic link"):
        run_experiment(CFG, copy, synthetic_splits(), overwrite=True, progress=False)
    assert tree(copy.parent) == before


@pytest.mark.parametrize("overwrite", [False, True], ids=["resume", "overwrite"])
@pytest.mark.parametrize("name", ["masks", "tickets"])
def test_a_subfolder_that_is_a_link_out_of_the_folder_is_refused_and_nothing_moves(
    name, overwrite, command, copy, outside
):
    os.replace(copy / name, outside / name)
    (copy / name).symlink_to(outside / name, target_is_directory=True)
    before = tree(copy.parent)
    code, error = command(copy, *["--overwrite"] * overwrite)
    assert code == 2 and one_line(error) and f"{copy / name} is a symbolic link" in error, error
    assert tree(copy.parent) == before


@pytest.mark.parametrize("overwrite", [False, True], ids=["resume", "overwrite"])
@pytest.mark.parametrize("name", ["init.pt", "results.csv", "masks/level_01.pt"])
def test_a_file_of_the_run_that_is_a_link_is_refused_not_read_nor_its_target_removed(
    name, overwrite, command, copy, outside
):
    target = outside / Path(name).name
    os.replace(copy / name, target)
    (copy / name).symlink_to(target)
    before = tree(copy.parent)
    code, error = command(copy, *["--overwrite"] * overwrite)
    assert code == 2 and one_line(error) and f"{copy / name} is a symbolic link" in error, error
    assert tree(copy.parent) == before
    with pytest.raises(RunFolderError, match="is a symbolic link"):
        RunFolder(copy).load(name) if name.endswith(".pt") else RunFolder(copy).results()


def test_a_link_where_overwrite_puts_the_files_it_removes_is_removed_as_a_link(command, copy, outside):
    (copy / ".overwritten").symlink_to(outside, target_is_directory=True)
    before = tree(outside)
    code, error = command(copy, *OTHER, "--overwrite")
    assert code == 0, error
    assert tree(outside) == before and not os.path.lexists(copy / ".overwritten")


def test_a_link_the_run_does_not_use_is_left_alone(command, copy, outside):
    (copy / "my data").symlink_to(outside, target_is_directory=True)
    code, error = command(copy, *OTHER, "--overwrite")
    assert code == 0, error
    assert os.readlink(copy / "my data") == str(outside) and (outside / "x").read_bytes() == b"the user's x"


# The side-folder clear of --overwrite, failing at several points: each file's move into the side folder (the
# first, one in the middle, the last two), or making the side folder itself.
CLEAR_FAILURES = ["progress.json", "init.pt", "masks/level_01.pt", "config.json", "manifest.json", "side folder"]


@pytest.mark.parametrize("at", CLEAR_FAILURES)
@pytest.mark.parametrize("failure", ["no permission", "Ctrl-C"])
def test_an_overwrite_that_fails_at_any_point_of_the_clear_leaves_the_folder_as_it_was(
    at, failure, command, copy, monkeypatch
):
    (copy / "notes.txt").write_text("mine")
    before = tree(copy.parent)
    error_ = KeyboardInterrupt() if failure == "Ctrl-C" else PermissionError(errno.EACCES, "Permission denied")
    hits = []

    def replace(src, dst):
        if ".overwritten" in Path(dst).parts and Path(src).relative_to(copy).as_posix() == at:
            hits.append(src)
            raise error_
        return REAL_REPLACE(src, dst)

    def mkdir(path, *args, **kwargs):
        if Path(path).name == ".overwritten" and at == "side folder":
            hits.append(path)
            raise error_
        return REAL_MKDIR(path, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "mkdir", mkdir)
    code, error = command(copy, *OTHER, "--overwrite")
    assert hits and one_line(error), error
    if failure == "Ctrl-C":
        assert code == 130 and "interrupted" in error
    else:
        assert code == 1 and f"{copy} could not be cleared: Permission denied; nothing was removed" in error
    assert tree(copy.parent) == before
    monkeypatch.setattr(os, "replace", REAL_REPLACE)
    monkeypatch.setattr(os, "mkdir", REAL_MKDIR)
    assert command(copy, *OTHER, "--overwrite")[0] == 0
    assert (copy / "notes.txt").read_text() == "mine" and not os.path.lexists(copy / ".overwritten")


# ---------------------------------------------------------------------------------------------
# --overwrite starts afresh, whatever the manifest says

MANIFESTS = {
    "complete": lambda folder: None,
    "incomplete": lambda folder: (folder / "manifest.json").write_text(json.dumps({"files": ["config.json"]})),
    "empty": lambda folder: (folder / "manifest.json").write_text(json.dumps({"files": []})),
    "unreadable": lambda folder: (folder / "manifest.json").write_bytes(b"\x80 not json"),
    "missing": lambda folder: (folder / "manifest.json").unlink(),
}


@pytest.fixture(scope="module")
def fresh_other(tmp_path_factory) -> Path:
    """OTHER's run in a new folder: what an overwrite with OTHER must leave."""
    out = tmp_path_factory.mktemp("fresh") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "load_mnist", lambda root, val_size, device: synthetic_splits())
        assert cli.main([*FLAGS, *OTHER, "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("manifest", MANIFESTS)
def test_overwrite_leaves_only_the_new_run_and_the_users_files_whatever_the_manifest_says(
    manifest, command, copy, fresh_other
):
    mine = {"notes.txt": b"mine", "results.csv.bak": b"a copy", "masks/keep.txt": b"mine, in the tool's folder"}
    for name, data in mine.items():
        (copy / name).write_bytes(data)
    MANIFESTS[manifest](copy)
    code, error = command(copy, *OTHER, "--overwrite")
    assert code == 0, error
    for name in ("results.csv", "curves.csv"):
        pd.testing.assert_frame_equal(without_timing(copy, name), without_timing(fresh_other, name))
    assert json.loads((copy / "progress.json").read_text()) == json.loads((fresh_other / "progress.json").read_text())
    assert json.loads((copy / "config.json").read_text())["rounds"] == 0
    assert not [name for name in READ_BACK if os.path.lexists(copy / name)]
    assert all((copy / name).read_bytes() == data for name, data in mine.items())
    assert sorted(p.name for p in (copy / "masks").iterdir()) == ["keep.txt", "level_00.pt"]
    assert sorted(p.name for p in (copy / "tickets").iterdir()) == ["level_00.pt"]
    assert not {*mine, "ticket_level_01.pt"} & listed(copy)
    assert RunFolder(copy).levels_done == 1
    # Every file of the old run is gone (instability.csv, the figures, the exported ticket...) but the new run's own
    assert files_in(copy) == files_in(fresh_other) | set(mine)


def files_in(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------------------------
# compare and every reader accept any valid config


@pytest.mark.parametrize("preset", ["mine", ""])
def test_compare_accepts_a_run_whose_preset_the_tool_does_not_know(preset, tmp_path, capsys):
    known = tmp_path / "known"
    run_experiment(tiny_config(rounds=1, trials=1), known, synthetic_splits(), progress=False)
    unknown = tmp_path / "unknown"
    cfg = dataclasses.replace(tiny_config(rounds=1, trials=1, global_pruning=True), preset=preset)
    run_experiment(cfg, unknown, synthetic_splits(), progress=False)
    table = compare_runs([known, unknown])
    labels = list(table.run.unique())
    assert len(labels) == 2 and labels[0] == "smoke" and labels[1] == (preset or "unknown")
    out = tmp_path / "comparison.png"
    assert cli.main(["compare", str(known), str(unknown), "--out", str(out)]) == 0
    assert out.stat().st_size > 0 and not capsys.readouterr().err
    assert RunFolder(unknown).saved_config() == cfg


def test_labels_come_from_the_configs_fields_never_from_a_preset_made_anew():
    seed, smoke = make_config("seed"), make_config("smoke")
    mine = dataclasses.replace(smoke, preset="mine", trials=4)
    labels = run_labels([seed, smoke, make_config("smoke", trials=3), mine], ["a", "b", "c", "d"])
    assert labels == ["seed", "smoke, trials=1", "smoke, trials=3", "mine"]


def test_a_legend_of_25_runs_fits_in_the_figure():
    rows = [
        dict(run=f"runs/a-long-folder-name-{i:02d}", level=level, percent_remaining=100 * 0.8**level, trials=1)
        | dict(accuracy_mean=97.0, accuracy_std=0.0, stop_iteration_mean=1000.0, stop_iteration_std=0.0)
        for i in range(25)
        for level in range(3)
    ]
    fig = plot_comparison(pd.DataFrame(rows))
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    legend = next(legend for legend in (*fig.legends, *(ax.get_legend() for ax in fig.axes)) if legend)
    box, page = legend.get_window_extent(renderer), fig.bbox
    assert len(legend.get_texts()) == 25
    assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1
    for ax in fig.axes:
        assert not ax.bbox.overlaps(box) and ax.bbox.height > 0.25 * page.height


# ---------------------------------------------------------------------------------------------
# Permission errors: one line, exit 1. Run as a process the OS refuses (root drops its right to bypass them).


def _as_user_without_override() -> None:
    if os.geteuid() == 0:  # root reads any folder: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH for the child
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (1, 2):
            if libc.prctl(24, capability, 0, 0, 0):  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl")


def refused(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lth_helpers", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        preexec_fn=_as_user_without_override,
        timeout=300,
    )


@pytest.fixture
def locked(tmp_path):
    """Folders to lock (mode 000) for one test; unlocked at its end."""
    folders = []

    def lock(folder: Path) -> Path:
        folders.append(folder)
        folder.chmod(0)
        return folder

    if not hasattr(os, "geteuid") or sys.platform != "linux":
        pytest.skip("permissions are reproduced on Linux")
    probe = subprocess.run([sys.executable, "-c", ""], preexec_fn=_as_user_without_override, capture_output=True)
    if probe.returncode:
        pytest.skip("cannot start a process without the right to bypass permissions")
    yield lock
    for folder in folders:
        folder.chmod(0o755)


@pytest.mark.parametrize("where", ["parent", "folder"])
def test_a_run_folder_the_user_cannot_enter_is_one_line_and_exit_1(where, finished, tmp_path, locked):
    parent = tmp_path / "parent"
    copy = Path(shutil.copytree(finished, parent / "run"))
    before = tree(tmp_path)
    locked(parent if where == "parent" else copy)
    done = refused(*FLAGS, "--out", str(copy))
    assert done.returncode == 1 and one_line(done.stderr), done.stderr
    assert "Permission denied" in done.stderr and str(parent if where == "parent" else copy) in done.stderr
    assert "Traceback" not in done.stderr
    (parent if where == "parent" else copy).chmod(0o755)
    assert tree(tmp_path) == before


def test_compare_of_a_folder_the_user_cannot_enter_is_one_line_and_exit_1(finished, tmp_path, locked):
    other = Path(shutil.copytree(finished, tmp_path / "other"))
    out = tmp_path / "comparison.png"
    locked(other)
    done = refused("compare", str(finished), str(other), "--out", str(out))
    assert done.returncode == 1 and one_line(done.stderr) and "Permission denied" in done.stderr, done.stderr
    assert str(other) in done.stderr and not out.exists()


def test_a_data_folder_the_user_cannot_read_is_one_line_and_exit_1(tmp_path, locked):
    data = tmp_path / "data"
    (data / "MNIST" / "raw").mkdir(parents=True)
    locked(data)
    done = refused("--preset", "smoke", "--data-dir", str(data), "--out", str(tmp_path / "run"))
    assert done.returncode == 1 and one_line(done.stderr) and "Permission denied" in done.stderr, done.stderr
    assert str(data) in done.stderr and not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# Values checked as they are read


def test_a_mask_holding_other_values_than_0_and_1_is_named_as_damaged(command, copy):
    masks = torch.load(copy / "masks" / "level_01.pt", weights_only=True)
    masks["ticket.fc1"] = masks["ticket.fc1"] * 3
    torch.save(masks, copy / "masks" / "level_01.pt")
    before = tree(copy)
    code, error = command(copy)
    assert code == 1 and one_line(error) and f"{copy / 'masks' / 'level_01.pt'} cannot be read" in error, error
    assert tree(copy) == before
    with pytest.raises(DamagedFileError, match="0 and 1"):
        RunFolder(copy).load_masks(1)


def test_a_mask_that_grows_from_one_level_to_the_next_is_named_as_damaged(command, tmp_path):
    out = tmp_path / "run"
    assert command(out, "--rounds", "2")[0] == 0
    masks = torch.load(out / "masks" / "level_02.pt", weights_only=True)
    masks["ticket.fc2"] = torch.ones_like(masks["ticket.fc2"])
    torch.save(masks, out / "masks" / "level_02.pt")
    before = tree(out)
    code, error = command(out, "--rounds", "2")
    assert code == 1 and one_line(error) and f"{out / 'masks' / 'level_02.pt'} cannot be read" in error, error
    assert "level 1" in error and tree(out) == before


@pytest.mark.parametrize("name", ["init.pt", "rewind.pt", "tickets/level_01.pt"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_tensor_file_holding_non_finite_numbers_is_named_not_blamed_on_the_learning_rate(name, value, command, copy):
    tensors = torch.load(copy / name, weights_only=True)
    tensors["fc1.weight"][0, 0, 0] = value
    torch.save(tensors, copy / name)
    if name != "tickets/level_01.pt":  # level 1 to train again, from the damaged weights
        results, curves = pd.read_csv(copy / "results.csv"), pd.read_csv(copy / "curves.csv")
        rows = {"results.csv": int((results.level < 1).sum()), "curves.csv": int((curves.level < 1).sum())}
        (copy / "progress.json").write_text(json.dumps({"levels_done": 1, "rows": rows}))
    before = tree(copy)
    code, error = command(copy)
    assert code == 1 and one_line(error) and f"{copy / name} cannot be read" in error, error
    assert "learning_rate" not in error and tree(copy) == before


@pytest.mark.skipif(file_io.fcntl is None, reason="run folders are locked with flock, a POSIX call")
def test_where_the_folder_itself_cannot_be_locked_run_lock_keeps_a_second_run_out(tmp_path, monkeypatch):
    real_flock = file_io.fcntl.flock

    def no_folder_locks(fd, operation):  # as on NFS, where a folder opened to read cannot be locked
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EBADF, "Bad file descriptor")
        return real_flock(fd, operation)

    monkeypatch.setattr(file_io.fcntl, "flock", no_folder_locks)
    with RunFolder.open(tmp_path / "run", CFG):
        assert (tmp_path / "run" / "run.lock").is_file()
        with pytest.raises(RunFolderError, match="is in use by another run"):
            RunFolder.open(tmp_path / "run", CFG)
    with RunFolder.open(tmp_path / "run", CFG):  # closed: free again
        pass
    with RunFolder.open(tmp_path / "run", CFG, overwrite=True):  # the lock is held on run.lock: overwrite keeps it
        assert (tmp_path / "run" / "run.lock").is_file()
        with pytest.raises(RunFolderError, match="is in use by another run"):
            RunFolder.open(tmp_path / "run", CFG)
    monkeypatch.setattr(file_io.fcntl, "flock", real_flock)
    RunFolder.open(tmp_path / "run", CFG, overwrite=True).close()  # held on the folder: run.lock is a file to clear
    assert not (tmp_path / "run" / "run.lock").exists()


def test_duplicate_rows_of_a_level_are_named_even_when_progress_counts_them(copy):
    results = pd.read_csv(copy / "results.csv")
    pd.concat([results, results[results.level == 0]]).sort_values("level").to_csv(copy / "results.csv", index=False)
    progress = json.loads((copy / "progress.json").read_text())
    progress["rows"]["results.csv"] += 1
    (copy / "progress.json").write_text(json.dumps(progress))
    before = tree(copy)
    with pytest.raises(DamagedFileError, match=f"^{copy / 'results.csv'} cannot be read.*level 0.*twice"):
        RunFolder(copy).results()
    assert tree(copy) == before


def drop_ticket_rows(folder: Path) -> None:
    """results.csv without the ticket's rows, and progress.json counting the rows left."""
    results = pd.read_csv(folder / "results.csv")
    results[results.condition != "ticket"].to_csv(folder / "results.csv", index=False)
    progress = json.loads((folder / "progress.json").read_text())
    progress["rows"]["results.csv"] = int((results.condition != "ticket").sum())
    (folder / "progress.json").write_text(json.dumps(progress))


def test_results_that_miss_a_finished_levels_rows_are_named(copy):
    drop_ticket_rows(copy)
    with pytest.raises(DamagedFileError, match=f"^{copy / 'results.csv'} cannot be read.*ticket"):
        RunFolder(copy).results()


def test_results_with_a_row_of_a_network_the_run_never_trains_are_named(copy):
    results = pd.read_csv(copy / "results.csv")
    stray = results[results.level == 1].head(1).assign(trial=7)
    pd.concat([results, stray]).to_csv(copy / "results.csv", index=False)
    progress = json.loads((copy / "progress.json").read_text())
    progress["rows"]["results.csv"] += 1
    (copy / "progress.json").write_text(json.dumps(progress))
    with pytest.raises(DamagedFileError, match=f"^{copy / 'results.csv'} cannot be read.*trial 7, which the run never"):
        RunFolder(copy).results()


def test_compare_names_a_run_whose_results_hold_no_ticket_rows(copy, finished, tmp_path, capsys):
    drop_ticket_rows(copy)
    out = tmp_path / "comparison.png"
    assert cli.main(["compare", str(finished), str(copy), "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert one_line(error) and f"{copy / 'results.csv'} cannot be read" in error and not out.exists()


# ---------------------------------------------------------------------------------------------
# Edge cases, each one line with the status docs/run-folder.md gives


def test_the_loser_of_two_fresh_runs_racing_into_one_new_folder_exits_1_and_leaves_the_winners_run(
    command, tmp_path, monkeypatch
):
    out, winner = tmp_path / "run", []

    def load_while_another_run_takes_the_folder(root, val_size, device):  # after the check, before the start
        run_experiment(tiny_config(rounds=0, trials=1), out, synthetic_splits(), progress=False)
        winner.append(tree(out))
        return synthetic_splits()

    monkeypatch.setattr(cli, "load_mnist", load_while_another_run_takes_the_folder)
    code, error = command(out)
    assert code == 1 and one_line(error) and f"{out} holds a run with another config" in error, error
    assert tree(out) == winner[0]


@pytest.mark.parametrize("flag", ["--preset", "--out", "--data-dir"])
def test_an_empty_preset_out_or_data_folder_is_refused_not_replaced_by_the_default(flag, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        cli.main([*FLAGS, "--out", "run", flag, ""])
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and one_line(error) and flag.lstrip("-").replace("-", "_") in error.replace("-", "_")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "args", [["--iterations", str(10**23)], ["--rounds", str(10**9)]], ids=["iterations", "rounds"]
)
def test_an_absurd_training_budget_is_refused_before_training(args, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([*FLAGS, "--out", str(tmp_path / "run"), *args])
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and one_line(error) and "steps" in error, error
    assert not list(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="steps"):
        make_config("smoke", iterations=10**23)


@pytest.mark.parametrize("field", ["learning_rate", "prune_rate"])
def test_an_integer_too_large_for_a_real_number_is_a_config_error(field):
    with pytest.raises(ConfigError, match=f"^{field} must be") as error:
        make_config("smoke", **{field: 10**400})
    assert "\n" not in str(error.value) and len(str(error.value)) < 200


def test_a_config_json_missing_a_field_is_named_as_damaged_not_as_another_config(command, copy):
    config = json.loads((copy / "config.json").read_text())
    del config["seed"]
    (copy / "config.json").write_text(json.dumps(config))
    before = tree(copy)
    code, error = command(copy)
    assert code == 1 and one_line(error) and f"{copy / 'config.json'} cannot be read" in error, error
    assert "seed" in error and "another config" not in error and tree(copy) == before


def test_a_results_table_of_its_header_alone_is_said_to_miss_its_rows(copy):
    header = (copy / "results.csv").read_text().splitlines()[0]
    (copy / "results.csv").write_text(header + "\n")
    with pytest.raises(DamagedFileError, match=f"^{copy / 'results.csv'} cannot be read") as error:
        RunFolder(copy).results()
    assert "rows" in str(error.value) and "whole numbers" not in str(error.value)


def test_a_file_where_the_masks_folder_belongs_is_refused_in_one_line(command, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "masks").write_text("the user's file")
    before = tree(tmp_path)
    code, error = command(out)
    assert code == 2 and one_line(error) and f"{out / 'masks'} is a file" in error, error
    assert tree(tmp_path) == before


def _offline(url, download_root, filename, md5):
    from urllib.error import URLError

    raise URLError("no network")


def test_the_mnist_loader_creates_nothing_when_it_fails(tmp_path, monkeypatch):
    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", _offline)
    for root in (tmp_path / "data", tmp_path / "empty"):
        with pytest.raises(DataError, match="could not be downloaded"):
            load_mnist(root, 200, torch.device("cpu"))
        assert not root.exists() or not list(root.iterdir())
        root.mkdir(exist_ok=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "empty"]


def test_a_data_folder_one_or_two_levels_too_deep_is_named_with_the_right_one_and_nothing_is_downloaded(monkeypatch):
    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", _offline)
    data = Path(os.environ["LTH_DATA_DIR"])  # the real files, read-only in CI: nothing may be written there
    for too_deep in (data / "MNIST" / "raw", data / "MNIST"):
        with pytest.raises(DataError) as error:
            load_mnist(too_deep, 200, torch.device("cpu"))
        assert str(error.value).endswith(f"point --data-dir / $LTH_DATA_DIR at {data}")
        assert not (too_deep / "MNIST").exists() and not (too_deep / "raw" / "MNIST").exists()


def test_a_download_puts_the_four_files_in_the_data_folder_and_nothing_else(tmp_path, monkeypatch):
    real = Path(os.environ["LTH_DATA_DIR"]) / "MNIST" / "raw"

    def download(url, download_root, filename, md5):
        shutil.copy(real / filename.removesuffix(".gz"), Path(download_root) / filename.removesuffix(".gz"))

    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", download)
    data = load_mnist(tmp_path / "data", 200, torch.device("cpu"))
    assert len(data.test_y) == 10_000
    assert sorted(tree(tmp_path)) == [
        "data",
        "data/MNIST",
        "data/MNIST/raw",
        *(f"data/MNIST/raw/{n}" for n in sorted(MNIST_FILES)),
    ]


def test_an_mnist_file_that_is_a_folder_is_named_as_a_folder_not_as_missing(tmp_path, monkeypatch):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        (raw / name).symlink_to(Path(os.environ["LTH_DATA_DIR"]) / "MNIST" / "raw" / name)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    (raw / "t10k-labels-idx1-ubyte").mkdir()
    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", _offline)
    with pytest.raises(DataError) as error:
        load_mnist(tmp_path / "data", 200, torch.device("cpu"))
    message = str(error.value)
    assert f"{raw / 't10k-labels-idx1-ubyte'} is a folder" in message and "missing" not in message
    assert "\n" not in message


def test_ctrl_c_as_the_run_prints_its_report_still_ends_it_with_exit_0(command, tmp_path, monkeypatch):
    real_print, exported = print, tmp_path / "run" / "ticket_level_01.pt"

    def interrupted_once_every_file_is_written(*args, **kwargs):  # the report is printed after its files
        if exported.exists():
            raise KeyboardInterrupt
        real_print(*args, **kwargs)

    monkeypatch.setattr("builtins.print", interrupted_once_every_file_is_written)
    code, error = command(tmp_path / "run")
    assert code == 0 and "interrupted" not in error, error
    assert (tmp_path / "run" / "inference.csv").exists()


CTRL_C_AT_SHUTDOWN = """
import runpy, signal, sys, threading
threading._register_atexit(lambda: signal.raise_signal(signal.SIGINT))  # Ctrl-C while Python shuts down
sys.argv = ["-m", *sys.argv[1:]]
runpy.run_module("lth_helpers", run_name="__main__", alter_sys=True)
"""


def test_ctrl_c_while_python_shuts_down_after_a_finished_command_prints_nothing_and_keeps_exit_0(finished, tmp_path):
    other = Path(shutil.copytree(finished, tmp_path / "other"))
    args = ["compare", str(finished), str(other), "--out", str(tmp_path / "comparison.png")]
    done = subprocess.run(
        [sys.executable, "-c", CTRL_C_AT_SHUTDOWN, *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
