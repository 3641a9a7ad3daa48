"""Sweeps: a grid of configs in one command, every point an ordinary run folder, resumable (docs/sweeps.md).

    python -m lth_helpers sweep --preset smoke --grid learning_rate=1e-3,2e-3 --out runs/grid   # cli.py
    table = run_sweep(make_config("smoke"), {"learning_rate": [1e-3, 2e-3]}, "runs/grid", say=print)  # its table

Each point trains in the run folder a plain run of its config gets (PRESET-HASH), inside the sweep folder; those
folders are the sweep's state, each checked as a run checks it. Beside them sweep.json (base config and grid),
failures.json (why each point not done failed), sweep.csv, sweep.png and submitit/, read and written under the
sweep's lock. The points run in this process, or with `JobOptions` as submitit jobs (sweep_jobs.py: Slurm, or this
machine's GPUs). Functions only: they print nothing (a running sweep hands its lines to the `say` it is given) and
raise typed errors; the table's overview and figure are compare.py's.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import conditions
from .compare import plot_sweep
from .config import (
    CONDITIONS,
    Config,
    ConfigError,
    check_memory,
    refuse_unused_choices,
    replace,
    resolve_device,
    show_value,
)
from .data import data_dir as data_dir_of
from .data import load_mnist
from .experiment import run_experiment
from .files import RunFolderError, lock_folder, read_checked, write_atomic
from .flags import one_line, parse_value
from .runs import CONFIG, RunFolder
from .sweep_jobs import JobOptions, SweepConfigError, failure_reason, import_submitit, submit_points

SWEEP_FILE, FAILURES_FILE = "sweep.json", "failures.json"  # the base config and grid; {point's folder: why it failed}
TABLE_FILE, FIGURE_FILE = "sweep.csv", "sweep.png"
LOCK_FILE = "sweep.lock"  # locked where the file system cannot lock the sweep folder itself (NFS)
LIST_SEPARATOR = "/"  # between the values of a grid field whose value is itself a list of names (controls)
FIELDS = {f.name: f for f in dataclasses.fields(Config)}
KNOWN = ", ".join(sorted(set(FIELDS) - {"preset"}))  # the fields a grid may hold: a sweep starts from one preset
Say = Callable[[str], None]  # where a sweep's lines go as it runs: the command line's `cli.say`, `print`


class SweepError(RunFolderError):
    """The sweep folder cannot be used now (exit status 1): another sweep holds it."""


@dataclass(frozen=True)
class Point:
    """One config of the grid: the base config with `values` (grid field -> value) on top."""

    values: dict[str, Any]
    cfg: Config

    @property
    def name(self) -> str:  # its run folder in the sweep folder: the name a plain run of its config gets
        return self.cfg.run_name()

    @property
    def label(self) -> str:
        return ", ".join(f"{name}={show_value(value)}" for name, value in self.values.items())


def parse_grid(specs: Sequence[str]) -> dict[str, list]:
    """The `--grid FIELD=V1,V2,...` texts as {field: [values]}, each value parsed as the field's own flag parses it
    (a list-valued field such as controls separates its values with `/`). ConfigError for a spec it cannot read."""
    grid: dict[str, list] = {}
    for spec in specs:
        name, equals, text = spec.partition("=")
        name = name.strip().replace("-", "_")
        if not equals or not name:
            raise ConfigError(f"--grid takes FIELD=V1,V2,..., got {spec!r}")
        if name not in FIELDS:
            raise ConfigError(f"--grid: unknown config field {name!r}; known fields: {KNOWN}")
        if name in grid:
            raise ConfigError(f"--grid names {name} twice; give all its values in one --grid {name}=V1,V2,...")
        grid[name] = []
        separator = LIST_SEPARATOR if str(FIELDS[name].type).startswith("tuple") else ","
        for item in (item.strip() for item in text.split(separator)):
            if not item:
                raise ConfigError(f"--grid {spec!r} has an empty value; write FIELD=V1{separator}V2...")
            try:
                grid[name].append(parse_value(FIELDS[name], item))
            except ValueError as error:
                raise ConfigError(f"--grid {name}: invalid value {item!r} ({error})") from None
    return grid


def grid_points(base: Config, grid: Mapping[str, Sequence[Any]]) -> list[Point]:
    """Every combination of the grid's values on top of `base`, the first field varying slowest. ConfigError for an
    empty grid or field, an unknown field, the preset (a sweep starts from one), a value twice, an invalid point."""
    if not grid:
        raise ConfigError("the grid is empty: give at least one field and its values (--grid FIELD=V1,V2,...)")
    for name, values in grid.items():
        if name == "preset":
            raise ConfigError("preset cannot be a grid field: a sweep starts from one --preset; run one per preset")
        if name not in FIELDS:
            raise ConfigError(f"unknown config field {name!r} in the grid; known fields: {KNOWN}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not len(values):
            raise ConfigError(f"the grid's {name} must be a list of one or more values, got {values!r}")
    points = []
    for combination in itertools.product(*grid.values()):
        wanted = dict(zip(grid, combination))
        try:
            cfg = replace(base, **wanted)
            refuse_unused_choices(cfg, wanted)
        except ConfigError as error:
            shown = ", ".join(f"{name}={show_value(value)}" for name, value in wanted.items())
            raise ConfigError(f"the point {shown} is not a valid config: {error}") from None
        points.append(Point({name: getattr(cfg, name) for name in grid}, cfg))
    names = [point.name for point in points]
    for point in points:
        if names.count(point.name) > 1:
            raise ConfigError(f"the grid holds the point {point.label} twice; give each value once")
    return points


@dataclass
class Sweep:
    """A grid of configs planned in a sweep folder; `failures` is failures.json, read once the folder is locked."""

    folder: Path
    base: Config
    grid: dict[str, list]  # each field's values as the points' configs hold them (1 and 1.0: one learning rate)
    points: list[Point]
    overwrite: bool = False  # make this grid the folder's sweep, and forget the old failures
    failures: dict[str, str] = dataclasses.field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """sweep.json's content: the base config and the grid, as plain JSON."""
        grid = {name: [list(v) if isinstance(v, tuple) else v for v in values] for name, values in self.grid.items()}
        return {"base": self.base.to_dict(), "grid": grid}

    def point_state(self, point: Point) -> tuple[str, int, str]:
        """(done, partial, not started or failed; levels finished; why it failed), as the point's run folder says.
        A folder that a run of the point's config would refuse, or whose tables do not read back, has failed."""
        path, run = self.folder / point.name, RunFolder(self.folder / point.name, point.cfg)
        try:
            if path.exists():
                RunFolder.check(path, point.cfg)  # another config's run, a damaged config.json or manifest
            if run.levels_done:
                run.results(), run.curves()  # the tables of every finished level read back
        except RunFolderError as error:
            return "failed", 0, one_line(error)
        if run.levels_done == point.cfg.rounds + 1:
            return "done", run.levels_done, ""
        if point.name in self.failures:
            return "failed", run.levels_done, self.failures[point.name]
        return ("partial" if run.exists(CONFIG) else "not started"), run.levels_done, ""

    def states(self) -> pd.DataFrame:
        """One row per point: its grid values, run folder, state, levels finished, levels in all, and why it failed."""
        rows = []
        for point in self.points:
            state, levels, reason = self.point_state(point)
            row = {"run": point.name, "state": state, "levels": levels, "of": point.cfg.rounds + 1, "failure": reason}
            rows.append(_cells(point) | row)
        return pd.DataFrame(rows)

    def record_outcome(self, point: Point, reason: str | None) -> str:
        """Keep why `point` failed in failures.json (a point its folder says is done has not); returns how it ended."""
        reason = None if self.point_state(point)[0] == "done" else reason
        self.failures = {name: why for name, why in self.failures.items() if name != point.name}
        self.failures |= {point.name: reason} if reason else {}
        _write_json(self.folder / FAILURES_FILE, self.failures)
        return f"{point.name} ({point.label}): " + (f"failed: {reason}" if reason else "finished")

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the sweep folder (made if missing, removed if left empty), then check that its sweep.json records this
        sweep (SweepConfigError, unless `overwrite`) and read failures.json, of the points not done. Another sweep
        holding the folder: SweepError. The OS drops the lock however the process ends."""
        made = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            handle = lock_folder(self.folder, self.folder / LOCK_FILE)
        except BlockingIOError:
            raise SweepError(f"{self.folder} is in use by another sweep; wait for it to finish or stop it") from None
        try:
            saved, record = _read_json(self.folder / SWEEP_FILE, _record_of), self.record()
            if not self.overwrite and saved not in (None, record):
                changed = [k for k, v in record["base"].items() if saved["base"].get(k) != v]
                what = f"of another grid ({_grid_text(saved['grid'])})"
                what = f"from another base config (differs in {', '.join(changed)})" if changed else what
                raise SweepConfigError(
                    f"{self.folder} holds a sweep {what}; "
                    "choose another folder, or pass --overwrite to make this grid the folder's sweep (points of the "
                    "same config are kept and not trained again)"
                )
            failures = {} if self.overwrite else _read_json(self.folder / FAILURES_FILE, _failures_of) or {}
            self.failures = {p.name: failures[p.name] for p in self.points if p.name in failures and not self._done(p)}
            yield
        finally:
            if made:
                with suppress(OSError):
                    self.folder.rmdir()  # nothing was written: leave no folder behind
            if handle is not None:
                os.close(handle)

    def _done(self, point: Point) -> bool:
        return self.point_state(point)[0] == "done"


def plan_sweep(base: Config, grid: Mapping[str, Sequence[Any]], folder: Path | str, overwrite: bool = False) -> Sweep:
    """The sweep of `grid` on top of `base` in `folder`; ConfigError for an invalid grid or point, SweepConfigError
    where a file stands at `folder`. The folder itself is read once it is locked (Sweep.locked)."""
    folder = Path(folder)
    nearest = next(p for p in (folder, *folder.parents) if p.exists())
    if not nearest.is_dir():
        raise SweepConfigError(f"{nearest} is a file: a sweep needs a folder; choose another --out")
    points = grid_points(base, grid)
    values = {name: list(dict.fromkeys(point.values[name] for point in points)) for name in grid}
    return Sweep(folder, base, values, points, overwrite)


def open_sweep(folder: Path | str) -> Sweep:
    """The sweep that `folder`'s sweep.json records; SweepConfigError when there is none."""
    record = _read_json(Path(folder) / SWEEP_FILE, _record_of)
    if record is None:
        raise SweepConfigError(f"{folder} holds no {SWEEP_FILE}: not a sweep folder")
    return plan_sweep(Config.from_dict(record["base"]), record["grid"], folder)


