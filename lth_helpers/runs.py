"""The run folder: everything a run writes, saved level by level so that a rerun resumes after the last finished one.

    with RunFolder.open(Path("runs/seed"), cfg) as run:   # checked and locked: no other run can use it meanwhile
        run.save(INIT, tensors)                          # written whole, and listed in manifest.json
    results = RunFolder(Path("runs/seed")).results()     # reading needs no lock

Whoever starts a run opens its folder, once: the command line, or run_experiment for a Python caller. Every file
goes in through the open folder (write, save, save_table, save_figures), which lists it in manifest.json before it
writes it: --overwrite removes what the manifest lists. RunFolder(path) alone only reads.

The folder holds config.json, init.pt (theta_0 of every trial), rewind.pt (late rewinding only),
dense.pt (every trial's trained dense network), masks/level_NN.pt, tickets/level_NN.pt (trial 0's
trained ticket), results.csv, curves.csv and progress.json; a level counts as finished once
progress.json says so. The report adds its figures, inference.csv and the exported ticket; the
instability analysis, instability.csv and instability.png. Beside them, manifest.json lists every file this
tool wrote there.

Nothing outside the folder is ever read, written or removed: a symbolic link where the tool reads, writes or removes a
file (`masks` linked to another disk, a link listed in the manifest) is refused in one line naming it, never followed.

One way to write a file, `write_atomic`: to a temporary name in the same folder, synced to the disk, then renamed
into place, so a file is either whole or absent, after a kill or a power cut alike; a failed write (a full disk, no
permission) removes its temporary file and raises a WriteError saying what could not be written. One way to read
one, `read_checked`: whatever goes wrong (missing, cut short, garbage, wrong content, numbers out of range) raises a
DamagedFileError naming the file and the remedy, and changes nothing. Values are checked as they are read: masks
hold 0 and 1 and only shrink from level to level, weights are finite, the tables hold each network of each finished
level once; and progress.json records each table's row count, so that a table damaged later (a copy or a sync cut
short) is named rather than misread.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import torch

from .conditions import MASK_RULES, is_condition, mask_rules
from .config import METRICS, TRAIN_METRICS, Config
from .model import LAYERS, Params, layer_shapes
from .pruning import Masks

try:
    import fcntl  # POSIX: the lock that keeps two runs out of one folder
except ImportError:  # Windows: run folders are not locked
    fcntl = None

# The files of a run folder. A run reads back the first nine (its state); the report and the instability analysis
# write the rest.
CONFIG = "config.json"
PROGRESS = "progress.json"
INIT = "init.pt"
REWIND = "rewind.pt"
DENSE = "dense.pt"  # every trial's trained dense network (level 0's final weights): what the one-shot control prunes
RESULTS = "results.csv"
CURVES = "curves.csv"
MASKS, TICKETS, TRAINED = "masks", "tickets", "trained"  # folders of level files: masks/level_NN.pt, ...
INFERENCE_TABLE = "inference.csv"
MANIFEST = "manifest.json"  # the files this tool wrote in the folder: what --overwrite removes
LOCK_FILE = "run.lock"  # locked where the file system cannot lock the folder itself (NFS); empty, left in place
CLEARING = ".overwritten"  # --overwrite moves the tool's files here, then deletes it
STATE_FILES = (CONFIG, PROGRESS, INIT, REWIND, DENSE, RESULTS, CURVES)
LEVEL_FILE = re.compile(r"level_\d\d+\.pt")


def masks_file(level: int) -> str:
    """Every network's masks at `level`, by mask rule (conditions.mask_rules) and layer."""
    return f"{MASKS}/level_{level:02d}.pt"


def ticket_file(level: int) -> str:
    """Trial 0's trained ticket at `level`: the weights the report's inference forms and export start from."""
    return f"{TICKETS}/level_{level:02d}.pt"


def trained_file(level: int) -> str:
    """Every trial's trained ticket at `level`, kept where a control fine-tunes: the next level starts from it."""
    return f"{TRAINED}/level_{level:02d}.pt"


