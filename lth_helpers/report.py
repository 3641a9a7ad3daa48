"""Tables and sentences computed from results.csv: the summary table and the conclusions.

    print(summary_table(results).to_string())
    for sentence in conclusions(results): print(sentence)

The comparison with the paper's statements is paper.py's; the sentences about inference are inference.py's.

The paper's measure is the test accuracy at early stopping (the iteration of minimum validation
loss); the summary table shows the accuracy at the end of training too.
"""

from __future__ import annotations

import pandas as pd

from . import conditions
from .config import CONTROLS


def mean_std(values: pd.Series, fmt: str) -> str:
    """The mean of `values` (one per trial) formatted with `fmt`, with ' ± std' when there are several:
    "97.55 ± 0.07", or "97.50" for one trial. A leading '+' in `fmt` signs the mean only."""
    text = format(values.mean(), fmt)
    return text if values.count() < 2 else f"{text} ± {format(values.std(), fmt.lstrip('+'))}"


def format_percent(percent: float) -> str:
    """A percentage of weights, as the paper quotes its levels: one decimal (21.1%); below 1%, two significant
    digits, so that a level of 0.0101% reads 0.01%, not 0.0%."""
    return f"{percent:.1f}%" if percent >= 1 else f"{percent:.2g}%"


def percent_by_level(results: pd.DataFrame) -> pd.Series:
    """The percent of weights remaining at each level. Every network of a level has the same: its trials prune the
    same counts, reinit trains the ticket's masks and random pruning keeps the ticket's per-layer counts."""
    return results.groupby("level").percent_remaining.first()


