"""The computed conclusions say what the numbers say."""

from __future__ import annotations

import pandas as pd

from lth_helpers.inference import BATCH_SIZES, FORMS
from lth_helpers.report import conclusions, format_percent, inference_summary, paper_comparison, summary_table
from tests.conftest import results


def test_conclusions_find_where_the_ticket_stops_beating_the_dense_network():
    text = " ".join(conclusions(results([97.0, 97.5, 97.2, 96.0], [0, 97.1, 96.5, 96.4])))
    assert "97.00% test accuracy" in text
    assert "down to 25.0% of weights remaining; at best it is +0.50 points above it, at 50.0%" in text
    assert "first falls below the dense network at 12.5% (96.00%)" in text
    assert "random reinit control is below the ticket at 2 of 3 pruned levels" in text
    assert "it reaches 96.40% (+0.40 points against the ticket)" in text
    assert "one trial, so no error bars" in text
    assert "one trial" not in " ".join(conclusions(results([97.0, 97.5, 97.2, 96.0], [0, 97.1, 96.5, 96.4], trials=2)))


def test_conclusions_when_the_ticket_is_worse_from_the_start():
    text = " ".join(conclusions(results([97.0, 96.5], [0, 96.0])))
    assert "below the dense network already at 50.0% (96.50%, -0.50 points)" in text


def test_a_level_below_one_percent_is_not_printed_as_zero():
    table = results([97.0, 97.5, 96.0], [0, 97.1, 95.0])
    table.loc[table.level == 2, "percent_remaining"] = 0.0101  # 27 weights of 266,200
    text = " ".join(conclusions(table))
    assert "At the sparsest level, 0.01% of weights" in text and " 0.0%" not in text
    assert [format_percent(p) for p in (100, 21.07, 3.58, 0.96, 0.0101, 0)] == [
        "100.0%",
        "21.1%",
        "3.6%",
        "0.96%",
        "0.01%",
        "0%",
    ]


def test_summary_table_shows_mean_and_std_over_trials():
    table = summary_table(results([97.0, 97.5], [0, 97.1], trials=2))
    assert table.loc[1, "stop acc"] == "97.55 ± 0.07"
    assert table.loc[0, "reinit acc"] == "—"
    assert table.loc[1, "weights"] == 500
    one_trial = summary_table(results([97.0, 97.5], [0, 97.1]))
    assert (one_trial.loc[1, "stop acc"], one_trial.loc[1, "stop iter"]) == ("97.50", "200")  # not 97.5, 200.0


PAPER_PERCENTS = [100, 80.0, 64.0, 51.3, 41.1, 32.9, 26.4, 21.1, 16.9, 13.5, 10.9, 8.7, 7.0, 5.6, 4.5, 3.6, 2.9]


def paper_like_results(ticket_gain: list[float]) -> pd.DataFrame:
    """Two trials on the paper's schedule: the ticket `ticket_gain[level]` points above dense (98.0 + 0.1 x trial),
    stopping 500 iterations earlier per level down to 21.1%; reinit 0.1 points per level below dense, 2.5x later."""
    rows = []
    for trial in range(2):
        dense = 98.0 + 0.1 * trial
        for level, percent in enumerate(PAPER_PERCENTS):
            stop = 10_000 - 500 * min(level, 7) + 1000 * max(level - 7, 0)
            common = dict(level=level, trial=trial, percent_remaining=percent, weights_remaining=int(2662 * percent))
            rows.append(
                dict(
                    common,
                    condition="ticket",
                    early_stop_iteration=stop,
                    early_stop_test_accuracy=dense + ticket_gain[level],
                )
            )
            if level:
                rows.append(
                    dict(
                        common,
                        condition="reinit",
                        early_stop_iteration=2.5 * stop,
                        early_stop_test_accuracy=dense - 0.1 * level,
                    )
                )
    return pd.DataFrame(rows)


