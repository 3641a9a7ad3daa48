"""A sweep's points as submitit jobs (docs/sweeps.md): the engine's options, submitting the points, and what a job runs.

    options = make_engine("submitit", {"cluster": "local", "jobs": 2})   # JobOptions; "local" for this process
    jobs, chunks, cluster = submit_points(options, folder, points, data_root, "auto")

submitit is imported only when a sweep asks for it (`import_submitit`). Each job runs `run_points` in a process of
its own, with the Python interpreter that submitted it; sweep.py waits for the jobs and records each point.
"""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import Config, ConfigError, resolve_device
from .data import DataError, load_mnist
from .experiment import ExperimentError, run_experiment
from .files import RunFolderError
from .flags import is_out_of_memory, one_line

INSTALL = "pip install 'submitit>=1.5' (in a clone of this repository: pip install '.[cluster]')"
JOBS_FOLDER = "submitit"  # in the sweep folder: each job's pickled call, result, script and logs
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # submitit's local executor kills a job after 2 minutes unless told otherwise


class SweepConfigError(ConfigError):
    """Bad input to a sweep (exit status 2, nothing written): another grid in the folder, an engine that cannot run."""


def failure_reason(error: BaseException) -> str:
    """An exception that ended a point, in one line."""
    if is_out_of_memory(error):
        return f"out of memory ({one_line(error)})"
    known = isinstance(error, (ExperimentError, ConfigError, DataError, RunFolderError, OSError))
    return one_line(error) if known else f"{type(error).__name__}: {one_line(error)}"


def run_points(
    configs: Sequence[Config], sweep_folder: str, data_root: str, device: str, gpu: int | None = None
) -> list[tuple[str, str]]:
    """What one submitit job runs: the points of `configs` one after another in `sweep_folder`, on the `gpu`-th GPU
    it sees when given. Returns (run folder, "" or why it failed) per point; a failed point ends only itself."""
    if gpu is not None:  # before CUDA starts: the one GPU this job trains on
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
        os.environ["CUDA_VISIBLE_DEVICES"] = visible[gpu % len(visible)]
    outcomes, data = [], {}
    for cfg in configs:
        try:
            if cfg.val_size not in data:
                data[cfg.val_size] = load_mnist(Path(data_root), cfg.val_size, resolve_device(device))
            run_experiment(cfg, Path(sweep_folder) / cfg.run_name(), data[cfg.val_size], progress=False)
            reason = ""
        except Exception as error:  # noqa: BLE001  the point failed, recorded; Ctrl-C still ends the job
            reason = failure_reason(error)
        outcomes.append((cfg.run_name(), reason))
    return outcomes


JOB_FLAGS = {  # JobOptions' fields after `cluster`, each the flag of its name: type, help, submitit's parameter
    "jobs": (int, "at most this many points at once (Slurm: array parallelism; local: the number of jobs)", None),
    "timeout_min": (int, "each job's time limit in minutes (required on Slurm; local: 7 days)", None),
    "gpus_per_job": (int, "Slurm: GPUs per job (--gpus-per-node)", "gpus_per_node"),
    "cpus_per_job": (int, "Slurm: CPUs per job (--cpus-per-task)", "cpus_per_task"),
    "mem_gb": (float, "Slurm: memory per job in GB (--mem)", "mem_gb"),
    "slurm_partition": (str, "Slurm: the partition to submit to (--partition)", "slurm_partition"),
    "slurm_account": (str, "Slurm: the account to charge (--account)", "slurm_account"),
}
SLURM_PARAMETERS = {option: parameter for option, (_, _, parameter) in JOB_FLAGS.items() if parameter}


