"""The paper's statements about LeNet-300-100 beside a run's numbers: does this run reproduce Frankle & Carbin?

    table = paper_comparison(results)   # one row per statement: the paper says, paper, this run, agrees

Each statement is read from results.csv as the paper measures it (test accuracy at early stopping; for
generalization, training and test accuracy at the end of training); a statement about sparsities the run has not
reached, or about a control it did not train, is left out.
"""

from __future__ import annotations

import pandas as pd

from .followups import Row, followup_rows
from .report import format_percent, has_train_accuracy, mean_std, nearest_level, percent_by_level, span

FITS_TRAINING_SET = 99.0  # training accuracy (%) from which a network counts as fitting its training set (~100%)


def paper_comparison(results: pd.DataFrame, curves: pd.DataFrame | None = None) -> pd.DataFrame:
    """The paper's statements about LeNet-300-100 beside this run's numbers, one row per statement.

    Frankle & Carbin (ICLR 2019), Section 2 and Figures 3-4; accuracies are test accuracy at early
    stopping (the generalization rows: training and test accuracy at the end of training), "dense" is
    level 0. Differences and ratios are taken per trial, then shown as mean ± std over trials. agrees:
    "yes" when the run shows the effect at about the paper's size (within a factor of 2, or beyond a
    bound the paper states; for "x times sooner", the excess over 1), "direction only" when it shows it
    much weaker or stronger, "no" when it does not. A statement about a percentage, or a range of
    percentages, the run has no level near (within 10%) or in is left out; the one-shot rows need the
    one_shot control, the reinit rows the reinit control. Then the follow-up papers' statements
    (followups.py), those about accuracy before training from `curves` where given.
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
    rows += followup_rows(results, curves)
    return pd.DataFrame(rows, columns=["the paper says", "paper", "this run", "agrees"])


def _ticket_rows(acc: pd.DataFrame, stop: pd.DataFrame, percent: pd.Series) -> list[Row]:
    """The statements about winning tickets against the dense network."""
    at_21, at_13, at_3 = (nearest_level(percent, p, within=0.1) for p in (21.1, 13.5, 3.6))
    gain = acc["ticket"].sub(acc["ticket", 0], axis=0)  # per trial and level: points above dense
    rows = []
    if at_21 is not None:
        levels = list(range(1, at_21 + 1))
        statement = "Tickets stop early sooner than the dense network at every level down to 21.1%"
        rows.append(sooner_than_dense(statement, stop, "ticket", "tickets", levels))
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


def _reinit_rows(acc: pd.DataFrame, stop: pd.DataFrame, percent: pd.Series) -> list[Row]:
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


def _generalization_rows(results: pd.DataFrame, percent: pd.Series) -> list[Row]:
    """The statements about generalization: the gap between training and test accuracy at the end of training.

    Frankle & Carbin 2019, Section 2 (Figure 4b, Appendix D): at iteration 50,000 "iteratively-pruned winning tickets
    still see a test accuracy improvement of up to 0.35 percentage points in spite of the fact that training
    accuracy reaches 100% for nearly all networks", so "the gap between training accuracy and test accuracy is
    smaller for winning tickets"; and, of random reinitialization, "All networks reach 100% training accuracy for
    Pm >= 5%", so "the winning tickets generalize substantially better than when randomly reinitialized".
    """
    if not has_train_accuracy(results):
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
                f"(training accuracy {train['ticket', 0].mean():.2f}%), tickets {span(gaps, '.2f')} "
                f"({span(trains, '.2f')}%)",
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


def _down_to(percent: pd.Series, target: float) -> list[int]:
    """The pruned levels of a statement about "every level down to `target`%" (those within 10% of it or above), or
    none when the run has no level near `target`: a run that stops short of it cannot say."""
    if nearest_level(percent, target, within=0.1) is None:
        return []
    return [lv for lv in percent.index if 0 < lv and percent[lv] >= target / 1.1]


def _one_shot_rows(acc: pd.DataFrame, stop: pd.DataFrame, percent: pd.Series) -> list[Row]:
    """The statements about one-shot pruning.

    Frankle & Carbin 2019, Section 2 ("One-shot pruning", Figure 4c): "When 67.5% >= Pm >= 17.6%, the average
    winning tickets reach minimum validation [loss] earlier than the original network. When 95.0% >= Pm >= 5.17%,
    test accuracy is higher than the original network. However, iteratively-pruned winning tickets learn faster and
    reach higher test accuracies at smaller network sizes."
    """
    pruned = percent[percent.index > 0]
    rows = []
    reaches = {size: nearest_level(percent, size, within=0.1) is not None for size in (17.6, 5.17)}
    levels = [lv for lv in pruned.index if 17.6 <= pruned[lv] <= 67.5]
    if levels and reaches[17.6]:
        statement = "One-shot tickets stop early sooner than the dense network from 67.5% down to 17.6%"
        rows.append(sooner_than_dense(statement, stop, "one_shot", "one-shot", levels))
    levels = [lv for lv in pruned.index if 5.17 <= pruned[lv] <= 95.0]
    if levels and reaches[5.17]:
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
    if pruned[last] > 5.17 * 1.1:  # "at smaller network sizes": those below the range where one-shot beats dense
        return rows
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


def sooner_than_dense(statement: str, stop: pd.DataFrame, condition: str, who: str, levels: list[int]) -> Row:
    """The row of a statement that `condition`'s networks (`who`, as the row names them) stop early sooner than the
    dense network at every one of `levels`; `stop` holds early-stopping iterations by trial and (condition, level)."""
    sooner = sum(stop[condition, lv].mean() < stop["ticket", 0].mean() for lv in levels)
    stops = ", ".join(f"{stop[condition, lv].mean():,.0f}" for lv in levels)
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
