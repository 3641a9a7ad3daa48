"""Pictures of what a ticket keeps, as matplotlib Figures (no pyplot state), drawn from a run's tables and tensors:
which input pixels it still reads, how much of each layer it keeps, and the initial values of the weights it keeps.

    fig = plot_input_pixels(run.ticket_masks())         # which input pixels the ticket still reads
    fig = plot_layer_sparsity(results)                  # percent of each layer's weights remaining, level by level
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from . import conditions
from .model import INPUT_SIZE, LAYERS, Params
from .pruning import Masks
from .report import format_percent, nearest_level, percent_by_level

LAYER_COLORS = dict(zip(LAYERS, ("tab:purple", "tab:red", "tab:brown")))


def _percent_kept(masks: dict[str, torch.Tensor]) -> float:
    """Percent of all weights that network 0 of a mask stack keeps."""
    return 100 * sum(float(m[0].sum()) for m in masks.values()) / sum(m[0].numel() for m in masks.values())


def _pixel_levels(levels_done: int, most: int = 4) -> list[int]:
    """Up to `most` pruned levels spread from the first to the last (level 0 when nothing was pruned)."""
    if levels_done <= 1:
        return [0]
    return sorted({int(round(x)) for x in np.linspace(1, levels_done - 1, min(most, levels_done - 1))})


def plot_input_pixels(ticket_masks: Mapping[int, Masks]) -> Figure:
    """For a few of the levels of `ticket_masks` (level -> the tickets' masks, a stack whose first network is drawn),
    how many fc1 connections each of the 28x28 input pixels keeps. Only the levels drawn are read.

    One colour scale for every level; a pixel with no connection left (the network never reads it) is red.
    """
    levels = _pixel_levels(len(ticket_masks))
    fig = Figure(figsize=(max(6.5, 2.6 * len(levels) + 1.2), 3.4), layout="constrained")
    axes = fig.subplots(1, len(levels), squeeze=False)[0]
    for ax, level in zip(axes, levels):
        masks = ticket_masks[level]
        fc1 = masks["fc1"][0]  # (units, 784)
        side = int(INPUT_SIZE**0.5)
        kept = fc1.sum(0).view(side, side).numpy()
        cmap = matplotlib.colormaps["viridis"].with_extremes(under="red")
        image = ax.imshow(kept, cmap=cmap, vmin=0.5, vmax=fc1.shape[0])
        ax.set_title(f"{format_percent(_percent_kept(masks))} of weights\n{int((kept == 0).sum())} dead pixels")
        ax.set_axis_off()
    fig.colorbar(image, ax=axes.tolist(), shrink=0.8, label=f"fc1 connections kept (of {fc1.shape[0]}; red: none)")
    fig.suptitle("Which input pixels the ticket still reads (trial 0)")
    return fig


def plot_layer_sparsity(results: pd.DataFrame) -> Figure:
    """Percent of each layer's weights remaining at every level, trial 0; random pruning drawn over the ticket.

    The random-pruning control keeps the ticket's count in every layer by construction, so its markers sit on the
    ticket's lines; global pruning is where the layers part ways.
    """
    rows = results[results.trial == 0]
    counts = [f"{name}_remaining" for name in LAYERS]  # integers alone: a row of mixed types warns (pandas 2.0)
    dense = rows.loc[(rows.condition == "ticket") & (rows.level == 0), counts].iloc[0]
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ticket, control = rows[rows.condition == "ticket"], rows[rows.condition == "random_prune"]
    for name, marker, size in zip(LAYERS, ("o", "s", "^"), (8, 6, 4)):
        percent = 100 * ticket[f"{name}_remaining"] / dense[f"{name}_remaining"]
        text = f"{name} ({dense[f'{name}_remaining']:,} weights)"
        ax.plot(ticket.level, percent, color=LAYER_COLORS[name], marker=marker, markersize=size, label=text)
    for name in LAYERS if len(control) else ():
        text = f"{conditions.label('random_prune')} (same counts)" if name == LAYERS[0] else None
        percent = 100 * control[f"{name}_remaining"] / dense[f"{name}_remaining"]
        ax.plot(control.level, percent, color="black", marker="x", linestyle="", label=text)
    ax.plot(ticket.level, ticket.percent_remaining, color="black", linestyle=":", label="all layers")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter("{x:g}")
    ax.yaxis.set_minor_formatter("{x:g}")
    ax.set_xticks(ticket.level, [f"{lv}\n{format_percent(p)}" for lv, p in zip(ticket.level, ticket.percent_remaining)])
    ax.set_xlabel("pruning level (and percent of all weights remaining)")
    ax.set_ylabel("percent of the layer's weights remaining (log scale)")
    ax.set_title("Weights remaining per layer (trial 0)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return fig


def plot_initial_weights(
    theta_0: Params, ticket_masks: Mapping[int, Masks], results: pd.DataFrame, level: int | None = None
) -> Figure:
    """Histograms of the initial values `theta_0` (a stack; its first network, trial 0) of the weights the ticket keeps
    at `level` (its masks from `ticket_masks`, level -> a stack) against those pruned, per layer. Default level: the
    level of `results` nearest 7% of weights remaining. Only that level's masks are read.

    The paper observes that the weights a ticket keeps start larger in magnitude than those it prunes.
    """
    if level is None:
        level = nearest_level(percent_by_level(results), 7.0)
    masks = ticket_masks[level]
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    for i, name in enumerate(LAYERS):
        ax = fig.add_subplot(1, len(LAYERS), i + 1)
        values, kept = theta_0[f"{name}.weight"][0].flatten(), masks[name][0].flatten().bool()
        bins = np.linspace(float(values.min()), float(values.max()), 61)
        means = []
        for group, color, label in ((~kept, "tab:grey", "pruned"), (kept, "tab:blue", "kept")):
            if group.any():  # at level 0 nothing is pruned
                ax.hist(values[group].numpy(), bins=bins, density=True, color=color, alpha=0.6, label=label)
                means.insert(0, f"{values[group].abs().mean():.3f} {label}")
        ax.set_title(f"{name}: mean |θ0| {', '.join(means)}", fontsize=10)
        ax.set_xlabel("initial weight θ0")
        ax.locator_params(axis="x", nbins=5)  # the labels of narrow ranges (±0.03) would run into each other
        ax.set_yticks([])
        ax.legend()
    fig.suptitle(
        f"Initial values of the weights the ticket keeps at {format_percent(_percent_kept(masks))} "
        f"of weights (level {level}, trial 0) and of those pruned (each histogram normalized)"
    )
    return fig
