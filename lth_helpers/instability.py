"""Instability analysis of a finished run (Frankle, Dziugaite, Roy & Carbin, ICML 2020, "Linear Mode Connectivity and
the Lottery Ticket Hypothesis"): why rewinding to theta_0 works on LeNet.

    lines = analyse(Path("runs/seed"), levels=[0, 5], pairs=3)        # writes instability.csv and .png; lines to print
    paths = instability_analysis(Path("runs/seed"), data, levels=[0, 5])  # the same on data already loaded
    instability_table(paths)                                            # instability_report.py: the paths read

A network is *stable* at a point of training when two copies trained on from there with different batch orders end in
minima joined by a straight path of no higher error. Instability is the largest test error along the path between the
two copies' final weights minus the mean of the two ends' errors (the paper's definition, Section 2); the paper calls a
network stable when that is under 2 points, and finds LeNet on MNIST stable already at initialization. The training
split's is measured beside it; test error stays the headline number, as in the paper.

Each copy starts where its network started in the run (its condition's start rule, its mask), at the iteration k its
level trained from, and trains from k to the config's `iterations` with a batch order of its own; the copies that start
from one iteration train in one stack. The points of every straight path are networks too, evaluated as one stack in
slices of at most PATH_STACK networks, the training split in chunks, which bounds the memory. What is analysed by
default, the files, how a rerun reuses them and what each exit status leaves: docs/run-folder.md.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import data as datasets
from .conditions import ConditionError, canonical, start_iteration
from .config import Config, ConfigError, check_memory, memory_needed, resolve_device
from .data import MNISTSplits, load_mnist
from .experiment import ExperimentError, check_data, cut_from, derive_seed, level_networks
from .files import DamagedFileError, RunFolderError, WriteError, read_checked
from .flags import one_line
from .instability_report import KEYS, STABLE_BELOW, instability_conclusions, instability_table
from .model import Params, StackedMLP, concat, layer_shapes, select, to_device
from .plotting import curve_levels, plot_instability
from .pruning import Masks, build_model, full_masks
from .runs import INIT, PROGRESS, REWIND, RunFolder
from .tables import RESULTS
from .training import DIVERGED_LOSS, DivergenceError, Evaluator, train_networks

POINTS = 25  # evenly spaced points along each straight path, both ends included
MAX_POINTS = 1000  # a path sampled finer than this shows nothing more; a typo of a few zeros costs hours instead
MAX_PAIRS = 100  # pairs of copies per network: the spread over pairs is well measured long before this
TABLE, FIGURE = "instability.csv", "instability.png"
SPLITS = ("test", "train")  # test first: the headline number
COLUMNS = (*KEYS, "percent_remaining", "point", "alpha", "test_error", "test_loss", "train_error", "train_loss")
PATH_STACK = 128  # path networks evaluated at once: about 1 MB of weights each
TRAIN_CHUNK = 5000  # training images evaluated at once on a GPU: PATH_STACK networks' activations stay under 1 GB
PROGRESS_UPDATES = 10  # evaluations while the copies train, at most: each moves the progress bar
BOTH = f"{TABLE} and {FIGURE}"
Key = tuple[int, str, int, int, int]  # a pair of copies: its KEYS


class InstabilityError(ConfigError):
    """An analysis that cannot be run as asked (exit status 2, nothing written): not a finished run folder, a
    symbolic link where a file of the analysis lies, a level it lacks, a count out of bounds. One line."""


class InstabilityFault(RunFolderError):
    """The run folder could not be read or the analysis's files written (exit status 1); the message is one line and
    says what is on disk."""


@dataclass
class Pair:
    """Two copies of one network of the run, to be trained from the same start with different batch orders."""

    level: int
    condition: str
    trial: int
    rewind_iteration: int  # the iteration of training the copies start from, as the run's level did
    start: Params  # a stack of one
    masks: Masks  # a stack of one
    pair: int = 0  # which of the network's pairs of copies

    @property
    def key(self) -> Key:
        return self.level, self.condition, self.trial, self.rewind_iteration, self.pair


def analyse(
    run_dir: Path | str,
    *,
    levels: list[int] | None = None,
    conditions: list[str] | None = None,
    points: int = POINTS,
    pairs: int = 1,
    rewind_iterations: list[int] | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
) -> list[str]:
    """The instability analysis of the finished run in `run_dir`, from the arguments of the command line to the lines
    it prints: checks the request, loads MNIST from `data_dir` onto `device`, runs instability_analysis (which writes
    instability.csv and instability.png) and returns the table and sentences that read it.

    Raises, every one of them in one line: InstabilityError (a ConfigError) for bad input, before MNIST is loaded or
    anything written; InstabilityFault or another RunFolderError for a run folder that cannot be read, is damaged or
    in use, or files that cannot be written; DataError for MNIST missing or damaged; ExperimentError when a copy
    diverges.
    """
    run_dir, on = Path(run_dir), resolve_device(device)
    request = dict(
        levels=levels, conditions=conditions, points=points, pairs=pairs, rewind_iterations=rewind_iterations
    )
    cfg, _ = check_request(run_dir, on, **request)  # bad input costs nothing: MNIST is not loaded yet
    data = load_mnist(datasets.data_dir(data_dir), cfg.val_size, on)
    paths = instability_analysis(run_dir, data, progress=progress, **request)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        table = instability_table(paths).to_string()
    return [table, *instability_conclusions(paths), f"{BOTH} are in {run_dir}"]


def instability_analysis(
    run_dir: Path | str,
    data: MNISTSplits,
    *,
    levels: list[int] | None = None,
    conditions: list[str] | None = None,
    points: int = POINTS,
    pairs: int = 1,
    rewind_iterations: list[int] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Analyse `levels` of the finished run in `run_dir` (default: the levels nearest the paper's Figure 3 sparsities),
    `pairs` pairs of copies of each of its networks (its `conditions` at pruned levels, default all), and write
    instability.csv and instability.png into it, both or neither; returns the table (every path in the file).

    `rewind_iterations` (default: the run's own rewind point) are the iterations the dense network's copies start
    from; given, level 0 is analysed whether or not `levels` names it. Raises InstabilityError, before anything is
    computed or written, for bad input (see check_request); InstabilityFault or another RunFolderError for a folder
    that cannot be read, is damaged or in use, or a failed write (the files before are then left as they were);
    ExperimentError when a copy diverges (nothing is written then either).
    """
    run_dir = Path(run_dir)
    request = dict(
        levels=levels, conditions=conditions, points=points, pairs=pairs, rewind_iterations=rewind_iterations
    )
    cfg, keys = check_request(run_dir, data.train_x.device, **request)
    check_data(cfg, data)
    try:
        with RunFolder.open(run_dir, cfg) as run:
            before = read_checked(run.path / TABLE, Path.read_bytes) if run.exists(TABLE) else None
            table = _earlier_paths(before, cfg)
            counts = table.groupby(list(KEYS)).point.count() if len(table) else pd.Series()
            missing = [key for key in keys if counts.get(key) != points]
            if missing:
                chosen = _pairs(cfg, run, data, missing, progress)
                new = path_table(chosen, train_copies(cfg, chosen, data, progress), data, points)
                kept = table[~table.set_index(list(KEYS)).index.isin(missing)] if len(table) else table
                table = pd.concat([kept, new], ignore_index=True) if len(kept) else new
            table = table.sort_values([*KEYS, "point"], ignore_index=True)
            figure = io.BytesIO()  # drawn before either file is written: a figure that fails writes nothing
            plot_instability(table, STABLE_BELOW).savefig(figure, format="png", dpi=120)
            _write_both(run, table.to_csv(index=False).encode(), figure.getvalue(), before)
    except OSError as error:  # a folder or file this process may not read
        raise InstabilityFault(f"{one_line(error)}; the analysis wrote nothing") from None
    return table