@dataclass(frozen=True)
class JobOptions:
    """The points as submitit jobs through its AutoExecutor (docs/sweeps.md). Slurm: one job per point, a job array;
    local: `jobs` jobs on this machine (default one per GPU), job k on GPU k modulo their number, training every
    `jobs`-th point; debug: the jobs in this process; auto: Slurm where srun is found, else local."""

    cluster: str = "auto"
    jobs: int | None = None
    timeout_min: int | None = None
    gpus_per_job: int | None = None
    cpus_per_job: int | None = None
    mem_gb: float | None = None
    slurm_partition: str | None = None
    slurm_account: str | None = None

    def __post_init__(self) -> None:
        if self.cluster not in ("auto", "slurm", "local", "debug"):
            raise SweepConfigError(f"unknown cluster {self.cluster!r}; choose one of: auto, slurm, local, debug")
        for name in ("jobs", "timeout_min", "cpus_per_job", "mem_gb"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise SweepConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.gpus_per_job is not None and self.gpus_per_job < 0:
            raise SweepConfigError(f"--gpus-per-job must be 0 or more, got {self.gpus_per_job}")

    def resolve_cluster(self) -> str:
        """The executor these options run on; SweepConfigError when submitit is missing, for a Slurm option off
        Slurm, and for Slurm without srun or --timeout-min."""
        cluster = import_submitit().AutoExecutor.which() if self.cluster == "auto" else self.cluster
        misplaced = [name for name in SLURM_PARAMETERS if getattr(self, name) is not None]
        if cluster != "slurm" and misplaced:
            raise SweepConfigError(
                f"--{misplaced[0].replace('_', '-')} is for Slurm, and the sweep runs on the {cluster} executor"
            )
        if cluster == "slurm" and shutil.which("srun") is None:
            raise SweepConfigError("--cluster slurm: no Slurm here (srun not found); run on a Slurm login node")
        if cluster == "slurm" and self.timeout_min is None:
            raise SweepConfigError("a Slurm sweep needs --timeout-min: each job's time limit in minutes")
        return cluster


def import_submitit() -> Any:
    """The submitit module, imported only when a sweep asks for it."""
    try:
        return importlib.import_module("submitit")
    except ImportError:
        raise SweepConfigError(f"--engine submitit needs the submitit package, not installed: {INSTALL}") from None


def submit_points(
    options: JobOptions, folder: Path, todo: Sequence[Any], data_root: Path, device: str
) -> tuple[list[Any], list[list[Any]], str]:
    """Submit the points `todo` (sweep.Point: a `name` and a `cfg`) through submitit's AutoExecutor: the jobs, the
    points of each, and the cluster they run on."""
    cluster = options.resolve_cluster()
    executor = import_submitit().AutoExecutor(folder / JOBS_FOLDER, cluster=cluster)
    timeout = options.timeout_min or (LOCAL_TIMEOUT_MIN if cluster == "local" else None)
    slurm = {parameter: getattr(options, option) for option, parameter in SLURM_PARAMETERS.items()}
    executor.update_parameters(name="lth-sweep", timeout_min=timeout, **slurm)
    args = (str(folder.resolve()), str(data_root.resolve()), device)
    if cluster != "local":  # one job per point; on Slurm one job array
        executor.update_parameters(slurm_array_parallelism=options.jobs or len(todo))
        jobs = executor.map_array(run_points, *zip(*[([point.cfg], *args) for point in todo]))
        return jobs, [[point] for point in todo], cluster
    gpus = torch.cuda.device_count()
    n_jobs = min(len(todo), options.jobs or max(gpus, 1))
    chunks = [todo[k::n_jobs] for k in range(n_jobs)]
    executor.update_parameters(gpus_per_node=gpus)  # each job sees every GPU and picks its own (run_points' gpu)
    saved, log = os.dup(2), os.open(folder / JOBS_FOLDER / "controllers.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 2)  # the job controllers' stderr, which they inherit: where Ctrl-C's tracebacks go, not the terminal
    try:
        jobs = [
            executor.submit(run_points, [p.cfg for p in chunk], *args, gpu=k if gpus else None)
            for k, chunk in enumerate(chunks)
        ]
    finally:
        os.dup2(saved, 2)
        os.close(saved), os.close(log)
    return jobs, chunks, cluster


def make_engine(engine: str, options: Mapping[str, Any]) -> str | JobOptions:
    """The engine asked for: "local", or JobOptions of `options` (its fields; None: not given); SweepConfigError
    for an option of submitit without it."""
    given = {name: value for name, value in options.items() if value is not None}
    if engine == "local" and given:
        raise SweepConfigError(f"--{next(iter(given)).replace('_', '-')} needs --engine submitit")
    return "local" if engine == "local" else JobOptions(**given)
