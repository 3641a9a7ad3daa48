"""Several run folders side by side: what a change of config does to the winning ticket.

    table = compare_runs([Path("runs/seed-1a2b3c4d"), Path("runs/seed-5e6f7a8b")])
    plot_comparison(table).savefig("comparison.png")
    print(comparison_text(table))

    python -m lth_helpers compare runs/seed-1a2b3c4d runs/seed-5e6f7a8b --out comparison.png   # cli.py
    sweep_overview(table), plot_sweep(table)  # a sweep's points side by side, from its table (sweep.py's sweep.csv)

Functions only: they print nothing and raise CompareError (a ConfigError: bad input) or a RunFolderError (a damaged or
unreadable run folder, a figure that could not be written).

Each run is labelled by what differs in its config from the others' (for example `global_pruning=True` or
`rewind_iteration=500`; by its preset first when the presets differ, then by what differs from the runs of that
preset). Labels come from the saved configs alone: a preset name this version does not know is just a name. Only runs
of one architecture (fc1 and fc2 widths) are compared: their percentages of weights remaining count the same weights.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from .config import Config, ConfigError, show_value
from .files import RunFolderError, WriteError, write_atomic
from .plotting import on_log_axis, percent_axis
from .report import format_percent
from .runs import PROGRESS, RunFolder
from .tables import RESULTS

LEGEND_CHARACTERS = 150  # characters of legend text a row of the figure's width holds


class CompareError(ConfigError):
    """Run folders that cannot be compared (not run folders, no finished level, other architectures), or a figure
    file that cannot be one: bad input, one line."""


def run_labels(configs: Sequence[Config], names: Sequence[str]) -> list[str]:
    """A short label per run: the config fields whose values differ between the runs, as `field=value`.

    When the presets differ, a label starts with its preset and lists the fields whose values differ between the
    runs of that preset. Runs left without a label, or with another's, are labelled by their folder names.
    """
    names_of = [f.name for f in dataclasses.fields(Config) if f.name != "preset"]
    presets_differ = len({cfg.preset for cfg in configs}) > 1
    labels = []
    for cfg in configs:
        peers = [other for other in configs if other.preset == cfg.preset] if presets_differ else configs
        differing = [k for k in names_of if len({show_value(getattr(other, k)) for other in peers}) > 1]
        words = [cfg.preset] if presets_differ and cfg.preset else []
        labels.append(", ".join(words + [f"{k}={show_value(getattr(cfg, k))}" for k in differing]))
    return [label if label and labels.count(label) == 1 else name for label, name in zip(labels, names, strict=True)]


def _read_run(path: Path) -> tuple[Config, pd.DataFrame]:
    """The saved config and the finished levels' results of a run folder; CompareError or RunFolderError if unusable."""
    if not path.is_dir():
        raise CompareError(f"{path} is not a folder; give run folders (each holds config.json and results.csv)")
    cfg = RunFolder(path).saved_config()
    if cfg is None:
        raise CompareError(f"{path} is not a run folder (it has no config.json)")
    results = RunFolder(path).results()
    if not len(results) and (path / RESULTS).exists() and not (path / PROGRESS).exists():
        raise CompareError(
            f"{path} holds a {RESULTS} but no {PROGRESS}: a copy of a run's tables (as in docs/results), not a run "
            f"folder; read its {RESULTS} with pandas, or compare the run folder it came from"
        )
    if not len(results):
        raise CompareError(f"{path} has no finished level yet; wait for its first level or leave it out")
    return cfg, results