def _read_json(file: Path, check: Any) -> Any:
    """`file`'s JSON, checked by `check` (None when there is no file); DamagedFileError when it cannot be read."""
    return read_checked(file, lambda f: check(json.loads(f.read_text()), f.parent)) if file.exists() else None


def _record_of(record: dict, folder: Path) -> dict[str, Any]:
    plan_sweep(Config.from_dict(record["base"]), record["grid"], folder)  # a record that makes a valid sweep
    return {"base": record["base"], "grid": record["grid"]}


def _failures_of(failures: dict, folder: Path) -> dict[str, str]:
    if not isinstance(failures, dict) or not all(isinstance(v, str) for v in failures.values()):
        raise ValueError("not a mapping of run folders to reasons")
    return failures


def _write_json(file: Path, value: Any) -> None:
    write_atomic(file, lambda tmp: tmp.write_text(json.dumps(value, indent=2) + "\n"))


def _cells(point: Point) -> dict[str, Any]:
    """The point's grid values for a table: numbers and booleans as they are, a list of names as its flag writes it."""
    return {name: show_value(v) if isinstance(v, tuple) else v for name, v in point.values.items()}


def _grid_text(grid: Mapping[str, Sequence[Any]]) -> str:
    """A grid as --grid writes it: learning_rate=0.001,0.002; controls=reinit/reinit,random_prune."""
    texts = {n: [show_value(tuple(v) if isinstance(v, list) else v) for v in vs] for n, vs in grid.items()}
    return "; ".join(f"{n}=" + (LIST_SEPARATOR if isinstance(grid[n][0], list) else ",").join(texts[n]) for n in grid)