def exported_ticket_file(level: int) -> str:
    """The ticket of `level` exported in its smallest form (inference.smallest_form; load_ticket reads it)."""
    return f"ticket_level_{level:02d}.pt"


# The columns of the two tables, in order: experiment.level_rows and curve_rows write rows with these keys.
TABLE_COLUMNS = {
    RESULTS: (
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
    CURVES: ("level", "condition", "trial", "iteration", *METRICS),
}

T = TypeVar("T")


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


class RunFolder:
    """A run's folder: its files, the levels finished, the lock that keeps other runs out.

    `RunFolder(path)` reads; `RunFolder.open(path, cfg)` is the one way to write, and holds the folder until closed.
    """

    def __init__(self, path: Path, cfg: Config | None = None):
        self.path = Path(path)
        self._cfg = cfg
        self._lock: int | None = None  # the descriptor the lock is held on
        self._open = False
        self._manifest: set[str] | None = None
        self._last_masks: tuple[int, dict[str, torch.Tensor]] | None = None  # to check the next level's against

    @property
    def config(self) -> Config | None:
        """The run's config: the one it was opened with, else config.json's (None when there is none)."""
        if self._cfg is None:
            self._cfg = self.saved_config()
        return self._cfg

    # -----------------------------------------------------------------------------------------
    # Opening, holding, overwriting

    @classmethod
    def check(cls, path: Path, cfg: Config, overwrite: bool = False) -> None:
        """Raise RunFolderError if `path` cannot hold a run of `cfg`: a file stands there, a symbolic link stands on the
        way to a file the tool reads, writes or removes, a file stands where masks/ or tickets/ belong, it holds a run
        of another config, or a run's files without config.json (these two unless `overwrite`); DamagedFileError if
        its config.json or manifest.json cannot be read. Writes nothing: the command line checks its --out before
        loading the data."""
        cls(Path(path), cfg)._check(overwrite)

    @classmethod
    def open(cls, path: Path, cfg: Config, overwrite: bool = False) -> RunFolder:
        """Create the folder for `cfg`, or reopen it if it holds the same config; refuse another config (as `check`
        does), and a folder that another run is using, leaving it as it was. Use it as
        `with RunFolder.open(...) as run:` to hold the folder until the end.

        The folder is locked first and checked once it is held, so that no run can write its config between the
        check and the lock. A folder this process holds already is refused like any other: one run, one open.
        """
        path = Path(path)
        _check_place(path)
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path, cfg)
        made_lock_file = not (path / LOCK_FILE).exists()
        run._hold()
        try:
            new = run._check(overwrite)
        except BaseException:  # refused: the folder is left as it was, without the lock file this open made
            if made_lock_file:
                (path / LOCK_FILE).unlink(missing_ok=True)  # while still held: no other run can lock it meanwhile
            run.close()
            raise
        try:
            if overwrite:
                run.clear()
            for name in (MASKS, TICKETS):  # trained/ is made when a run first writes there
                (path / name).mkdir(exist_ok=True)
            if new:
                run.write(CONFIG, lambda tmp: tmp.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n"))
        except BaseException:
            run.close()
            raise
        return run

    def _check(self, overwrite: bool) -> bool:
        """`check` for this folder's config; returns whether config.json is still to be written (a new folder, or
        one being overwritten)."""
        _check_place(self.path)
        self._tool_files()  # refuses a link on the way to any file the tool reads, writes or removes
        for name in (MASKS, TICKETS, TRAINED):
            folder = self._file(name)
            if folder.exists() and not folder.is_dir():
                raise RunFolderError(
                    f"{folder} is a file; a run keeps its {name} in a folder of that name: move the file away, or "
                    f"choose another folder"
                )
        if overwrite:
            return True
        saved = self.saved_config()
        if saved is None:
            if (self.path / MANIFEST).exists():
                self._read_manifest()  # damaged: named now, before anything is written
            if [name for name in self._tool_files() if name != MANIFEST and not name.endswith(".tmp")]:
                raise RunFolderError(
                    f"{self.path} holds a run's files but no config.json, so which run they belong to is unknown; "
                    f"restore config.json, pass --overwrite to replace them, or choose another folder"
                )
            return True
        if saved.short_hash() != self._cfg.short_hash():
            changed = [k for k, v in self._cfg.to_dict().items() if k != "preset" and saved.to_dict()[k] != v]
            raise RunFolderError(
                f"{self.path} holds a run with another config (differs in {', '.join(changed)}); "
                f"choose another folder or pass --overwrite to replace it"
            )
        self._read_manifest()  # a run folder has one from its start: missing or unreadable, the folder is damaged
        return False

    def _hold(self) -> None:
        """Lock the folder for this process: two runs in one folder would each append every level's rows.

        An OS lock (flock) on the folder itself, which no file deleted inside it can undo, and which the OS drops when
        the process ends, however it ends: a killed run never leaves the folder locked. A file system that cannot
        lock a folder (NFS) locks run.lock instead; one without locks at all (and Windows, and a folder this process
        cannot write to, which no run can then damage) leaves the folder unguarded.
        """
        self._open = True
        try:
            self._lock = lock_folder(self.path, self._file(LOCK_FILE))
        except BlockingIOError:
            self._open = False
            raise RunFolderError(
                f"{self.path} is in use by another run (in another terminal or notebook); "
                f"wait for it to finish or stop it, or choose another folder"
            ) from None

    def close(self) -> None:
        """Let another run use the folder (closing the descriptor drops the lock); this RunFolder then only reads."""
        self._open = False
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def clear(self) -> None:
        """Remove every file this tool wrote here, and nothing else: all of them or, if one cannot be moved, none.

        The files are first moved into a side folder (renames in one folder: no data is copied), then the side
        folder is deleted; a failure while moving (or a Ctrl-C) moves the files back. Subfolders the tool made stay
        where a file of someone else's is inside them. Each file is moved as what it is in the folder: a link named
        like the side folder is removed as a link, never its target.
        """
        side = self.path / CLEARING
        names = sorted(self._tool_files(), key=_clearing_order)
        moved: list[str] = []
        try:
            if side.is_symlink() or (side.exists() and not side.is_dir()):
                side.unlink()
            shutil.rmtree(side, ignore_errors=True)  # left by a clear whose deletion was cut short
            os.mkdir(side)
            for name in names:
                os.replace(self._file(name), side / str(len(moved)))
                moved.append(name)
        except BaseException as error:  # an OSError, or Ctrl-C: every file goes back
            for i, name in reversed(list(enumerate(moved))):
                os.replace(side / str(i), self.path / name)
            if side.is_dir() and not side.is_symlink():
                side.rmdir()
            if not isinstance(error, OSError):
                raise
            raise RunFolderError(
                f"{self.path} could not be cleared: {_reason(error)}; nothing was removed; "
                f"fix that, or choose another folder"
            ) from None
        self._manifest, self._last_masks = set(), None
        for name in (MASKS, TICKETS, TRAINED):
            if (self.path / name).is_dir() and not any((self.path / name).iterdir()):
                (self.path / name).rmdir()
        shutil.rmtree(side, ignore_errors=True)

    def _tool_files(self) -> list[str]:
        """The files this tool wrote here that are present (relative names), with temporary ones, the manifest last;
        a RunFolderError names a symbolic link on the way to any of them.

        Those manifest.json lists, and, whatever it lists, the files a run reads back (config, progress, tensors,
        tables, masks and tickets), by their names: a new run in the folder would otherwise take them for its own.
        Where the manifest is missing or cannot be read, those alone.
        """
        try:
            names = read_checked(self._file(MANIFEST), _parse_manifest) | self._state_files()
        except DamagedFileError:
            names = self._state_files()
        candidates = [*sorted(names), *(f"{n}.tmp" for n in sorted(names)), f"{MANIFEST}.tmp", MANIFEST]
        return [n for n in candidates if self._file(n).is_file()]

    def _state_files(self) -> set[str]:
        """The files a run reads back, by their names: STATE_FILES and the level files in masks/ and tickets/."""
        names = set(STATE_FILES)
        for folder in (MASKS, TICKETS, TRAINED):
            if self._file(folder).is_dir():
                names |= {f"{folder}/{p.name}" for p in (self.path / folder).iterdir() if LEVEL_FILE.fullmatch(p.name)}
        return names

    def _file(self, name: str) -> Path:
        """The path of the file `name` (relative to the folder), refused with a RunFolderError where a symbolic link
        stands on the way to it inside the folder: the tool reads, writes and removes files only inside it."""
        path = self.path
        for part in Path(name).parts:
            path = path / part
            if path.is_symlink():
                raise RunFolderError(
                    f"{path} is a symbolic link (to {os.readlink(path)}); a run reads, writes and removes files only "
                    f"inside its folder, never through a link: put what it points to in its place, or choose another "
                    f"folder"
                )
        return path

    def _read_manifest(self) -> set[str]:
        """manifest.json's list, checked; an empty list in a folder that has none yet (a new one)."""
        if self._manifest is None:
            exists = self._file(MANIFEST).exists() or self.saved_config() is not None
            self._manifest = read_checked(self._file(MANIFEST), _parse_manifest) if exists else set()
        return self._manifest

    def _record(self, name: str) -> None:
        """List `name` in the manifest before it is written, so that --overwrite can remove it."""
        names = self._read_manifest()
        if name in names:
            return
        self._manifest = names | {name}
        text = json.dumps({"files": sorted(self._manifest)}, indent=1) + "\n"
        write_atomic(self._file(MANIFEST), lambda tmp: tmp.write_text(text))

    # -----------------------------------------------------------------------------------------
    # Writing: an open folder only

    def write(self, name: str, write: Callable[[Path], None]) -> None:
        """Write the file `name` (relative to the folder) whole or not at all, through `write(tmp)`, which fills a
        temporary file (write_atomic); listed in the manifest first. A failure is a WriteError that says the finished
        levels are kept."""
        if not self._open:
            raise RunFolderError(f"{self.path} is not open for writing; open it with RunFolder.open(path, cfg)")
        try:
            self._record(name)
            self._file(name).parent.mkdir(exist_ok=True)
            write_atomic(self._file(name), write)
        except WriteError as error:
            raise WriteError(
                f"could not write {error.file}: {error.reason}; the finished levels are kept in {self.path}: "
                f"free some space (or fix the permission) and run the same command again to resume",
                error.file,
                error.reason,
            ) from None

    def save(self, name: str, tensors: Mapping[str, Any]) -> None:
        """A dict of tensors (moved to the CPU), with torch.save. Serialized in memory first: torch's own file writer
        reports a full disk as a RuntimeError from C++, Python's as the OSError it is."""
        buffer = io.BytesIO()
        torch.save({k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in tensors.items()}, buffer)
        self.write(name, lambda tmp: tmp.write_bytes(buffer.getbuffer()))

    def save_table(self, name: str, table: pd.DataFrame) -> None:
        self.write(name, lambda tmp: table.to_csv(tmp, index=False))

    def save_figures(self, figures: Mapping[str, Any]) -> None:
        """matplotlib Figures, by file name, as PNG files."""
        for name, figure in figures.items():
            self.write(name, lambda tmp, figure=figure: figure.savefig(tmp, format="png", dpi=120))

    def save_masks(self, level: int, masks: dict[str, Masks]) -> None:
        flat = {f"{condition}.{layer}": m for condition, stack in masks.items() for layer, m in stack.items()}
        self.save(masks_file(level), flat)

    def cached(self, name: str, make: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The tensor file `name`, made (and saved) first if the folder has none."""
        if not self.exists(name):
            self.save(name, make())
        return self.load(name)

    def finish_level(self, level: int, rows: list[dict], curves: list[dict]) -> None:
        """Append the level's rows, then mark it finished: a crash in between only repeats the level."""
        counts = {}
        for name, new, old in ((RESULTS, rows, self.results()), (CURVES, curves, self.curves())):
            _check_table(name, pd.DataFrame(new))  # the tool writes only what it reads back
            table = pd.concat([old, pd.DataFrame(new)], ignore_index=True) if len(old) else pd.DataFrame(new)
            self.save_table(name, table)
            counts[name] = len(table)
        progress = json.dumps({"levels_done": level + 1, "rows": counts}) + "\n"
        self.write(PROGRESS, lambda tmp: tmp.write_text(progress))

    # -----------------------------------------------------------------------------------------
    # Reading, every file checked

    def exists(self, name: str) -> bool:
        return self._file(name).exists()

    def saved_config(self) -> Config | None:
        file = self._file(CONFIG)
        if not file.exists():
            return None
        return read_checked(file, lambda f: Config.from_dict(json.loads(f.read_text())))

    @property
    def levels_done(self) -> int:
        return self._progress()["levels_done"]

    def _progress(self) -> dict:
        """progress.json: the levels finished, and how many rows of each table they hold."""
        file = self._file(PROGRESS)
        if not file.exists():
            return {"levels_done": 0, "rows": {}}
        return read_checked(file, self._parse_progress)

    def _parse_progress(self, file: Path) -> dict:
        progress = json.loads(file.read_text())
        levels, rows = progress["levels_done"], progress["rows"]
        most = self.config.rounds + 1 if self.config is not None else None
        if not _is_count(levels) or (most is not None and levels > most):
            raise ValueError(f"levels_done is {levels!r}, not a whole number from 0 to {most}")
        if not isinstance(rows, dict) or not all(k in TABLE_COLUMNS and _is_count(v) for k, v in rows.items()):
            raise ValueError(f"rows is {rows!r}, not row counts of {RESULTS} and {CURVES}")
        return {"levels_done": levels, "rows": rows}

    def load(self, name: str) -> dict[str, torch.Tensor]:
        """A tensor file of the folder, checked: a dict of the tensors, names and shapes a run of its config saves;
        masks of 0 and 1, weights finite."""
        return read_checked(self._file(name), lambda file: self._parse_tensors(file, name))

    def _parse_tensors(self, file: Path, name: str, inside: tuple[int, dict] | None = None) -> dict[str, torch.Tensor]:
        """torch.load, checked; masks against `inside`, (level, masks) of the level before, whose masks they keep
        no weight outside of."""
        tensors = torch.load(file, weights_only=True)
        if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
            raise ValueError(f"it holds a {type(tensors).__name__}, not a dict of tensors")
        expected = self._shapes(name)
        if expected is not None:
            got = {k: tuple(v.shape) for k, v in tensors.items()}
            if got != expected:
                wrong = sorted(set(got.items()) ^ set(expected.items()))[0][0]
                raise ValueError(f"{wrong} is {got.get(wrong, 'missing')}, not {expected.get(wrong, 'expected')}")
        for key, value in tensors.items():
            if name.startswith(f"{MASKS}/") and not ((value == 0) | (value == 1)).all():
                raise ValueError(f"{key} holds values other than 0 and 1")
            if not name.startswith(f"{MASKS}/") and not torch.isfinite(value).all():
                raise ValueError(f"{key} holds NaN or infinite numbers, which no finished training leaves")
            nested = MASK_RULES[key.split(".")[0]].nested if key.split(".")[0] in MASK_RULES else True
            if inside is not None and nested and key in inside[1] and (value > inside[1][key]).any():
                raise ValueError(f"{key} keeps weights that level {inside[0]} pruned: masks only shrink")
        return tensors

    def _shapes(self, name: str) -> dict[str, tuple[int, ...]] | None:
        """The tensor names and shapes of the file `name` for this run's config (None: not known)."""
        cfg = self.config
        if cfg is None:
            return None
        shapes = layer_shapes(cfg.fc1_width, cfg.fc2_width)
        folder = name.split("/")[0]
        if folder == MASKS:
            return {f"{c}.{layer}": (cfg.trials, *shapes[layer]) for c in mask_rules(cfg.controls) for layer in LAYERS}
        n = 1 if folder == TICKETS else cfg.trials
        params = {}
        for layer in LAYERS:
            params[f"{layer}.weight"], params[f"{layer}.bias"] = (n, *shapes[layer]), (n, shapes[layer][0])
        return params

    def load_masks(self, level: int) -> dict[str, Masks]:
        """Every network's masks at `level`: mask rule (conditions.mask_rules) -> layer -> (trials, out, in); checked
        to lie inside the level before's, which is read too unless it was the last level read (levels read in order,
        as a run and its report read them, are each read once)."""
        inside = self._last_masks if self._last_masks and self._last_masks[0] == level - 1 else None
        if level and inside is None:
            inside = (level - 1, self.load(masks_file(level - 1)))
        name = masks_file(level)
        flat = read_checked(self._file(name), lambda file: self._parse_tensors(file, name, inside))
        self._last_masks = (level, flat)
        masks: dict[str, Masks] = {}
        for key, value in flat.items():
            condition, layer = key.split(".")
            masks.setdefault(condition, {})[layer] = value
        return masks

    def ticket_masks(self) -> Mapping[int, Masks]:
        """Each finished level's ticket masks (every trial), read when a level is asked for."""
        return _ByLevel(lambda level: self.load_masks(level)["ticket"], self.levels_done)

    def trained_tickets(self) -> Mapping[int, Params]:
        """Each finished level's trained ticket (trial 0, a stack of one), read when a level is asked for."""
        return _ByLevel(lambda level: self.load(ticket_file(level)), self.levels_done)

    def results(self) -> pd.DataFrame:
        return self._read_csv(RESULTS)

    def curves(self) -> pd.DataFrame:
        return self._read_csv(CURVES)

    def _read_csv(self, name: str) -> pd.DataFrame:
        """The rows of the finished levels, as many as progress.json recorded; rows of a level cut off before
        progress.json said it was finished are dropped."""
        progress = self._progress()
        if not progress["levels_done"]:
            return pd.DataFrame()

        def parse(file: Path) -> pd.DataFrame:
            text = file.read_bytes()
            if not text.endswith(b"\n"):
                raise ValueError("it ends in the middle of a row")
            table = pd.read_csv(io.BytesIO(text))  # the bytes just checked: the file is read once
            _check_table(name, table)
            finished = table[table["level"] < progress["levels_done"]].reset_index(drop=True)
            recorded = progress["rows"].get(name)
            if len(finished) != recorded:
                raise ValueError(f"{len(finished)} rows of finished levels, progress.json recorded {recorded}")
            _check_networks(name, finished, progress["levels_done"], self.config)
            return finished

        return read_checked(self._file(name), parse)


class _ByLevel(Mapping[int, T]):
    """Level -> `read(level)`, for the levels 0 to `levels` - 1, each read when it is asked for."""

    def __init__(self, read: Callable[[int], T], levels: int):
        self._read, self._levels = read, levels

    def __getitem__(self, level: int) -> T:
        if level not in range(self._levels):
            raise KeyError(level)
        return self._read(level)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self._levels))

    def __len__(self) -> int:
        return self._levels


