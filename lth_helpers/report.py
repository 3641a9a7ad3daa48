"""Tables and sentences computed from results.csv: the summary table and the conclusions.

    print(summary_table(results).to_string())
    for sentence in conclusions(results): print(sentence)

The paper's measure is the test accuracy at early stopping (the iteration of minimum validation
loss); the summary table shows the accuracy at the end of training too.
"""

from __future__ import annotations

import pandas as pd

from .config import CONTROLS
from .inference import BATCH_SIZES, FORMS

FITS_TRAINING_SET = 99.0  # training accuracy (%) from which a network counts as fitting its training set (~100%)


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
            **({"train acc": ticket.final_train_accuracy.agg(mean_std, fmt=".2f")} if _has_train(results) else {}),
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
    if not _has_train(results):
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
        f"The ticket scores {_span(pruned.final_train_accuracy, '.2f')}% on "
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
    """Sentences about the test accuracy before any training (iteration 0 of every level, means over trials).

    A ticket's mask applied to its own initial weights already classifies far above chance (Zhou et al. 2019,
    "Deconstructing lottery tickets: zeros, signs, and the supermask"); a mask on fresh weights does not.
    """
    at_init = curves[curves.iteration == 0].groupby(["condition", "level"]).test_accuracy.mean()
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


def paper_comparison(results: pd.DataFrame) -> pd.DataFrame:
    """The paper's statements about LeNet-300-100 beside this run's numbers, one row per statement.

    Frankle & Carbin (ICLR 2019), Section 2 and Figures 3-4; accuracies are test accuracy at early
    stopping (the generalization rows: training and test accuracy at the end of training), "dense" is
    level 0. Differences and ratios are taken per trial, then shown as mean ± std over trials. agrees:
    "yes" when the run shows the effect at about the paper's size (within a factor of 2, or beyond a
    bound the paper states; for "x times sooner", the excess over 1), "direction only" when it shows it
    much weaker or stronger, "no" when it does not. A statement about a percentage, or a range of
    percentages, the run has no level near (within 10%) or in is left out; the one-shot rows need the
    one_shot control, the reinit rows the reinit control.
    """
    acc = results.pivot_table(index="trial", columns=["condition", "level"], values="early_stop_test_accuracy")
    stop = results.pivot_table(index="trial", columns=["condition", "level"], values="early_stop_iteration")
    percent = percent_by_level(results)
    rows = _ticket_rows(acc, stop, percent)
    conditions = set(acc.columns.get_level_values(0))
    if "reinit" in conditions:
        rows += _reinit_rows(acc, stop, percent)
    rows += _generalization_rows(results, percent)
    if "one_shot" in conditions:
        rows += _one_shot_rows(acc, stop, percent)
    return pd.DataFrame(rows, columns=["the paper says", "paper", "this run", "agrees"])


def _ticket_rows(acc: pd.DataFrame, stop: pd.DataFrame, percent: pd.Series) -> list[tuple[str, str, str, str]]:
    """The statements about winning tickets against the dense network."""
    at_21, at_13, at_3 = (nearest_level(percent, p, within=0.1) for p in (21.1, 13.5, 3.6))
    gain = acc["ticket"].sub(acc["ticket", 0], axis=0)  # per trial and level: points above dense
    rows = []
    if at_21 is not None:
        levels = list(range(1, at_21 + 1))
        statement = "Tickets stop early sooner than the dense network at every level down to 21.1%"
        rows.append(_sooner_than_dense(statement, stop, "ticket", levels))
        earlier = 100 * (1 - stop["ticket", at_21] / stop["ticket", 0])
        rows.append(
            ("Early stopping at 21.1%, against dense (% earlier)", "38", mean_std(earlier, ".0f"), _agrees(earlier, 38))
        )
        worst = gain[levels].mean().idxmin()
        above = gain[worst].mean() > 0
        rows.append(
            (
                "Tickets more accurate than the dense network at every level down to 21.1%",
                "yes",
                f"{'yes' if above else 'no'}: the smallest gain is {mean_std(gain[worst], '+.2f')} points, "
                f"at {format_percent(percent[worst])}",
                "yes" if above else "no",
            )
        )
    if at_13 is not None:
        rows.append(
            (
                "Accuracy at 13.5%, against dense (points)",
                "more than +0.3",
                mean_std(gain[at_13], "+.2f"),
                _agrees(gain[at_13], 0.3, at_least=True),
            )
        )
    if at_3 is not None:
        first = _below_dense_from(gain.mean())
        rows.append(
            (
                "The ticket is back to the dense network's accuracy near 3.6%",
                "yes",
                f"{mean_std(gain[at_3], '+.2f')} points at {format_percent(percent[at_3])}; "
                + (
                    f"below dense from {format_percent(percent[first])} on"
                    if first is not None
                    else "never stays below dense"
                ),
                "yes" if first is not None and abs(first - at_3) <= 1 else "no",
            )
        )
    return rows


