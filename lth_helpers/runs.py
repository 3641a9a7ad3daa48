"""The run folder: everything a run writes, saved level by level so that a rerun resumes after the last finished one.

    with RunFolder.open(Path("runs/seed"), cfg) as run:   # held: no other run can write there meanwhile
        run.save("init.pt", tensors)

The folder holds config.json, init.pt (theta_0 of every trial), rewind.pt (late rewinding only),
masks/level_NN.pt, tickets/level_NN.pt (trial 0's trained ticket), results.csv, curves.csv and
progress.json; a level counts as finished once progress.json says so. progress.json also records each
table's row count, so that a file damaged later (a copy or a sync cut short) is named in a
RunFolderError rather than misread. A run holds its folder (an OS lock on run.lock) so that a second
run cannot write there at the same time.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path
from typing import IO

import pandas as pd
import torch

from .config import Config
from .pruning import Masks

try:
    import fcntl  # POSIX: the lock that keeps two runs out of one folder
except ImportError:  # Windows: run folders are not locked
    fcntl = None

RUN_FILES = (
    "config.json",
    "init.pt",
    "rewind.pt",
    "masks",
    "tickets",
    "results.csv",
    "curves.csv",
    "progress.json",
    "inference.csv",
    "*.png",
    "ticket_level_*.pt",
)  # what --overwrite removes: this tool's files only
LOCK_FILE = "run.lock"  # held (flock) by the run using the folder; empty, and left in place


class RunFolderError(RuntimeError):
    """The run folder belongs to another config, or is unreadable."""


class RunFolder:
    """Everything a run writes, saved level by level so that a rerun resumes after the last finished one."""

    def __init__(self, path: Path):
        self.path = path
        self._lock: IO | None = None

    @classmethod
    def check(cls, path: Path, cfg: Config, overwrite: bool = False) -> Config | None:
        """Raise RunFolderError if `path` cannot be a run folder or holds a run of another config (and overwrite is
        off); writes nothing. Returns the config saved there, if any."""
        nearest = next(p for p in (path, *path.parents) if p.exists())
        if not nearest.is_dir():
            where = f"{path} is a file" if nearest == path else f"{nearest} is a file, so {path} cannot be made"
            raise RunFolderError(f"{where}: a run needs a folder; choose another")
        saved = cls(path).saved_config()
        if saved is not None and not overwrite and saved.short_hash() != cfg.short_hash():
            changed = [k for k, v in cfg.to_dict().items() if k != "preset" and saved.to_dict()[k] != v]
            raise RunFolderError(
                f"{path} holds a run with another config (differs in {', '.join(changed)}); "
                f"choose another folder or pass --overwrite to replace it"
            )
        return saved

    @classmethod
    def open(cls, path: Path, cfg: Config, overwrite: bool = False) -> RunFolder:
        """Create the folder for `cfg`, or reopen it if it holds the same config; refuse another config, and a folder
        that another run is using. Use it as `with RunFolder.open(...) as run:` to hold the folder until the end."""
        cls.check(path, cfg, overwrite)  # before anything is written
        run = cls(path)
        path.mkdir(parents=True, exist_ok=True)
        run._hold()
        try:
            saved = cls.check(path, cfg, overwrite)  # again, now held: a run that held it may have left its config
            if saved is not None and overwrite:
                run.clear()
            (path / "masks").mkdir(exist_ok=True)
            (path / "tickets").mkdir(exist_ok=True)
            if saved is None or overwrite:
                _write_atomic(path / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
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
            raise RunFolderError(
                f"{self.path} is in use by another run (in another terminal or notebook); "
                f"wait for it to finish or stop it, or choose another folder"
            ) from None
        except OSError:  # the file system has no locks
            handle.close()
            return
        self._lock = handle

    def release(self) -> None:
        """Let another run use the folder (closing the file drops the lock)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def saved_config(self) -> Config | None:
        file = self.path / "config.json"
        if not file.exists():
            return None
        try:
            return Config.from_dict(json.loads(file.read_text()))
        except (ValueError, TypeError) as error:
            raise RunFolderError(
                f"{file} is not a config this version can read ({error}); use another folder"
            ) from None

    def clear(self) -> None:
        for pattern in RUN_FILES:
            for target in self.path.glob(pattern):
                if target.is_dir():
                    for file in target.iterdir():
                        file.unlink()
                    target.rmdir()
                else:
                    target.unlink()

    @property
    def levels_done(self) -> int:
        return self._progress()["levels_done"]

    def _progress(self) -> dict:
        """progress.json: the levels finished, and how many rows of each table they hold."""
        file = self.path / "progress.json"
        if not file.exists():
            return {"levels_done": 0, "rows": {}}
        try:
            progress = json.loads(file.read_text())
            return {"levels_done": int(progress["levels_done"]), "rows": dict(progress.get("rows", {}))}
        except (ValueError, KeyError, TypeError) as error:
            raise _damaged(file, error) from None

    def cached(self, name: str, make) -> dict[str, torch.Tensor]:
        if not (self.path / name).exists():
            self.save(name, make())
        return self.load(name)

    def save(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        tmp = self.path / (name + ".tmp")
        torch.save({k: v.cpu() for k, v in tensors.items()}, tmp)
        os.replace(tmp, self.path / name)

    def load(self, name: str) -> dict[str, torch.Tensor]:
        try:
            return torch.load(self.path / name, weights_only=True)
        except (FileNotFoundError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
            raise _damaged(self.path / name, error) from None

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
        progress, file = self._progress(), self.path / name
        if not progress["levels_done"]:
            return pd.DataFrame()
        try:
            text = file.read_bytes()
            if not text.endswith(b"\n"):
                raise ValueError("it ends in the middle of a row")
            table = pd.read_csv(io.BytesIO(text))  # the bytes just checked: the file is read once
            finished = table[table["level"] < progress["levels_done"]].reset_index(drop=True)
        except (OSError, ValueError, KeyError) as error:  # missing, cut short, unparsable, no level column
            raise _damaged(file, error) from None
        recorded = progress["rows"].get(name, len(finished))  # run folders of older versions recorded no counts
        if len(finished) != recorded:
            raise _damaged(
                file, ValueError(f"{len(finished)} rows of finished levels, progress.json recorded {recorded}")
            )
        return finished

    def finish_level(self, level: int, rows: list[dict], curves: list[dict]) -> None:
        """Append the level's rows, then mark it finished: a crash in between only repeats the level."""
        counts = {}
        for name, new, old in (("results.csv", rows, self.results()), ("curves.csv", curves, self.curves())):
            table = pd.concat([old, pd.DataFrame(new)], ignore_index=True) if len(old) else pd.DataFrame(new)
            _write_atomic(self.path / name, table.to_csv(index=False))
            counts[name] = len(table)
        _write_atomic(self.path / "progress.json", json.dumps({"levels_done": level + 1, "rows": counts}) + "\n")


def _damaged(file: Path, error: Exception) -> RunFolderError:
    """A run-folder file that cannot be read (cut short by a failed copy or sync, edited, deleted)."""
    reason = " ".join(str(error).split()).split(". ")[0]  # torch's explanation runs to several sentences
    return RunFolderError(
        f"{file} cannot be read ({type(error).__name__}: {reason}); the run folder is damaged: "
        f"start the run again with --overwrite (in Python: overwrite=True), or choose another folder"
    )


def _write_atomic(file: Path, text: str) -> None:
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, file)