# ---------------------------------------------------------------------------------------------
# Running the points


def _run_jobs(
    sweep: Sweep, todo: list[Point], options: JobOptions, data_root: Path, device: str, bar: tqdm, tell: Say
) -> None:
    """Submit the points, then record each point as its job ends; Ctrl-C cancels the jobs."""
    jobs, chunks, cluster = submit_points(options, sweep.folder, todo, data_root, device)
    stop = {"local": "; to stop one: kill -INT JOB_ID", "slurm": "; to stop one: scancel JOB_ID"}.get(cluster, "")
    ids = ", ".join(str(job.job_id) for job in jobs[:3]) + (", ..." if len(jobs) > 3 else "")
    tell(f"submitted {len(jobs)} job(s) to submitit's {cluster} executor ({ids}{stop}); logs in {jobs[0].paths.folder}")
    try:
        for job in import_submitit().helpers.as_completed(jobs, poll_frequency=10 if cluster == "slurm" else 1):
            chunk = chunks[jobs.index(job)]
            try:
                reasons = dict(job.result())
            except Exception as error:  # noqa: BLE001  killed, timed out, cancelled: the points it had not finished
                why = f"job {job.job_id} ended without a result (state {job.state}; {type(error).__name__})"
                reasons = {point.name: f"{why}; its log: {job.paths.stderr}" for point in chunk}
            for point in chunk:
                tell(sweep.record_outcome(point, reasons.get(point.name)))
                bar.update()
    except KeyboardInterrupt:
        for job in jobs:
            job.cancel(check=False)
        raise


