"""The paper's figures from results.csv and curves.csv, as matplotlib Figures (no pyplot state).

    fig = plot_accuracy_vs_weights(results)      # Figure 3 (left) of the paper
    save_figures(results, curves, Path("runs/seed"))

The x axis is the percent of weights remaining on a log scale, dense on the left, as in the paper.
At 100% every condition is the same dense network, so the controls' lines start from it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .inference import BATCH_SIZES, FORMS
from .report import CONTROL_NAMES, format_percent
from .runs import write_atomic

STYLE = {
    "ticket": ("winning ticket", "tab:blue", "o"),
    "reinit": (CONTROL_NAMES["reinit"], "tab:orange", "s"),
    "random_prune": (CONTROL_NAMES["random_prune"], "tab:green", "^"),
}
FIGURES = ("accuracy_vs_weights.png", "early_stop_vs_weights.png", "accuracy_curves.png")
INFERENCE_FIGURE = "inference_latency.png"
CURVE_PERCENTS = (100, 51.3, 21.1, 7.0, 3.6, 1.9)  # the levels the paper's Figure 3 draws


def _per_condition(results: pd.DataFrame, column: str) -> dict[str, pd.DataFrame]:
    """mean / min / max of `column` per level, for each condition, controls joined to the dense level."""
    dense = results[(results.condition == "ticket") & (results.level == 0)]
    out = {}
    for condition in [c for c in STYLE if c in set(results.condition)]:
        rows = results[results.condition == condition]
        if condition != "ticket":
            rows = pd.concat([dense, rows])
        stats = rows.groupby("level").agg(
            x=("percent_remaining", "mean"), mean=(column, "mean"), low=(column, "min"), high=(column, "max")
        )
        out[condition] = stats
    return out


def _on_log_axis(table: pd.DataFrame) -> pd.DataFrame:
    """The rows a log axis of percent remaining can show: a level pruned to nothing (0%) has no place on it."""
    return table[table.percent_remaining > 0]


def _against_weights(results: pd.DataFrame, column: str, ylabel: str, title: str) -> Figure:
    results = _on_log_axis(results)
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for condition, stats in _per_condition(results, column).items():
        label, color, marker = STYLE[condition]
        err = np.vstack([stats["mean"] - stats.low, stats.high - stats["mean"]])
        ax.errorbar(stats.x, stats["mean"], yerr=err, label=label, color=color, marker=marker, markersize=4, capsize=3)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ticks = sorted(set(results.percent_remaining), reverse=True)  # the levels' own percentages
    ax.set_xticks(ticks[:: max(1, len(ticks) // 10)])
    ax.xaxis.set_major_formatter("{x:.3g}")  # 51.3, 3.58, 0.0101: three digits at any sparsity
    ax.minorticks_off()
    ax.set_xlabel("percent of weights remaining (log scale)")
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


def curve_levels(results: pd.DataFrame, percents: tuple[float, ...] = CURVE_PERCENTS) -> list[int]:
    """The ticket's levels closest to each of `percents`, without repeats."""
    ticket = results[results.condition == "ticket"].groupby("level").percent_remaining.first()
    levels = [int((ticket - p).abs().idxmin()) for p in percents]
    return sorted(set(levels))


def plot_curves(curves: pd.DataFrame, results: pd.DataFrame, condition: str = "ticket") -> Figure:
    """Test accuracy over training iterations at a few levels (mean over trials)."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    percent = results[results.condition == "ticket"].groupby("level").percent_remaining.first()
    for level in curve_levels(results):
        rows = curves[(curves.condition == condition) & (curves.level == level)]
        mean = rows.groupby("iteration").test_accuracy.mean()
        ax.plot(mean.index, mean.values, label=format_percent(percent[level]))
    ax.set_xlabel("training iteration")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Test accuracy during training: {STYLE[condition][0]}, by % of weights remaining")
    trained = curves[(curves.condition == condition) & (curves.iteration > 0)].test_accuracy
    ax.set_ylim(max(trained.min() - 1, 0), min(trained.max() + 0.5, 100))
    ax.grid(alpha=0.3)
    ax.legend(title="weights remaining")
    return fig


def save_figures(results: pd.DataFrame, curves: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write the three figures as PNG files into `out_dir`."""
    figures = (plot_accuracy_vs_weights(results), plot_early_stop_vs_weights(results), plot_curves(curves, results))
    paths = []
    for name, fig in zip(FIGURES, figures):
        write_atomic(Path(out_dir) / name, lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=120))
        paths.append(Path(out_dir) / name)
    return paths


def plot_inference(table: pd.DataFrame) -> Figure:
    """Inference latency against % of weights remaining, one line per form, at batch 1 and batch 1000."""
    table = _on_log_axis(table)
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
