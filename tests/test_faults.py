"""Faults of the run folder, each reproduced: a full disk, damaged files, --overwrite over damage and foreign
files, a second run during the first's report, wrong config types, exploding losses, Ctrl-C, huge models.
Each must end in one line, the right exit status, and a folder whose finished levels and foreign files are intact.

Runs use a tiny config on synthetic data (the command line's MNIST loader is replaced by it), so the module is fast.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import lth_helpers.cli as cli
import lth_helpers.experiment as experiment
import lth_helpers.files as files
import lth_helpers.runs as runs
from lth_helpers.config import ConfigError, make_config
from lth_helpers.data import MNIST_FILES, DataError, MNISTSplits, load_mnist
from lth_helpers.experiment import run_experiment
from lth_helpers.files import DamagedFileError, RunFolderError, write_atomic
from lth_helpers.inference import load_ticket
from lth_helpers.runs import RunFolder
from lth_helpers.tables import TABLE_COLUMNS
from tests.conftest import CFG, FLAGS, REPO, make_run, one_line, synthetic_splits, tiny_config

FULL_DISK = OSError(errno.ENOSPC, "No space left on device")
REAL_REPLACE = os.replace


def snapshot(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def without_timing(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "results.csv").drop(columns="train_seconds")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished run folder of CFG, written once; tests work on copies."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    run_experiment(CFG, folder, synthetic_splits(), progress=False)
    return folder


@pytest.fixture
def copy(finished, tmp_path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "run"))


def fail_writes_to(monkeypatch, name: str, error: BaseException = FULL_DISK) -> None:
    """os.replace of the temporary file of `name` (its last path parts) fails, as on a full disk."""

    def replace(src, dst):
        if Path(dst).as_posix().endswith(name):
            raise error
        return REAL_REPLACE(src, dst)

    monkeypatch.setattr(os, "replace", replace)


# ---------------------------------------------------------------------------------------------
# One way to write a file


def test_every_file_the_command_writes_is_written_under_a_temporary_name_and_renamed(command, tmp_path, monkeypatch):
    renamed = []
    monkeypatch.setattr(
        os, "replace", lambda src, dst: renamed.append((Path(src), Path(dst))) or REAL_REPLACE(src, dst)
    )
    assert command(tmp_path / "run")[0] == 0
    written = {p for p in (tmp_path / "run").rglob("*") if p.is_file() and p.name != runs.LOCK_FILE}
    assert written == {dst for _, dst in renamed}
    assert all(src == dst.with_name(dst.name + ".tmp") for src, dst in renamed)
    for name in ("ticket_level_01.pt", "inference.csv", "inference_latency.png", "accuracy_curves.png"):
        assert (tmp_path / "run" / name) in written
    manifest = json.loads((tmp_path / "run" / runs.MANIFEST).read_text())["files"]
    assert {(tmp_path / "run" / n) for n in manifest} == written - {tmp_path / "run" / runs.MANIFEST}


FULL_DISK_AT = ["init.pt", "results.csv", "progress.json", "accuracy_vs_weights.png", "ticket_level_01.pt"]


@pytest.mark.parametrize("name", FULL_DISK_AT)
def test_a_full_disk_ends_in_one_line_exit_1_no_temporary_file_and_the_finished_levels_readable(
    name, command, tmp_path, monkeypatch, finished
):
    out = tmp_path / "run"
    fail_writes_to(monkeypatch, name)
    code, error = command(out)
    assert code == 1 and one_line(error)
    assert f"could not write {out / name}: No space left on device" in error and "finished levels are kept" in error
    assert not list(out.rglob("*.tmp")) and not (out / name).exists()
    done = RunFolder(out).levels_done
    assert len(RunFolder(out).results()) == [0, 1, 5][done]  # what progress.json says is there, and readable


def test_a_run_cut_by_a_full_disk_resumes_to_the_uninterrupted_results(command, tmp_path, monkeypatch, finished):
    out = tmp_path / "run"
    fail_writes_to(monkeypatch, "masks/level_01.pt")
    assert command(out)[0] == 1
    monkeypatch.setattr(os, "replace", REAL_REPLACE)  # space freed
    assert command(out)[0] == 0
    pd.testing.assert_frame_equal(without_timing(out), without_timing(finished))
    assert isinstance(load_ticket(out / "ticket_level_01.pt"), torch.nn.Module)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="a file-size limit (RLIMIT_FSIZE) is a POSIX feature")
def test_a_file_size_limit_hit_by_torchs_own_writer_is_one_line_and_exit_1(tmp_path):
    """A real write failure, not a patched one: Python ignores SIGXFSZ, so a write past the limit fails as on a full
    disk (torch's C++ file writer would report it as a RuntimeError)."""
    import resource

    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "lth_helpers", *FLAGS, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024)),  # init.pt: 130 KB
    )
    assert done.returncode == 1 and one_line(done.stderr), done.stderr
    assert f"could not write {out / 'init.pt'}: File too large" in done.stderr
    assert not list(out.rglob("*.tmp")) and not (out / "init.pt").exists()