def check_request(run_dir: Path, device: torch.device, **request: Any) -> tuple[Config, list[Key]]:
    """The finished run's config and the pairs of copies to analyse for `request` (wanted_pairs' arguments), as KEYS;
    reads the run's config, progress and results through RunFolder's checked reads, and writes nothing. Raises
    InstabilityError for bad input: not a finished run folder (a copy of a run's tables included), a symbolic link on
    the way to a file the analysis reads or writes, a level, condition or rewind iteration the run lacks, points,
    pairs or a stack of copies out of bounds; DamagedFileError for a damaged file; InstabilityFault for one this
    process may not read."""
    try:
        cfg = finished_config(run_dir)
        folder = RunFolder(run_dir)
        RunFolder.check(run_dir, cfg)  # a link on the way to a file of the run, masks/ or tickets/ a file
        for name in (TABLE, FIGURE):
            folder.exists(name)  # a link where the analysis writes
        keys = wanted_pairs(cfg, folder.results(), **request)
    except DamagedFileError:
        raise
    except RunFolderError as error:  # what RunFolder refuses before anything is read: a link, a file for a folder
        raise InstabilityError(str(error)) from None
    except OSError as error:
        raise InstabilityFault(f"{one_line(error)}; the analysis wrote nothing") from None
    _check_fits(cfg, keys, device)
    return cfg, keys


