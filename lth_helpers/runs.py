"""The run folder: everything a run writes, saved level by level so that a rerun resumes after the last finished one.

    with RunFolder.open(Path("runs/seed"), cfg) as run:   # checked and locked: no other run can use it meanwhile
        run.save(INIT, tensors)                          # written whole (files.write_atomic), listed in manifest.json
    results = RunFolder(Path("runs/seed")).results()     # reading needs no lock, every file checked as it is read

Opened to resume, it first checks every file the run will read (check_state). --overwrite removes every file the tool
writes and nothing else. A symbolic link where the tool reads, writes or removes a file is refused, never followed.
The files, their format and what each command promises: docs/run-folder.md.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from . import files
from .conditions import MASK_RULES, fine_tunes, mask_rules
from .config import Config
from .files import DamagedFileError, RunFolderError, WriteError, read_checked, write_atomic
from .model import LAYERS, Params, layer_shapes
from .pruning import Masks
from .tables import CURVES, RESULTS, TABLE_COLUMNS, check_table, read_table

# The files of a run folder. A run reads back the first seven and the level files (its state).
CONFIG, PROGRESS, INIT, REWIND = "config.json", "progress.json", "init.pt", "rewind.pt"
DENSE = "dense.pt"  # every trial's trained dense network (level 0's final weights): what the one-shot control prunes
STATE_FILES = (CONFIG, PROGRESS, INIT, REWIND, DENSE, RESULTS, CURVES)
MASKS, TICKETS, TRAINED = "masks", "tickets", "trained"  # folders of level files: masks/level_NN.pt, ...
INFERENCE_TABLE = "inference.csv"
MANIFEST = "manifest.json"  # every file this tool wrote in the folder
LOCK_FILE = "run.lock"  # locked where the file system cannot lock the folder itself (NFS); empty
# Every file a command of the tool writes (the figures: plotting's names, which runs may not import; a test holds the
# two lists equal): --overwrite removes them, manifest or not.
TOOL_FILES = (
    *STATE_FILES,
    *("accuracy_vs_weights.png", "early_stop_vs_weights.png", "accuracy_curves.png", "generalization.png"),
    *("masks_input_pixels.png", "layer_sparsity.png", "accuracy_at_init.png", "initial_weights.png"),
    *("supermasks.png", "condition_grid.png", INFERENCE_TABLE, "inference_latency.png"),
    *("instability.csv", "instability.png", MANIFEST),
)
LEVEL_FILE = re.compile(r"(?:(?:masks|tickets|trained)/level_|ticket_level_)\d\d+\.pt")
FORMAT = 2  # config.json's "format": 2 from the format marker on; a config.json without one is format 1


def masks_file(level: int) -> str:  # every network's masks at `level`, by mask rule (conditions.mask_rules), layer
    return f"{MASKS}/level_{level:02d}.pt"


def ticket_file(level: int) -> str:  # trial 0's trained ticket: what the report's inference forms and export take
    return f"{TICKETS}/level_{level:02d}.pt"


def trained_file(level: int) -> str:  # every trial's trained ticket, for conditions that fine-tune it
    return f"{TRAINED}/level_{level:02d}.pt"


def exported_ticket_file(level: int) -> str:  # the ticket in its smallest form (inference.smallest_form)
    return f"ticket_level_{level:02d}.pt"


class RunFolder:
    """A run's folder: its files, the levels finished, the lock that keeps other runs out.

    `RunFolder(path)` reads; `RunFolder.open(path, cfg)` is the one way to write, and holds the folder until closed.
    """

    def __init__(self, path: Path, cfg: Config | None = None):
        self.path, self._cfg = Path(path), cfg
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

    @property
    def format(self) -> int:
        """config.json's "format" (1 without one); FORMAT where there is no config.json yet."""
        return (self._saved() or (None, FORMAT))[1]

    @classmethod
    def check(cls, path: Path, cfg: Config, overwrite: bool = False) -> None:
        """Raise RunFolderError if `path` cannot hold a run of `cfg`: a file or a symbolic link where the tool needs a
        folder or a file, a run of another config, a run's files without config.json (these two unless `overwrite`);
        DamagedFileError if its config.json or manifest.json cannot be read. Writes nothing."""
        cls(Path(path), cfg)._check(overwrite)

    @classmethod
    def open(cls, path: Path, cfg: Config, overwrite: bool = False) -> RunFolder:
        """Create the folder for `cfg`, or reopen it if it holds the same config (`check_state` first); refuse what
        `check` refuses, a damaged file, and a folder another run (or this process) holds, leaving it as it was. Locked
        first and checked once held, so that no run can write its config in between."""
        path = Path(path)
        files.check_place(path)
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path, cfg)
        made_lock_file = not (path / LOCK_FILE).exists()
        run._hold()
        try:
            new = run._check(overwrite)
            if not new:
                run.check_state()
        except BaseException:  # refused: the folder is left as it was, without the lock file this open made
            if made_lock_file:
                (path / LOCK_FILE).unlink(missing_ok=True)  # while still held: no other run can lock it meanwhile
            run.close()
            raise
        try:
            if overwrite:
                run.clear()
            for name in (MASKS, TICKETS):
                (path / name).mkdir(exist_ok=True)
            if new:
                config = json.dumps({**cfg.to_dict(), "format": FORMAT}, indent=2) + "\n"
                run.write(CONFIG, lambda tmp: tmp.write_text(config))
        except BaseException:
            run.close()
            raise
        return run

    def _check(self, overwrite: bool) -> bool:
        """`check` for this folder's config; returns whether config.json is to be written (a new or cleared folder)."""
        files.check_place(self.path)
        self._tool_files()  # refuses a link on the way to any file the tool reads, writes or removes
        for name in (MASKS, TICKETS, TRAINED):
            if self._file(name).exists() and not self._file(name).is_dir():
                raise RunFolderError(
                    f"{self._file(name)} is a file; a run keeps its {name} in a folder of that name: move the file "
                    f"away, or choose another folder"
                )
        if overwrite:
            return True
        saved = self.saved_config()
        if saved is None:
            if (self.path / MANIFEST).exists():
                self._read_manifest()  # damaged: named now, before anything is written
            if any(n not in (MANIFEST, LOCK_FILE) and not n.endswith(".tmp") for n in self._tool_files()):
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
        if saved.rewind_iteration and self.format < 2 and self.levels_done <= saved.rounds:
            raise RunFolderError(
                f"{self.path} holds an unfinished late-rewinding run of an older version of this tool, whose pruned "
                f"levels trained {saved.iterations:,} iterations after the rewind where this one trains from iteration "
                f"{saved.rewind_iteration:,} to {saved.iterations:,}: it cannot be resumed alike; pass --overwrite to "
                f"start it afresh, or choose another folder"
            )
        return False

    def check_state(self) -> None:
        """Read and check every file a run of this folder reads from here on (training the levels left, then the
        report): DamagedFileError names the first that cannot be read, before anything is trained or written."""
        cfg, done = self.config, self.levels_done
        if self.exists(INIT):
            self.load(INIT)
        if done:
            self.results(), self.curves()
            self.load(DENSE)  # every later level's masks are cut with the trained dense networks at hand
            if cfg.rewind_iteration or self.exists(REWIND):
                self.load(REWIND)
        for level in range(min(done, cfg.rounds) + 1 if done or self.exists(masks_file(0)) else 0):
            self.load_masks(level)
        keeps_trained = fine_tunes(cfg.controls)  # the next level starts from trained/
        for level in range(done):
            self.load(ticket_file(level))
            if self.exists(trained_file(level)) or (keeps_trained and level == done - 1 < cfg.rounds):
                self.load(trained_file(level))

    def _hold(self) -> None:
        """Lock the folder for this process (files.lock_folder): two runs in one folder would both append rows."""
        try:
            self._lock = files.lock_folder(self.path, self._file(LOCK_FILE))
        except BlockingIOError:
            raise RunFolderError(
                f"{self.path} is in use by another run (in another terminal or notebook); "
                f"wait for it to finish or stop it, or choose another folder"
            ) from None
        self._open = True

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
        """Remove every file this tool writes here (`_tool_files`), and nothing else: all of them or none
        (files.remove_together). progress.json goes first, config.json and the manifest last: a clear cut short leaves
        a run with no level finished, which resumes or is overwritten, never results without their config."""
        files.remove_together(
            self.path, sorted(self._tool_files(), key=lambda n: {PROGRESS: 0, CONFIG: 2, MANIFEST: 3}.get(n, 1))
        )
        self._manifest, self._last_masks = set(), None
        for name in (MASKS, TICKETS, TRAINED):  # kept where a file of someone else's is inside
            if (self.path / name).is_dir() and not any((self.path / name).iterdir()):
                (self.path / name).rmdir()

    def _tool_files(self) -> list[str]:
        """The files this tool writes that are here (relative names, temporary files too, the manifest last): those
        TOOL_FILES and LEVEL_FILE name and those the manifest lists; run.lock unless this run's lock is held on it. A
        RunFolderError names a symbolic link on the way to any of them."""
        names = set(TOOL_FILES) - {MANIFEST}
        for folder in ("", MASKS, TICKETS, TRAINED):
            if self._file(folder).is_dir():
                found = ((Path(folder) / p.name).as_posix() for p in self._file(folder).iterdir())
                names |= {name for name in found if LEVEL_FILE.fullmatch(name)}
        try:
            names |= read_checked(self._file(MANIFEST), _parse_manifest)
        except DamagedFileError:  # missing, or unreadable: the names above alone
            pass
        if self._lock is None or os.path.samestat(os.fstat(self._lock), os.stat(self.path)):
            names.add(LOCK_FILE)  # not where this run's lock is held on it: removed, it would let another run in
        candidates = [*sorted(names), *(f"{n}.tmp" for n in sorted(names)), f"{MANIFEST}.tmp", MANIFEST]
        return [n for n in candidates if self._file(n).is_file()]

    def _file(self, name: str) -> Path:
        return files.inside(self.path, name)  # a symbolic link on the way is refused

    def _read_manifest(self) -> set[str]:
        """manifest.json's list, checked; an empty list in a folder that has none yet (a new one)."""
        if self._manifest is None:
            exists = self._file(MANIFEST).exists() or self.saved_config() is not None
            self._manifest = read_checked(self._file(MANIFEST), _parse_manifest) if exists else set()
        return self._manifest

    def write(self, name: str, write: Callable[[Path], None]) -> None:
        """Write the file `name` (relative to the folder) whole or not at all, through `write(tmp)`, which fills a
        temporary file (files.write_atomic); listed in the manifest first, so that --overwrite removes it. A failure
        is a WriteError that says the finished levels are kept."""
        if not self._open:
            raise RunFolderError(f"{self.path} is not open for writing; open it with RunFolder.open(path, cfg)")
        try:
            if name not in self._read_manifest():
                self._manifest = self._read_manifest() | {name}
                text = json.dumps({"files": sorted(self._manifest)}, indent=1) + "\n"
                write_atomic(self._file(MANIFEST), lambda tmp: tmp.write_text(text))
            self._file(name).parent.mkdir(exist_ok=True)  # trained/ is made by its first file
            write_atomic(self._file(name), write)
        except WriteError as error:
            advice = f"the finished levels are kept in {self.path}: free some space (or fix the permission) and run"
            raise WriteError(f"{error}; {advice} the same command again to resume", error.file, error.reason) from None

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
        """Every network's masks at `level`, by mask rule and layer, under the keys "RULE.layer". Stored as booleans, a
        quarter of float32's bytes (a run of many conditions saves one set of masks per rule, trial and level)."""
        flat = {f"{rule}.{layer}": m.bool() for rule, stack in masks.items() for layer, m in stack.items()}
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
            check_table(name, pd.DataFrame(new), missing=set())  # the tool writes only what it reads back
            table = pd.concat([old, pd.DataFrame(new)], ignore_index=True) if len(old) else pd.DataFrame(new)
            self.save_table(name, table[list(TABLE_COLUMNS[name])])  # a table that lacked ADDED_COLUMNS gains them
            counts[name] = len(table)
        progress = json.dumps({"levels_done": level + 1, "rows": counts}) + "\n"
        self.write(PROGRESS, lambda tmp: tmp.write_text(progress))

    def exists(self, name: str) -> bool:
        return self._file(name).exists()

    def saved_config(self) -> Config | None:
        return (self._saved() or (None, 0))[0]

    def _saved(self) -> tuple[Config, int] | None:  # config.json: the config, and the folder's format
        return read_checked(self._file(CONFIG), _parse_config) if self._file(CONFIG).exists() else None

    @property
    def levels_done(self) -> int:
        return self._progress()["levels_done"]

    def _progress(self) -> dict:
        """progress.json: the levels finished, and how many rows of each table they hold."""
        if not self._file(PROGRESS).exists():
            return {"levels_done": 0, "rows": {}}
        return read_checked(self._file(PROGRESS), self._parse_progress)

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

    def _parse_tensors(self, file: Path, name: str, before: tuple[int, dict] | None = None) -> dict[str, torch.Tensor]:
        """torch.load, checked; masks against `before`, (level, masks) of the level before."""
        tensors = torch.load(file, weights_only=True)
        if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
            raise ValueError(f"it holds a {type(tensors).__name__}, not a dict of tensors")
        expected = self._shapes(name)
        got = {k: tuple(v.shape) for k, v in tensors.items()}
        if expected is not None and got != expected:
            wrong = sorted(set(got.items()) ^ set(expected.items()))[0][0]
            raise ValueError(f"{wrong} is {got.get(wrong, 'missing')}, not {expected.get(wrong, 'expected')}")
        for key, value in tensors.items():
            if name.startswith(f"{MASKS}/") and not ((value == 0) | (value == 1)).all():
                raise ValueError(f"{key} holds values other than 0 and 1")
            if not name.startswith(f"{MASKS}/") and not torch.isfinite(value).all():
                raise ValueError(f"{key} holds NaN or infinite numbers, which no finished training leaves")
        nested = {k for k in set(tensors) & set(before[1]) if MASK_RULES[k.split(".")[0]].nested} if before else ()
        for key in sorted(nested):  # a nested rule's masks only shrink from level to level (a shuffle's need not)
            if (tensors[key] > before[1][key]).any():
                raise ValueError(f"{key} keeps weights that level {before[0]} pruned: masks only shrink")
        return tensors

    def _shapes(self, name: str) -> dict[str, tuple[int, ...]] | None:
        """The tensor names and shapes of the file `name` for this run's config (None: not known)."""
        cfg = self.config
        if cfg is None:
            return None
        shapes = layer_shapes(cfg.fc1_width, cfg.fc2_width)
        folder = name.split("/")[0]
        if folder == MASKS:
            return {f"{r}.{layer}": (cfg.trials, *shapes[layer]) for r in mask_rules(cfg.controls) for layer in LAYERS}
        n = 1 if folder == TICKETS else cfg.trials  # tickets: trial 0's; trained/: every trial's, as dense.pt
        params = {f"{layer}.weight": (n, *shapes[layer]) for layer in LAYERS}
        return params | {f"{layer}.bias": (n, shapes[layer][0]) for layer in LAYERS}

    def load_masks(self, level: int) -> dict[str, Masks]:
        """Every network's masks at `level`: mask rule (conditions.mask_rules) -> layer -> (trials, out, in), checked
        against the level before's (read too, unless it was the last level read: levels read in order are read once)."""
        before = self._last_masks if self._last_masks and self._last_masks[0] == level - 1 else None
        if level and before is None:
            before = (level - 1, self.load(masks_file(level - 1)))
        flat = read_checked(self._file(masks_file(level)), lambda f: self._parse_tensors(f, masks_file(level), before))
        self._last_masks = (level, flat)
        masks: dict[str, Masks] = {}
        for key, value in flat.items():
            rule, layer = key.split(".")
            masks.setdefault(rule, {})[layer] = value.float()  # stored as booleans (or float32 by older versions)
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
        """The rows of the finished levels (tables.read_table), as many as progress.json recorded."""
        progress = self._progress()
        levels, recorded = progress["levels_done"], progress["rows"].get(name)
        if not levels:
            return pd.DataFrame()
        return read_checked(self._file(name), lambda file: read_table(file, name, levels, recorded, self.config))


class _ByLevel(Mapping[int, Any]):
    """Level -> `read(level)`, for the levels 0 to `levels` - 1, each read when it is asked for."""

    def __init__(self, read: Callable[[int], Any], levels: int):
        self._read, self._levels = read, levels

    def __getitem__(self, level: int) -> Any:
        if level not in range(self._levels):
            raise KeyError(level)
        return self._read(level)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self._levels))

    def __len__(self) -> int:
        return self._levels


def _parse_config(file: Path) -> tuple[Config, int]:
    values = json.loads(file.read_text())
    form = values.pop("format", 1) if isinstance(values, dict) else 1
    if not _is_count(form) or not 1 <= form <= FORMAT:
        raise ValueError(f"format is {form!r}, not one this version reads (1 to {FORMAT})")
    return Config.from_dict(values), form


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _parse_manifest(file: Path) -> set[str]:
    names = json.loads(file.read_text())["files"]  # --overwrite removes what it names: names inside the folder
    if not isinstance(names, list) or not all(
        isinstance(n, str) and not Path(n).is_absolute() and ".." not in Path(n).parts for n in names
    ):
        raise ValueError("files is not a list of names inside the folder")
    return set(names)