def check_engine(sweep: Sweep, engine: str | JobOptions, device: str) -> None:
    """ConfigError, before anything is written, for an engine or device that cannot run the sweep, or a model too
    big for the device's memory."""
    if engine == "local":
        for point in sweep.points:
            check_memory(point.cfg, resolve_device(device))
    elif not isinstance(engine, JobOptions):
        raise SweepConfigError(f"unknown engine {engine!r}; choose 'local' or JobOptions(...)")
    elif engine.resolve_cluster() and device != "cuda":  # a job's GPU is on the job's machine: the name is checked
        resolve_device(device)


def run_planned(
    sweep: Sweep,
    engine: str | JobOptions,
    data_dir: Path | str | None,
    device: str,
    progress: bool = True,
    say: Say | None = None,
) -> pd.DataFrame:
    """Run the points of a checked sweep (check_engine) that are not done, then write the summary; returns its table.
    Each line of news (a point ended, jobs submitted) goes to `say` as it happens, the progress bars cleared for it.
    Raises SweepConfigError when the folder holds another sweep, SweepError when another sweep holds it, DataError."""
    data_root = data_dir_of(data_dir)

    def tell(line: str) -> None:
        if say is not None:
            with tqdm.external_write_mode():  # the bars step aside for the line, and come back under it
                say(line)

    with sweep.locked():
        todo = [point for point in sweep.points if not sweep._done(point)]
        if todo and engine == "local":
            where = resolve_device(device)
            data = {v: load_mnist(data_root, v, where) for v in sorted({point.cfg.val_size for point in todo})}
        _write_json(sweep.folder / SWEEP_FILE, sweep.record())
        _write_json(sweep.folder / FAILURES_FILE, sweep.failures)
        done = len(sweep.points) - len(todo)
        with tqdm(total=len(sweep.points), initial=done, desc="points", unit="point", disable=not progress) as bar:
            for point in todo if engine == "local" else ():
                bar.set_postfix_str(point.label)
                try:
                    run_experiment(point.cfg, sweep.folder / point.name, data[point.cfg.val_size], progress=progress)
                    tell(sweep.record_outcome(point, None))
                except Exception as error:  # noqa: BLE001  the point failed, recorded; Ctrl-C still ends the sweep
                    tell(sweep.record_outcome(point, failure_reason(error)))
                bar.update()
            if todo and engine != "local":
                _run_jobs(sweep, todo, engine, data_root, device, bar, tell)
        return _write_summary(sweep)