def test_a_file_is_synced_before_its_rename_and_its_folder_after(tmp_path, monkeypatch):
    """Whole or absent after a power cut too: the data reach the disk before the name points at them, and the
    rename itself reaches the disk before the write counts as done."""
    events = []
    real_fsync = os.fsync

    def fsync(fd):
        info = os.fstat(fd)
        events.append(("sync folder" if stat.S_ISDIR(info.st_mode) else "sync file", info.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(
        os, "replace", lambda src, dst: events.append(("rename", Path(dst).name)) or REAL_REPLACE(src, dst)
    )
    file = tmp_path / "table.csv"
    write_atomic(file, lambda tmp: tmp.write_text("new\n"))
    assert events == [
        ("sync file", file.stat().st_ino),
        ("rename", "table.csv"),
        ("sync folder", tmp_path.stat().st_ino),
    ]


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    file = tmp_path / "table.csv"
    file.write_text("old\n")

    def interrupted(tmp: Path) -> None:
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(file, interrupted)
    assert file.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["table.csv"]


# ---------------------------------------------------------------------------------------------
# One way to read a file

RUN_FILES = [
    "config.json",
    runs.MANIFEST,
    "progress.json",
    "init.pt",
    "rewind.pt",
    "dense.pt",
    "masks/level_01.pt",
    "tickets/level_01.pt",
    "results.csv",
    "curves.csv",
]


def read_back(folder: Path) -> None:
    """What a rerun, the report and a resumed level 1 read: every file of the folder."""
    run_experiment(CFG, folder, synthetic_splits(), progress=False)
    run = RunFolder(folder)
    run.curves(), run.load_masks(1), run.load("tickets/level_01.pt"), run.load("rewind.pt"), run.load("dense.pt")


def cut_lengths(data: bytes) -> list[int]:
    """Many lengths to cut a file to; none that only drops trailing whitespace (the file then reads the same)."""
    lengths = {0, 1, 2, 7, 30, 64, 100, 512, len(data) // 3, len(data) // 2, len(data) - 2, len(data) - 1}
    return sorted(n for n in lengths if n < len(data) and data[:n].strip() != data.strip())


@pytest.mark.parametrize("name", RUN_FILES)
def test_a_file_cut_short_at_any_length_or_garbage_is_named_in_one_line_and_nothing_changes(name, copy):
    file, whole = copy / name, (copy / name).read_bytes()
    spoiled = [whole[:n] for n in cut_lengths(whole)]
    spoiled += [bytes(np.random.default_rng(0).integers(0, 256, len(whole), dtype=np.uint8)), b"\0" * len(whole)]
    for data in spoiled:
        file.write_bytes(data)
        before = snapshot(copy)
        with pytest.raises(DamagedFileError) as error:
            read_back(copy)
        message = str(error.value)
        assert message.startswith(f"{file} cannot be read") and "--overwrite" in message and "\n" not in message
        assert snapshot(copy) == before, len(data)


WRONG_CONTENT = {  # right format, wrong content: each must be named, not misread nor blamed on another file
    "progress.json": [
        {"levels_done": 99, "rows": {}},
        {"levels_done": -1, "rows": {}},
        {"levels_done": "2", "rows": {}},
        {"levels_done": 1.5, "rows": {}},
        {"levels_done": True, "rows": {}},
        {"levels_done": 2, "rows": {"results.csv": -4}},
        {"levels_done": 2, "rows": []},
        [2],
    ],
    "config.json": [
        *({"rounds": "one"}, {"fc1_width": 1e9}, {"momentum": 0.9}, {"global_pruning": "no"}, []),
        *({"format": 3}, {"format": "2"}, {"format": None}),  # a format this version does not know
    ],
    runs.MANIFEST: [{"files": "init.pt"}, {"files": ["../outside.txt"]}, {"files": ["/etc/hostname"]}, {}],
}


@pytest.mark.parametrize(
    ("name", "content"), [(n, c) for n, cs in WRONG_CONTENT.items() for c in cs], ids=lambda v: str(v)[:30]
)
def test_a_json_file_holding_wrong_values_is_named(name, content, copy):
    file = copy / name
    if name == "config.json":
        content = content if isinstance(content, list) else {**json.loads(file.read_text()), **content}
    file.write_text(json.dumps(content))
    before = snapshot(copy)
    with pytest.raises(DamagedFileError, match=f"^{file} cannot be read"):
        read_back(copy)
    assert snapshot(copy) == before


TENSOR_FILES = ["init.pt", "rewind.pt", "dense.pt", "masks/level_01.pt", "tickets/level_01.pt"]
WRONG_TENSORS = {
    "a list": lambda tensors: list(tensors.values()),
    "a tensor": lambda tensors: next(iter(tensors.values())),
    "a string inside": lambda tensors: {**tensors, next(iter(tensors)): "weights"},
    "a tensor too few": lambda tensors: dict(list(tensors.items())[1:]),
    "a wrong shape": lambda tensors: {k: v[..., :3] for k, v in tensors.items()},
    "another trial count": lambda tensors: {k: torch.cat([v, v]) for k, v in tensors.items()},
}


@pytest.mark.parametrize("name", TENSOR_FILES)
def test_a_tensor_file_holding_the_wrong_tensors_is_named(name, copy):
    file = copy / name
    tensors = torch.load(file, weights_only=True)
    for spoil in WRONG_TENSORS.values():
        torch.save(spoil(tensors), file)
        with pytest.raises(DamagedFileError, match=f"^{file} cannot be read"):
            read_back(copy)
    torch.save(tensors, file)
    read_back(copy)  # restored: readable again


TABLE_DAMAGE = {  # the row count progress.json recorded is kept: only the content says the table is damaged
    "a renamed column": lambda text: text.replace("condition", "kondition", 1),
    "a word among numbers": lambda text: text.replace("\n1,", "\nabc,", 1),
    "a condition of no run": lambda text: text.replace(",ticket,", ",tikcet,", 1),
    "a column too many": lambda text: "\n".join(line + ",0" if line else line for line in text.split("\n")),
}


@pytest.mark.parametrize("name", ["results.csv", "curves.csv"])
@pytest.mark.parametrize("spoil", TABLE_DAMAGE.values(), ids=TABLE_DAMAGE.keys())
def test_a_table_with_the_right_row_count_but_wrong_columns_or_values_is_named(name, spoil, copy):
    file = copy / name
    file.write_text(spoil(file.read_text()))
    before = snapshot(copy)
    with pytest.raises(DamagedFileError, match=f"^{file} cannot be read"):
        read_back(copy)
    assert snapshot(copy) == before


def test_the_tables_columns_are_the_ones_the_experiment_writes(copy):
    for name, table in (("results.csv", RunFolder(copy).results()), ("curves.csv", RunFolder(copy).curves())):
        assert tuple(table.columns) == tuple(TABLE_COLUMNS[name])


def test_a_results_table_without_the_columns_added_since_reads_without_them_and_a_resumed_run_adds_them(copy, finished):
    """A results.csv from before final_train_accuracy and final_train_loss existed, of a run stopped after level 0."""
    old = pd.read_csv(copy / "results.csv").drop(columns=["final_train_accuracy", "final_train_loss"])
    old.to_csv(copy / "results.csv", index=False)
    table = RunFolder(copy).results()
    assert "final_train_accuracy" not in table and len(table) == len(old)
    curves = pd.read_csv(copy / "curves.csv")
    rows = {"results.csv": int((old.level == 0).sum()), "curves.csv": int((curves.level == 0).sum())}
    (copy / "progress.json").write_text(json.dumps({"levels_done": 1, "rows": rows}))
    run_experiment(CFG, copy, synthetic_splits(), progress=False)
    resumed = pd.read_csv(copy / "results.csv")
    assert tuple(resumed.columns) == tuple(TABLE_COLUMNS["results.csv"])
    assert resumed[resumed.level == 0].final_train_accuracy.isna().all()
    assert resumed[resumed.level == 1].final_train_accuracy.notna().all()
    train = ["final_train_accuracy", "final_train_loss"]
    pd.testing.assert_frame_equal(
        without_timing(copy).drop(columns=train), without_timing(finished).drop(columns=train)
    )


def test_a_run_folder_records_its_format_and_one_without_it_is_format_1(copy):
    config = json.loads((copy / "config.json").read_text())
    assert config["format"] == 2 and RunFolder(copy).format == 2 and RunFolder(copy).saved_config() == CFG
    del config["format"]
    (copy / "config.json").write_text(json.dumps(config))
    assert RunFolder(copy).format == 1 and RunFolder(copy).saved_config() == CFG
    read_back(copy)  # an older folder resumes


def test_a_mask_that_keeps_a_weight_the_level_before_pruned_is_named(tmp_path):
    folder = make_run(tmp_path / "run", rounds=2, trials=1)
    grown = torch.load(folder / "masks" / "level_02.pt", weights_only=True)
    torch.save({key: torch.ones_like(mask) for key, mask in grown.items()}, folder / "masks" / "level_02.pt")
    before = snapshot(folder)
    for read in (lambda: RunFolder(folder).load_masks(2), lambda: make_run(folder, rounds=2, trials=1)):
        with pytest.raises(DamagedFileError, match=r"level_02.pt cannot be read .*keeps weights that level 1 pruned"):
            read()
    assert snapshot(folder) == before


# ---------------------------------------------------------------------------------------------
# A resumed run checks every file it will read before it trains

RESUMED = ["--rounds", "2", "--controls", "reinit,one_shot"]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> Path:
    """A command-line run of RESUMED stopped (Ctrl-C) during level 1: level 0 finished, level 1's masks saved, and
    every trial's trained ticket of level 0 in trained/ (conditions that fine-tune it keep one)."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    real_finish = RunFolder.finish_level

    def stop_at_level_1(run, level, *rows):
        if level == 1:
            raise KeyboardInterrupt
        real_finish(run, level, *rows)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "load_mnist", lambda root, val_size, device: synthetic_splits())
        patch.setattr(RunFolder, "finish_level", stop_at_level_1)
        assert cli.main([*FLAGS, *RESUMED, "--out", str(out)]) == 130
    assert RunFolder(out).levels_done == 1 and (out / "masks" / "level_01.pt").exists()
    (out / "trained").mkdir()
    shutil.copy(out / "dense.pt", out / "trained" / "level_00.pt")
    return out


def nan_in(file: Path) -> None:
    """A NaN where a number was: in a table's trial column, or in a tensor file's first tensor (a mask, stored as
    booleans, becomes float32 to hold it)."""
    if file.suffix == ".csv":
        table = pd.read_csv(file)
        table.loc[0, "trial"] = float("nan")
        table.to_csv(file, index=False)
        return
    tensors = torch.load(file, weights_only=True)
    first = next(iter(tensors))
    tensors[first] = tensors[first].float() if tensors[first].dtype == torch.bool else tensors[first].clone()
    tensors[first].view(-1)[0] = float("nan")
    torch.save(tensors, file)


SPOILS = {
    "deleted": lambda file: file.unlink(),
    "cut short": lambda file: file.write_bytes(file.read_bytes()[: file.stat().st_size // 2]),
    "NaN": nan_in,
}
READ_ON_RESUME = ["dense.pt", "results.csv", "curves.csv", "tickets/level_00.pt", "masks/level_01.pt"]


def with_times(folder: Path) -> dict[str, tuple]:
    """Every file and folder under `folder`, with each file's bytes and modification time: a file written again,
    even with the same bytes, shows."""
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else ()
        for p in folder.rglob("*")
    }


@pytest.mark.parametrize("spoil", SPOILS)
@pytest.mark.parametrize("name", [*READ_ON_RESUME, "trained/level_00.pt"])
def test_a_resumed_run_names_a_damaged_file_before_it_trains_or_writes_anything(
    name, spoil, stopped, tmp_path, command, monkeypatch
):
    folder = Path(shutil.copytree(stopped, tmp_path / "run"))
    if spoil == "deleted" and name == "trained/level_00.pt":
        pytest.skip("trained/ is optional: a run without it resumes")
    SPOILS[spoil](folder / name)
    before = with_times(folder)
    monkeypatch.setattr(experiment, "train_networks", lambda *a, **k: pytest.fail("trained before the check"))
    code, error = command(folder, *RESUMED)
    assert code == 1 and one_line(error) and f"{folder / name} cannot be read" in error, error
    assert with_times(folder) == before


def test_a_sound_stopped_run_resumes_to_the_uninterrupted_results(stopped, tmp_path, command):
    folder = Path(shutil.copytree(stopped, tmp_path / "run"))
    (folder / "trained" / "level_00.pt").unlink()
    assert command(folder, *RESUMED)[0] == 0
    assert command(tmp_path / "whole", *RESUMED)[0] == 0
    pd.testing.assert_frame_equal(without_timing(folder), without_timing(tmp_path / "whole"))


def test_a_damaged_file_is_one_line_and_exit_1_on_the_command_line_and_the_folder_stays(command, copy):
    for name in ("config.json", "init.pt", "progress.json"):
        whole = (copy / name).read_bytes()
        (copy / name).write_bytes(whole[: len(whole) // 2])
        before = snapshot(copy)
        code, error = command(copy)
        assert code == 1 and one_line(error) and f"{copy / name} cannot be read" in error, error
        assert snapshot(copy) == before
        (copy / name).write_bytes(whole)


def mnist_folder(tmp_path: Path) -> Path:
    """A data folder of links to the real MNIST files, whose links can be replaced by damaged files."""
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        (raw / name).symlink_to(Path(os.environ["LTH_DATA_DIR"]) / "MNIST" / "raw" / name)
    return raw


def test_a_missing_mnist_file_is_named_and_the_present_ones_are_not_blamed(tmp_path, monkeypatch):
    raw = mnist_folder(tmp_path)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    monkeypatch.setattr("torchvision.datasets.MNIST.download", lambda self: pytest.fail("downloads present files"))
    with pytest.raises(DataError) as error:
        load_mnist(tmp_path / "data", 200, torch.device("cpu"))
    message = str(error.value)
    assert f"MNIST in {raw} is incomplete: t10k-labels-idx1-ubyte missing" in message and "\n" not in message


@pytest.mark.parametrize(
    ("name", "spoil", "says"),
    [
        ("train-labels-idx1-ubyte", lambda d: d[:4] + (7).to_bytes(4, "big") + d[8:], "declares [7] labels"),
        ("t10k-images-idx3-ubyte", lambda d: (2049).to_bytes(4, "big") + d[4:], "not the magic number 2051"),
        ("t10k-labels-idx1-ubyte", lambda d: d[:-1] + b"\x0b", "holds a label above 9"),
    ],
)
def test_an_mnist_file_with_a_wrong_header_or_label_is_named(name, spoil, says, tmp_path):
    raw = mnist_folder(tmp_path)
    data = (raw / name).read_bytes()
    (raw / name).unlink()
    (raw / name).write_bytes(spoil(data))
    with pytest.raises(DataError, match=f"MNIST in {re.escape(str(raw))} is damaged: .*{re.escape(says)}"):
        load_mnist(tmp_path / "data", 200, torch.device("cpu"))


# ---------------------------------------------------------------------------------------------
# --overwrite


def test_overwrite_starts_afresh_whatever_state_the_files_are_in(copy, finished):
    for name in RUN_FILES:  # config.json and the manifest too
        (copy / name).write_bytes(b"\x80garbage")
    run_experiment(CFG, copy, synthetic_splits(), overwrite=True, progress=False)
    pd.testing.assert_frame_equal(without_timing(copy), without_timing(finished))
    assert RunFolder(copy).load_masks(1)["ticket"]["fc1"].shape == (1, 40, 784)


def test_overwrite_removes_only_the_tools_files_and_keeps_foreign_ones(copy, finished):
    foreign = {
        copy / "notes.png": b"mine",
        copy / "ticket_level_07.txt": b"mine too",
        copy / "masks" / "extra" / "keep.txt": b"inside a folder of the tool's",
        copy / "results.csv.bak": b"a copy",
    }
    (copy / "ticket_level_07.pt").write_bytes(b"named as the tool names an exported ticket: the tool's")
    for path, data in foreign.items():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
    (copy / "masks" / "level_01.pt").unlink()  # the tool's, gone: nothing to remove
    other = tiny_config(rounds=0, trials=1, iterations=20)
    run_experiment(other, copy, synthetic_splits(), overwrite=True, progress=False)
    assert all(path.read_bytes() == data for path, data in foreign.items())
    assert RunFolder(copy).saved_config() == other and not (copy / "rewind.pt").exists()
    assert not (copy / "tickets" / "level_01.pt").exists() and not (copy / files.CLEARING).exists()
    assert not (copy / "ticket_level_07.pt").exists()
    assert sorted(RunFolder(copy).results().level) == [0]


def test_an_overwrite_that_fails_midway_removes_nothing_and_a_second_one_succeeds(copy, monkeypatch, finished):
    before = snapshot(copy)
    cleared = f"^{re.escape(str(copy))} could not be cleared: Permission denied; nothing was removed"
    failures = [
        (PermissionError(errno.EACCES, "Permission denied"), RunFolderError, cleared),
        (KeyboardInterrupt(), KeyboardInterrupt, None),
    ]
    for failure, raised, message in failures:
        moves = []

        def replace(src, dst, failure=failure, moves=moves):
            if files.CLEARING in Path(dst).parts:
                moves.append(dst)
                if len(moves) == 4:
                    raise failure
            REAL_REPLACE(src, dst)

        monkeypatch.setattr(os, "replace", replace)
        with pytest.raises(raised, match=message):
            run_experiment(tiny_config(rounds=0), copy, synthetic_splits(), overwrite=True, progress=False)
        assert len(moves) == 4 and snapshot(copy) == before
    monkeypatch.setattr(os, "replace", REAL_REPLACE)
    run_experiment(CFG, copy, synthetic_splits(), overwrite=True, progress=False)
    pd.testing.assert_frame_equal(without_timing(copy), without_timing(finished))


def test_a_folder_with_results_but_no_config_is_refused_not_adopted(command, copy):
    (copy / "config.json").unlink()
    (copy / runs.LOCK_FILE).unlink(missing_ok=True)  # refused, the folder is left as it was: not even a lock file
    before = snapshot(copy)
    for cfg in (CFG, tiny_config(rounds=2)):
        with pytest.raises(RunFolderError, match="holds a run's files but no config.json.*--overwrite"):
            run_experiment(cfg, copy, synthetic_splits(), progress=False)
    code, error = command(copy, "--rounds", "2")
    assert code == 2 and one_line(error) and "no config.json" in error
    assert snapshot(copy) == before
    assert command(copy, "--rounds", "2", "--overwrite")[0] == 0
    assert sorted(RunFolder(copy).results().level.unique()) == [0, 1, 2]


def test_a_run_folder_without_its_manifest_is_damaged_and_overwrite_clears_the_files_a_run_reads(command, copy):
    """config.json without manifest.json: which files are the tool's is unknown, so the folder is damaged. Overwritten,
    the files a run reads back go (a new run would take them for its own); any other file stays."""
    (copy / runs.MANIFEST).unlink()
    (copy / "mine.png").write_bytes(b"mine")
    before = snapshot(copy)
    with pytest.raises(DamagedFileError, match=f"^{re.escape(str(copy / runs.MANIFEST))} cannot be read"):
        run_experiment(CFG, copy, synthetic_splits(), progress=False)
    code, error = command(copy)
    assert (
        code == 1 and one_line(error) and f"{copy / runs.MANIFEST} cannot be read" in error and "--overwrite" in error
    )
    assert snapshot(copy) == before
    run_experiment(tiny_config(rounds=0, trials=1, iterations=20), copy, synthetic_splits(), overwrite=True)
    assert not (copy / "masks" / "level_01.pt").exists() and not (copy / "rewind.pt").exists()
    assert (copy / "mine.png").read_bytes() == b"mine" and sorted(RunFolder(copy).results().level) == [0]
    assert "mine.png" not in json.loads((copy / runs.MANIFEST).read_text())["files"]


# ---------------------------------------------------------------------------------------------
# The lock covers the whole run

SECOND_RUN = """
import sys
from pathlib import Path
from lth_helpers.files import RunFolderError
from lth_helpers.runs import RunFolder
folder = Path(sys.argv[1])
try:
    RunFolder.open(folder, RunFolder(folder).saved_config(), overwrite=True)
    print("opened")
except RunFolderError as error:
    print(error)
"""


@pytest.mark.skipif(files.fcntl is None, reason="run folders are locked with flock, a POSIX call")
@pytest.mark.parametrize("deleted", [False, True], ids=["lock in place", "lock file deleted"])
def test_a_second_run_during_the_first_ones_report_is_refused_and_the_first_finishes(
    deleted, command, tmp_path, monkeypatch
):
    out, seen = tmp_path / "run", []
    real_report = cli.write_inference

    def report_while_a_second_run_starts(*args):
        for lock in out.glob("*.lock") if deleted else []:  # deleted under the running run: it still holds the folder
            lock.unlink()
        second = subprocess.run([sys.executable, "-c", SECOND_RUN, str(out)], cwd=REPO, capture_output=True, text=True)
        seen.append(second.stdout)
        return real_report(*args)

    monkeypatch.setattr(cli, "write_inference", report_while_a_second_run_starts)
    code, error = command(out)
    assert code == 0, error
    assert seen and seen[0].startswith(f"{out} is in use by another run")
    assert (out / "ticket_level_01.pt").exists() and (out / "config.json").exists()
    with RunFolder.open(out, RunFolder(out).saved_config()):  # once the command has ended, the folder is free
        pass


@pytest.mark.skipif(files.fcntl is None, reason="run folders are locked with flock, a POSIX call")
def test_a_second_run_while_the_first_one_trains_any_level_is_refused_and_the_first_finishes(
    command, tmp_path, monkeypatch
):
    out, seen = tmp_path / "run", []
    real_train = experiment.train_networks

    def train_while_a_second_run_starts(*args, **kwargs):
        second = subprocess.run([sys.executable, "-c", SECOND_RUN, str(out)], cwd=REPO, capture_output=True, text=True)
        seen.append(second.stdout)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(experiment, "train_networks", train_while_a_second_run_starts)
    code, error = command(out)
    assert code == 0, error
    assert seen and all(line.startswith(f"{out} is in use by another run") for line in seen), seen
    assert RunFolder(out).levels_done == CFG.rounds + 1


def test_a_folder_is_held_by_one_open_and_written_only_through_it(tmp_path):
    with RunFolder.open(tmp_path / "run", CFG) as run:
        with pytest.raises(RunFolderError, match="is in use by another run"):  # this process too: one run, one open
            RunFolder.open(tmp_path / "run", CFG)
        with pytest.raises(RunFolderError, match="not open for writing"):
            RunFolder(tmp_path / "run").save_table("notes.csv", pd.DataFrame({"a": [1]}))
        run.save_table("notes.csv", pd.DataFrame({"a": [1]}))
    with pytest.raises(RunFolderError, match="not open for writing"):  # closed: it only reads now
        run.save_table("notes.csv", pd.DataFrame({"a": [2]}))
    assert (tmp_path / "run" / "notes.csv").read_text() == "a\n1\n"


def test_the_notebooks_figures_and_inference_table_are_whole_listed_and_cleared_by_overwrite(tmp_path):
    """The notebook writes them after run_experiment has let the folder go, through the folder opened again."""
    from lth_helpers.inference import inference_table
    from lth_helpers.plotting import run_figures

    results = run_experiment(CFG, tmp_path, synthetic_splits(), progress=False)
    run = RunFolder(tmp_path)
    figures = run_figures(results, run.curves(), run.load(runs.INIT), run.ticket_masks())
    table = inference_table(run.trained_tickets(), run.ticket_masks(), synthetic_splits().test_x, repeats=2)
    with RunFolder.open(tmp_path, CFG) as folder:
        folder.save_figures(figures)
        folder.save_table(runs.INFERENCE_TABLE, table)
    written = [*figures, runs.INFERENCE_TABLE]
    assert all((tmp_path / name).stat().st_size > 0 for name in written) and not list(tmp_path.glob("*.tmp"))
    assert set(written) <= set(json.loads((tmp_path / runs.MANIFEST).read_text())["files"])
    run_experiment(tiny_config(rounds=0, trials=1, iterations=20), tmp_path, synthetic_splits(), overwrite=True)
    assert not any((tmp_path / name).exists() for name in written)


# ---------------------------------------------------------------------------------------------
# Config types and data that do not match the config

WRONG_TYPES = {
    "global_pruning": ("no", "True or False"),
    "controls": ("reinit", "tuple of names"),
    "learning_rate": (True, "real number"),
    "trials": (2.0, "integer"),
    "prune_rate": ("0.2", "real number"),
    "init": (1, "string"),
}


@pytest.mark.parametrize("field", WRONG_TYPES)
def test_a_value_of_the_wrong_type_is_refused_in_python_as_on_the_command_line(field):
    value, says = WRONG_TYPES[field]
    with pytest.raises(ConfigError, match=f"^{field} must be .*{says}"):
        make_config("smoke", **{field: value})


def test_an_integer_for_a_real_number_is_the_same_config_with_the_same_hash():
    assert tiny_config(learning_rate=1).short_hash() == tiny_config(learning_rate=1.0).short_hash()
    assert type(tiny_config(learning_rate=1).learning_rate) is float


def test_numpy_numbers_are_welcome_and_stored_as_plain_json_with_the_same_hash(tmp_path):
    cfg = tiny_config(trials=np.int64(1), rounds=np.int32(0), iterations=np.int64(20), prune_rate=np.float32(0.25))
    plain = tiny_config(trials=1, rounds=0, iterations=20, prune_rate=float(np.float32(0.25)))
    assert cfg == plain and cfg.short_hash() == plain.short_hash() and type(cfg.trials) is int
    run_experiment(cfg, tmp_path, synthetic_splits(), progress=False)
    assert json.loads((tmp_path / "config.json").read_text())["trials"] == 1


def test_data_that_do_not_match_the_config_are_refused_before_anything_is_written(tmp_path):
    data = synthetic_splits()
    with pytest.raises(ConfigError, match="the data hold 200 validation images but val_size is 5,000"):
        run_experiment(make_config("smoke"), tmp_path / "a", data, progress=False)
    split = MNISTSplits(*(t.to("meta") if i == 2 else t for i, t in enumerate(vars(data).values())))
    with pytest.raises(ConfigError, match="several devices"):
        run_experiment(CFG, tmp_path / "b", split, progress=False)
    for i, spoil in enumerate([lambda d: d.train_x.double(), lambda d: d.train_y.float(), lambda d: d.train_y + 10]):
        spoiled = vars(synthetic_splits())
        key = "train_x" if i == 0 else "train_y"
        spoiled[key] = spoil(data)
        with pytest.raises(ConfigError, match="must be float32 images and train_y int64 labels from 0 to 9"):
            run_experiment(CFG, tmp_path / f"c{i}", MNISTSplits(**spoiled), progress=False)
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# Divergence that is not NaN, models too big, Ctrl-C


def test_an_exploding_loss_stops_like_a_nan_and_keeps_the_finished_levels(command, tmp_path):
    code, error = command(tmp_path / "run", "--learning-rate", "30")
    assert code == 1 and one_line(error)
    assert "training diverged (loss NaN, infinite, or over 100 times its starting value) at level 0" in error


def test_a_model_too_big_for_memory_is_refused_in_one_line_naming_its_sizes(command, tmp_path):
    code, error = command(tmp_path / "run", "--fc1-width", "1000000000")
    assert code == 2 and one_line(error) and "784-1000000000-20-10" in error and "GiB" in error
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="does not fit"):
        run_experiment(tiny_config(fc1_width=10**9), tmp_path / "api", synthetic_splits(), progress=False)
    assert not (tmp_path / "api").exists()


def test_running_out_of_memory_during_a_run_is_one_line_and_exit_1(command, tmp_path, monkeypatch):
    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(experiment, "init_params", no_memory)
    code, error = command(tmp_path / "run")
    assert code == 1 and one_line(error) and "out of memory (CUDA out of memory" in error


INTERRUPT_WHILE_IMPORTING = """
import builtins, os, runpy, signal, sys
real_import = builtins.__import__

def interrupted(name, *args, **kwargs):
    if name == "pandas":
        os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, handled as the import goes on
    return real_import(name, *args, **kwargs)

builtins.__import__ = interrupted
sys.argv = ["-m", "--preset", "smoke"]  # as `python -m lth_helpers` has it while the package is imported
runpy.run_module("lth_helpers", run_name="__main__", alter_sys=True)
"""


def test_ctrl_c_while_the_package_is_imported_is_one_line_and_exit_130():
    done = subprocess.run([sys.executable, "-c", INTERRUPT_WHILE_IMPORTING], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 130 and one_line(done.stderr) and "interrupted" in done.stderr, done.stderr


@pytest.mark.parametrize("delay", [0.1, 0.3, 0.6, 1.0, 1.5])  # inside the imports of torch, pandas and the package
def test_ctrl_c_at_start_up_is_one_line_and_exit_130(delay, tmp_path):
    command = [sys.executable, "-m", "lth_helpers", *FLAGS, "--out", str(tmp_path / "run")]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, error = process.communicate(timeout=120)
    assert process.returncode == 130 and one_line(error) and "interrupted" in error, error


def test_a_reader_who_stops_reading_early_loses_no_file_and_sees_no_error(tmp_path):
    """`python -m lth_helpers ... | head -1`: the run's first line is read, then its stdout is closed."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "lth_helpers", *FLAGS, "--no-progress", "--out", str(out)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().startswith(CFG.run_name())
    process.stdout.close()  # every line printed from here on goes to a closed pipe
    error = process.stderr.read()
    assert process.wait(timeout=300) == 0 and error == "", error
    written = {path.name for path in out.iterdir()}
    assert {"inference.csv", "inference_latency.png", f"ticket_level_{CFG.rounds:02d}.pt"} <= written
