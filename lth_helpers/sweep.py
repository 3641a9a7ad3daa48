"""Sweeps: a grid of configs in one command, every point an ordinary run folder, resumable.

    python -m lth_helpers sweep --preset smoke --grid learning_rate=1e-3,2e-3 --grid global_pruning=true,false \\
        --out runs/grid

    table = run_sweep(make_config("smoke"), {"learning_rate": [1e-3, 2e-3]}, Path("runs/grid"))
    plot_sweep(table)

A point of the grid is the base config with one value of every grid field. Each point is an ordinary run folder
inside the sweep folder, named as a run names its folder (PRESET-HASH of its config): `compare`, resuming and every
check of a run folder work on it unchanged, and a point is the same folder, with the same results, as a plain run of
its config. Beside the points the sweep folder holds sweep.json (the base config and the grid), failures.json (each
failed point's one-line reason), the summary sweep.csv and sweep.png, and with submitit its jobs' logs in submitit/.

Where the points run: the local engine trains them one after another in this process; `Submitit` hands them to
submitit, an optional extra: one Slurm job per point in a job array, or on this machine one job per GPU, each job
training its share of the points one after another. Rerunning a sweep skips the finished points, resumes the
partial ones after their last finished level and retries the failed ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import itertools
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import torch
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from .compare import plot_comparison
from .config import (
    CONDITIONS,
    DEVICES,
    Config,
    ConfigError,
    check_memory,
    make_config,
    refuse_unused_choices,
    replace,
    resolve_device,
    show_value,
)
from .data import DataError, MNISTSplits, load_mnist
from .data import data_dir as data_dir_of
from .experiment import ExperimentError, run_experiment
from .files import DamagedFileError, RunFolderError, lock_folder, read_checked, write_atomic
from .flags import add_run_flags, config_overrides, fail, field_type
from .flags import folder as folder_flag
from .report import format_percent
from .runs import RunFolder

SWEEP_FILE = "sweep.json"  # the base config and the grid
FAILURES_FILE = "failures.json"  # {point's run folder: the one-line reason it failed}
TABLE_FILE, FIGURE_FILE = "sweep.csv", "sweep.png"
LOCK_FILE = "sweep.lock"  # locked where the file system cannot lock the sweep folder itself (NFS)
JOBS_FOLDER = "submitit"  # submitit's pickles and logs, one folder per job
STATES = ("done", "partial", "not started", "failed")
LIST_SEPARATOR = "/"  # between the values of a grid field whose value is itself a list of names (controls)
CLUSTERS = ("auto", "slurm", "local", "debug")
INSTALL = "pip install 'submitit>=1.5' (in a clone of this repository: pip install '.[cluster]')"
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # submitit's local executor kills a job after 2 minutes unless told otherwise


class SweepError(ValueError):
    """A sweep that cannot run as asked: its folder holds another grid, the engine is missing or misconfigured.
    The message is one line and says what to do."""


# ---------------------------------------------------------------------------------------------
# The grid and its points


@dataclass(frozen=True)
class Point:
    """One config of the grid: the base config with `values` (grid field -> value) on top."""

    values: dict[str, Any]
    cfg: Config

    @property
    def name(self) -> str:
        """The point's run folder inside the sweep folder: the name a plain run of its config gets."""
        return self.cfg.run_name()

    @property
    def label(self) -> str:
        return ", ".join(f"{field}={show_value(value)}" for field, value in self.values.items())


def parse_grid(specs: Sequence[str]) -> dict[str, list]:
    """The `--grid FIELD=V1,V2,...` texts as {field: [values]}, each value parsed as the field's own flag parses it
    (`--grid prune-rate=0.1,0.2` or `prune_rate`; a list-valued field such as controls separates its values with
    `/`: `controls=reinit/reinit,random_prune`). Raises ConfigError, one line, for a spec that cannot be read."""
    fields = {f.name: f for f in dataclasses.fields(Config)}
    grid: dict[str, list] = {}
    for spec in specs:
        name, equals, text = spec.partition("=")
        name = name.strip().replace("-", "_")
        if not equals or not name:
            raise ConfigError(f"--grid takes FIELD=V1,V2,..., got {spec!r}")
        if name not in fields:
            known = sorted(set(fields) - {"preset"})  # a sweep starts from one preset (grid_points says so)
            raise ConfigError(f"--grid: unknown config field {name!r}; known fields: {', '.join(known)}")
        if name in grid:
            raise ConfigError(f"--grid names {name} twice; give all its values in one --grid {name}=V1,V2,...")
        parse = field_type(fields[name])
        separator = LIST_SEPARATOR if str(fields[name].type).startswith("tuple") else ","
        values = []
        for item in text.split(separator):
            if not item.strip():
                raise ConfigError(f"--grid {spec!r} has an empty value; write FIELD=V1{separator}V2...")
            try:
                values.append(parse(item.strip()))
            except (argparse.ArgumentTypeError, ValueError) as error:
                why = str(error) if isinstance(error, argparse.ArgumentTypeError) else f"not {parse.__name__}"
                raise ConfigError(f"--grid {name}: invalid value {item.strip()!r} ({why})") from None
        grid[name] = values
    return grid