def nearest_level(percent: pd.Series, target: float, within: float | None = None) -> int | None:
    """The level whose percent of weights (`percent_by_level`) is nearest `target`; with `within`, None unless it is
    within that fraction of `target` (0.1: within 10%)."""
    gaps = (percent / target - 1).abs()
    level = int(gaps.idxmin())
    return level if within is None or gaps[level] <= within else None


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per level: the ticket's sparsity, loss and accuracies, the controls' accuracies, time.

    acc: test accuracy (%) at the end of training; train acc: the ticket's accuracy on the whole training split
    at the end of training; stop acc / stop iter: test accuracy at, and the iteration of, early stopping (minimum
    validation loss); time s: wall time of the level, for all networks trained together in it. With several
    trials: mean ± std.
    """
    by_level = results.groupby("level")
    ticket = results[results.condition == "ticket"].groupby("level")
    table = pd.DataFrame(
        {
            "weights": ticket.weights_remaining.first(),
            "% left": percent_by_level(results).round(2),
            "test loss": ticket.final_test_loss.agg(mean_std, fmt=".4f"),
            "test acc": ticket.final_test_accuracy.agg(mean_std, fmt=".2f"),
            **(
                {"train acc": ticket.final_train_accuracy.agg(mean_std, fmt=".2f")}
                if has_train_accuracy(results)
                else {}
            ),
            "stop acc": ticket.early_stop_test_accuracy.agg(mean_std, fmt=".2f"),
            "stop iter": ticket.early_stop_iteration.agg(mean_std, fmt=".0f"),
        }
    )
    for control in [c for c in CONTROLS if c in set(results.condition)]:
        group = results[results.condition == control].groupby("level")
        table[f"{control} acc"] = group.final_test_accuracy.agg(mean_std, fmt=".2f")
        table[f"{control} stop acc"] = group.early_stop_test_accuracy.agg(mean_std, fmt=".2f")
    table["time s"] = by_level.train_seconds.first().round(1)
    return table.fillna("—")  # the controls' columns, text, at level 0


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
        return sentences + generalization_conclusions(results)
    pruned = ticket.iloc[1:]
    at_least_dense = pruned.early_stop_test_accuracy >= dense_acc
    if at_least_dense.iloc[0]:
        keeps = at_least_dense.cumprod().astype(bool)
        last = pruned[keeps].iloc[-1]
        best_level = pruned.early_stop_test_accuracy.idxmax()
        best = pruned.loc[best_level]
        sentences.append(
            f"The winning ticket matches or beats the dense network at every level down to "
            f"{format_percent(last.percent_remaining)} of weights remaining; at best it is "
            f"{best.early_stop_test_accuracy - dense_acc:+.2f} points above it, "
            f"at {format_percent(best.percent_remaining)}."
        )
        if not keeps.all():
            first_below = pruned[~keeps].iloc[0]
            sentences.append(
                f"It first falls below the dense network at {format_percent(first_below.percent_remaining)} "
                f"({first_below.early_stop_test_accuracy:.2f}%)."
            )
        else:
            sentences.append("It never falls below the dense network in this run.")
    else:
        first = pruned.iloc[0]
        sentences.append(
            f"The winning ticket is below the dense network already at {format_percent(first.percent_remaining)} "
            f"({first.early_stop_test_accuracy:.2f}%, {first.early_stop_test_accuracy - dense_acc:+.2f} points)."
        )
    sparsest = pruned.iloc[-1]
    sentences.append(
        f"At the sparsest level, {format_percent(sparsest.percent_remaining)} of weights, the ticket reaches "
        f"{sparsest.early_stop_test_accuracy:.2f}% ({sparsest.early_stop_test_accuracy - dense_acc:+.2f} "
        f"points against dense) and stops early at iteration {sparsest.early_stop_iteration:.0f}."
    )
    for control, name in CONTROLS.items():
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
    sentences += one_shot_conclusions(results) + generalization_conclusions(results)
    if results.trial.nunique() == 1:
        sentences.append(
            "This run has one trial, so no error bars: differences of a few tenths of a point may be chance; "
            "run more trials before reading much into them."
        )
    return sentences


def one_shot_conclusions(results: pd.DataFrame) -> list[str]:
    """How far down one-shot tickets match the dense network (test accuracy at early stopping, means over trials);
    none without the one-shot control. `conclusions` compares them with the iterative ticket, as every control."""
    if "one_shot" not in set(results.condition):
        return []
    mean = results.groupby(["condition", "level"])[["early_stop_test_accuracy", "percent_remaining"]].mean()
    dense_acc, one_shot = mean.loc["ticket"].early_stop_test_accuracy.iloc[0], mean.loc["one_shot"]
    keeps = (one_shot.early_stop_test_accuracy >= dense_acc).cumprod().astype(bool)
    if not keeps.iloc[0]:
        first = one_shot.iloc[0]
        return [
            f"One-shot pruning (each level's mask cut at once from the trained dense network) gives tickets below "
            f"the dense network already at {format_percent(first.percent_remaining)} "
            f"({first.early_stop_test_accuracy - dense_acc:+.2f} points)."
        ]
    last = one_shot[keeps].iloc[-1]
    return [
        f"One-shot pruning (each level's mask cut at once from the trained dense network) finds tickets that match or "
        f"beat the dense network at every level down to {format_percent(last.percent_remaining)} of weights"
        + ("." if keeps.all() else f", and below it from {format_percent(one_shot[~keeps].percent_remaining.iloc[0])}.")
    ]


def generalization_conclusions(results: pd.DataFrame) -> list[str]:
    """Fitting the training set against generalizing, at the end of training (means over trials). The generalization
    gap is the accuracy on the whole training split minus the test accuracy, in points.

    The paper (Frankle & Carbin 2019, Section 2) finds the tickets' training accuracy about 100% at the end of
    training, like the other networks', so that their higher test accuracy is a smaller gap: better generalization.
    """
    if not has_train_accuracy(results):
        return []
    mean = results.groupby(["condition", "level"])[
        ["final_train_accuracy", "final_test_accuracy", "percent_remaining"]
    ].mean()
    gap = mean.final_train_accuracy - mean.final_test_accuracy
    ticket, ticket_gap = mean.loc["ticket"], gap["ticket"]
    dense = ticket.iloc[0]
    sentences = [
        f"At the end of training the dense network scores {dense.final_train_accuracy:.2f}% on the training images "
        f"and {dense.final_test_accuracy:.2f}% on the test images: a generalization gap of {ticket_gap.iloc[0]:.2f} "
        f"points."
    ]
    if len(ticket) == 1:
        return sentences
    pruned, pruned_gap = ticket.iloc[1:], ticket_gap.iloc[1:]
    best = pruned_gap.idxmin()
    sentences.append(
        f"The ticket scores {span(pruned.final_train_accuracy, '.2f')}% on "
        f"the training images at the pruned levels; its gap is smaller than the dense network's at "
        f"{int((pruned_gap < ticket_gap.iloc[0]).sum())} of {len(pruned)} of them, and smallest at "
        f"{format_percent(pruned.percent_remaining[best])} ({pruned_gap[best]:.2f} points)."
    )
    last = pruned.index[-1]
    for control, name in CONTROLS.items():
        if control not in gap.index.get_level_values(0):
            continue
        other, other_gap = mean.loc[control], gap[control]
        sentences.append(
            f"The ticket's gap is smaller than the {name} control's at {int((pruned_gap < other_gap).sum())} of "
            f"{len(other_gap)} pruned levels; at the sparsest, {pruned_gap[last]:.2f} against {other_gap[last]:.2f} "
            f"points (training accuracy {pruned.final_train_accuracy[last]:.2f}% against "
            f"{other.final_train_accuracy[last]:.2f}%)."
        )
    return sentences


def accuracy_at_init_conclusions(curves: pd.DataFrame, results: pd.DataFrame) -> list[str]:
    """Sentences about the test accuracy before any training (`before_training`, means over trials).

    A ticket's mask applied to its own initial weights already classifies far above chance (Zhou et al. 2019,
    "Deconstructing lottery tickets: zeros, signs, and the supermask"); a mask on fresh weights does not.
    """
    at_init = before_training(curves).groupby(["condition", "level"]).test_accuracy.mean()
    percent = percent_by_level(results)
    ticket = at_init["ticket"]
    sentences = [f"Before any training, the dense network scores {ticket.iloc[0]:.2f}% on the test set (chance: 10%)."]
    if len(ticket) == 1:
        return sentences
    pruned = ticket.iloc[1:]
    best, worst = pruned.idxmax(), pruned.idxmin()
    at_worst = f" (at worst {pruned[worst]:.2f}%, at {format_percent(percent[worst])})" if len(pruned) > 1 else ""
    sentences.append(
        f"Untrained, the ticket's mask on its own initial weights scores {pruned[best]:.2f}% at "
        f"{format_percent(percent[best])} of weights{at_worst}: the mask alone "
        + ("already classifies well above chance." if pruned[best] > 20 else "is not far above chance.")
    )
    last = pruned.index[-1]
    controls = [
        f"{name} {at_init[control, last]:.2f}%" for control, name in CONTROLS.items() if control in at_init.index
    ]
    if controls:
        sentences.append(
            f"Untrained at {format_percent(percent[last])} of weights: the ticket {ticket[last]:.2f}%, "
            + ", ".join(controls)
            + "."
        )
    return sentences


def before_training(curves: pd.DataFrame) -> pd.DataFrame:
    """Each network's first evaluation (level, condition, trial): before its level's training, at iteration 0, or at
    the rewind iteration k where a pruned level trains from k to T."""
    first = curves.groupby(["level", "condition", "trial"]).iteration.transform("min")
    return curves[curves.iteration == first]


SUPERMASK_ABOVE = 20.0  # accuracy (%) before training from which a mask counts as far above chance (10%)


def condition_conclusions(results: pd.DataFrame, curves: pd.DataFrame) -> list[str]:
    """For a run of conditions beyond Frankle & Carbin's controls (conditions.py): each one's test accuracy at early
    stopping at the sparsest level against the ticket's, best first, and the untrained networks that score far above
    chance (supermasks, Zhou et al. 2019), each at its best level (fine-tuned networks start trained: left out);
    means over trials."""
    names = set(results.condition) - {"ticket", *CONTROLS}
    if not names or results.level.max() == 0:
        return []
    percent, last = percent_by_level(results), results.level.max()
    accuracy = results[results.level == last].groupby("condition").early_stop_test_accuracy.mean()
    others = accuracy.drop("ticket").sort_values(ascending=False)
    sentences = [
        f"At {format_percent(percent[last])} of weights, against the ticket's {accuracy['ticket']:.2f}% at early "
        "stopping: "
        + ", ".join(f"{conditions.label(c)} {a - accuracy['ticket']:+.2f}" for c, a in others.items())
        + " points."
    ]
    untrained = curves[(curves.level > 0) & ~curves.condition.map(conditions.starts_trained)]
    at_init = before_training(untrained).groupby(["condition", "level"]).test_accuracy.mean()
    best = at_init.groupby("condition").agg(["max", "idxmax"]).sort_values("max", ascending=False)
    far = best[best["max"] >= SUPERMASK_ABOVE]
    if len(far):
        sentences.append(
            f"Untrained, {len(far)} of {len(best)} conditions score {SUPERMASK_ABOVE:.0f}% or more on the test set "
            "at their best level (chance: 10%): "
            + ", ".join(
                f"{conditions.label(c)} {row['max']:.1f}% at {format_percent(percent[row['idxmax'][1]])}"
                for c, row in far.iterrows()
            )
            + "."
        )
    return sentences


def has_train_accuracy(results: pd.DataFrame) -> bool:
    """Whether `results` measured training accuracy (the tables kept in docs/results from runs of the `paper` and
    `seed` presets predate it): without it the generalization statements are left out."""
    return "final_train_accuracy" in results.columns


def span(values: pd.Series, spec: str) -> str:
    """'low to high' of `values`, or the one value when they are all equal."""
    low, high = format(values.min(), spec), format(values.max(), spec)
    return low if low == high else f"{low} to {high}"