def finished_config(run_dir: Path) -> Config:
    """The config of the finished run in `run_dir`; InstabilityError for a folder that holds none, a copy of a run's
    tables, or an unfinished run (RunFolderError for a damaged config.json or progress.json, or a link)."""
    if not run_dir.is_dir():
        raise InstabilityError(f"{run_dir} is not a folder; give a finished run folder")
    folder = RunFolder(run_dir)
    cfg = folder.saved_config()
    if cfg is None:
        raise InstabilityError(f"{run_dir} is not a run folder (it has no config.json)")
    if not folder.exists(PROGRESS) and folder.exists(RESULTS):
        raise InstabilityError(
            f"{run_dir} holds a {RESULTS} but no {PROGRESS}: a copy of a run's tables (as in docs/results), with "
            f"no weights or masks to analyse; give the run folder it came from"
        )
    if folder.levels_done < cfg.rounds + 1:
        raise InstabilityError(
            f"{run_dir} is not finished ({folder.levels_done} of {cfg.rounds + 1} levels); "
            f"run the same command that started it to finish it first"
        )
    return cfg


def wanted_pairs(
    cfg: Config,
    results: pd.DataFrame,
    *,
    levels: list[int] | None,
    conditions: list[str] | None,
    points: int,
    pairs: int,
    rewind_iterations: list[int] | None,
) -> list[Key]:
    """The pairs of copies to analyse, as KEYS (level, condition, trial, rewind_iteration, pair); InstabilityError
    for bad arguments: each is bounded, so that a typo is refused before anything trains."""
    if not _whole(points) or not 2 <= points <= MAX_POINTS:
        raise InstabilityError(
            f"points must be a whole number from 2 (both ends of the path) to {MAX_POINTS}, got {points!r}"
        )
    if not _whole(pairs) or not 1 <= pairs <= MAX_PAIRS:
        raise InstabilityError(f"pairs must be a whole number from 1 to {MAX_PAIRS}, got {pairs!r}")
    levels = curve_levels(results) if levels is None else levels
    if not levels:
        raise InstabilityError(f"no level to analyse; name levels of this run, 0 to {cfg.rounds}")
    for level in levels:
        if not _whole(level) or not 0 <= level <= cfg.rounds:
            raise InstabilityError(f"level {level!r} is not a level of this run (0 to {cfg.rounds})")
    analysed = ("ticket", *cfg.controls)
    if conditions is not None:
        try:  # a condition by any of its names (ticket:reinit is reinit), each once
            named = [c if c == "ticket" else canonical(c) for c in conditions]
        except ConditionError:  # no condition's name at all
            named = []
        if not named or not set(named) <= set(analysed) or len(set(named)) < len(named):
            raise InstabilityError(
                f"conditions must name some of this run's {', '.join(analysed)}, each once, got {conditions!r}"
            )
        conditions = named
    if rewind_iterations == []:
        raise InstabilityError(f"no rewind iteration given; name iterations of training, 0 to {cfg.iterations - 1}")
    for k in rewind_iterations or ():
        if not _whole(k) or not 0 <= k < cfg.iterations:
            raise InstabilityError(
                f"rewind iteration {k!r} is not an iteration of training (0 to {cfg.iterations - 1})"
            )
    networks = []
    for level in sorted(set(levels) | ({0} if rewind_iterations else set())):
        if level == 0:
            starts = sorted(set(rewind_iterations or [cfg.rewind_iteration]))
            networks += [(0, "ticket", t, k) for k in starts for t in range(cfg.trials)]
            continue
        for condition in [c for c in analysed if conditions is None or c in conditions]:
            networks += [(level, condition, t, start_iteration(cfg.rewind_iteration, level)) for t in range(cfg.trials)]
    return [(*network, pair) for network in networks for pair in range(pairs)]