def grid_points(base: Config, grid: Mapping[str, Sequence[Any]]) -> list[Point]:
    """Every combination of the grid's values on top of `base`, the first field varying slowest.

    Raises ConfigError, one line, for an empty grid or field, an unknown field, the preset as a field (a sweep starts
    from one preset), a value given twice, and a point whose config is invalid (naming the point).
    """
    if not grid:
        raise ConfigError("the grid is empty: give at least one field and its values (--grid FIELD=V1,V2,...)")
    known = {f.name for f in dataclasses.fields(Config)} - {"preset"}
    for field, values in grid.items():
        if field == "preset":
            raise ConfigError("preset cannot be a grid field: a sweep starts from one --preset; run one per preset")
        if field not in known:
            raise ConfigError(f"unknown config field {field!r} in the grid; known fields: {', '.join(sorted(known))}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not len(values):
            raise ConfigError(f"the grid's {field} must be a list of one or more values, got {values!r}")
    points = []
    for combination in itertools.product(*grid.values()):
        wanted = dict(zip(grid, combination))
        try:
            cfg = replace(base, **wanted)
            refuse_unused_choices(cfg, wanted)
        except ConfigError as error:
            shown = ", ".join(f"{field}={show_value(value)}" for field, value in wanted.items())
            raise ConfigError(f"the point {shown} is not a valid config: {error}") from None
        points.append(Point({field: getattr(cfg, field) for field in grid}, cfg))
    names = [point.name for point in points]
    if len(set(names)) < len(names):
        twice = next(point for point in points if names.count(point.name) > 1)
        raise ConfigError(f"the grid holds the point {twice.label} twice; give each value once")
    return points


# ---------------------------------------------------------------------------------------------
# The sweep folder


@dataclass
class Sweep:
    """A grid of configs planned in a sweep folder: what sweep.json records, and where each point stands."""

    folder: Path
    base: Config
    grid: dict[str, list]  # each field's values as the points' configs hold them
    points: list[Point]
    overwrite: bool = False  # replace the folder's sweep.json and failure record (the points' folders are kept)

    def record(self) -> dict[str, Any]:
        """sweep.json's content: the base config and the grid, as plain JSON."""
        grid = {field: [_json(value) for value in values] for field, values in self.grid.items()}
        return {"base": self.base.to_dict(), "grid": grid}

    def check(self) -> None:
        """Raise SweepError if the folder cannot hold this sweep: a file stands there, or (unless overwriting) its
        sweep.json records another base config or grid; DamagedFileError if sweep.json cannot be read. Writes
        nothing."""
        nearest = next(p for p in (self.folder, *self.folder.parents) if p.exists())
        if not nearest.is_dir():
            raise SweepError(f"{nearest} is a file: a sweep needs a folder; choose another --out")
        if self.overwrite:
            return
        saved = read_record(self.folder)
        if saved is None or saved == self.record():
            return
        if saved["base"] != self.record()["base"]:
            changed = [k for k, v in self.record()["base"].items() if saved["base"].get(k) != v]
            what = f"from another base config (differs in {', '.join(changed)})"
        else:
            what = "of another grid (" + _grid_text(saved["grid"]) + ")"
        raise SweepError(
            f"{self.folder} holds a sweep {what}; choose another folder, or pass --overwrite to make this grid the "
            f"folder's sweep (points of the same config are kept and not trained again)"
        )

    def failures(self) -> dict[str, str]:
        """failures.json: the one-line reason of every point of this sweep that failed and has not finished since."""
        file = self.folder / FAILURES_FILE
        if self.overwrite or not file.exists():
            return {}
        saved = read_checked(file, _parse_failures)
        return {point.name: saved[point.name] for point in self.points if point.name in saved}

    def state(self, point: Point, failures: Mapping[str, str]) -> tuple[str, int, str]:
        """Where `point` stands: (one of STATES, levels finished, the failure's reason or "")."""
        run = RunFolder(self.folder / point.name)
        try:
            levels = run.levels_done if run.saved_config() is not None else 0
        except RunFolderError as error:  # a damaged point folder: it fails again until it is mended
            return "failed", 0, " ".join(str(error).split())
        if levels == point.cfg.rounds + 1:
            return "done", levels, ""
        if point.name in failures:
            return "failed", levels, failures[point.name]
        return ("partial" if (run.path / "config.json").exists() else "not started"), levels, ""

    def states(self) -> pd.DataFrame:
        """One row per point: its grid values, run folder, state, levels finished and failure reason."""
        failures = self.failures()
        rows = []
        for point in self.points:
            state, levels, reason = self.state(point, failures)
            rows.append({**_cells(point), "run": point.name, "state": state, "levels": levels, "failure": reason})
        return pd.DataFrame(rows)

    def save(self) -> None:
        """Write sweep.json, and failures.json kept to this sweep's points."""
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_json(self.folder / SWEEP_FILE, self.record())
        _write_json(self.folder / FAILURES_FILE, self.failures())

    def note(self, point: Point, reason: str | None) -> None:
        """Record how `point` ended: its failure's reason, or (None) that it no longer counts as failed."""
        failures = read_checked(self.folder / FAILURES_FILE, _parse_failures)  # save() wrote it
        if reason is None and self.state(point, {})[0] == "done":
            failures.pop(point.name, None)
        elif reason is not None:
            failures[point.name] = reason
        _write_json(self.folder / FAILURES_FILE, failures)


def plan_sweep(base: Config, grid: Mapping[str, Sequence[Any]], folder: Path | str, overwrite: bool = False) -> Sweep:
    """The sweep of `grid` on top of `base` in `folder`; raises ConfigError for an invalid grid or point. With
    `overwrite`, it replaces the sweep that the folder's sweep.json records, and its failure record."""
    points = grid_points(base, grid)
    values = {field: [] for field in grid}
    for point in points:  # each field's values as a config holds them (1 and 1.0 are one learning rate)
        for field, value in point.values.items():
            if value not in values[field]:
                values[field].append(value)
    return Sweep(Path(folder), base, values, points, overwrite)


def read_record(folder: Path) -> dict[str, Any] | None:
    """sweep.json of `folder` (None when there is none); DamagedFileError when it cannot be read."""
    file = Path(folder) / SWEEP_FILE
    return read_checked(file, _parse_record) if file.exists() else None


def open_sweep(folder: Path | str) -> Sweep:
    """The sweep that `folder`'s sweep.json records; SweepError when there is none."""
    folder = Path(folder)
    record = read_record(folder)
    if record is None:
        raise SweepError(f"{folder} holds no {SWEEP_FILE}: not a sweep folder")
    return plan_sweep(Config.from_dict(record["base"]), record["grid"], folder)


def _parse_record(file: Path) -> dict[str, Any]:
    record = json.loads(file.read_text())
    plan_sweep(Config.from_dict(record["base"]), record["grid"], file.parent)  # a record that makes a valid sweep
    return {"base": record["base"], "grid": record["grid"]}


def _parse_failures(file: Path) -> dict[str, str]:
    failures = json.loads(file.read_text())
    if not isinstance(failures, dict) or not all(isinstance(v, str) for v in failures.values()):
        raise ValueError("not a mapping of run folders to reasons")
    return failures


def _write_json(file: Path, value: Any) -> None:
    text = json.dumps(value, indent=2) + "\n"
    write_atomic(file, lambda tmp: tmp.write_text(text))


def _json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _cells(point: Point) -> dict[str, Any]:
    """The point's grid values for a table: numbers and booleans as they are, a list of names as its flag writes it."""
    return {field: show_value(v) if isinstance(v, tuple) else v for field, v in point.values.items()}


def _grid_text(grid: Mapping[str, Sequence[Any]]) -> str:
    """A grid as --grid writes it: learning_rate=0.001,0.002; controls=reinit/reinit,random_prune."""
    return "; ".join(
        f"{field}="
        + (LIST_SEPARATOR if isinstance(values[0], list) else ",").join(
            show_value(tuple(v) if isinstance(v, list) else v) for v in values
        )
        for field, values in grid.items()
    )


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Lock the sweep folder while the sweep runs, as a run locks its folder (files.lock_folder): a second sweep there
    is refused; the OS drops the lock when the process ends, however it ends."""
    try:
        handle = lock_folder(folder, folder / LOCK_FILE)
    except BlockingIOError:
        raise SweepError(f"{folder} is in use by another sweep; wait for it to finish or stop it") from None
    try:
        yield
    finally:
        if handle is not None:
            os.close(handle)


# ---------------------------------------------------------------------------------------------
# Running the points


def train_point(cfg: Config, folder: Path, data: MNISTSplits, progress: bool = False) -> str | None:
    """Run (or resume) one point in its run folder; None when it finished, else the one-line reason it failed.

    A failure of one point (divergence, out of memory, a damaged folder, a full disk) ends that point, not the sweep.
    """
    try:
        run_experiment(cfg, folder, data, progress=progress)
    except Exception as error:  # noqa: BLE001  recorded as the point's failure; Ctrl-C still ends the sweep
        return failure_reason(error)
    return None


def failure_reason(error: BaseException) -> str:
    """An exception that ended a point, in one line."""
    text = " ".join(str(error).split())
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(error, RuntimeError) and "can't allocate" in text
    ):
        return f"out of memory ({text})"
    if isinstance(error, (ExperimentError, ConfigError, DataError, RunFolderError, OSError)):
        return text
    return f"{type(error).__name__}: {text}"


def run_points(configs: Sequence[Config], sweep_folder: str, data_root: str, device: str) -> list[tuple[str, str]]:
    """What one submitit job runs: the points of `configs`, one after another, in `sweep_folder`.

    Returns (run folder, "" or the reason it failed) per point; never raises for a point, so that a job ends with a
    result unless it is killed.
    """
    outcomes, data = [], {}
    for cfg in configs:
        try:
            if cfg.val_size not in data:
                data[cfg.val_size] = load_mnist(Path(data_root), cfg.val_size, resolve_device(device))
            reason = train_point(cfg, Path(sweep_folder) / cfg.run_name(), data[cfg.val_size])
        except Exception as error:  # noqa: BLE001  no data, no GPU: the point failed
            reason = failure_reason(error)
        print(f"{cfg.run_name()}: {reason or 'finished'}", flush=True)
        outcomes.append((cfg.run_name(), reason or ""))
    return outcomes


def _run_local(sweep: Sweep, todo: list[Point], data: dict[int, MNISTSplits], progress: bool) -> None:
    """The points one after another in this process, a progress bar over points."""
    done = len(sweep.points) - len(todo)
    with tqdm(total=len(sweep.points), initial=done, desc="points", unit="point", disable=not progress) as bar:
        for point in todo:
            bar.set_postfix_str(point.label)
            reason = train_point(point.cfg, sweep.folder / point.name, data[point.cfg.val_size], progress)
            sweep.note(point, reason)
            tqdm.write(f"{point.name} ({point.label}): " + ("finished" if reason is None else f"failed: {reason}"))
            bar.update()


@dataclass(frozen=True)
class Submitit:
    """Points run by submitit (an optional extra, docs/sweeps.md): on a Slurm cluster one job per point, as a job
    array; on this machine (`local`) as many jobs as `jobs`, each pinned to one GPU (round robin) and training its
    share of the points one after another; `debug` runs the jobs in this process, one after another."""

    cluster: str = "auto"  # slurm, local, debug; auto: slurm where srun is found, else local (submitit's choice)
    jobs: int | None = None  # at most this many points at once (default: all on Slurm; one job per GPU locally)
    timeout_min: int | None = None  # each job's time limit in minutes (Slurm: --time, required there)
    gpus_per_job: int | None = None  # Slurm: --gpus-per-node (a point trains on one GPU)
    cpus_per_job: int | None = None  # Slurm: --cpus-per-task
    mem_gb: float | None = None  # Slurm: --mem
    partition: str | None = None  # Slurm: --partition
    account: str | None = None  # Slurm: --account

    def __post_init__(self) -> None:
        if self.cluster not in CLUSTERS:
            raise SweepError(f"unknown cluster {self.cluster!r}; choose one of: {', '.join(CLUSTERS)}")
        for name in ("jobs", "timeout_min", "cpus_per_job", "mem_gb"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise SweepError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.gpus_per_job is not None and self.gpus_per_job < 0:
            raise SweepError(f"--gpus-per-job must be 0 or more, got {self.gpus_per_job}")

    def resolve_cluster(self) -> str:
        """The executor these options run on (auto: Slurm where srun is found, else local); SweepError when
        submitit is missing, for a Slurm option off Slurm, and for Slurm without srun or --timeout-min."""
        submitit = import_submitit()
        cluster = submitit.AutoExecutor.which() if self.cluster == "auto" else self.cluster
        misplaced = [name for name in SLURM_ONLY if getattr(self, name) is not None]
        if cluster != "slurm" and misplaced:
            flag = {"partition": "slurm-partition", "account": "slurm-account"}.get(misplaced[0], misplaced[0])
            raise SweepError(f"--{flag.replace('_', '-')} is for Slurm, and the sweep runs on the {cluster} executor")
        if cluster == "slurm" and shutil.which("srun") is None:
            raise SweepError("--cluster slurm: no Slurm here (srun not found); run the sweep on a Slurm login node")
        if cluster == "slurm" and self.timeout_min is None:
            raise SweepError("a Slurm sweep needs --timeout-min: each job's time limit in minutes (docs/sweeps.md)")
        return cluster


SLURM_ONLY = ("gpus_per_job", "cpus_per_job", "mem_gb", "partition", "account")


def import_submitit() -> Any:
    """The submitit module, imported only when a sweep asks for it; SweepError naming the install command."""
    try:
        return importlib.import_module("submitit")
    except ImportError:
        raise SweepError(f"--engine submitit needs the submitit package, which is not installed: {INSTALL}") from None


def make_executor(options: Submitit, folder: Path, n_points: int) -> tuple[Any, str]:
    """A submitit executor configured from `options`, writing its jobs' files under `folder`, and its cluster."""
    submitit = import_submitit()
    cluster = options.resolve_cluster()
    jobs_folder = folder / JOBS_FOLDER
    if cluster == "debug":
        return submitit.DebugExecutor(jobs_folder), cluster
    if cluster == "local":
        executor = submitit.LocalExecutor(jobs_folder)
        executor.update_parameters(timeout_min=options.timeout_min or LOCAL_TIMEOUT_MIN)
        return executor, cluster
    executor = submitit.SlurmExecutor(jobs_folder)
    parameters = {
        "job_name": "lth-sweep",
        "time": options.timeout_min,
        "gpus_per_node": options.gpus_per_job,
        "cpus_per_task": options.cpus_per_job,
        "mem": None if options.mem_gb is None else f"{options.mem_gb:g}GB",
        "partition": options.partition,
        "account": options.account,
        "array_parallelism": options.jobs or n_points,
    }
    executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
    return executor, cluster


def submit_points(
    options: Submitit, folder: Path, todo: list[Point], data_root: Path, device: str
) -> tuple[list[Any], list[list[Point]], str]:
    """Submit `todo` to submitit: the jobs, the points of each, and the cluster they run on."""
    executor, cluster = make_executor(options, folder, len(todo))
    args = (str(folder.resolve()), str(data_root.resolve()), device)
    if cluster != "local":  # one job per point; on Slurm, one job array
        chunks = [[point] for point in todo]
        jobs = executor.map_array(run_points, *zip(*[([p.cfg], *args) for p in todo]))
        return jobs, chunks, cluster
    gpus = torch.cuda.device_count()
    n_jobs = min(len(todo), options.jobs or max(gpus, 1))
    chunks = [todo[k::n_jobs] for k in range(n_jobs)]
    jobs = []
    for k, chunk in enumerate(chunks):  # submitit's way to give local jobs different GPUs: set them before each
        executor.update_parameters(gpus_per_node=1 if gpus else 0, visible_gpus=(k % gpus,) if gpus else ())
        jobs.append(executor.submit(run_points, [p.cfg for p in chunk], *args))
    return jobs, chunks, cluster


def _run_submitit(
    sweep: Sweep, todo: list[Point], options: Submitit, data_root: Path, device: str, progress: bool
) -> None:
    """Submit the points, then wait for the jobs, recording each point as its job ends. Ctrl-C cancels the jobs."""
    jobs, chunks, cluster = submit_points(options, sweep.folder, todo, data_root, device)
    ids = ", ".join(str(job.job_id) for job in jobs[:3]) + (", ..." if len(jobs) > 3 else "")
    print(
        f"submitted {len(jobs)} job(s) to submitit's {cluster} executor ({ids}); logs in {sweep.folder / JOBS_FOLDER}"
    )
    pending, ended = list(zip(jobs, chunks)), set()
    before = len(sweep.points) - len(todo)
    try:
        with tqdm(total=len(sweep.points), initial=before, desc="points", unit="point", disable=not progress) as bar:
            while pending:
                for job, chunk in [(job, chunk) for job, chunk in pending if job.done()]:
                    pending.remove((job, chunk))
                    for point, reason in zip(chunk, _outcomes(job, chunk)):
                        sweep.note(point, reason)
                        ended.add(point.name)
                        tqdm.write(f"{point.name} ({point.label}): " + (f"failed: {reason}" if reason else "finished"))
                # a job of several points finishes them one by one: the bar counts the folders finished meanwhile
                bar.n = before + sum(p.name in ended or sweep.state(p, {})[0] == "done" for p in todo)
                bar.refresh()
                if pending:
                    time.sleep(10 if cluster == "slurm" else 1)
    except KeyboardInterrupt:
        for job, _ in pending:
            job.cancel(check=False)
        raise


def _outcomes(job: Any, chunk: list[Point]) -> list[str | None]:
    """Each point's failure reason (None: finished) from a job that ended; a job killed before it returned fails
    the points it had not finished."""
    try:
        reasons = dict(job.result())
    except Exception as error:  # noqa: BLE001  killed, timed out, out of memory, cancelled: submitit's errors
        state = getattr(job, "state", "unknown")
        reason = f"job {job.job_id} ended without a result (state {state}; {type(error).__name__}); its log: "
        reasons = {point.name: reason + str(job.paths.stderr) for point in chunk}
    return [reasons.get(point.name) or None for point in chunk]


# ---------------------------------------------------------------------------------------------
# The whole sweep


def run_sweep(
    base: Config,
    grid: Mapping[str, Sequence[Any]],
    folder: Path | str,
    *,
    engine: str | Submitit = "local",
    data_dir: Path | str | None = None,
    device: str | torch.device = "auto",
    overwrite: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Run (or continue) the sweep of `grid` on top of `base` in `folder`; returns sweep.csv's table.

    Finished points are skipped, partial ones resume, failed ones are tried again; a point that fails is recorded in
    failures.json and the others go on. Raises ConfigError for an invalid grid or point, SweepError when the folder
    holds another grid (unless `overwrite`) or the engine cannot run.
    """
    sweep = plan_sweep(base, grid, folder, overwrite)
    sweep.check()
    return execute(sweep, engine, data_dir_of(data_dir), str(device), progress)


def execute(sweep: Sweep, engine: str | Submitit, data_root: Path, device: str, progress: bool) -> pd.DataFrame:
    """Run the points of a checked sweep that are not done, then write the summary; returns its table."""
    failures = sweep.failures()
    todo = [point for point in sweep.points if sweep.state(point, failures)[0] != "done"]
    data: dict[int, MNISTSplits] = {}
    if engine == "local":
        where = resolve_device(device)
        for point in todo:
            check_memory(point.cfg, where)
        for val_size in sorted({point.cfg.val_size for point in todo}):  # before anything is written
            data[val_size] = load_mnist(data_root, val_size, where)
    elif not isinstance(engine, Submitit):
        raise SweepError(f"unknown engine {engine!r}; choose 'local' or a Submitit(...)")
    sweep.folder.mkdir(parents=True, exist_ok=True)
    with _locked(sweep.folder):
        sweep.save()
        if todo and engine == "local":
            _run_local(sweep, todo, data, progress)
        elif todo:
            _run_submitit(sweep, todo, engine, data_root, device, progress)
        return write_summary(sweep.folder)


# ---------------------------------------------------------------------------------------------
# The summary


def sweep_table(folder: Path | str) -> pd.DataFrame:
    """sweep.csv's table: one row per point and finished level (one row with an empty level for a point with none),
    the grid's fields first, then the point's run folder, state and failure reason, the level's percent of weights
    and number of trials (n_trials), and for the ticket and each control the test accuracy at early stopping and the
    early-stopping iteration, mean and std over trials (std empty with one trial; a control's columns empty where it
    was not trained)."""
    sweep = open_sweep(folder)
    states = sweep.states()
    tables = []
    for point, (_, status) in zip(sweep.points, states.iterrows()):
        state, failure, levels = status.state, status.failure or np.nan, pd.DataFrame({"level": [np.nan]})
        try:
            levels = _levels(sweep.folder / point.name) if status.levels else levels
        except RunFolderError as error:  # a table damaged since: the point fails until it is mended
            state, failure = "failed", " ".join(str(error).split())
        tables.append(levels.assign(**_cells(point), run=point.name, state=state, failure=failure))
    fields = list(sweep.grid)
    stats = [
        f"{c}_{s}"
        for c in CONDITIONS
        for s in ("accuracy_mean", "accuracy_std", "stop_iteration_mean", "stop_iteration_std")
    ]
    columns = [*fields, "run", "state", "level", "percent_remaining", "n_trials", *stats, "failure"]
    return pd.concat(tables, ignore_index=True).reindex(columns=columns)


def _levels(run_dir: Path) -> pd.DataFrame:
    """A run's finished levels: percent of weights, trials, and each condition's accuracy and early-stop iteration."""
    results = RunFolder(run_dir).results()
    table = (
        results[results.condition == "ticket"]
        .groupby("level")
        .agg(percent_remaining=("percent_remaining", "mean"), n_trials=("trial", "nunique"))
    )
    for condition, rows in results.groupby("condition"):
        by_level = rows.groupby("level")
        table[f"{condition}_accuracy_mean"] = by_level.early_stop_test_accuracy.mean()
        table[f"{condition}_accuracy_std"] = by_level.early_stop_test_accuracy.std()
        table[f"{condition}_stop_iteration_mean"] = by_level.early_stop_iteration.mean()
        table[f"{condition}_stop_iteration_std"] = by_level.early_stop_iteration.std()
    return table.reset_index()


def grid_fields(table: pd.DataFrame) -> list[str]:
    """The grid's fields of a sweep table: its columns before `run`."""
    return list(table.columns[: table.columns.get_loc("run")])


def matching_percent(levels: pd.DataFrame) -> float:
    """The smallest percent of weights down to which the ticket is at least as accurate as the dense network at every
    pruned level (means over trials); 100 when the first pruned level is already below it, NaN without a pruned
    level. `levels` are one point's rows of a sweep table."""
    levels = levels.dropna(subset=["level"]).sort_values("level")
    if len(levels) < 2:
        return math.nan
    dense = levels.ticket_accuracy_mean.iloc[0]
    below = levels.ticket_accuracy_mean.iloc[1:] < dense
    keeps = levels.iloc[1:][~below.cumsum().astype(bool)]
    return float(keeps.percent_remaining.iloc[-1]) if len(keeps) else 100.0


def sweep_overview(table: pd.DataFrame) -> pd.DataFrame:
    """One row per point, for reading: its grid values, state, levels finished, the dense network's accuracy, the
    ticket's at the sparsest finished level, and how far the ticket stays at least as accurate as dense."""
    rows = []
    for run, levels in table.groupby("run", sort=False):
        first, finished = levels.iloc[0], levels.dropna(subset=["level"])
        row = {**{field: first[field] for field in grid_fields(table)}, "run": run, "state": first.state}
        row |= {"levels": len(finished), "dense acc": "—", "sparsest": "—", "ticket acc there": "—"}
        if len(finished):
            last = finished.iloc[-1]
            row["dense acc"] = f"{finished.ticket_accuracy_mean.iloc[0]:.2f}"
            row["sparsest"] = format_percent(last.percent_remaining)
            row["ticket acc there"] = f"{last.ticket_accuracy_mean:.2f}"
        row[">= dense down to"] = _matching_text(matching_percent(levels))
        rows.append(row)
    return _shown(pd.DataFrame(rows), grid_fields(table))


def _shown(table: pd.DataFrame, fields: list[str]) -> pd.DataFrame:
    """The grid's values as the command line writes them (0.001, not 1.000000e-03), for printing."""
    return table.assign(**{field: table[field].map(show_value) for field in fields})


def _matching_text(percent: float) -> str:
    if math.isnan(percent):
        return "—"
    return "no pruned level" if percent == 100 else format_percent(percent)


def plot_sweep(table: pd.DataFrame) -> Figure:
    """sweep.png from a sweep table (sweep_table, or sweep.csv read back): for a grid of one field, the ticket's
    accuracy at early stopping and early-stopping iteration against weights remaining, a line per value (mean ± std
    over trials); for two fields, a heatmap of the smallest percent of weights down to which the ticket is still at
    least as accurate as the dense network (matching_percent); for more, a line per point."""
    fields = grid_fields(table)
    finished = table.dropna(subset=["level"])
    if not len(finished):
        fig = Figure(figsize=(6, 2), layout="constrained")
        fig.text(0.5, 0.5, "No point of the sweep has a finished level yet.", ha="center", va="center")
        return fig
    if len(fields) == 2:
        return _heatmap(table, fields)
    if len(fields) == 1:
        labels = finished[fields[0]].map(show_value)
    else:
        labels = finished.apply(_label, axis=1, fields=fields)
    lines = finished.assign(  # the columns compare's figure reads
        run=labels,
        trials=finished.n_trials,
        accuracy_mean=finished.ticket_accuracy_mean,
        accuracy_std=finished.ticket_accuracy_std,
        stop_iteration_mean=finished.ticket_stop_iteration_mean,
        stop_iteration_std=finished.ticket_stop_iteration_std,
    )
    legend_title = f"winning ticket, {fields[0]}" if len(fields) == 1 else "winning ticket of"
    fig = plot_comparison(lines, legend_title=legend_title)
    trials = int(finished.n_trials.max())
    over = f" (mean ± std over {trials} trials)" if trials > 1 else ""
    failed = table[table.state == "failed"].drop_duplicates("run")
    failures = f"\nfailed: {'; '.join(_label(row, fields) for _, row in failed.iterrows())}" if len(failed) else ""
    fig.suptitle(f"Sweep over {' x '.join(fields)}: the winning ticket of each point{over}{failures}")
    return fig


def _label(row: pd.Series, fields: list[str]) -> str:
    return ", ".join(f"{field}={show_value(row[field])}" for field in fields)


def _heatmap(table: pd.DataFrame, fields: list[str]) -> Figure:
    rows_field, columns_field = fields
    points = list(table.groupby("run", sort=False))
    row_values = list(dict.fromkeys(levels[rows_field].iloc[0] for _, levels in points))
    column_values = list(dict.fromkeys(levels[columns_field].iloc[0] for _, levels in points))
    grid = np.full((len(row_values), len(column_values)), np.nan)
    texts = {}
    for _, levels in points:
        first = levels.iloc[0]
        i, j = row_values.index(first[rows_field]), column_values.index(first[columns_field])
        grid[i, j] = matching_percent(levels)
        text = _matching_text(grid[i, j]).replace("no pruned level", "none")
        if first.state != "done":
            text = first.state if math.isnan(grid[i, j]) else f"{text}\n({first.state})"
        texts[i, j] = text
    fig = Figure(figsize=(max(5.5, 1.6 * len(column_values) + 3), max(3.2, 0.8 * len(row_values) + 2)))
    fig.set_layout_engine("constrained")
    ax = fig.add_subplot()
    known = grid[~np.isnan(grid)]
    low = float(known.min()) if len(known) else 1.0
    norm = LogNorm(vmin=min(low, 99.0) * 0.9, vmax=100)
    cmap = matplotlib.colormaps["viridis_r"].with_extremes(bad="lightgrey")  # a point without a value: grey
    image = ax.imshow(grid, cmap=cmap, norm=norm, aspect="auto")
    for (i, j), text in texts.items():
        ax.text(j, i, text, ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(column_values)), [show_value(v) for v in column_values])
    ax.set_yticks(range(len(row_values)), [show_value(v) for v in row_values])
    ax.set_xlabel(columns_field)
    ax.set_ylabel(rows_field)
    colorbar = fig.colorbar(image, ax=ax, label="% of weights (log scale)")
    colorbar.ax.yaxis.set_major_formatter("{x:.3g}")
    colorbar.ax.yaxis.set_minor_formatter("{x:.3g}")
    ax.set_title(
        "Smallest % of weights down to which the ticket is still\nat least as accurate as the dense network "
        "(lower: a sparser ticket that matches)",
        fontsize=10,
    )
    return fig


def write_summary(folder: Path | str) -> pd.DataFrame:
    """Write sweep.csv and sweep.png into the sweep folder, each whole or not at all; returns the table."""
    folder = Path(folder)
    table = sweep_table(folder)
    write_atomic(folder / TABLE_FILE, lambda tmp: table.to_csv(tmp, index=False))
    figure = plot_sweep(table)
    write_atomic(folder / FIGURE_FILE, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    return table


# ---------------------------------------------------------------------------------------------
# The command line


def add_command(subcommands: argparse._SubParsersAction) -> None:
    """`python -m lth_helpers sweep --preset P --grid FIELD=V1,V2 ... --out SWEEP_DIR`."""
    parser = subcommands.add_parser(
        "sweep",
        usage="%(prog)s --preset PRESET --grid FIELD=V1,V2,... [--grid ...] --out SWEEP_DIR [options]",
        help="a grid of configs, each point a run folder; resumable, here or through submitit",
        description="Run a grid of configs, each point an ordinary run folder in SWEEP_DIR; the same command "
        "resumes. Exit status 2 for bad input (nothing written), 1 when a point failed (the others ran) or a file "
        "could not be written or read, 130 when interrupted.",
        epilog="docs/sweeps.md: local runs, the GPUs of one machine, Slurm, resume and failures, cost.",
    )
    parser.add_argument("--preset", required=True, help="the base config's preset: smoke, seed or paper")
    parser.add_argument("--out", required=True, type=folder_flag, metavar="SWEEP_DIR", help="the sweep folder")
    parser.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="FIELD=V1,V2,...",
        help="a config field and its values, parsed as its flag parses them (repeat for more fields; a list-valued "
        f"field separates its values with {LIST_SEPARATOR}: controls=reinit{LIST_SEPARATOR}reinit,random_prune)",
    )
    parser.add_argument("--dry-run", action="store_true", help="list the points and where each stands; run nothing")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="make this grid the folder's sweep when sweep.json holds another (points of the same config are kept)",
    )
    add_run_flags(parser)
    engine = parser.add_argument_group("where the points run")
    engine.add_argument(
        "--engine",
        choices=("local", "submitit"),
        default="local",
        help="local: one after another in this process (default); submitit: through submitit (pip install submitit)",
    )
    engine.add_argument("--cluster", choices=CLUSTERS, help="submitit's executor (default: auto, Slurm when found)")
    engine.add_argument("--jobs", type=int, help="at most this many points at once (Slurm: array parallelism)")
    engine.add_argument("--timeout-min", type=int, help="each job's time limit in minutes (required on Slurm)")
    engine.add_argument("--gpus-per-job", type=int, help="Slurm: GPUs per job (--gpus-per-node)")
    engine.add_argument("--cpus-per-job", type=int, help="Slurm: CPUs per job (--cpus-per-task)")
    engine.add_argument("--mem-gb", type=float, help="Slurm: memory per job in GB (--mem)")
    engine.add_argument("--slurm-partition", help="Slurm: the partition to submit to (--partition)")
    engine.add_argument("--slurm-account", help="Slurm: the account to charge (--account)")
    parser.set_defaults(run=sweep_command)