def compare_runs(run_dirs: Sequence[Path | str]) -> pd.DataFrame:
    """One row per run and level: the ticket's test accuracy at early stopping and early-stopping iteration against
    percent of weights remaining, mean and std over trials (std NaN with one trial), and the run's label.

    Raises CompareError for a folder that is not a finished-enough run or runs of different architectures, and
    RunFolderError for a damaged run folder or one that cannot be read.
    """
    if isinstance(run_dirs, (str, Path)):
        raise CompareError(f"compare_runs takes a list of run folders, got the single path {str(run_dirs)!r}")
    paths = [Path(p) for p in run_dirs]
    if not paths:
        raise CompareError("no run folders to compare")
    resolved = [path.resolve() for path in paths]
    twice = [str(path) for path, key in zip(paths, resolved) if resolved.count(key) > 1]
    if twice:
        raise CompareError(f"{twice[0]} is given more than once; name each run folder once")
    try:
        runs = [_read_run(path) for path in paths]
    except OSError as error:  # a folder or file this user may not read
        raise RunFolderError(
            f"cannot read {error.filename}: {error.strerror or error}; give yourself read access to it, or leave that "
            f"run out"
        ) from None
    shapes = {path: (cfg.fc1_width, cfg.fc2_width) for path, (cfg, _) in zip(paths, runs)}
    if len(set(shapes.values())) > 1:
        widths = "; ".join(f"{path}: 784-{a}-{b}-10" for path, (a, b) in shapes.items())
        raise CompareError(f"the runs have different architectures and cannot be compared ({widths})")
    names = [path.name if [p.name for p in paths].count(path.name) == 1 else str(path) for path in paths]
    labels = run_labels([cfg for cfg, _ in runs], names)
    tables = []
    for label, path, (_, results) in zip(labels, paths, runs):
        ticket = results[results.condition == "ticket"].groupby("level")
        table = ticket.agg(
            percent_remaining=("percent_remaining", "mean"),
            trials=("trial", "nunique"),
            accuracy_mean=("early_stop_test_accuracy", "mean"),
            accuracy_std=("early_stop_test_accuracy", "std"),
            stop_iteration_mean=("early_stop_iteration", "mean"),
            stop_iteration_std=("early_stop_iteration", "std"),
        ).reset_index()
        tables.append(table.assign(run=label, folder=str(path)))
    columns = ["run", "level", "percent_remaining", "trials", "accuracy_mean", "accuracy_std"]
    return pd.concat(tables, ignore_index=True)[[*columns, "stop_iteration_mean", "stop_iteration_std", "folder"]]