def _check_place(path: Path) -> None:
    """Raise RunFolderError where a file stands at `path` or above it: a run needs a folder."""
    nearest = next(p for p in (path, *path.parents) if p.exists())
    if not nearest.is_dir():
        where = f"{path} is a file" if nearest == path else f"{nearest} is a file, so {path} cannot be made"
        raise RunFolderError(f"{where}: a run needs a folder; choose another")


def _check_table(name: str, table: pd.DataFrame) -> None:
    """Raise ValueError unless `table` has the columns this tool writes into `name`, numbers where numbers belong."""
    if tuple(table.columns) != TABLE_COLUMNS[name]:
        raise ValueError(f"its columns are not those of a run's {name}: {', '.join(map(str, table.columns))}")
    if not len(table):  # no rows, no values to check (pandas reads the columns of a header alone as text)
        return
    strange = [c for c in dict.fromkeys(table["condition"]) if not is_condition(c)]
    if strange:
        raise ValueError(f"its condition column holds {strange[0]!r}, which names no condition")
    for column in ("level", "trial", "iteration", "weights_remaining", "early_stop_iteration"):
        if column in table and not pd.api.types.is_integer_dtype(table[column]):
            raise ValueError(f"its {column} column holds other things than whole numbers")
    for column in set(table.columns) - {"condition"}:
        if not pd.api.types.is_numeric_dtype(table[column]):
            raise ValueError(f"its {column} column holds other things than numbers")


