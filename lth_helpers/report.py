"""Tables and sentences computed from results.csv: the summary table and the conclusions.

    print(summary_table(results).to_string())
    for sentence in conclusions(results): print(sentence)

The paper's measure is the test accuracy at early stopping (the iteration of minimum validation
loss); the summary table shows the accuracy at the end of training too, as the old notebook did.
"""

from __future__ import annotations

import pandas as pd

from .inference import BATCH_SIZES, FORMS

CONTROL_NAMES = {"reinit": "random reinit", "random_prune": "random pruning"}


def _mean_std(values: pd.core.groupby.SeriesGroupBy, digits: int) -> pd.Series:
    """'mean ± std' per group, or just the mean when every group has one value."""
    mean, std, count = values.mean(), values.std(), values.count()
    if count.max() <= 1:
        return mean.round(digits)
    return mean.map(f"{{:.{digits}f}}".format) + " ± " + std.map(f"{{:.{digits}f}}".format)


def sparsity_table(masks: dict) -> pd.DataFrame:
    """Surviving weights per layer of the first network in `masks` (layer name -> (n, out, in))."""
    rows = {name: {"weights": m[0].numel(), "remaining": int(m[0].sum())} for name, m in masks.items()}
    table = pd.DataFrame(rows).T
    table.loc["total"] = table.sum()
    table["% remaining"] = (100 * table.remaining / table.weights).round(2)
    return table


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per level: the ticket's sparsity, loss and accuracies, the controls' accuracies, time.

    acc: test accuracy (%) at the end of training; stop acc / stop iter: test accuracy at, and the
    iteration of, early stopping (minimum validation loss); time s: wall time of the level, for all
    networks trained together in it. With several trials: mean ± std.
    """
    by_level = results.groupby("level")
    ticket = results[results.condition == "ticket"].groupby("level")
    table = pd.DataFrame(
        {
            "weights": ticket.weights_remaining.first(),
            "% left": ticket.percent_remaining.first().round(2),
            "test loss": _mean_std(ticket.final_test_loss, 4),
            "test acc": _mean_std(ticket.final_test_accuracy, 2),
            "stop acc": _mean_std(ticket.early_stop_test_accuracy, 2),
            "stop iter": _mean_std(ticket.early_stop_iteration, 0),
        }
    )
    for control in [c for c in CONTROL_NAMES if c in set(results.condition)]:
        group = results[results.condition == control].groupby("level")
        table[f"{control} acc"] = _mean_std(group.final_test_accuracy, 2)
        table[f"{control} stop acc"] = _mean_std(group.early_stop_test_accuracy, 2)
    table["time s"] = by_level.train_seconds.first().round(1)
    return table.fillna("—")


def conclusions(results: pd.DataFrame) -> list[str]:
    """Plain sentences about the run, every number read from `results` (test accuracy at early stopping)."""
    mean = results.groupby(["condition", "level"])[
        ["early_stop_test_accuracy", "early_stop_iteration", "percent_remaining"]
    ].mean()
    ticket = mean.loc["ticket"]
    dense_acc, dense_stop = ticket.early_stop_test_accuracy.iloc[0], ticket.early_stop_iteration.iloc[0]
    sentences = [
        f"The dense network reaches {dense_acc:.2f}% test accuracy at early stopping (iteration {dense_stop:.0f})."
    ]
    if len(ticket) == 1:
        return sentences
    pruned = ticket.iloc[1:]
    at_least_dense = pruned.early_stop_test_accuracy >= dense_acc
    if at_least_dense.iloc[0]:
        keeps = at_least_dense.cumprod().astype(bool)
        last = pruned[keeps].iloc[-1]
        best_level = pruned.early_stop_test_accuracy.idxmax()
        best = pruned.loc[best_level]
        sentences.append(
            f"The winning ticket matches or beats the dense network at every level down to "
            f"{last.percent_remaining:.1f}% of weights remaining; at best it is "
            f"{best.early_stop_test_accuracy - dense_acc:+.2f} points above it, at {best.percent_remaining:.1f}%."
        )
        if not keeps.all():
            first_below = pruned[~keeps].iloc[0]
            sentences.append(
                f"It first falls below the dense network at {first_below.percent_remaining:.1f}% "
                f"({first_below.early_stop_test_accuracy:.2f}%)."
            )
        else:
            sentences.append("It never falls below the dense network in this run.")
    else:
        first = pruned.iloc[0]
        sentences.append(
            f"The winning ticket is below the dense network already at {first.percent_remaining:.1f}% "
            f"({first.early_stop_test_accuracy:.2f}%, {first.early_stop_test_accuracy - dense_acc:+.2f} points)."
        )
    sparsest = pruned.iloc[-1]
    sentences.append(
        f"At the sparsest level, {sparsest.percent_remaining:.1f}% of weights, the ticket reaches "
        f"{sparsest.early_stop_test_accuracy:.2f}% ({sparsest.early_stop_test_accuracy - dense_acc:+.2f} "
        f"points against dense) and stops early at iteration {sparsest.early_stop_iteration:.0f}."
    )
    for control, name in CONTROL_NAMES.items():
        if control not in mean.index.get_level_values(0):
            continue
        other = mean.loc[control]
        gap = pruned.early_stop_test_accuracy - other.early_stop_test_accuracy
        behind = gap[gap > 0]
        sentences.append(
            f"The {name} control is below the ticket at {len(behind)} of {len(gap)} pruned levels; at the "
            f"sparsest it reaches {other.early_stop_test_accuracy.iloc[-1]:.2f}% ({-gap.iloc[-1]:+.2f} points "
            f"against the ticket) and stops early at iteration {other.early_stop_iteration.iloc[-1]:.0f}."
        )
    return sentences


def inference_summary(table: pd.DataFrame) -> pd.DataFrame:
    """The inference table for reading: size, multiply-adds and latency of each form, per level."""
    out = pd.DataFrame(
        {
            "% left": table.percent_remaining.round(2),
            "compact shape": table.compact_shape,
            "dead inputs": table.dead_inputs,
            "MACs compact": table.compact_macs,
            "MACs sparse": table.sparse_macs,
            "KB dense": (table.dense_bytes / 1024).round(0),
            "KB compact": (table.compact_bytes / 1024).round(0),
            "KB sparse": (table.sparse_bytes / 1024).round(0),
        },
        index=table.level.rename("level"),
    )
    for batch in BATCH_SIZES:
        for form in FORMS:
            out[f"ms {form} b{batch}"] = table[f"{form}_ms_batch{batch}"].round(3)
        out[f"speedup b{batch}"] = table[f"speedup_batch{batch}"].round(2)
    return out


def inference_conclusions(table: pd.DataFrame) -> list[str]:
    """Sentences about what the tickets save at inference, every number read from `table`."""
    last = table.iloc[-1]
    at = f"{last.percent_remaining:.1f}% of weights"
    sizes = {form: last[f"{form}_bytes"] for form in FORMS}
    smallest = min(sizes, key=sizes.get)
    sentences = [
        f"At {at} the ticket needs {last.sparse_macs:,} multiply-adds per example run sparse (CSR), against "
        f"{last.dense_macs:,} dense; compaction leaves a {last.compact_shape} network ({last.dead_inputs} dead input "
        f"pixels, {last.fc1_dead_in + last.fc1_dead_out} dead fc1 units, {last.fc2_dead_in + last.fc2_dead_out} dead "
        f"fc2 units) with {last.compact_macs:,}.",
        f"Its smallest form is {smallest}: {sizes[smallest] / 1024:,.0f} KB against "
        f"{sizes['dense'] / 1024:,.0f} KB dense."
        if smallest != "dense"
        else f"No form is smaller than the dense network ({sizes['dense'] / 1024:,.0f} KB) at {at}.",
    ]
    for batch in BATCH_SIZES:
        dense_ms, best = last[f"dense_ms_batch{batch}"], last[f"best_form_batch{batch}"]
        faster = table[table[f"speedup_batch{batch}"] > 1.05]
        if not len(faster):
            sentences.append(
                f"At batch {batch}, no form runs faster than the dense network ({dense_ms:.3f} ms at {at})."
            )
            continue
        first = faster.iloc[0]
        sentences.append(
            f"At batch {batch}, the ticket first runs faster than dense at {first.percent_remaining:.1f}% of weights "
            f"({first[f'speedup_batch{batch}']:.2f}x); at {at} the best form, {best}, takes "
            f"{last[f'{best}_ms_batch{batch}']:.3f} ms against {dense_ms:.3f} ms dense "
            f"({last[f'speedup_batch{batch}']:.2f}x)."
        )
    return sentences