def plot_comparison(table: pd.DataFrame, legend_title: str = "winning ticket of") -> Figure:
    """The ticket of every run in `table` (from compare_runs): accuracy at early stopping and early-stopping
    iteration against percent of weights remaining (log scale, dense on the left), mean ± std over trials, with one
    legend below both panels titled `legend_title`."""
    table = on_log_axis(table)
    labels = list(table.run.unique())
    # The legend goes below both panels, in as many columns as its longest label lets fit across the figure, and the
    # figure grows by its rows: twenty-five runs fit as well as two.
    columns = max(1, min(len(labels), LEGEND_CHARACTERS // (max(map(len, labels), default=1) + 6)))
    fig = Figure(figsize=(12, 4.5 + 0.25 * (math.ceil(len(labels) / columns) + 1)), layout="constrained")
    panels = (
        ("accuracy", "test accuracy at early stopping (%)", "Accuracy against sparsity"),
        ("stop_iteration", "early-stopping iteration", "Iteration of minimum validation loss"),
    )
    for i, (column, ylabel, title) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for label, rows in table.groupby("run", sort=False):
            ax.errorbar(
                rows.percent_remaining,
                rows[f"{column}_mean"],
                yerr=rows[f"{column}_std"].fillna(0),
                label=label,
                marker="o",
                markersize=4,
                capsize=3,
            )
        percent_axis(ax, table.percent_remaining.map(lambda p: float(f"{p:.3g}")))  # one tick for 80.04 and 80
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    handles, _ = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, title=legend_title, loc="outside lower center", ncols=columns)
    trials = table.trials.max()
    fig.suptitle("Runs compared" + (f" (mean ± std over up to {trials} trials)" if trials > 1 else ""))
    return fig


def finished_runs(runs_dir: Path | str, like: Config) -> list[Path]:
    """The run folders in `runs_dir` that finished every level and have the architecture of `like`."""
    found = []
    for path in sorted(Path(runs_dir).iterdir()) if Path(runs_dir).is_dir() else []:
        try:
            cfg = RunFolder(path).saved_config() if path.is_dir() else None
            done = cfg is not None and RunFolder(path).levels_done == cfg.rounds + 1
            if done:
                RunFolder(path).results()  # readable to the last row: what compare_runs reads
        except (RunFolderError, OSError):
            continue  # a damaged folder, or one this user cannot read, is not a finished run
        if done and (cfg.fc1_width, cfg.fc2_width) == (like.fc1_width, like.fc2_width):
            found.append(path)
    return found


def check_comparison(run_dirs: Sequence[str], out: Path) -> None:
    """Raise CompareError unless `run_dirs` names two or more folders and `out` is a figure file (by its extension)
    in a folder that exists: the command line's input, checked before any run folder is read."""
    formats = Figure().canvas.get_supported_filetypes()
    if len(run_dirs) < 2:
        raise CompareError("compare needs at least two run folders")
    if out.suffix.lstrip(".").lower() not in formats:
        raise CompareError(f"--out {out} needs a figure extension such as .png ({', '.join(sorted(formats))})")
    if not out.parent.is_dir():
        raise CompareError(f"--out {out}: the folder {out.parent} does not exist")


def comparison_text(table: pd.DataFrame) -> str:
    """`table` (from compare_runs) as the command line prints it: every column but the folder, rounded."""
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        return table.drop(columns="folder").round(2).to_string(index=False)


def write_comparison(table: pd.DataFrame, out: Path) -> None:
    """Draw `table` (plot_comparison) into the figure file `out`, whole or not at all: a figure that was there stays
    intact when the write fails (WriteError)."""
    figure = plot_comparison(table)
    try:
        write_atomic(out, lambda tmp: figure.savefig(tmp, format=out.suffix.lstrip(".").lower(), dpi=120))
    except WriteError as error:
        raise WriteError(f"cannot write {error.file}: {error.reason}", error.file, error.reason) from None


# ---------------------------------------------------------------------------------------------
# A sweep's points side by side: its table (sweep.py's sweep.csv) read and drawn


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
    below = levels.ticket_accuracy_mean.iloc[1:] < levels.ticket_accuracy_mean.iloc[0]
    keeps = levels.iloc[1:][~below.cumsum().astype(bool)]
    return float(keeps.percent_remaining.iloc[-1]) if len(keeps) else 100.0


def _matching_text(percent: float) -> str:
    return "—" if math.isnan(percent) else "no pruned level" if percent == 100 else format_percent(percent)


def sweep_overview(table: pd.DataFrame) -> pd.DataFrame:
    """One row per point, for reading: its grid values, state, levels finished, the dense network's accuracy, the
    ticket's at the sparsest finished level, and how far the ticket stays at least as accurate as dense."""
    fields, rows = grid_fields(table), []
    for run, levels in table.groupby("run", sort=False):
        first, finished = levels.iloc[0], levels.dropna(subset=["level"])
        row = {**{name: show_value(first[name]) for name in fields}, "run": run, "state": first.state}
        row |= {"levels": len(finished), "dense acc": "—", "sparsest": "—", "ticket acc there": "—"}
        if len(finished):
            last = finished.iloc[-1]
            row["dense acc"] = f"{finished.ticket_accuracy_mean.iloc[0]:.2f}"
            row["sparsest"] = format_percent(last.percent_remaining)
            row["ticket acc there"] = f"{last.ticket_accuracy_mean:.2f}"
        rows.append(row | {">= dense down to": _matching_text(matching_percent(levels))})
    return pd.DataFrame(rows)


def _label(row: pd.Series, fields: list[str]) -> str:
    return ", ".join(f"{name}={show_value(row[name])}" for name in fields)


def plot_sweep(table: pd.DataFrame) -> Figure:
    """sweep.png from a sweep table: for one grid field, the ticket's accuracy and iteration at early stopping against
    weights remaining, a line per value (mean ± std over trials, compare's figure); for two, a heatmap of
    matching_percent; for more, a line per point. Failed points are named."""
    fields, finished = grid_fields(table), table.dropna(subset=["level"])
    if not len(finished):
        fig = Figure(figsize=(6, 2), layout="constrained")
        fig.text(0.5, 0.5, "No point of the sweep has a finished level yet.", ha="center", va="center")
        return fig
    if len(fields) == 2:
        return _heatmap(table, *fields)
    labels = finished[fields[0]].map(show_value) if len(fields) == 1 else finished.apply(_label, axis=1, fields=fields)
    ticket = {f"{s}": finished[f"ticket_{s}"] for s in ("accuracy_mean", "accuracy_std", "stop_iteration_mean")}
    lines = finished.assign(run=labels, trials=finished.n_trials, stop_iteration_std=finished.ticket_stop_iteration_std)
    title = f"winning ticket, {fields[0]}" if len(fields) == 1 else "winning ticket of"
    fig = plot_comparison(lines.assign(**ticket), legend_title=title)
    trials = int(finished.n_trials.max())
    over = f" (mean ± std over {trials} trials)" if trials > 1 else ""
    failed = [_label(row, fields) for _, row in table[table.state == "failed"].drop_duplicates("run").iterrows()]
    failures = f"\nfailed: {'; '.join(failed)}" if failed else ""
    fig.suptitle(f"Sweep over {' x '.join(fields)}: the winning ticket of each point{over}{failures}")
    return fig


def _heatmap(table: pd.DataFrame, rows_field: str, columns_field: str) -> Figure:
    points = [levels for _, levels in table.groupby("run", sort=False)]
    row_values = list(dict.fromkeys(levels[rows_field].iloc[0] for levels in points))
    column_values = list(dict.fromkeys(levels[columns_field].iloc[0] for levels in points))
    grid, texts = np.full((len(row_values), len(column_values)), np.nan), {}
    for levels in points:
        first = levels.iloc[0]
        i, j = row_values.index(first[rows_field]), column_values.index(first[columns_field])
        grid[i, j] = matching_percent(levels)
        text = _matching_text(grid[i, j]).replace("no pruned level", "none")
        if first.state != "done":
            text = first.state if math.isnan(grid[i, j]) else f"{text}\n({first.state})"
        texts[i, j] = text
    size = (max(5.5, 1.6 * len(column_values) + 3), max(3.2, 0.8 * len(row_values) + 2))
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.add_subplot()
    known = grid[~np.isnan(grid)]
    norm = LogNorm(vmin=min(float(known.min()) if len(known) else 1.0, 99.0) * 0.9, vmax=100)
    cmap = matplotlib.colormaps["viridis_r"].with_extremes(bad="lightgrey")  # a point without a value: grey
    image = ax.imshow(grid, cmap=cmap, norm=norm, aspect="auto")
    for (i, j), text in texts.items():
        ax.text(j, i, text, ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(column_values)), [show_value(v) for v in column_values])
    ax.set_yticks(range(len(row_values)), [show_value(v) for v in row_values])
    ax.set(xlabel=columns_field, ylabel=rows_field)
    colorbar = fig.colorbar(image, ax=ax, label="% of weights (log scale)")
    colorbar.ax.yaxis.set_major_formatter("{x:.3g}")
    colorbar.ax.yaxis.set_minor_formatter("{x:.3g}")
    ax.set_title(
        "Smallest % of weights down to which the ticket is still\nat least as accurate as the dense network "
        "(lower: a sparser ticket that matches)",
        fontsize=10,
    )
    return fig