def _reinit_rows(acc: pd.DataFrame, stop: pd.DataFrame, percent: pd.Series) -> list[tuple[str, str, str, str]]:
    """The statements about the random-reinitialization control."""
    at_51, at_21 = (nearest_level(percent, p, within=0.1) for p in (51.3, 21.1))
    rows = []
    if at_51 is not None:
        first = _below_dense_from(acc["reinit"].sub(acc["ticket", 0], axis=0).mean())
        rows.append(
            (
                "Random reinit loses accuracy against dense after little pruning (by 51.3%)",
                "yes",
                f"below dense from {format_percent(percent[first])} on"
                if first is not None
                else "never stays below dense",
                "yes" if first is not None and first <= at_51 else "no",
            )
        )
    if at_21 is not None:
        sooner = stop["reinit", at_21] / stop["ticket", at_21]
        rows.append(
            (
                "At 21.1%: the ticket's early stop, sooner than reinit's (x)",
                "2.51",
                mean_std(sooner, ".2f"),
                _agrees(sooner - 1, 1.51),
            )
        )
        ahead = acc["ticket", at_21] - acc["reinit", at_21]
        rows.append(
            (
                "At 21.1%: the ticket's accuracy above reinit's (points)",
                "about +0.5",
                mean_std(ahead, "+.2f"),
                _agrees(ahead, 0.5),
            )
        )
    return rows


def _generalization_rows(results: pd.DataFrame, percent: pd.Series) -> list[tuple[str, str, str, str]]:
    """The statements about generalization: the gap between training and test accuracy at the end of training.

    Frankle & Carbin 2019, Section 2 (Figure 4b, Appendix D): at iteration 50,000 "iteratively-pruned winning tickets
    still see a test accuracy improvement of up to 0.35 percentage points in spite of the fact that training
    accuracy reaches 100% for nearly all networks", so "the gap between training accuracy and test accuracy is
    smaller for winning tickets"; and, of random reinitialization, "All networks reach 100% training accuracy for
    Pm >= 5%", so "the winning tickets generalize substantially better than when randomly reinitialized".
    """
    if not _has_train(results):
        return []
    train = results.pivot_table(index="trial", columns=["condition", "level"], values="final_train_accuracy")
    test = results.pivot_table(index="trial", columns=["condition", "level"], values="final_test_accuracy")
    gap = train - test
    rows = []
    levels = [lv for lv in percent.index if 0 < lv and percent[lv] >= 3.6 / 1.1]  # the paper's ticket range
    if levels:
        gain = test["ticket"][levels].sub(test["ticket", 0], axis=0)
        best = gain.mean().idxmax()
        rows.append(
            (
                "At the end of training, the tickets' test accuracy above dense, at best (points)",
                "up to +0.35",
                f"{mean_std(gain[best], '+.2f')} at {format_percent(percent[best])}",
                _agrees(gain[best], 0.35),
            )
        )
    levels = _down_to(percent, 3.6)
    if levels:
        smaller = sum(gap["ticket", lv].mean() < gap["ticket", 0].mean() for lv in levels)
        gaps, trains = gap["ticket"][levels].mean(), train["ticket"][levels].mean()
        fits = min(trains.min(), train["ticket", 0].mean()) >= FITS_TRAINING_SET
        rows.append(
            (
                "At the end of training tickets fit the training set as dense does, with a smaller train-test gap, "
                "at every level down to 3.6%",
                "yes: training accuracy about 100%",
                f"at {smaller} of {len(levels)} levels: dense gap {mean_std(gap['ticket', 0], '.2f')} points "
                f"(training accuracy {train['ticket', 0].mean():.2f}%), tickets {_span(gaps, '.2f')} "
                f"({_span(trains, '.2f')}%)",
                "yes" if smaller == len(levels) and fits else "no",
            )
        )
    levels = _down_to(percent, 5)
    if "reinit" in gap.columns.get_level_values(0) and levels:
        smaller = sum(gap["ticket", lv].mean() < gap["reinit", lv].mean() for lv in levels)
        last = levels[-1]
        rows.append(
            (
                "Tickets generalize better than random reinit: a smaller train-test gap at every level down to 5%",
                "yes",
                f"at {smaller} of {len(levels)} levels; at {format_percent(percent[last])}: ticket "
                f"{mean_std(gap['ticket', last], '.2f')}, reinit {mean_std(gap['reinit', last], '.2f')} points",
                "yes" if smaller == len(levels) else "no",
            )
        )
    return rows


def _has_train(results: pd.DataFrame) -> bool:
    """Whether `results` measured training accuracy (the tables kept in docs/results from runs of the `paper` and
    `seed` presets predate it): without it the generalization statements are left out."""
    return "final_train_accuracy" in results.columns


def _down_to(percent: pd.Series, target: float) -> list[int]:
    """The pruned levels of a statement about "every level down to `target`%" (those within 10% of it or above), or
    none when the run has no level near `target`: a run that stops short of it cannot say."""
    if nearest_level(percent, target, within=0.1) is None:
        return []
    return [lv for lv in percent.index if 0 < lv and percent[lv] >= target / 1.1]


def _span(values: pd.Series, spec: str) -> str:
    """'low to high' of `values`, or the one value when they are all equal."""
    low, high = format(values.min(), spec), format(values.max(), spec)
    return low if low == high else f"{low} to {high}"