def _check_networks(name: str, table: pd.DataFrame, levels: int, cfg: Config | None) -> None:
    """Raise ValueError unless `table`, the rows of `levels` finished levels, holds no row twice and (where the config
    is known) the rows of every network each level trained, and no other: results and progress agree."""
    keys = ["level", "condition", "trial", *(["iteration"] if name == CURVES else [])]
    twice = table[table.duplicated(keys)]
    if len(twice):
        row = twice.iloc[0]
        raise ValueError(f"its row of level {row.level}, condition {row.condition}, trial {row.trial} appears twice")
    if cfg is None:
        return
    trained = {
        (level, condition, trial)
        for level in range(levels)
        for condition in cfg.level_conditions(level)
        for trial in range(cfg.trials)
    }
    held = set(zip(table["level"].tolist(), table["condition"].tolist(), table["trial"].tolist()))
    missing, extra = sorted(trained - held), sorted(held - trained)
    if missing:
        level, condition, trial = missing[0]
        raise ValueError(f"level {level} has no row for condition {condition}, trial {trial}")
    if extra:
        level, condition, trial = extra[0]
        raise ValueError(
            f"it has rows for level {level}, condition {condition}, trial {trial}, which the run never trains"
        )


def lock_folder(folder: Path, lock_file: Path) -> int | None:
    """Lock `folder` for this process with an OS lock (flock) on the folder itself, or on `lock_file` where the file
    system cannot lock a folder (NFS); returns the descriptor that holds it (closing it drops the lock, as does the end
    of the process, however it ends), or None where nothing can be locked (Windows, a file system without locks, a
    folder this process cannot write to). Raises BlockingIOError when another process holds the lock."""
    if fcntl is None:
        return None
    for target, flags in ((folder, os.O_RDONLY), (lock_file, os.O_WRONLY | os.O_CREAT)):
        try:
            handle = os.open(target, flags, 0o666)
        except OSError:
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise
        except OSError:  # this file system cannot lock it
            os.close(handle)
            continue
        return handle
    return None


