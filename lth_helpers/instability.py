"""Instability analysis of a finished run (Frankle, Dziugaite, Roy & Carbin, ICML 2020, "Linear Mode Connectivity and
the Lottery Ticket Hypothesis"): why rewinding to theta_0 works on LeNet.

    paths = instability_analysis(Path("runs/seed"), data, levels=[0, 5])   # writes instability.csv and .png
    pair_instability(paths)                                             # one row per pair of copies

    python -m lth_helpers instability runs/seed --levels 0,5 --points 25 --rewind-iterations 0,100,500

A network is *stable* at a point of training when two copies trained on from there with different batch orders end in
minima joined by a straight path of no higher error. Instability is the largest test error along the path between the
two copies' final weights minus the mean of the two ends' errors (the paper's definition, Section 2); the paper calls a
network stable when that is under 2 points, and finds that iterative magnitude pruning finds matching subnetworks just
where they are stable, and LeNet on MNIST stable already at initialization.

For each chosen level, condition (the ticket and the run's controls; level 0: the dense network) and trial, two copies
start where that network started in the run: its rewind point (reinit: its fresh initialization) and its mask. Each
trains for the config's `iterations` with a batch order of its own, as the run's levels train from their rewind point;
every copy of every pair trains in one stack. The `points` evenly spaced points of every straight path,
(1 - a) W_1 + a W_2 with the mask applied, are networks too, evaluated on the test set as one stack (in slices of at
most PATH_STACK networks, which bounds the memory). The dense network can also start from other iterations k of its
own training (`rewind_iterations`): its weights after k iterations, replayed from theta_0 with the run's level-0
batch order.

instability.csv holds one row per point of every path. A rerun reuses the paths already there (with the same number of
points) and computes only the missing ones: asking for another level costs that level alone.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from . import conditions
from .config import CONDITIONS, Config, ConfigError, resolve_device
from .data import DataError, MNISTSplits, data_dir, load_mnist
from .experiment import ExperimentError, check_data, derive_seed, level_networks
from .files import DamagedFileError, RunFolderError
from .flags import add_data_flags, fail
from .model import Params, StackedMLP, concat, layer_shapes, select, to_device
from .plotting import curve_levels
from .pruning import Masks, build_model, full_masks
from .report import format_percent, mean_std
from .runs import INIT, REWIND, RunFolder
from .training import DIVERGED, DivergenceError, Evaluator, train_networks

POINTS = 25  # evenly spaced points along each straight path, both ends included
STABLE_BELOW = 2.0  # points of test error: the paper's threshold for a stable network
TABLE, FIGURE = "instability.csv", "instability.png"
KEYS = ("level", "condition", "trial", "rewind_iteration")  # one pair of copies
COLUMNS = (*KEYS, "percent_remaining", "point", "alpha", "test_error", "test_loss")
PATH_STACK = 128  # path networks evaluated at once: about 1 MB of weights each
PROGRESS_UPDATES = 10  # evaluations while the copies train, at most: each moves the progress bar


class InstabilityError(ValueError):
    """An analysis that cannot be run as asked: not a finished run folder, a level it lacks, a bad count. One line."""


@dataclass
class Pair:
    """Two copies of one network of the run, to be trained from the same start with different batch orders."""

    level: int
    condition: str
    trial: int
    rewind_iteration: int  # the iteration of training the copies start from (reinit: its fresh initialization, 0)
    start: Params  # a stack of one
    masks: Masks  # a stack of one

    @property
    def key(self) -> tuple[int, str, int, int]:
        return self.level, self.condition, self.trial, self.rewind_iteration


def instability_analysis(
    run_dir: Path | str,
    data: MNISTSplits,
    *,
    levels: list[int] | None = None,
    points: int = POINTS,
    rewind_iterations: list[int] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Analyse `levels` of the finished run in `run_dir` (default: the levels nearest the paper's Figure 3 sparsities)
    and write instability.csv and instability.png into it; returns the table (every path in the file).

    `rewind_iterations` (default: the run's own rewind point) are the iterations the dense network's copies start
    from; given, level 0 is analysed whether or not `levels` names it. Raises InstabilityError, before anything is
    computed or written, for a folder that is not a finished run, a level it lacks, fewer than 2 points or a rewind
    iteration outside the training; RunFolderError for a damaged folder or one in use; ExperimentError when a copy
    diverges (nothing is written then either).
    """
    run_dir = Path(run_dir)
    cfg = finished_config(run_dir)
    check_data(cfg, data)
    with RunFolder.open(run_dir, cfg) as run:
        keys = wanted_pairs(cfg, levels, rewind_iterations, points, run.results())
        table = _earlier_paths(run)
        counts = table.groupby(list(KEYS)).point.count() if len(table) else pd.Series()
        missing = [key for key in keys if counts.get(key) != points]
        if missing:
            pairs = _pairs(cfg, run, data, missing, progress)
            new = path_table(pairs, train_copies(cfg, pairs, data, progress), data, points)
            kept = table[~table.set_index(list(KEYS)).index.isin(missing)] if len(table) else table
            table = pd.concat([kept, new], ignore_index=True) if len(kept) else new
        table = table.sort_values([*KEYS, "point"], ignore_index=True)
        figure = plot_instability(table)
        run.write(TABLE, lambda tmp: table.to_csv(tmp, index=False))
        run.write(FIGURE, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    return table


def finished_config(run_dir: Path) -> Config:
    """The config of the finished run in `run_dir`; InstabilityError for a folder that holds none, or an unfinished
    one (RunFolderError for a damaged config.json or progress.json)."""
    if not run_dir.is_dir():
        raise InstabilityError(f"{run_dir} is not a folder; give a finished run folder")
    folder = RunFolder(run_dir)
    cfg = folder.saved_config()
    if cfg is None:
        raise InstabilityError(f"{run_dir} is not a run folder (it has no config.json)")
    if folder.levels_done < cfg.rounds + 1:
        raise InstabilityError(
            f"{run_dir} is not finished ({folder.levels_done} of {cfg.rounds + 1} levels); "
            f"run the same command that started it to finish it first"
        )
    return cfg


def wanted_pairs(
    cfg: Config, levels: list[int] | None, rewind_iterations: list[int] | None, points: int, results: pd.DataFrame
) -> list[tuple[int, str, int, int]]:
    """The pairs to analyse, as (level, condition, trial, rewind_iteration); InstabilityError for bad arguments."""
    if not _whole(points) or points < 2:
        raise InstabilityError(f"points must be a whole number of at least 2 (both ends of the path), got {points!r}")
    levels = curve_levels(results) if levels is None else levels
    if not levels:
        raise InstabilityError(f"no level to analyse; name levels of this run, 0 to {cfg.rounds}")
    for level in levels:
        if not _whole(level) or not 0 <= level <= cfg.rounds:
            raise InstabilityError(f"level {level!r} is not a level of this run (0 to {cfg.rounds})")
    if rewind_iterations == []:
        raise InstabilityError(f"no rewind iteration given; name iterations of training, 0 to {cfg.iterations - 1}")
    for k in rewind_iterations or ():
        if not _whole(k) or not 0 <= k < cfg.iterations:
            raise InstabilityError(
                f"rewind iteration {k!r} is not an iteration of training (0 to {cfg.iterations - 1})"
            )
    keys = []
    for level in sorted(set(levels) | ({0} if rewind_iterations else set())):
        if level == 0:
            keys += [
                (0, "ticket", t, k)
                for k in sorted(set(rewind_iterations or [cfg.rewind_iteration]))
                for t in range(cfg.trials)
            ]
            continue
        for condition in ("ticket", *cfg.controls):
            start = 0 if condition == "reinit" else cfg.rewind_iteration
            keys += [(level, condition, t, start) for t in range(cfg.trials)]
    return keys


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _earlier_paths(run: RunFolder) -> pd.DataFrame:
    """The paths of earlier analyses in instability.csv; none when it is absent or not such a table (damaged, or
    edited): every path is then computed again, and the file replaced."""
    file = run.path / TABLE
    try:
        table = pd.read_csv(file) if file.exists() else pd.DataFrame()
    except (OSError, ValueError):
        return pd.DataFrame()
    numbers = [column for column in COLUMNS if column != "condition"]
    if (
        not len(table)
        or tuple(table.columns) != COLUMNS
        or not all(pd.api.types.is_numeric_dtype(table[column]) for column in numbers)
        or not set(table.condition) <= set(CONDITIONS)
    ):
        return pd.DataFrame()
    return table


def _pairs(cfg: Config, run: RunFolder, data: MNISTSplits, keys: list, progress: bool) -> list[Pair]:
    """The start of every pair in `keys`: where its network started in the run."""
    theta_0 = run.load(INIT)
    rewind_point = run.load(REWIND) if cfg.rewind_iteration else theta_0
    dense_masks = full_masks(1, layer_shapes(cfg.fc1_width, cfg.fc2_width))
    starts: dict[tuple, Pair] = {}
    for level in sorted({key[0] for key in keys}):
        if level == 0:
            for k in sorted({key[3] for key in keys if key[0] == 0}):
                saved = {0: theta_0, cfg.rewind_iteration: rewind_point}  # the others are replayed
                weights = saved[k] if k in saved else replay_dense(cfg, theta_0, data, k, progress)
                for t in range(cfg.trials):
                    starts[0, "ticket", t, k] = Pair(0, "ticket", t, k, select(weights, [t]), dense_masks)
            continue
        for net in level_networks(cfg, level, rewind_point, run.load_masks(level)):
            start = 0 if net.condition == "reinit" else cfg.rewind_iteration
            starts[level, net.condition, net.trial, start] = Pair(
                level, net.condition, net.trial, start, net.params, net.masks
            )
    return [starts[key] for key in keys]


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
    """The batch order of copy 0 or 1 of `pair`: its own, unlike any of the run's."""
    return derive_seed(cfg.seed, "instability", *pair.key, copy)


def train_copies(cfg: Config, pairs: list[Pair], data: MNISTSplits, progress: bool = True) -> Params:
    """Train both copies of every pair, all in one stack; returns their final weights (mask applied), the copies of
    pair i at 2i and 2i + 1."""
    device = data.train_x.device
    starts = concat([pair.start for pair in pairs for _ in range(2)])
    masks = concat([pair.masks for pair in pairs for _ in range(2)])
    try:
        result = train_networks(
            build_model(to_device(starts, device), to_device(masks, device)),
            data,
            iterations=cfg.iterations,
            batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate,
            eval_every=max(cfg.eval_every, cfg.iterations // PROGRESS_UPDATES),  # evaluations move the bar
            batch_seeds=[copy_seed(cfg, pair, copy) for pair in pairs for copy in (0, 1)],
            desc=f"{2 * len(pairs)} copies",
            progress=progress,
        )
    except DivergenceError as error:
        pair = pairs[error.network // 2]
        raise ExperimentError(
            f"training diverged (loss {DIVERGED}) in the instability analysis at level {pair.level}, condition "
            f"{pair.condition}, trial {pair.trial}, copy {error.network % 2}, iteration {error.iteration}; "
            f"nothing was written"
        ) from None
    return to_device(result.params, "cpu")


def path_table(pairs: list[Pair], ends: Params, data: MNISTSplits, points: int) -> pd.DataFrame:
    """Test error (%) and loss at `points` evenly spaced points of the straight path between the two trained copies
    of every pair (`ends` from train_copies), one row per point."""
    alphas = torch.linspace(0, 1, points)
    errors, losses = [], []
    per_slice = max(1, PATH_STACK // points)
    for first in range(0, len(pairs), per_slice):
        chosen = range(first, min(first + per_slice, len(pairs)))
        masks = concat([pair.masks for pair in (pairs[i] for i in chosen)])
        model = path_model(
            select(ends, [2 * i for i in chosen]), select(ends, [2 * i + 1 for i in chosen]), masks, alphas
        )
        (loss,), (accuracy,) = Evaluator([(data.test_x, data.test_y)], model.n_networks)(model.to(data.test_x.device))
        errors.append((100 - accuracy).cpu().view(len(chosen), points))
        losses.append(loss.cpu().view(len(chosen), points))
    error, loss = torch.cat(errors), torch.cat(losses)
    rows = []
    for i, pair in enumerate(pairs):
        percent = 100 * sum(float(m.sum()) for m in pair.masks.values()) / sum(m.numel() for m in pair.masks.values())
        for p, alpha in enumerate(alphas.tolist()):
            rows.append((*pair.key, percent, p, alpha, float(error[i, p]), float(loss[i, p])))
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


# ---------------------------------------------------------------------------------------------
# Reading the paths


def pair_instability(paths: pd.DataFrame) -> pd.DataFrame:
    """One row per pair of copies: the test error (%) of each end, the largest on the path, the instability (that
    largest minus the mean of the ends, in points) and whether it is under STABLE_BELOW."""
    rows = []
    for key, path in paths.sort_values("point").groupby(list(KEYS)):
        ends = path.test_error.iloc[[0, -1]]
        worst = path.test_error.max()
        rows.append(
            (
                *key,
                path.percent_remaining.iloc[0],
                *ends,
                worst,
                worst - ends.mean(),
                worst - ends.mean() < STABLE_BELOW,
            )
        )
    columns = [*KEYS, "percent_remaining", "error_start", "error_end", "max_error", "instability", "stable"]
    table = pd.DataFrame(rows, columns=columns)
    order = table.condition.map(list(CONDITIONS).index)  # the ticket first, then the controls
    return table.assign(order=order).sort_values(["level", "order", "trial", "rewind_iteration"]).drop(columns="order")


def instability_table(paths: pd.DataFrame) -> pd.DataFrame:
    """The pairs for reading: one row per level, condition and rewind iteration, in points of test error (with several
    trials, mean ± std): the error at the ends of the path, the largest along it, the instability, and how many
    trials are stable."""
    pairs = pair_instability(paths)
    pairs["ends"] = (pairs.error_start + pairs.error_end) / 2
    rows = pairs.groupby(["level", "condition", "rewind_iteration"], sort=False)
    return pd.DataFrame(
        {
            "% left": rows.percent_remaining.first().map(format_percent),
            "error at the ends": rows.ends.agg(mean_std, fmt=".2f"),
            "largest on the path": rows.max_error.agg(mean_std, fmt=".2f"),
            "instability": rows.instability.agg(mean_std, fmt=".2f"),
            "stable": rows.stable.agg(lambda s: f"{int(s.sum())} of {len(s)}"),
        }
    )


def instability_conclusions(paths: pd.DataFrame) -> list[str]:
    """Sentences about the paths (instability in points of test error, means over trials)."""
    summary = pair_instability(paths)
    mean = summary.groupby(["level", "condition", "rewind_iteration"], sort=False).agg(
        percent=("percent_remaining", "first"), instability=("instability", "mean"), ends=("error_end", "mean")
    )
    sentences = []
    dense = summary[summary.level == 0].groupby("rewind_iteration").instability
    for k, values in dense:
        start = "initialization" if k == 0 else f"iteration {k}"
        sentences.append(
            f"Trained twice from {start} with different batch orders, the dense network ends in two minima whose "
            f"straight path rises {mean_std(values, '.2f')} points of test error above their mean: "
            f"{_verdict(values.mean())}."
        )
    for _, rows in mean[mean.index.get_level_values("level") > 0].groupby(level="level"):
        parts = [
            f"{CONDITIONS[condition]} {row.instability:.2f} ({_verdict(row.instability)})"
            for (_, condition, _), row in rows.iterrows()
        ]
        sentences.append(
            f"At {format_percent(rows.percent.iloc[0])} of weights, instability: " + ", ".join(parts) + "."
        )
    return sentences


def _verdict(instability: float) -> str:
    return "stable" if instability < STABLE_BELOW else "unstable"


def plot_instability(paths: pd.DataFrame) -> Figure:
    """Test error along the straight path between the two copies, one panel per level (every condition; the dense
    network from each rewind iteration), means over trials; with several rewind iterations, a last panel of the
    dense network's instability against the rewind iteration."""
    levels = sorted(paths.level.unique())
    dense_starts = sorted(paths[paths.level == 0].rewind_iteration.unique())
    n_panels = len(levels) + (len(dense_starts) > 1)
    columns = min(n_panels, 4)
    rows = math.ceil(n_panels / columns)
    fig = Figure(figsize=(3.8 * columns + 0.6, 3.4 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).flatten()
    for ax, level in zip(axes, levels):
        at_level = paths[paths.level == level]
        groups = at_level.groupby(["condition", "rewind_iteration"]).groups
        for condition, k in sorted(groups, key=lambda key: (list(CONDITIONS).index(key[0]), key[1])):
            path = at_level.loc[groups[condition, k]]
            look, label = conditions.style(condition), conditions.label(condition)
            color, marker = look["color"], look["marker"]
            if level == 0:
                label = "dense" + (f", from iteration {k}" if len(dense_starts) > 1 else "")
                color = None if len(dense_starts) > 1 else color
            mean = path.groupby("alpha").test_error.mean()
            ax.plot(mean.index, mean.values, color=color, marker=marker, markersize=3, label=label)
        ax.set_title(f"level {level}: {format_percent(at_level.percent_remaining.iloc[0])} of weights")
        ax.set_xlabel("position on the straight path between the copies")
        ax.set_ylabel("test error (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if len(dense_starts) > 1:
        ax = axes[len(levels)]
        summary = pair_instability(paths[paths.level == 0])
        stats = summary.groupby("rewind_iteration").instability.agg(["mean", "min", "max"])
        err = np.vstack([stats["mean"] - stats["min"], stats["max"] - stats["mean"]])
        ax.errorbar(
            stats.index, stats["mean"], yerr=err, marker="o", capsize=3, color=conditions.style("ticket")["color"]
        )
        ax.axhline(STABLE_BELOW, color="grey", linestyle="--", linewidth=1, label=f"stable below {STABLE_BELOW:g}")
        ax.set_xscale("symlog", linthresh=max(1, min(k for k in dense_starts if k > 0)))
        ax.set_xticks(dense_starts, [str(k) for k in dense_starts])
        ax.minorticks_off()
        ax.set_xlabel("rewind iteration (the copies' start)")
        ax.set_ylabel("instability (points of test error)")
        ax.set_title("Dense: instability against rewind iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[n_panels:]:
        ax.set_axis_off()
    trials = paths.trial.nunique()
    fig.suptitle(
        "Test error along the straight path between two copies trained with different batch orders"
        + (f" (mean of {trials} trials)" if trials > 1 else "")
    )
    return fig


# ---------------------------------------------------------------------------------------------
# python -m lth_helpers instability RUN_DIR [--levels L,L] [--points N] [--rewind-iterations K,K]


def add_command(subcommands: argparse._SubParsersAction) -> None:
    """`python -m lth_helpers instability RUN_DIR [--levels L,L] [--points N] [--rewind-iterations K,K]`."""
    parser = subcommands.add_parser(
        "instability",
        help="linear mode connectivity of a finished run: two copies of its networks, the straight path between them",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder")
    parser.add_argument(
        "--levels",
        type=_whole_numbers,
        metavar="L,L",
        help="levels to analyse (default: those nearest the paper's Figure 3 sparsities, 100%% down to 1.9%%)",
    )
    parser.add_argument(
        "--points",
        type=int,
        default=POINTS,
        metavar="N",
        help=f"evenly spaced points along each straight path, both ends included (default: {POINTS})",
    )
    parser.add_argument(
        *("--rewind-iterations", "--rewind_iterations"),
        dest="rewind_iterations",
        type=_whole_numbers,
        metavar="K,K",
        help="iterations of the dense network's training that its copies start from (default: the run's rewind "
        "point); level 0 is analysed from each",
    )
    add_data_flags(parser)
    parser.set_defaults(run=instability_command)


def _whole_numbers(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from None


def instability_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Exit 2 for bad input (not a finished run folder, a level it lacks, too few points, a rewind iteration outside
    training, an unknown device), 1 when MNIST is missing or damaged, the folder is damaged or in use, a copy diverges
    or a file cannot be written, 130 when interrupted; nothing is written unless the analysis finishes."""
    run_dir = Path(args.run_dir)
    try:  # before the data are loaded: bad input costs nothing
        device = resolve_device(args.device)
        cfg = finished_config(run_dir)
        wanted_pairs(cfg, args.levels, args.rewind_iterations, args.points, RunFolder(run_dir).results())
    except DamagedFileError as error:
        return fail(parser, error)
    except (ConfigError, InstabilityError) as error:
        parser.error(str(error))
    try:
        data = load_mnist(data_dir(args.data_dir), cfg.val_size, device)
        paths = instability_analysis(
            run_dir,
            data,
            levels=args.levels,
            points=args.points,
            rewind_iterations=args.rewind_iterations,
            progress=not args.no_progress,
        )
    except (DataError, ExperimentError, RunFolderError, OSError) as error:
        return fail(parser, error)
    except KeyboardInterrupt:
        print("\ninterrupted: nothing was written; the same command starts the analysis again", file=sys.stderr)
        return 130
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(instability_table(paths).to_string())
    print("\n".join(instability_conclusions(paths)))
    print(f"{TABLE} and {FIGURE} are in {run_dir}")
    return 0