def _one_shot_rows(acc: pd.DataFrame, stop: pd.DataFrame, percent: pd.Series) -> list[tuple[str, str, str, str]]:
    """The statements about one-shot pruning.

    Frankle & Carbin 2019, Section 2 ("One-shot pruning", Figure 4c): "When 67.5% >= Pm >= 17.6%, the average
    winning tickets reach minimum validation [loss] earlier than the original network. When 95.0% >= Pm >= 5.17%,
    test accuracy is higher than the original network. However, iteratively-pruned winning tickets learn faster and
    reach higher test accuracies at smaller network sizes."
    """
    pruned = percent[percent.index > 0]
    rows = []
    levels = [lv for lv in pruned.index if 17.6 <= pruned[lv] <= 67.5]
    if levels:
        statement = "One-shot tickets stop early sooner than the dense network from 67.5% down to 17.6%"
        rows.append(_sooner_than_dense(statement, stop, "one_shot", levels))
    levels = [lv for lv in pruned.index if 5.17 <= pruned[lv] <= 95.0]
    if levels:
        gain = acc["one_shot"][levels].sub(acc["ticket", 0], axis=0)
        worst = gain.mean().idxmin()
        above = int((gain.mean() > 0).sum())
        rows.append(
            (
                "One-shot tickets more accurate than the dense network from 95.0% down to 5.17%",
                "yes",
                f"at {above} of {len(levels)} levels; the smallest gain is {mean_std(gain[worst], '+.2f')} points, "
                f"at {format_percent(percent[worst])}",
                "yes" if above == len(levels) else "no",
            )
        )
    last = pruned.index[-1]
    ahead, later = acc["ticket", last] - acc["one_shot", last], stop["one_shot", last] / stop["ticket", last]
    rows += [
        (
            "Iterative tickets more accurate than one-shot ones at small sizes (points, at the sparsest level)",
            "higher",
            f"{mean_std(ahead, '+.2f')} at {format_percent(percent[last])}",
            "yes" if ahead.mean() > 0 else "no",
        ),
        (
            "Iterative tickets learn faster than one-shot ones at small sizes: one-shot's early stop over the "
            "ticket's (x, at the sparsest level)",
            "more than 1",
            f"{mean_std(later, '.2f')} at {format_percent(percent[last])}",
            "yes" if later.mean() > 1 else "no",
        ),
    ]
    return rows


def _sooner_than_dense(statement: str, stop: pd.DataFrame, condition: str, levels: list[int]) -> tuple[str, ...]:
    """The row of a statement that `condition`'s networks stop early sooner than the dense network at all `levels`."""
    sooner = sum(stop[condition, lv].mean() < stop["ticket", 0].mean() for lv in levels)
    stops = ", ".join(f"{stop[condition, lv].mean():,.0f}" for lv in levels)
    who = {"ticket": "tickets", "one_shot": "one-shot"}[condition]
    return (
        statement,
        "yes",
        f"at {sooner} of {len(levels)} levels: dense at {mean_std(stop['ticket', 0], ',.0f')}; {who} at {stops}",
        "yes" if sooner == len(levels) else "no",
    )


def _below_dense_from(gain: pd.Series) -> int | None:
    """The first pruned level from which on the mean accuracy gain over dense stays negative, if any."""
    pruned = gain[gain.index > 0]
    last_at_or_above = max(pruned.index[pruned >= 0], default=0)
    below = pruned.index[pruned.index > last_at_or_above]
    return int(below[0]) if len(below) else None


def _agrees(values: pd.Series, paper: float, at_least: bool = False) -> str:
    """Is the mean effect the paper's: same sign, and within a factor of 2 of it (or beyond it, `at_least`)?"""
    ours = values.mean()
    if ours * paper <= 0:
        return "no"
    if at_least:
        return "yes" if ours >= paper else "direction only"
    return "yes" if 0.5 <= ours / paper <= 2 else "direction only"


def inference_summary(table: pd.DataFrame) -> pd.DataFrame:
    """The inference table for reading: size, multiply-adds and latency of each form, per level."""
    out = pd.DataFrame(
        {
            "% left": table.percent_remaining.round(2),
            "compact shape": table.compact_shape,
            "dead inputs": table.dead_inputs,
            "MACs compact": table.compact_macs,
            "MACs sparse": table.sparse_macs,
            "KB dense": (table.dense_bytes / 1024).round().astype(int),
            "KB compact": (table.compact_bytes / 1024).round().astype(int),
            "KB sparse": (table.sparse_bytes / 1024).round().astype(int),
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
    at = f"{format_percent(last.percent_remaining)} of weights"
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
            f"At batch {batch}, the ticket first runs faster than dense at "
            f"{format_percent(first.percent_remaining)} of weights "
            f"({first[f'speedup_batch{batch}']:.2f}x); at {at} the best form, {best}, takes "
            f"{last[f'{best}_ms_batch{batch}']:.3f} ms against {dense_ms:.3f} ms dense "
            f"({last[f'speedup_batch{batch}']:.2f}x)."
        )
    return sentences