def engine_from(args: argparse.Namespace) -> str | Submitit:
    """The engine the flags ask for: "local", or Submitit options; SweepError for submitit flags without it."""
    options = {
        "cluster": args.cluster,
        "jobs": args.jobs,
        "timeout_min": args.timeout_min,
        "gpus_per_job": args.gpus_per_job,
        "cpus_per_job": args.cpus_per_job,
        "mem_gb": args.mem_gb,
        "partition": args.slurm_partition,
        "account": args.slurm_account,
    }
    given = {name: value for name, value in options.items() if value is not None}
    if args.engine == "local":
        if given:
            flag = {"partition": "slurm-partition", "account": "slurm-account"}.get(next(iter(given)))
            raise SweepError(f"--{flag or next(iter(given)).replace('_', '-')} needs --engine submitit")
        return "local"
    return Submitit(**given)


def sweep_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Check everything before writing anything (bad input: exit 2), then run the points and write the summary."""
    try:
        grid = parse_grid(args.grid)
        overrides = config_overrides(args)
        both = [field for field in grid if field in overrides]
        if both:
            raise ConfigError(f"{both[0]} is given both as a flag and in --grid; give it once")
        sweep = plan_sweep(make_config(args.preset, **overrides), grid, Path(args.out), args.overwrite)
        engine = engine_from(args)
        if args.device not in DEVICES:
            raise ConfigError(f"unknown device {args.device!r}; choose one of: {', '.join(DEVICES)}")
        if engine == "local":
            device = resolve_device(args.device)
            for point in sweep.points:
                check_memory(point.cfg, device)
        else:
            engine.resolve_cluster()
        sweep.check()
        states = sweep.states()
    except DamagedFileError as error:
        return fail(parser, error)
    except (ConfigError, SweepError) as error:
        parser.error(str(error))
    print(f"{args.out}: {len(sweep.points)} points ({' x '.join(sweep.grid)}) of the {args.preset} preset")
    if args.dry_run:
        _print_states(sweep, states)
        return 0
    try:
        table = execute(sweep, engine, data_dir_of(args.data_dir), args.device, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished levels are kept in {args.out}; the same command resumes", file=sys.stderr)
        return 130
    except (DataError, RunFolderError, SweepError, OSError) as error:
        return fail(parser, error)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(sweep_overview(table).to_string(index=False))
    failed = table.drop_duplicates("run").query("state == 'failed'")
    for row in failed.itertuples():
        print(f"failed: {row.run}: {row.failure}", file=sys.stderr)
    print(f"wrote {Path(args.out) / TABLE_FILE} and {Path(args.out) / FIGURE_FILE}")
    if len(failed):
        print(f"{len(failed)} of {len(sweep.points)} points failed; the same command retries them", file=sys.stderr)
    return 1 if len(failed) else 0


def _print_states(sweep: Sweep, states: pd.DataFrame) -> None:
    levels = [point.cfg.rounds + 1 for point in sweep.points]
    shown = states.assign(
        state=[
            f"{row.state} ({row.levels} of {total} levels finished)"
            if row.state in ("partial", "failed")
            else row.state
            for row, total in zip(states.itertuples(), levels)
        ]
    )
    print(_shown(shown, list(sweep.grid)).drop(columns=["levels", "failure"]).to_string(index=False))
    for row in states[states.state == "failed"].itertuples():
        print(f"{row.run} failed: {row.failure}")