def _whole(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_fits(cfg: Config, keys: list, device: torch.device) -> None:
    """InstabilityError if the copies of `keys`, trained in one stack, cannot fit in `device`'s memory."""
    copies = 2 * len(keys)
    as_trials = dataclasses.replace(cfg, trials=copies, rounds=0)  # the copies weigh what as many dense trials do
    try:
        check_memory(as_trials, device)
    except ConfigError:
        raise InstabilityError(
            f"the {copies} copies to train need about {memory_needed(as_trials) / 2**30:,.1f} GiB, more than "
            f"{device.type} has; ask for fewer pairs, levels or rewind iterations"
        ) from None


def _earlier_paths(before: bytes | None, cfg: Config) -> pd.DataFrame:
    """The paths of earlier analyses in instability.csv (`before`, its bytes); none when it is absent or not a table
    this tool writes for this run (damaged, edited, or an older layout): every path is then computed again, and the
    file replaced."""
    if before is None:
        return pd.DataFrame()
    try:
        table = pd.read_csv(io.BytesIO(before))
        check_paths(table, cfg)
    except ValueError:  # pandas' parser errors and undecodable bytes are ValueErrors too
        return pd.DataFrame()
    return table


def check_paths(table: pd.DataFrame, cfg: Config) -> None:
    """Raise ValueError unless `table` is an instability.csv of the run of `cfg`: its columns, whole numbers where
    counts belong, only levels, conditions, trials and rewind iterations the run has, errors finite in [0, 100] and
    losses finite, every path's points 0 to n - 1 each once, at alpha = point / (n - 1)."""
    if tuple(table.columns) != COLUMNS or not len(table):
        raise ValueError("its columns are not those of instability.csv")
    for column in set(COLUMNS) - {"condition"}:
        if not pd.api.types.is_numeric_dtype(table[column]) or not np.isfinite(table[column]).all():
            raise ValueError(f"its {column} column holds other things than finite numbers")
    for column in ("level", "trial", "rewind_iteration", "pair", "point"):
        if not pd.api.types.is_integer_dtype(table[column]):
            raise ValueError(f"its {column} column holds other things than whole numbers")
    networks = set(zip(table.level, table.condition, table.trial, table.rewind_iteration))
    for level, condition, trial, k in networks:
        if not (
            0 <= level <= cfg.rounds
            and condition in cfg.level_conditions(level)
            and 0 <= trial < cfg.trials
            and 0 <= k < cfg.iterations
        ):
            raise ValueError(f"it has paths of level {level}, condition {condition}, trial {trial}, not the run's")
    if not table.pair.between(0, MAX_PAIRS - 1).all() or not table.percent_remaining.between(0, 100).all():
        raise ValueError("its pair or percent_remaining column holds numbers out of range")
    for split in SPLITS:
        if not table[f"{split}_error"].between(0, 100).all() or (table[f"{split}_loss"] < 0).any():
            raise ValueError(f"its {split} errors or losses lie outside [0, 100] or below 0")
    for _, path in table.groupby(list(KEYS)):
        n = len(path)
        if n < 2 or sorted(path.point) != list(range(n)) or not np.allclose(path.alpha, path.point / (n - 1)):
            raise ValueError("a path's points are not 0 to n - 1, each once, evenly spaced")


def _write_both(run: RunFolder, table: bytes, figure: bytes, before: bytes | None) -> None:
    """Write instability.csv, then instability.png, into the open `run`: both, or neither. A failure (a full disk, a
    Ctrl-C) after the table puts the table before back (`before`, or none): an InstabilityFault says what is on
    disk; a KeyboardInterrupt goes on once the table is back."""
    wrote_table = False
    try:
        run.write(TABLE, lambda tmp: tmp.write_bytes(table))
        wrote_table = True
        run.write(FIGURE, lambda tmp: tmp.write_bytes(figure))
    except BaseException as error:
        state = f"the analysis wrote nothing: {BOTH} are as they were"
        if wrote_table:
            try:
                _put_back(run, before)
            except BaseException:  # the table could not be put back: say what is there
                state = f"{TABLE} is this analysis's while {FIGURE} is not; run the same command again to write both"
        if not isinstance(error, WriteError):
            raise
        raise InstabilityFault(
            f"could not write {error.file}: {error.reason}; {state}: free some space (or fix the permission) and run "
            f"the same command again"
        ) from None


def _put_back(run: RunFolder, before: bytes | None) -> None:
    """instability.csv as it was before the analysis: `before`, or none."""
    if before is None:
        (run.path / TABLE).unlink(missing_ok=True)  # not a link: check_request refused one
    else:
        run.write(TABLE, lambda tmp: tmp.write_bytes(before))


def _pairs(cfg: Config, run: RunFolder, data: MNISTSplits, keys: list, progress: bool) -> list[Pair]:
    """The start of every pair in `keys`: where its network started in the run."""
    theta_0 = run.load(INIT)
    rewind_point = run.load(REWIND) if cfg.rewind_iteration else theta_0
    dense_masks = full_masks(1, layer_shapes(cfg.fc1_width, cfg.fc2_width))
    starts: dict[tuple, tuple[Params, Masks]] = {}  # by network: (level, condition, trial, rewind_iteration)
    for level in sorted({key[0] for key in keys}):
        if level == 0:
            for k in sorted({key[3] for key in keys if key[0] == 0}):
                saved = {0: theta_0, cfg.rewind_iteration: rewind_point}  # the others are replayed
                weights = saved[k] if k in saved else replay_dense(cfg, theta_0, data, k, progress)
                for t in range(cfg.trials):
                    starts[0, "ticket", t, k] = select(weights, [t]), dense_masks
            continue
        for net in level_networks(cfg, level, rewind_point, run.load_masks(level), cut_from(cfg, run, level)):
            starts[level, net.condition, net.trial, start_iteration(cfg.rewind_iteration, level)] = (
                net.params,
                net.masks,
            )
    return [Pair(*key[:4], *starts[key[:4]], pair=key[4]) for key in keys]


def replay_dense(cfg: Config, theta_0: Params, data: MNISTSplits, iterations: int, progress: bool = True) -> Params:
    """The dense networks of every trial after `iterations` iterations of the run's level 0: theta_0 trained again with
    the same batch orders, in a stack of the same size (so rounded the same way)."""
    device = data.train_x.device
    model = build_model(
        to_device(theta_0, device), full_masks(cfg.trials, layer_shapes(cfg.fc1_width, cfg.fc2_width), device)
    )
    result = train_networks(
        model,
        data,
        iterations=iterations,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        eval_every=iterations,
        batch_seeds=[derive_seed(cfg.seed, "batches", t, 0) for t in range(cfg.trials)],
        desc=f"level 0 to iteration {iterations}",
        progress=progress,
    )
    return to_device(result.params, "cpu")


def copy_seed(cfg: Config, pair: Pair, copy: int) -> int:
    """The batch order of copy 0 or 1 of `pair`: its own, unlike any of the run's or another pair's."""
    network = (pair.level, pair.condition, pair.trial, pair.rewind_iteration)
    return derive_seed(cfg.seed, "instability", *network, copy, *([pair.pair] if pair.pair else []))


def train_copies(cfg: Config, pairs: list[Pair], data: MNISTSplits, progress: bool = True) -> Params:
    """Train both copies of every pair from its rewind iteration k to the config's `iterations` (T - k steps, the
    batches of iterations k onwards), the copies that start from one iteration in one stack; returns their final
    weights (mask applied), the copies of pair i at 2i and 2i + 1."""
    device = data.train_x.device
    trained: dict[int, Params] = {}  # by the pair's index in `pairs`
    for k in sorted({pair.rewind_iteration for pair in pairs}):
        chosen = [i for i, pair in enumerate(pairs) if pair.rewind_iteration == k]
        group = [pairs[i] for i in chosen]
        try:
            result = train_networks(
                build_model(
                    to_device(concat([pair.start for pair in group for _ in range(2)]), device),
                    to_device(concat([pair.masks for pair in group for _ in range(2)]), device),
                ),
                data,
                iterations=cfg.iterations,
                start_iteration=k,
                batch_size=cfg.batch_size,
                learning_rate=cfg.learning_rate,
                eval_every=max(cfg.eval_every, (cfg.iterations - k) // PROGRESS_UPDATES),  # evaluations move the bar
                batch_seeds=[copy_seed(cfg, pair, copy) for pair in group for copy in (0, 1)],
                desc=f"{2 * len(group)} copies from iteration {k}",
                progress=progress,
            )
        except DivergenceError as error:
            pair = group[error.network // 2]
            raise ExperimentError(
                f"training diverged (loss {DIVERGED_LOSS}) in the instability analysis at level {pair.level}, "
                f"condition {pair.condition}, trial {pair.trial}, pair {pair.pair}, copy {error.network % 2}, "
                f"iteration {error.iteration}; nothing was written"
            ) from None
        ends = to_device(result.params, "cpu")
        for j, i in enumerate(chosen):
            trained[i] = select(ends, [2 * j, 2 * j + 1])
    return concat([trained[i] for i in range(len(pairs))])


def path_table(pairs: list[Pair], ends: Params, data: MNISTSplits, points: int) -> pd.DataFrame:
    """Test and training error (%) and loss at `points` evenly spaced points of the straight path between the two
    trained copies of every pair (`ends` from train_copies), one row per point."""
    alphas = torch.linspace(0, 1, points)
    device = data.test_x.device
    columns: dict[str, list[torch.Tensor]] = {f"{split}_{m}": [] for split in SPLITS for m in ("error", "loss")}
    per_slice = max(1, PATH_STACK // points)
    for first in range(0, len(pairs), per_slice):
        chosen = range(first, min(first + per_slice, len(pairs)))
        masks = concat([pair.masks for pair in (pairs[i] for i in chosen)])
        model = path_model(
            select(ends, [2 * i for i in chosen]), select(ends, [2 * i + 1 for i in chosen]), masks, alphas
        ).to(device)
        evaluators = {
            "test": Evaluator([(data.test_x, data.test_y)], model.n_networks),
            # 55,000 images: in chunks on a GPU too, where the test split goes through at once
            "train": Evaluator(
                [(data.train_x, data.train_y)], model.n_networks, TRAIN_CHUNK if device.type == "cuda" else None
            ),
        }
        for split, evaluator in evaluators.items():
            (loss,), (accuracy,) = evaluator(model)
            columns[f"{split}_error"].append((100 - accuracy).cpu().view(len(chosen), points))
            columns[f"{split}_loss"].append(loss.cpu().view(len(chosen), points))
    values = {name: torch.cat(parts) for name, parts in columns.items()}
    rows = []
    for i, pair in enumerate(pairs):
        percent = 100 * sum(float(m.sum()) for m in pair.masks.values()) / sum(m.numel() for m in pair.masks.values())
        for p, alpha in enumerate(alphas.tolist()):
            measured = [float(values[name][i, p]) for name in COLUMNS[-4:]]
            rows.append((*pair.key, percent, p, alpha, *measured))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def path_model(first: Params, second: Params, masks: Masks, alphas: torch.Tensor) -> StackedMLP:
    """A stack of the networks (1 - a) first + a second, mask applied, for every pair (the stacks `first`, `second`
    and `masks`) and every a in `alphas`: pair i's point p is network i * len(alphas) + p. At a = 0 and a = 1 the
    weights are exactly `first` and `second`."""
    n, fc1_width, _ = first["fc1.weight"].shape
    model = StackedMLP(n * len(alphas), fc1_width, first["fc2.weight"].shape[1])
    with torch.no_grad():
        for key, value in model.named_parameters():
            a = alphas.view(1, -1, *[1] * (first[key].dim() - 1))
            point = (1 - a) * first[key][:, None] + a * second[key][:, None]
            if key.endswith("weight"):
                point = point * masks[key.split(".")[0]][:, None]
            value.copy_(point.reshape(value.shape))
    return model
