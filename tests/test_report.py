"""The computed conclusions say what the numbers say."""

from __future__ import annotations

import pandas as pd

from lth_helpers.report import conclusions, summary_table


def results(ticket: list[float], reinit: list[float], trials: int = 1) -> pd.DataFrame:
    rows = []
    for level, (t_acc, r_acc) in enumerate(zip(ticket, reinit)):
        for condition, acc in (("ticket", t_acc), ("reinit", r_acc)):
            if condition == "reinit" and level == 0:
                continue
            for trial in range(trials):
                rows.append(
                    dict(
                        level=level,
                        condition=condition,
                        trial=trial,
                        weights_remaining=1000 // 2**level,
                        percent_remaining=100 / 2**level,
                        early_stop_iteration=100 * (level + 1),
                        early_stop_test_accuracy=acc + 0.1 * trial,
                        final_test_accuracy=acc,
                        final_test_loss=0.1,
                        train_seconds=1.0,
                    )
                )
    return pd.DataFrame(rows)


def test_conclusions_find_where_the_ticket_stops_beating_the_dense_network():
    text = " ".join(conclusions(results([97.0, 97.5, 97.2, 96.0], [0, 97.1, 96.5, 96.4])))
    assert "97.00% test accuracy" in text
    assert "down to 25.0% of weights remaining; at best it is +0.50 points above it, at 50.0%" in text
    assert "first falls below the dense network at 12.5% (96.00%)" in text
    assert "random reinit control is below the ticket at 2 of 3 pruned levels" in text
    assert "it reaches 96.40% (+0.40 points against the ticket)" in text


def test_conclusions_when_the_ticket_is_worse_from_the_start():
    text = " ".join(conclusions(results([97.0, 96.5], [0, 96.0])))
    assert "below the dense network already at 50.0% (96.50%, -0.50 points)" in text


def test_summary_table_shows_mean_and_std_over_trials():
    table = summary_table(results([97.0, 97.5], [0, 97.1], trials=2))
    assert table.loc[1, "stop acc"] == "97.55 ± 0.07"
    assert table.loc[0, "reinit acc"] == "—"
    assert table.loc[1, "weights"] == 500
