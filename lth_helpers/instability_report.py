"""The instability analysis's paths read (instability.py computes them; docs/run-folder.md): the instability of each
pair of copies, the table and the sentences the analysis prints. Functions of an instability.csv table, which read no
folder.

    pair_instability(paths)          # one row per pair of copies: its ends, the largest error on its path, instability
    instability_table(paths)         # one row per network: mean ± std over its pairs of copies
    instability_conclusions(paths)   # sentences, each with its verdict against STABLE_BELOW
"""

from __future__ import annotations

import pandas as pd

from . import conditions
from .report import format_percent, mean_std

STABLE_BELOW = 2.0  # points of test error: the paper's threshold for a stable network
NETWORK = ("level", "condition", "trial", "rewind_iteration")  # one network of the run and where its copies start
KEYS = (*NETWORK, "pair")  # one pair of copies


def pair_instability(paths: pd.DataFrame) -> pd.DataFrame:
    """One row per pair of copies: the test error (%) of each end, the largest on the path, the instability (that
    largest minus the mean of the ends, in points) and whether it is under STABLE_BELOW; and the training split's
    instability beside it (`train_instability`)."""
    rows = []
    for key, path in paths.sort_values("point").groupby(list(KEYS)):
        ends = path.test_error.iloc[[0, -1]]
        worst = path.test_error.max()
        train = path.train_error.max() - path.train_error.iloc[[0, -1]].mean()
        instability = worst - ends.mean()
        rows.append(
            (*key, path.percent_remaining.iloc[0], *ends, worst, instability, instability < STABLE_BELOW, train)
        )
    columns = [*KEYS, "percent_remaining", "error_start", "error_end", "max_error", "instability", "stable"]
    table = pd.DataFrame(rows, columns=[*columns, "train_instability"])
    order = table.condition.map(conditions.order)  # the ticket first, then the controls
    return (
        table.assign(order=order)
        .sort_values(["level", "order", "trial", "rewind_iteration", "pair"])
        .drop(columns="order")
        .reset_index(drop=True)
    )


def instability_table(paths: pd.DataFrame) -> pd.DataFrame:
    """The pairs for reading: one row per level, condition and rewind iteration, in points of error, mean ± std over
    every pair of copies (of every trial): the test error at the ends of the path, the largest along it, the
    instability, how many pairs are stable, and the instability on the training split."""
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
            "train instability": rows.train_instability.agg(mean_std, fmt=".2f"),
        }
    )


def instability_conclusions(paths: pd.DataFrame) -> list[str]:
    """Sentences about the paths: instability in points of test error, mean ± std over every pair of copies."""
    summary = pair_instability(paths)
    networks = summary.groupby(["level", "condition", "rewind_iteration"], sort=False)
    sentences = []
    for k, values in summary[summary.level == 0].groupby("rewind_iteration").instability:
        start = "initialization" if k == 0 else f"iteration {k}"
        sentences.append(
            f"Trained twice from {start} with different batch orders, the dense network ends in two minima whose "
            f"straight path rises {mean_std(values, '.2f')} points of test error above their mean: "
            f"{_verdict(values.mean())}."
        )
    pruned = [(key, rows) for key, rows in networks if key[0] > 0]
    for level in sorted({key[0] for key, _ in pruned}):
        at_level = [(key, rows) for key, rows in pruned if key[0] == level]
        parts = [
            f"{conditions.label(condition)} {mean_std(rows.instability, '.2f')} ({_verdict(rows.instability.mean())})"
            for (_, condition, _), rows in at_level
        ]
        percent = format_percent(at_level[0][1].percent_remaining.iloc[0])
        sentences.append(f"At {percent} of weights, instability: " + ", ".join(parts) + ".")
    pairs = summary.groupby(list(NETWORK)).size()
    if len(pairs) and pairs.max() > 1:
        sentences.append(f"Each instability is the mean ± std over {pairs.max()} pairs of copies per network.")
    return sentences


def _verdict(instability: float) -> str:
    return "stable" if instability < STABLE_BELOW else "unstable"
