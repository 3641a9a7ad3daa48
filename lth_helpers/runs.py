"""The run folder: everything a run writes, saved level by level so that a rerun resumes after the last finished one.

    with RunFolder.open(Path("runs/seed"), cfg) as run:   # held: no other run can write there meanwhile
        run.save("init.pt", tensors)

The folder holds config.json, init.pt (theta_0 of every trial), rewind.pt (late rewinding only),
dense.pt (every trial's trained dense network), masks/level_NN.pt, tickets/level_NN.pt (trial 0's
trained ticket), results.csv, curves.csv and progress.json; a level counts as finished once
progress.json says so. Beside them, manifest.json lists every file this tool wrote there (what
--overwrite removes) and run.lock is the lock.

One way to write a file, `write_atomic`: to a temporary name in the same folder, then renamed into place, so a
file is either whole or absent; a failed write (a full disk, no permission) removes its temporary file and raises
a RunFolderError saying what could not be written. One way to read one, `read_checked`: whatever goes wrong
(missing, cut short, garbage, wrong content, numbers out of range) raises a RunFolderError naming the file and the
remedy, and changes nothing. progress.json records each table's row count, so that a table damaged later (a copy
or a sync cut short) is named rather than misread.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

import pandas as pd
import torch

from .config import CONDITIONS, Config
from .model import LAYERS, layer_shapes
from .pruning import Masks
from .training import METRICS, TRAIN_METRICS

try:
    import fcntl  # POSIX: the lock that keeps two runs out of one folder
except ImportError:  # Windows: run folders are not locked
    fcntl = None

LOCK_FILE = "run.lock"  # held (flock) by the run using the folder; empty, and left in place
MANIFEST = "manifest.json"  # the files this tool wrote in the folder: all that --overwrite removes
CLEARING = ".overwritten"  # --overwrite moves the tool's files here, then deletes it
SUBFOLDERS = ("masks", "tickets")
# The columns of the two tables, in order (experiment.level_rows and curve_rows write them; a test holds them equal).
TABLE_COLUMNS = {
    "results.csv": (
        "level",
        "condition",
        "trial",
        "weights_remaining",
        "percent_remaining",
        *(f"{name}_remaining" for name in LAYERS),
        "early_stop_iteration",
        "early_stop_val_loss",
        "early_stop_test_accuracy",
        "final_test_accuracy",
        "final_test_loss",
        *(f"final_{name}" for name in TRAIN_METRICS),
        "train_seconds",
    ),
    "curves.csv": ("level", "condition", "trial", "iteration", *METRICS),
}
# The files of a run folder written before manifests existed: the names this tool gives its files.
LEGACY_FILES = ("config.json", "init.pt", "rewind.pt", "results.csv", "curves.csv", "progress.json", "inference.csv")
# Files of later versions, which a folder whose manifest cannot be read may hold too.
NEWER_FILES = ("dense.pt", "instability.csv", "instability.png")
LEVEL_FILE = re.compile(r"(masks/level_|tickets/level_|ticket_level_)\d\d+\.pt")

T = TypeVar("T")


def mask_conditions(cfg: Config) -> tuple[str, ...]:
    """The conditions whose masks a level's mask file holds: the ticket's, the random control's, and the one-shot
    control's when the config trains it (the reinit control uses the ticket's)."""
    return ("ticket", "random_prune", *(("one_shot",) if "one_shot" in cfg.controls else ()))


class RunFolderError(RuntimeError):
    """The run folder cannot be used: another config or another run holds it, a file is damaged, a write failed.
    The message is one line and says what to do."""


class DamagedFileError(RunFolderError):
    """A file of the run folder cannot be read back; the folder is left as it was."""


class WriteError(RunFolderError):
    """A file could not be written (a full disk, no permission); its old version, if any, is intact."""

    def __init__(self, message: str, file: Path, reason: str):
        super().__init__(message)
        self.file, self.reason = file, reason


_held: dict[Path, RunFolder] = {}  # the folders this process holds, by resolved path


class RunFolder:
    """A run's folder: its files, the levels finished, the lock that keeps other runs out."""

    def __init__(self, path: Path, cfg: Config | None = None):
        self.path = Path(path)
        self._cfg = cfg
        self._lock: IO | None = None
        self._holds = 0  # nested opens of this folder by this process
        self._manifest: set[str] | None = None

    @property
    def config(self) -> Config | None:
        """The run's config: the one it was opened with, else config.json's (None when there is none)."""
        if self._cfg is None:
            self._cfg = self.saved_config()
        return self._cfg

    # -----------------------------------------------------------------------------------------
    # Opening, holding, overwriting

    @classmethod
    def check(cls, path: Path, cfg: Config, overwrite: bool = False) -> Config | None:
        """Raise RunFolderError if `path` cannot hold a run of `cfg`: a file stands there, it holds a run of another
        config, a damaged config.json, or a run's files without config.json (each unless `overwrite`). Writes
        nothing. Returns the config saved there, if any (None when overwriting)."""
        nearest = next(p for p in (path, *path.parents) if p.exists())
        if not nearest.is_dir():
            where = f"{path} is a file" if nearest == path else f"{nearest} is a file, so {path} cannot be made"
            raise RunFolderError(f"{where}: a run needs a folder; choose another")
        if overwrite:
            return None
        folder = cls(path)
        saved = folder.saved_config()
        folder._read_manifest()  # damaged: named now, before anything is written
        if saved is None and [n for n in folder.tool_files(existing=True) if n != MANIFEST and n[-4:] != ".tmp"]:
            raise RunFolderError(
                f"{path} holds a run's files but no config.json, so which run they belong to is unknown; "
                f"restore config.json, pass --overwrite to replace them, or choose another folder"
            )
        if saved is not None and saved.short_hash() != cfg.short_hash():
            changed = [k for k, v in cfg.to_dict().items() if k != "preset" and saved.to_dict()[k] != v]
            raise RunFolderError(
                f"{path} holds a run with another config (differs in {', '.join(changed)}); "
                f"choose another folder or pass --overwrite to replace it"
            )
        return saved

    @classmethod
    def open(cls, path: Path, cfg: Config, overwrite: bool = False) -> RunFolder:
        """Create the folder for `cfg`, or reopen it if it holds the same config; refuse another config, and a folder
        that another run is using. Use it as `with RunFolder.open(...) as run:` to hold the folder until the end.

        Holding is re-entrant within a process: opening a folder this process already holds (for `cfg`) returns the
        same RunFolder and neither checks the files again nor clears them. So the command line holds the folder from
        its first read to its last figure while `run_experiment`, called inside, opens it as it does when called
        alone (from the notebook, which writes its figures after the run has let the folder go).
        """
        path = Path(path)
        held = _held.get(path.resolve())
        if held is not None:
            if held.config is not None and held.config.short_hash() != cfg.short_hash():
                raise RunFolderError(f"{path} is held by this process for a run of another config")
            held._holds += 1
            return held
        cls.check(path, cfg, overwrite)  # before anything is written
        run = cls(path, cfg)
        path.mkdir(parents=True, exist_ok=True)
        run._hold()
        try:
            saved = cls.check(path, cfg, overwrite)  # again, now held: a run that held it may have left its config
            if overwrite:
                run.clear()
            elif not (path / MANIFEST).exists():  # a folder of a version without manifests: list its files now
                for name in run.tool_files(existing=True):
                    run.record(path / name)
            for name in SUBFOLDERS:
                (path / name).mkdir(exist_ok=True)
            if saved is None:  # a new folder, or one overwritten (check returns None then)
                run.write("config.json", lambda tmp: tmp.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n"))
        except BaseException:
            run.release()
            raise
        return run

    def _hold(self) -> None:
        """Lock the folder for this process: two runs in one folder would each append every level's rows.

        An OS lock (flock) on run.lock, which the OS drops when the process ends, however it ends: a killed
        run never leaves the folder locked. Where there is no such lock (Windows, a file system without locks,
        a folder this process cannot write to, which no run can then damage) the folder is not guarded.
        """
        self._holds = 1
        _held[self.path.resolve()] = self
        if fcntl is None:
            return
        try:
            handle = open(self.path / LOCK_FILE, "a")
        except OSError:
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            del _held[self.path.resolve()]
            raise RunFolderError(
                f"{self.path} is in use by another run (in another terminal or notebook); "
                f"wait for it to finish or stop it, or choose another folder"
            ) from None
        except OSError:  # the file system has no locks
            handle.close()
            return
        self._lock = handle

    def release(self) -> None:
        """Undo one open; the last lets another run use the folder (closing the file drops the lock)."""
        self._holds -= 1
        if self._holds > 0:
            return
        _held.pop(self.path.resolve(), None)
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def clear(self) -> None:
        """Remove every file this tool wrote here, and nothing else: all of them or, if one cannot be moved, none.

        The files are first moved into a side folder (renames in one folder: no data is copied), then the side
        folder is deleted; a failure while moving moves the files back. Subfolders the tool made stay where a file
        of someone else's is inside them.
        """
        side = self.path / CLEARING
        shutil.rmtree(side, ignore_errors=True)  # left by a clear whose deletion was cut short
        names = sorted(self.tool_files(existing=True), key=_clearing_order)
        side.mkdir()
        moved: list[str] = []
        try:
            for name in names:
                os.replace(self.path / name, side / str(len(moved)))
                moved.append(name)
        except BaseException as error:  # an OSError, or Ctrl-C: every file goes back
            for i, name in reversed(list(enumerate(moved))):
                os.replace(side / str(i), self.path / name)
            side.rmdir()
            if not isinstance(error, OSError):
                raise
            raise RunFolderError(
                f"{self.path} could not be cleared: {_reason(error)}; nothing was removed; "
                f"fix that, or choose another folder"
            ) from None
        self._manifest = set()
        for name in SUBFOLDERS:
            if (self.path / name).is_dir() and not any((self.path / name).iterdir()):
                (self.path / name).rmdir()
        shutil.rmtree(side, ignore_errors=True)

    def tool_files(self, existing: bool = False) -> list[str]:
        """The files this tool wrote here (relative names), the manifest last; with `existing`, those present.

        From manifest.json; a folder without one (written before manifests existed), or whose manifest cannot be
        read, is taken to hold the files with the names this tool gives its files.
        """
        try:
            names = self._read_manifest()
        except DamagedFileError:
            names = None
        if names is None:
            from .plotting import FIGURES, INFERENCE_FIGURE  # here: plotting imports this module

            names = {*LEGACY_FILES, *NEWER_FILES, *FIGURES, INFERENCE_FIGURE, *self._level_files()}
        candidates = [*sorted(names), *(f"{n}.tmp" for n in sorted(names)), f"{MANIFEST}.tmp", MANIFEST]
        return [n for n in candidates if not existing or (self.path / n).is_file()]

    def _level_files(self) -> list[str]:
        found = []
        for folder in (self.path, *(self.path / name for name in SUBFOLDERS)):
            if folder.is_dir():
                names = (p.relative_to(self.path).as_posix() for p in folder.iterdir())
                found += [n for n in names if LEVEL_FILE.fullmatch(n)]
        return found

    def _read_manifest(self) -> set[str] | None:
        if self._manifest is None and (self.path / MANIFEST).exists():
            self._manifest = read_checked(self.path / MANIFEST, _parse_manifest)
        return self._manifest

    def record(self, file: Path) -> None:
        """Add `file` (inside the folder) to the manifest before it is written, so --overwrite can remove it."""
        name = Path(file).resolve().relative_to(self.path.resolve()).as_posix()
        names = self._read_manifest() or set()
        if name in names or name == MANIFEST:
            return
        self._manifest = names | {name}
        text = json.dumps({"files": sorted(self._manifest)}, indent=1) + "\n"
        _replace(self.path / MANIFEST, lambda tmp: tmp.write_text(text))

    # -----------------------------------------------------------------------------------------
    # Reading and writing the run's files

    def write(self, name: str, write: Callable[[Path], None]) -> None:
        """Write the file `name` of the folder atomically: `write(tmp)` fills a temporary file."""
        write_atomic(self.path / name, write)

    def saved_config(self) -> Config | None:
        file = self.path / "config.json"
        if not file.exists():
            return None
        return read_checked(file, lambda f: Config.from_dict(json.loads(f.read_text())))

    @property
    def levels_done(self) -> int:
        return self._progress()["levels_done"]

    def _progress(self) -> dict:
        """progress.json: the levels finished, and how many rows of each table they hold."""
        file = self.path / "progress.json"
        if not file.exists():
            return {"levels_done": 0, "rows": {}}
        return read_checked(file, self._parse_progress)

    def _parse_progress(self, file: Path) -> dict:
        progress = json.loads(file.read_text())
        levels, rows = progress["levels_done"], progress.get("rows", {})
        most = self.config.rounds + 1 if self.config is not None else None
        if not _is_count(levels) or (most is not None and levels > most):
            raise ValueError(f"levels_done is {levels!r}, not a whole number from 0 to {most}")
        if not isinstance(rows, dict) or not all(
            k in ("results.csv", "curves.csv") and _is_count(v) for k, v in rows.items()
        ):
            raise ValueError(f"rows is {rows!r}, not row counts of results.csv and curves.csv")
        return {"levels_done": levels, "rows": rows}

    def cached(self, name: str, make: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        if not (self.path / name).exists():
            self.save(name, make())
        return self.load(name)

    def save(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        save_tensors(self.path / name, {k: v.cpu() for k, v in tensors.items()})

    def load(self, name: str) -> dict[str, torch.Tensor]:
        """A tensor file of the folder, checked: a dict of the tensors, names and shapes a run of its config saves."""
        return read_checked(self.path / name, lambda file: self._parse_tensors(file, name))

    def _parse_tensors(self, file: Path, name: str) -> dict[str, torch.Tensor]:
        tensors = torch.load(file, weights_only=True)
        if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
            raise ValueError(f"it holds a {type(tensors).__name__}, not a dict of tensors")
        expected = self._shapes(name)
        if expected is not None:
            got = {k: tuple(v.shape) for k, v in tensors.items()}
            if got != expected:
                wrong = sorted(set(got.items()) ^ set(expected.items()))[0][0]
                raise ValueError(f"{wrong} is {got.get(wrong, 'missing')}, not {expected.get(wrong, 'expected')}")
        return tensors

    def _shapes(self, name: str) -> dict[str, tuple[int, ...]] | None:
        """The tensor names and shapes of the file `name` for this run's config (None: not known)."""
        cfg = self.config
        if cfg is None:
            return None
        shapes = layer_shapes(cfg.fc1_width, cfg.fc2_width)
        if name.startswith("masks/"):
            return {f"{c}.{layer}": (cfg.trials, *shapes[layer]) for c in mask_conditions(cfg) for layer in LAYERS}
        n = 1 if name.startswith("tickets/") else cfg.trials
        params = {}
        for layer in LAYERS:
            params[f"{layer}.weight"], params[f"{layer}.bias"] = (n, *shapes[layer]), (n, shapes[layer][0])
        return params

    def save_masks(self, level: int, masks: dict[str, Masks]) -> None:
        flat = {f"{condition}.{layer}": m for condition, stack in masks.items() for layer, m in stack.items()}
        self.save(f"masks/level_{level:02d}.pt", flat)

    def load_masks(self, level: int) -> dict[str, Masks]:
        masks: dict[str, Masks] = {}
        for key, value in self.load(f"masks/level_{level:02d}.pt").items():
            condition, layer = key.split(".")
            masks.setdefault(condition, {})[layer] = value
        return masks

    def results(self) -> pd.DataFrame:
        return self._read_csv("results.csv")

    def curves(self) -> pd.DataFrame:
        return self._read_csv("curves.csv")

    def _read_csv(self, name: str) -> pd.DataFrame:
        """The rows of the finished levels, as many as progress.json recorded; rows of a level cut off before
        progress.json said it was finished are dropped."""
        progress = self._progress()
        if not progress["levels_done"]:
            return pd.DataFrame()
        recorded = progress["rows"].get(name)  # run folders of older versions recorded no counts

        def parse(file: Path) -> pd.DataFrame:
            text = file.read_bytes()
            if not text.endswith(b"\n"):
                raise ValueError("it ends in the middle of a row")
            table = pd.read_csv(io.BytesIO(text))  # the bytes just checked: the file is read once
            _check_table(name, table)
            finished = table[table["level"] < progress["levels_done"]].reset_index(drop=True)
            if recorded is not None and len(finished) != recorded:
                raise ValueError(f"{len(finished)} rows of finished levels, progress.json recorded {recorded}")
            return finished

        return read_checked(self.path / name, parse)

    def finish_level(self, level: int, rows: list[dict], curves: list[dict]) -> None:
        """Append the level's rows, then mark it finished: a crash in between only repeats the level."""
        counts = {}
        for name, new, old in (("results.csv", rows, self.results()), ("curves.csv", curves, self.curves())):
            table = pd.concat([old, pd.DataFrame(new)], ignore_index=True) if len(old) else pd.DataFrame(new)
            self.write(name, lambda tmp, table=table: table.to_csv(tmp, index=False))
            counts[name] = len(table)
        progress = json.dumps({"levels_done": level + 1, "rows": counts}) + "\n"
        self.write("progress.json", lambda tmp: tmp.write_text(progress))


def _check_table(name: str, table: pd.DataFrame) -> None:
    """Raise ValueError unless `table` has the columns this tool writes into `name`, numbers where numbers belong."""
    if tuple(table.columns) != TABLE_COLUMNS[name]:
        raise ValueError(f"its columns are not those of a run's {name}: {', '.join(map(str, table.columns))}")
    if not set(table["condition"]) <= set(CONDITIONS):
        raise ValueError(f"its condition column holds other things than {', '.join(CONDITIONS)}")
    for column in ("level", "trial", "iteration", "weights_remaining", "early_stop_iteration"):
        if column in table and not pd.api.types.is_integer_dtype(table[column]):
            raise ValueError(f"its {column} column holds other things than whole numbers")
    for column in set(table.columns) - {"condition"}:
        if not pd.api.types.is_numeric_dtype(table[column]):
            raise ValueError(f"its {column} column holds other things than numbers")


# ---------------------------------------------------------------------------------------------
# One way to write a file, one way to read one


def write_atomic(file: Path, write: Callable[[Path], None]) -> None:
    """Write `file` through `write(tmp)` into a temporary file beside it, then rename that into place.

    A reader (or a run killed meanwhile) sees the old file or the new one, never half of one. A file written into a
    folder this process holds is first recorded in that folder's manifest. Any OSError (a full disk, no permission)
    removes the temporary file and becomes a WriteError (a RunFolderError) that names the file.
    """
    file = Path(file)
    holder = _holder_of(file)
    try:
        if holder is not None:
            holder.record(file)
        _replace(file, write)
    except OSError as error:
        folder = file.parent if holder is None else holder.path
        raise WriteError(
            f"could not write {file}: {_reason(error)}; the finished levels are kept in {folder}: "
            f"free some space (or fix the permission) and run the same command again to resume",
            file,
            _reason(error),
        ) from None


def save_tensors(file: Path, tensors: object) -> None:
    """torch.save, through write_atomic. Serialized in memory first: torch's own file writer reports a full disk as
    a RuntimeError from C++, Python's as the OSError it is."""
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    write_atomic(file, lambda tmp: tmp.write_bytes(buffer.getbuffer()))


def _replace(file: Path, write: Callable[[Path], None]) -> None:
    tmp = file.with_name(file.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, file)
    except BaseException:  # a full disk, or Ctrl-C: no temporary file is left behind
        tmp.unlink(missing_ok=True)
        raise


def _holder_of(file: Path) -> RunFolder | None:
    where = file.resolve().parent
    return next((run for path, run in _held.items() if where == path or path in where.parents), None)


def read_checked(file: Path, parse: Callable[[Path], T]) -> T:
    """`parse(file)`, with any failure (missing, cut short, garbage, wrong content) a DamagedFileError naming
    `file`: a run folder damaged by a failed copy or sync, an edit, a deletion."""
    try:
        return parse(file)
    except RunFolderError:
        raise
    except Exception as error:
        raise DamagedFileError(
            f"{file} cannot be read ({type(error).__name__}: {_reason(error)}); the run folder is damaged: "
            f"restore that file, start the run again with --overwrite (in Python: overwrite=True), or choose "
            f"another folder"
        ) from None


def _reason(error: BaseException) -> str:
    """The first sentence of an error's message, on one line (torch's explanations run to several sentences)."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return " ".join(str(error).split()).split(". ")[0] or type(error).__name__


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _parse_manifest(file: Path) -> set[str]:
    names = json.loads(file.read_text())["files"]
    if not isinstance(names, list) or not all(_inside(name) for name in names):
        raise ValueError("files is not a list of names inside the folder")
    return set(names)


def _inside(name: object) -> bool:
    """A relative name that stays inside the folder: --overwrite removes what the manifest names."""
    return isinstance(name, str) and not Path(name).is_absolute() and ".." not in Path(name).parts


def _clearing_order(name: str) -> int:
    """progress.json first, config.json and the manifest last: a clear cut short leaves a run with no level
    finished, which resumes or is overwritten, never results without their config."""
    return {"progress.json": 0, "config.json": 2, MANIFEST: 3}.get(name, 1)