# ---------------------------------------------------------------------------------------------
# One way to write a file, one way to read one


def write_atomic(file: Path, write: Callable[[Path], None]) -> None:
    """Write `file` whole or not at all: `write(tmp)` fills a temporary file beside it, which is synced to the disk
    before it is renamed into place; the folder is synced after the rename, so that the rename lasts too.

    A reader, a run killed meanwhile, or a power cut sees the old file or the new one, never half of one. Any OSError
    (a full disk, no permission) removes the temporary file and becomes a WriteError that names the file.
    """
    file = Path(file)
    tmp = file.with_name(file.name + ".tmp")
    try:
        tmp.unlink(missing_ok=True)  # left by a killed write, or a link: never written through
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, file)
        _sync_folder(file.parent)
    except BaseException as error:  # a full disk, or Ctrl-C: no temporary file is left behind
        tmp.unlink(missing_ok=True)
        if not isinstance(error, OSError):
            raise
        raise WriteError(f"could not write {file}: {_reason(error)}", file, _reason(error)) from None


def _sync_folder(folder: Path) -> None:
    """Make the renames in `folder` last through a power cut. Windows cannot open a folder, and some file systems
    (network and FUSE mounts) cannot sync one: there, a rename lasts as the system makes it."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(handle)


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
    return {PROGRESS: 0, CONFIG: 2, MANIFEST: 3}.get(name, 1)