def test_paper_comparison_reads_each_statement_from_the_run():
    gain = [0, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.1, -0.05, -0.5]
    table = paper_comparison(paper_like_results(gain)).set_index("the paper says")
    rows = table.to_dict("index")
    assert len(rows) == 8 and all(v in ("yes", "no", "direction only") for v in table.agrees)
    sooner = rows["Tickets stop early sooner than the dense network at every level down to 21.1%"]
    assert (
        sooner["this run"]
        == "at 7 of 7 levels: dense at 10,000 ± 0; tickets at 9,500, 9,000, 8,500, 8,000, 7,500, 7,000, 6,500"
    )
    assert rows["Early stopping at 21.1%, against dense (% earlier)"] == {
        "paper": "38",
        "this run": "35 ± 0",
        "agrees": "yes",
    }
    more_accurate = rows["Tickets more accurate than the dense network at every level down to 21.1%"]
    assert more_accurate["this run"] == "yes: the smallest gain is +0.20 ± 0.00 points, at 80.0%"
    assert rows["Accuracy at 13.5%, against dense (points)"]["agrees"] == "yes"
    back = rows["The ticket is back to the dense network's accuracy near 3.6%"]
    assert back == {
        "paper": "yes",
        "this run": "-0.05 ± 0.00 points at 3.6%; below dense from 3.6% on",
        "agrees": "yes",
    }
    reinit = rows["Random reinit loses accuracy against dense after little pruning (by 51.3%)"]
    assert reinit["this run"] == "below dense from 80.0% on" and reinit["agrees"] == "yes"
    assert rows["At 21.1%: the ticket's early stop, sooner than reinit's (x)"]["this run"] == "2.50 ± 0.00"
    assert rows["At 21.1%: the ticket's early stop, sooner than reinit's (x)"]["agrees"] == "yes"
    ahead = rows["At 21.1%: the ticket's accuracy above reinit's (points)"]
    assert ahead["this run"] == "+1.10 ± 0.00" and ahead["agrees"] == "direction only"  # 1.1 is over 2x the paper's 0.5


def test_paper_comparison_says_no_where_the_run_disagrees_and_skips_levels_it_lacks():
    gain = [0, 0.2, 0.1, -0.1, 0.1, 0.0, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    rows = paper_comparison(paper_like_results(gain)).set_index("the paper says")["agrees"]
    assert rows["Tickets more accurate than the dense network at every level down to 21.1%"] == "no"
    assert rows["Accuracy at 13.5%, against dense (points)"] == "direction only"  # +0.1, not more than +0.3
    assert rows["The ticket is back to the dense network's accuracy near 3.6%"] == "no"  # never stays below
    short = paper_like_results(gain)
    short = short[short.level <= 5]  # down to 32.9%, as the seed preset: only the reinit statement applies
    assert list(paper_comparison(short)["the paper says"]) == [
        "Random reinit loses accuracy against dense after little pruning (by 51.3%)"
    ]
    assert paper_comparison(short[short.level <= 2]).empty  # not even 51.3%: nothing to compare


def test_the_inference_summary_shows_sizes_in_whole_kilobytes():
    table = pd.DataFrame(
        {
            "level": [0, 1],
            "percent_remaining": [100.0, 80.0],
            "compact_shape": ["784-300-100-10"] * 2,
            "dead_inputs": [0, 0],
            "compact_macs": [266_200] * 2,
            "sparse_macs": [266_200, 212_960],
            "dense_bytes": [1_064_840] * 2,
            "compact_bytes": [1_064_840] * 2,
            "sparse_bytes": [2_133_684, 1_707_204],
            **{f"{form}_ms_batch{batch}": [0.04, 0.03] for form in FORMS for batch in BATCH_SIZES},
            **{f"speedup_batch{batch}": [1.0, 1.0] for batch in BATCH_SIZES},
        }
    )
    summary = inference_summary(table)
    assert summary.loc[1, ["KB dense", "KB sparse"]].tolist() == [1040, 1667]
    assert "1040.0" not in summary.to_string()  # printed as 1040, not as a float
