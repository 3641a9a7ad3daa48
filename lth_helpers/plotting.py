"""The paper's figures, the figures that compare conditions, and every figure of a run by its file name (the pictures
of what a ticket keeps are ticket_figures.py's), as matplotlib Figures (no pyplot state), drawn from tables and
tensors: a run folder's (runs.RunFolder reads them) or anyone's.

    fig = plot_accuracy_vs_weights(results)             # Figure 3 (left) of the paper
    figures = run_figures(results, curves, run.load(INIT), run.ticket_masks())   # file name -> Figure

The x axis is the percent of weights remaining on a log scale, dense on the left, as in the paper.
At 100% every condition is the same dense network, so the controls' lines start from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from . import conditions
from .inference import BATCH_SIZES, FORMS
from .instability_report import STABLE_BELOW, pair_instability
from .model import Params
from .pruning import Masks
from .report import before_training, format_percent, nearest_level, percent_by_level
from .ticket_figures import plot_initial_weights, plot_input_pixels, plot_layer_sparsity

FIGURES = ("accuracy_vs_weights.png", "early_stop_vs_weights.png", "accuracy_curves.png", "generalization.png")
TICKET_FIGURES = ("masks_input_pixels.png", "layer_sparsity.png", "accuracy_at_init.png", "initial_weights.png")
# Drawn only where a run trained the conditions they compare (run_figures says when).
SUPERMASK_FIGURE, GRID_FIGURE = "supermasks.png", "condition_grid.png"
CONDITION_FIGURES = (SUPERMASK_FIGURE, GRID_FIGURE)
GRID_PERCENT = 7.0  # the condition grid's level: the nearest pruned level to it
INFERENCE_FIGURE = "inference_latency.png"
CURVE_PERCENTS = (100, 51.3, 21.1, 7.0, 3.6, 1.9)  # the levels the paper's Figure 3 draws


def _per_condition(results: pd.DataFrame, column: str) -> dict[str, pd.DataFrame]:
    """mean / min / max of `column` per level, for each condition, controls joined to the dense level."""
    dense = results[(results.condition == "ticket") & (results.level == 0)]
    out = {}
    for condition in sorted(set(results.condition), key=conditions.order):  # the ticket first, then the controls
        rows = results[results.condition == condition]
        if condition != "ticket":
            rows = pd.concat([dense, rows])
        stats = rows.groupby("level").agg(
            x=("percent_remaining", "mean"), mean=(column, "mean"), low=(column, "min"), high=(column, "max")
        )
        out[condition] = stats
    return out


def on_log_axis(table: pd.DataFrame) -> pd.DataFrame:
    """The rows a log axis of percent remaining can show: a level pruned to nothing (0%) has no place on it."""
    return table[table.percent_remaining > 0]


def percent_axis(ax: Axes, percents: Iterable[float], most: int = 10) -> None:
    """A log x axis of percent of weights remaining, dense on the left, ticked at the levels' own percentages (about
    `most` of them at the most)."""
    ax.set_xscale("log")
    ax.invert_xaxis()
    ticks = sorted(set(percents), reverse=True)
    ax.set_xticks(ticks[:: max(1, len(ticks) // most)])
    ax.xaxis.set_major_formatter("{x:.3g}")  # 51.3, 3.58, 0.0101: three digits at any sparsity
    ax.minorticks_off()
    ax.set_xlabel("percent of weights remaining (log scale)")


def _against_weights(results: pd.DataFrame, column: str, ylabel: str, title: str) -> Figure:
    results = on_log_axis(results)
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for condition, stats in _per_condition(results, column).items():
        err = np.vstack([stats["mean"] - stats.low, stats.high - stats["mean"]])
        ax.errorbar(
            stats.x,
            stats["mean"],
            yerr=err,
            label=conditions.label(condition),
            markersize=4,
            capsize=3,
            **conditions.style(condition),
        )
    percent_axis(ax, results.percent_remaining)
    ax.set_ylabel(ylabel)
    n_trials = results.trial.nunique()
    ax.set_title(title + (f" (mean, min-max of {n_trials} trials)" if n_trials > 1 else ""))
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def plot_accuracy_vs_weights(results: pd.DataFrame) -> Figure:
    return _against_weights(
        results, "early_stop_test_accuracy", "test accuracy at early stopping (%)", "Accuracy against sparsity"
    )


def plot_early_stop_vs_weights(results: pd.DataFrame) -> Figure:
    return _against_weights(
        results, "early_stop_iteration", "early-stopping iteration", "Iteration of minimum validation loss"
    )


def plot_generalization(results: pd.DataFrame) -> Figure:
    """Accuracy on the whole training split and on the test set at the end of training, and the gap between them,
    against weights remaining (the paper's Figure 4b and its Appendix D): every condition, means over trials."""
    results = on_log_axis(results)
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    accuracy, gap = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    train, test = _per_condition(results, "final_train_accuracy"), _per_condition(results, "final_test_accuracy")
    gaps = _per_condition(results.assign(gap=results.final_train_accuracy - results.final_test_accuracy), "gap")
    for condition, stats in test.items():
        look = conditions.style(condition)
        accuracy.plot(stats.x, stats["mean"], markersize=4, label=conditions.label(condition), **look)
        accuracy.plot(train[condition].x, train[condition]["mean"], color=look["color"], linestyle=(0, (1, 1)))
        gap.plot(gaps[condition].x, gaps[condition]["mean"], markersize=4, label=conditions.label(condition), **look)
    for ax, ylabel, title in (
        (accuracy, "accuracy at the end of training (%)", "Training (dotted) and test accuracy"),
        (gap, "training minus test accuracy (points)", "Generalization gap"),
    ):
        percent_axis(ax, results.percent_remaining, most=6)  # half the width of the paper's figures
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    gap.legend()
    n_trials = results.trial.nunique()
    fig.suptitle("At the end of training" + (f" (mean of {n_trials} trials)" if n_trials > 1 else ""))
    return fig


def curve_levels(results: pd.DataFrame, percents: tuple[float, ...] = CURVE_PERCENTS) -> list[int]:
    """The levels closest to each of `percents`, without repeats."""
    return sorted({nearest_level(percent_by_level(results), p) for p in percents})


def plot_curves(curves: pd.DataFrame, results: pd.DataFrame, condition: str = "ticket") -> Figure:
    """Test accuracy over training iterations at a few levels (mean over trials)."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    percent = percent_by_level(results)
    for level in curve_levels(results):
        rows = curves[(curves.condition == condition) & (curves.level == level)]
        mean = rows.groupby("iteration").test_accuracy.mean()
        ax.plot(mean.index, mean.values, label=format_percent(percent[level]))
    ax.set_xlabel("training iteration")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Test accuracy during training: {conditions.label(condition)}, by % of weights remaining")
    trained = curves[(curves.condition == condition) & (curves.iteration > 0)].test_accuracy
    ax.set_ylim(max(trained.min() - 1, 0), min(trained.max() + 0.5, 100))
    ax.grid(alpha=0.3)
    ax.legend(title="weights remaining")
    return fig


def _before_training_with_percent(curves: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    return before_training(curves).merge(
        results[["level", "condition", "trial", "percent_remaining"]], on=["level", "condition", "trial"]
    )


def plot_accuracy_at_init(curves: pd.DataFrame, results: pd.DataFrame) -> Figure:
    """Test accuracy before any training at each level (each network's first evaluation in curves.csv): the ticket
    and each control.

    A ticket's mask on its initial weights already scores far above chance (Zhou et al. 2019, "supermasks");
    the controls' do not.
    """
    at_init = _before_training_with_percent(curves, results)
    fig = _against_weights(
        at_init, "test_accuracy", "test accuracy before training (%)", "Accuracy at initialization, before training"
    )
    fig.axes[0].axhline(10, color="grey", linestyle="--", linewidth=1, label="chance (10%)")
    fig.axes[0].legend()
    return fig


SIGNED_CONSTANT = "signed_constant"


def _supermask_panels(names: Iterable[str]) -> dict[str, list[str]]:
    """The conditions of each panel of the supermask figure, in conditions.order: every mask rule on the rewound
    start (and reinit, the ticket's mask on a fresh draw), and every mask rule on the signed constant start."""
    names = sorted(set(names), key=conditions.order)
    return {
        "on the rewound weights": [n for n in names if ":" not in n],
        "on a signed constant": [n for n in names if conditions.parse(n).start == SIGNED_CONSTANT],
    }


def plot_supermasks(curves: pd.DataFrame, results: pd.DataFrame) -> Figure:
    """Test accuracy before any training against weights remaining, mean over trials: the masks alone ("supermasks",
    Zhou, Lan, Liu & Yosinski, NeurIPS 2019, Section 5). Left, each mask rule on the rewound weights (theta_0, or
    theta_k with late rewinding), beside reinit; right, each mask rule on a signed constant (the sign of theta_0
    times its layer's initialization std). A panel whose conditions the run did not train is left out."""
    at_init = on_log_axis(_before_training_with_percent(curves, results))
    panels = {title: names for title, names in _supermask_panels(at_init.condition).items() if names}
    fig = Figure(figsize=(6 * len(panels), 4.5), layout="constrained")
    for i, (title, names) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for name in names:
            rows = at_init[at_init.condition == name]
            mean = rows.groupby("level")[["percent_remaining", "test_accuracy"]].mean()
            ax.plot(
                mean.percent_remaining,
                mean.test_accuracy,
                markersize=4,
                label=conditions.label(name),
                **conditions.style(name),
            )
        ax.axhline(10, color="grey", linestyle="--", linewidth=1, label="chance (10%)")
        percent_axis(ax, at_init.percent_remaining, most=10 // len(panels))
        ax.set_ylabel("test accuracy before training (%)")
        ax.set_title(f"Masks {title}")
        ax.grid(alpha=0.3)
        outside = {"loc": "upper left", "bbox_to_anchor": (1.01, 1)} if len(names) > 8 else {}  # off the curves
        ax.legend(fontsize="small", **outside)
    n_trials = at_init.trial.nunique()
    fig.suptitle("Supermasks: accuracy before any training" + (f" (mean of {n_trials} trials)" if n_trials > 1 else ""))
    return fig


def _pruned_rules(results: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The mask rules and the start rules of the conditions trained at pruned levels, in the registry's order."""
    pairs = {conditions.parse(name) for name in set(results.condition[results.level > 0])}
    masks = [m for m in conditions.MASK_RULES if any(p.mask == m for p in pairs)]
    return masks, [s for s in conditions.START_RULES if any(p.start == s for p in pairs)]


def condition_grid(results: pd.DataFrame, level: int, column: str = "early_stop_test_accuracy") -> pd.DataFrame:
    """Mask rules (rows) by start rules (columns) at `level`: the mean of `column` over trials of each condition,
    NaN where that pair was not trained."""
    rows = results[results.level == level]
    means = rows.groupby("condition")[column].mean()
    masks, starts = _pruned_rules(results)
    grid = pd.DataFrame(np.nan, index=masks, columns=starts)
    for name, value in means.items():
        pair = conditions.parse(name)
        grid.loc[pair.mask, pair.start] = value
    return grid


def _heatmap(ax: Axes, grid: pd.DataFrame, title: str) -> None:
    """`grid` as a heatmap annotated with its values; blank cells where it holds NaN; the ticket's cell outlined."""
    values = np.ma.masked_invalid(grid.to_numpy(dtype=float))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    image = ax.imshow(values, cmap=cmap, aspect="auto")
    low, high = image.get_clim()
    for (r, c), value in np.ndenumerate(grid.to_numpy(dtype=float)):
        if not np.isnan(value):
            dark = high == low or (value - low) / (high - low) < 0.6  # white text on viridis' dark end
            ax.text(c, r, f"{value:.1f}", ha="center", va="center", color="white" if dark else "black")
    ax.set_xticks(range(len(grid.columns)), [conditions.START_RULES[s].label for s in grid.columns])
    ax.set_yticks(range(len(grid.index)), [conditions.MASK_RULES[m].label for m in grid.index])
    ax.tick_params(axis="x", labelrotation=30)
    if "ticket" in grid.index and conditions.DEFAULT_START in grid.columns:
        r, c = grid.index.get_loc("ticket"), grid.columns.get_loc(conditions.DEFAULT_START)
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xlabel("start rule (the values the kept weights start from)")
    ax.set_title(title)


def plot_condition_grid(results: pd.DataFrame, percent: float, curves: pd.DataFrame | None = None) -> Figure:
    """What makes a ticket: at the pruned level nearest `percent` of weights remaining, the mean test accuracy at
    early stopping of every mask rule (rows) on every start rule (columns) the run trained, blank where a pair was
    not trained; the winning ticket is the cell (winning ticket, rewound), outlined. With `curves`, a second grid
    beside it: the accuracy before training."""
    pruned = results[results.level > 0]
    if pruned.empty:
        raise ValueError("the condition grid compares the conditions of a pruned level; these results have none")
    level = nearest_level(percent_by_level(pruned), percent)
    grids = {"at early stopping": condition_grid(results, level)}
    if curves is not None:
        at_init = before_training(curves).rename(columns={"test_accuracy": "before_training"})
        grids["before training"] = condition_grid(
            results.merge(at_init[["level", "condition", "trial", "before_training"]]), level, "before_training"
        )
    masks, starts = _pruned_rules(results)
    fig = Figure(figsize=(len(grids) * (2.5 + 1.2 * len(starts)), 1.5 + 0.45 * len(masks)), layout="constrained")
    for i, (title, grid) in enumerate(grids.items()):
        ax = fig.add_subplot(1, len(grids), i + 1)
        _heatmap(ax, grid, f"test accuracy {title} (%)")
        if i:
            ax.set_yticks([])
    n_trials = results.trial.nunique()
    fig.suptitle(
        f"What makes a ticket: each mask rule on each start, at {format_percent(percent_by_level(pruned)[level])} of "
        f"weights remaining (level {level}" + (f", mean of {n_trials} trials)" if n_trials > 1 else ")")
    )
    return fig


def run_figures(
    results: pd.DataFrame, curves: pd.DataFrame, theta_0: Params, ticket_masks: Mapping[int, Masks]
) -> dict[str, Figure]:
    """The figures of a run, by the file names a run folder gives them (RunFolder.save_figures writes them): the
    paper's four and the four of what the ticket keeps, from the run's tables, its initial weights and its ticket
    masks by level; and those of CONDITION_FIGURES that the run's conditions call for: the supermasks where a
    condition beyond Frankle & Carbin's controls (reinit, random_prune, one_shot, which accuracy_at_init.png shows)
    was trained, the condition grid where the pruned levels hold two mask rules and two start rules or more."""
    figures = (
        plot_accuracy_vs_weights(results),
        plot_early_stop_vs_weights(results),
        plot_curves(curves, results),
        plot_generalization(results),
        plot_input_pixels(ticket_masks),
        plot_layer_sparsity(results),
        plot_accuracy_at_init(curves, results),
        plot_initial_weights(theta_0, ticket_masks, results),
    )
    named = dict(zip(FIGURES + TICKET_FIGURES, figures, strict=True))
    if set(results.condition) - {"ticket", "reinit", "random_prune", "one_shot"}:
        named[SUPERMASK_FIGURE] = plot_supermasks(curves, results)
    masks, starts = _pruned_rules(results)
    if len(masks) >= 2 and len(starts) >= 2:
        named[GRID_FIGURE] = plot_condition_grid(results, GRID_PERCENT, curves)
    return named


def plot_inference(table: pd.DataFrame) -> Figure:
    """Inference latency against % of weights remaining, one line per form, at batch 1 and batch 1000."""
    table = on_log_axis(table)
    fig = Figure(figsize=(10, 4), layout="constrained")
    for i, batch in enumerate(BATCH_SIZES):
        ax = fig.add_subplot(1, len(BATCH_SIZES), i + 1)
        for form in FORMS:
            ax.plot(table.percent_remaining, table[f"{form}_ms_batch{batch}"], marker="o", markersize=3, label=form)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.invert_xaxis()
        ax.xaxis.set_major_formatter("{x:g}")
        ax.set_xlabel("percent of weights remaining (log scale)")
        ax.set_ylabel("median latency (ms, log scale)")
        ax.set_title(f"batch {batch}")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.suptitle("Inference on the CPU: the masked dense network, compacted, and sparse (CSR)")
    return fig


def plot_instability(paths: pd.DataFrame, stable_below: float = STABLE_BELOW) -> Figure:
    """The instability analysis (instability.py): error along the straight path between two copies trained with
    different batch orders, one panel per level (every condition; the dense network from each rewind iteration), the
    test split above the training split; lines are means over every pair of copies (of every trial), bands ± std.
    With several rewind iterations, a last panel of the dense network's instability against the rewind iteration,
    mean ± std as error bars (each pair's instability as instability_report.pair_instability reads it), with
    `stable_below` (the paper's 2 points) drawn.
    `paths` is an instability.csv table (instability.instability_analysis)."""
    pair = ["level", "condition", "rewind_iteration", "trial", "pair"]  # one pair of copies
    levels = sorted(paths.level.unique())
    dense_starts = sorted(paths[paths.level == 0].rewind_iteration.unique())
    n_panels = len(levels) + (len(dense_starts) > 1)
    columns = min(n_panels, 4)
    blocks = -(-n_panels // columns)  # each block: a row of test panels above a row of training panels
    fig = Figure(figsize=(3.8 * columns + 0.6, 2 * 3.2 * blocks + 0.6), layout="constrained")
    grid = fig.subplots(2 * blocks, columns, squeeze=False)
    panels = [
        (grid[2 * (i // columns), i % columns], grid[2 * (i // columns) + 1, i % columns]) for i in range(n_panels)
    ]
    for (top, bottom), level in zip(panels, levels):
        at_level = paths[paths.level == level]
        groups = at_level.groupby(["condition", "rewind_iteration"]).groups
        for condition, k in sorted(groups, key=lambda key: (conditions.order(key[0]), key[1])):
            path = at_level.loc[groups[condition, k]]
            look, label = conditions.style(condition), conditions.label(condition)
            color, marker = look["color"], look["marker"]
            if level == 0:
                label = "dense" + (f", from iteration {k}" if len(dense_starts) > 1 else "")
                color = None if len(dense_starts) > 1 else color
            for ax, split in ((top, "test"), (bottom, "train")):
                stats = path.groupby("alpha")[f"{split}_error"].agg(["mean", "std"]).fillna(0)
                line = ax.plot(stats.index, stats["mean"], color=color, marker=marker, markersize=3, label=label)[0]
                ax.fill_between(
                    stats.index,
                    stats["mean"] - stats["std"],
                    stats["mean"] + stats["std"],
                    color=line.get_color(),
                    alpha=0.15,
                    linewidth=0,
                )
        for ax, split in ((top, "test"), (bottom, "training")):
            ax.set_title(f"level {level}: {format_percent(at_level.percent_remaining.iloc[0])} of weights, {split}")
            ax.set_xlabel("position on the straight path between the copies")
            ax.set_ylabel(f"{split} error (%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    if len(dense_starts) > 1:
        dense = pair_instability(paths[paths.level == 0])
        for ax, column, split in zip(panels[len(levels)], ("instability", "train_instability"), ("test", "training")):
            stats = dense.groupby("rewind_iteration")[column].agg(["mean", "std"]).fillna(0)
            ax.errorbar(
                stats.index,
                stats["mean"],
                yerr=stats["std"],
                marker="o",
                capsize=3,
                color=conditions.style("ticket")["color"],
            )
            ax.axhline(stable_below, color="grey", linestyle="--", linewidth=1, label=f"stable below {stable_below:g}")
            ax.set_xscale("symlog", linthresh=max(1, min(k for k in dense_starts if k > 0)))
            ax.set_xticks(dense_starts, [str(k) for k in dense_starts])
            ax.minorticks_off()
            ax.set_xlabel("rewind iteration (the copies' start)")
            ax.set_ylabel(f"instability (points of {split} error)")
            ax.set_title(f"dense network: {split} instability")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    for i in range(n_panels, blocks * columns):
        for ax in grid[2 * (i // columns) : 2 * (i // columns) + 2, i % columns]:
            ax.set_axis_off()
    copies = paths.drop_duplicates(pair).groupby(pair[:-2]).size().max()  # pairs of copies per network and start
    fig.suptitle(
        "Error along the straight path between two copies\ntrained with different batch orders"
        + (f" (mean ± std of {copies} pairs of copies)" if copies > 1 else "")
    )
    return fig