def run_sweep(
    base: Config,
    grid: Mapping[str, Sequence[Any]],
    folder: Path | str,
    *,
    engine: str | JobOptions = "local",
    data_dir: Path | str | None = None,
    device: str | torch.device = "auto",
    overwrite: bool = False,
    progress: bool = True,
    say: Say | None = None,
) -> pd.DataFrame:
    """Run (or continue) the sweep of `grid` on top of `base` in `folder`; returns sweep.csv's table. Finished points
    are skipped, partial ones resume, failed ones are tried again; `say` (`print`, say) gets a line as each point ends.
    ConfigError for bad input (SweepConfigError when the folder holds another grid, unless `overwrite`), SweepError
    when another sweep holds the folder."""
    sweep = plan_sweep(base, grid, folder, overwrite)
    check_engine(sweep, engine, str(device))
    return run_planned(sweep, engine, data_dir, str(device), progress, say)


# ---------------------------------------------------------------------------------------------
# The summary


def sweep_table(folder: Path | str) -> pd.DataFrame:
    """sweep.csv's table (docs/sweeps.md): one row per point and finished level (one row with an empty level for a
    point with none): the grid's fields, the point's folder (`run`), state, level, percent_remaining, n_trials, for the
    ticket and each control the accuracy and iteration at early stopping (mean and std over trials), and `failure`."""
    sweep = open_sweep(folder)
    with sweep.locked():
        return _table(sweep)


def _table(sweep: Sweep) -> pd.DataFrame:
    tables, stats = [], ("accuracy_mean", "accuracy_std", "stop_iteration_mean", "stop_iteration_std")
    for point, row in zip(sweep.points, sweep.states().itertuples()):
        levels = pd.DataFrame({"level": [np.nan]})
        if row.levels:  # each finished level: percent of weights, trials, and each condition's mean and std
            results = RunFolder(sweep.folder / point.name, point.cfg).results()
            accuracy, iteration = "early_stop_test_accuracy", "early_stop_iteration"
            wide = (
                results.groupby(["level", "condition"])
                .agg(
                    accuracy_mean=(accuracy, "mean"),
                    accuracy_std=(accuracy, "std"),
                    stop_iteration_mean=(iteration, "mean"),
                    stop_iteration_std=(iteration, "std"),
                )
                .unstack("condition")
            )
            levels = (
                results[results.condition == "ticket"]
                .groupby("level")
                .agg(percent_remaining=("percent_remaining", "mean"), n_trials=("trial", "nunique"))
            )
            wide.columns = [f"{condition}_{stat}" for stat, condition in wide.columns]
            levels = levels.join(wide).reset_index()
        tables.append(levels.assign(**_cells(point), run=point.name, state=row.state, failure=row.failure or np.nan))
    columns = [*sweep.grid, "run", "state", "level", "percent_remaining", "n_trials"]
    trained = {c for point in sweep.points for c in point.cfg.level_conditions(1)} - set(CONDITIONS)
    columns += [f"{c}_{stat}" for c in [*CONDITIONS, *sorted(trained, key=conditions.order)] for stat in stats]
    return pd.concat(tables, ignore_index=True).reindex(columns=[*columns, "failure"])


def write_summary(folder: Path | str) -> pd.DataFrame:
    """Write sweep.csv and sweep.png into the sweep folder, each whole or not at all; returns the table."""
    sweep = open_sweep(folder)
    with sweep.locked():
        return _write_summary(sweep)


def _write_summary(sweep: Sweep) -> pd.DataFrame:
    table = _table(sweep)
    write_atomic(sweep.folder / TABLE_FILE, lambda tmp: table.to_csv(tmp, index=False))
    figure = plot_sweep(table)
    write_atomic(sweep.folder / FIGURE_FILE, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    return table


def dry_run(sweep: Sweep) -> str:
    """Where each point stands, as --dry-run lists it (partial and failed: k of n levels finished), then each failed
    point's reason; read under the sweep's lock, writing nothing."""
    if sweep.folder.exists():
        with sweep.locked():
            states = sweep.states()
    else:
        states = sweep.states()
    partial = states.state.isin(["partial", "failed"])
    counts = " (" + states.levels.astype(str) + " of " + states.of.astype(str) + " levels finished)"
    shown = states.assign(
        state=states.state + counts.where(partial, ""), **{n: states[n].map(show_value) for n in sweep.grid}
    )
    failed = [f"{row.run} failed: {row.failure}" for row in states[states.state == "failed"].itertuples()]
    return "\n".join([shown[[*sweep.grid, "run", "state"]].to_string(index=False), *failed])
