"""The computed conclusions say what the numbers say."""

from __future__ import annotations

import re

import pandas as pd

from lth_helpers.inference import BATCH_SIZES, FORMS, inference_summary
from lth_helpers.paper import paper_comparison, sooner_than_dense
from lth_helpers.report import (
    conclusions,
    format_percent,
    generalization_conclusions,
    one_shot_conclusions,
    summary_table,
)
from tests.conftest import REPO, results

NUMBER = re.compile(r"[+-]?\d+(?:,\d{3})*(?:\.\d+)?%?")


def numbers(text: str) -> list[str]:
    """The numbers a reader reads in `text`, in order, as printed: "97.00%", "+0.50", "9,500"."""
    return NUMBER.findall(text)


def facts(sentences: list[str], about: str) -> list[str]:
    """The numbers of the one sentence of `sentences` that speaks of `about`."""
    [sentence] = [sentence for sentence in sentences if about in sentence]
    return numbers(sentence)


def test_conclusions_find_where_the_ticket_stops_beating_the_dense_network():
    sentences = conclusions(results([97.0, 97.5, 97.2, 96.0], [0, 97.1, 96.5, 96.4]))
    assert facts(sentences, "dense network reaches") == ["97.00%", "100"]  # accuracy, early-stopping iteration
    assert facts(sentences, "matches or beats") == ["25.0%", "+0.50", "50.0%"]  # down to; best gain, where
    assert facts(sentences, "first falls below") == ["12.5%", "96.00%"]
    assert facts(sentences, "sparsest level") == ["12.5%", "96.00%", "-1.00", "400"]
    assert facts(sentences, "random reinit control is below") == ["2", "3", "96.40%", "+0.40", "400"]
    assert any("one trial" in sentence for sentence in sentences)  # the warning: no error bars
    two_trials = conclusions(results([97.0, 97.5, 97.2, 96.0], [0, 97.1, 96.5, 96.4], trials=2))
    assert not any("one trial" in sentence for sentence in two_trials)


def test_conclusions_when_the_ticket_is_worse_from_the_start():
    sentences = conclusions(results([97.0, 96.5], [0, 96.0]))
    assert facts(sentences, "below the dense network already") == ["50.0%", "96.50%", "-0.50"]
    assert not any("matches or beats" in sentence for sentence in sentences)


def test_a_level_below_one_percent_is_not_printed_as_zero():
    table = results([97.0, 97.5, 96.0], [0, 97.1, 95.0])
    table.loc[table.level == 2, "percent_remaining"] = 0.0101  # 27 weights of 266,200
    sentences = conclusions(table)
    assert facts(sentences, "sparsest level")[0] == "0.01%" and " 0.0%" not in " ".join(sentences)
    assert [format_percent(p) for p in (100, 21.07, 3.58, 0.96, 0.0101, 0)] == [
        "100.0%",
        "21.1%",
        "3.6%",
        "0.96%",
        "0.01%",
        "0%",
    ]


def test_the_generalization_sentences_read_training_and_test_accuracy_at_the_end_of_training():
    table = results([97.0, 97.5, 97.2, 96.0], [0, 97.1, 96.5, 96.4])
    table["final_train_accuracy"] = 99.5  # every network fits the training images alike
    sentences = generalization_conclusions(table)
    assert facts(sentences, "the dense network scores") == ["99.50%", "97.00%", "2.50"]  # train, test, gap
    # the ticket: training accuracy; smaller gap than dense at 2 of 3 levels; smallest at 50%, 2.00 points
    assert facts(sentences, "The ticket scores") == ["99.50%", "2", "3", "50.0%", "2.00"]
    # against reinit: smaller at 2 of 3; at the sparsest, the gaps and training accuracies
    assert facts(sentences, "random reinit") == ["2", "3", "3.50", "3.10", "99.50%", "99.50%"]
    assert set(sentences) <= set(conclusions(table))


def test_the_one_shot_sentence_says_how_far_down_one_shot_tickets_match_the_dense_network():
    table = results([97.0, 97.5, 97.2, 96.0], [0, 97.1, 96.5, 96.4])
    assert one_shot_conclusions(table) == []  # a run without the control
    one_shot = table[table.condition == "reinit"].assign(condition="one_shot")
    one_shot["early_stop_test_accuracy"] = [97.2, 97.0, 96.5]  # dense: 97.0
    [sentence] = one_shot_conclusions(pd.concat([table, one_shot]))
    assert numbers(sentence) == ["25.0%", "12.5%"]  # matches down to 25%, below from 12.5%
    one_shot["early_stop_test_accuracy"] = [96.8, 97.1, 97.3]
    [sentence] = one_shot_conclusions(pd.concat([table, one_shot]))
    assert numbers(sentence) == ["50.0%", "-0.20"] and "already" in sentence  # below dense from the first level


def test_summary_table_shows_mean_and_std_over_trials():
    table = summary_table(results([97.0, 97.5], [0, 97.1], trials=2))
    assert table.loc[1, "stop acc"] == "97.55 ± 0.07"
    assert table.loc[0, "reinit acc"] == "—"
    assert table.loc[1, "weights"] == 500
    assert table.loc[1, "train acc"] == "99.10 ± 0.00"  # the ticket's, on the training split at the end
    one_trial = summary_table(results([97.0, 97.5], [0, 97.1]))
    assert (one_trial.loc[1, "stop acc"], one_trial.loc[1, "stop iter"]) == ("97.50", "200")  # not 97.5, 200.0


PAPER_PERCENTS = [100, 80.0, 64.0, 51.3, 41.1, 32.9, 26.4, 21.1, 16.9, 13.5, 10.9, 8.7, 7.0, 5.6, 4.5, 3.6, 2.9]


def paper_like_results(ticket_gain: list[float], one_shot_gain: list[float] | None = None) -> pd.DataFrame:
    """Two trials on the paper's schedule: the ticket `ticket_gain[level]` points above dense (98.0 + 0.1 x trial),
    stopping 500 iterations earlier per level down to 21.1%; reinit 0.1 points per level below dense, 2.5x later;
    with `one_shot_gain`, one-shot tickets that many points above dense, stopping 1.2x later than the ticket. Every
    network ends training at 100% training accuracy, and at its early-stopping test accuracy."""
    rows = []
    for trial in range(2):
        dense = 98.0 + 0.1 * trial
        for level, percent in enumerate(PAPER_PERCENTS):
            stop = 10_000 - 500 * min(level, 7) + 1000 * max(level - 7, 0)
            common = dict(level=level, trial=trial, percent_remaining=percent, weights_remaining=int(2662 * percent))
            conditions = [("ticket", stop, dense + ticket_gain[level])]
            if level:
                conditions.append(("reinit", 2.5 * stop, dense - 0.1 * level))
            if level and one_shot_gain is not None:
                conditions.append(("one_shot", 1.2 * stop, dense + one_shot_gain[level]))
            for condition, stop_at, accuracy in conditions:
                rows.append(
                    dict(
                        common,
                        condition=condition,
                        early_stop_iteration=stop_at,
                        early_stop_test_accuracy=accuracy,
                        final_test_accuracy=accuracy,
                        final_train_accuracy=100.0,
                    )
                )
    return pd.DataFrame(rows)


def test_paper_comparison_reads_each_statement_from_the_run():
    gain = [0, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.1, -0.05, -0.5]
    table = paper_comparison(paper_like_results(gain)).set_index("the paper says")
    rows = table.to_dict("index")
    assert len(rows) == 11 and all(v in ("yes", "no", "direction only") for v in table.agrees)
    sooner = rows["Tickets stop early sooner than the dense network at every level down to 21.1%"]
    stops = ["9,500", "9,000", "8,500", "8,000", "7,500", "7,000", "6,500"]
    assert numbers(sooner["this run"]) == ["7", "7", "10,000", "0", *stops]  # of 7 levels; dense, its std; tickets
    assert sooner["agrees"] == "yes"
    earlier = rows["Early stopping at 21.1%, against dense (% earlier)"]
    assert numbers(earlier["this run"]) == ["35", "0"] and earlier["agrees"] == "yes"
    more_accurate = rows["Tickets more accurate than the dense network at every level down to 21.1%"]
    assert numbers(more_accurate["this run"]) == ["+0.20", "0.00", "80.0%"] and more_accurate["agrees"] == "yes"
    assert rows["Accuracy at 13.5%, against dense (points)"]["agrees"] == "yes"
    back = rows["The ticket is back to the dense network's accuracy near 3.6%"]
    assert numbers(back["this run"]) == ["-0.05", "0.00", "3.6%", "3.6%"] and back["agrees"] == "yes"
    reinit = rows["Random reinit loses accuracy against dense after little pruning (by 51.3%)"]
    assert numbers(reinit["this run"]) == ["80.0%"] and reinit["agrees"] == "yes"
    assert numbers(rows["At 21.1%: the ticket's early stop, sooner than reinit's (x)"]["this run"]) == ["2.50", "0.00"]
    assert rows["At 21.1%: the ticket's early stop, sooner than reinit's (x)"]["agrees"] == "yes"
    ahead = rows["At 21.1%: the ticket's accuracy above reinit's (points)"]
    assert numbers(ahead["this run"]) == ["+1.10", "0.00"]
    assert ahead["agrees"] == "direction only"  # 1.1 is over 2x the paper's 0.5
    end_gain = rows["At the end of training, the tickets' test accuracy above dense, at best (points)"]
    assert numbers(end_gain["this run"]) == ["+0.40", "0.00", "21.1%"] and end_gain["agrees"] == "yes"
    gap = rows[
        "At the end of training tickets fit the training set as dense does, with a smaller train-test gap, at every "
        "level down to 3.6%"
    ]
    # at 14 of 15 levels; dense: gap, its std, training accuracy; the tickets' gaps from, to; their training accuracy
    assert numbers(gap["this run"]) == ["14", "15", "1.95", "0.07", "100.00%", "1.55", "2.00", "100.00%"]
    assert gap["agrees"] == "no"  # at 3.6% the ticket is 0.05 points below dense: a larger gap
    reinit_gap = rows[
        "Tickets generalize better than random reinit: a smaller train-test gap at every level down to 5%"
    ]
    assert numbers(reinit_gap["this run"]) == ["13", "13", "5.6%", "1.55", "0.07", "3.25", "0.07"]
    assert reinit_gap["agrees"] == "yes"


def test_paper_comparison_says_no_where_the_run_disagrees_and_skips_levels_it_lacks():
    gain = [0, 0.2, 0.1, -0.1, 0.1, 0.0, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    rows = paper_comparison(paper_like_results(gain)).set_index("the paper says")["agrees"]
    assert rows["Tickets more accurate than the dense network at every level down to 21.1%"] == "no"
    assert rows["Accuracy at 13.5%, against dense (points)"] == "direction only"  # +0.1, not more than +0.3
    assert rows["The ticket is back to the dense network's accuracy near 3.6%"] == "no"  # never stays below
    short = paper_like_results(gain)
    short = short[short.level <= 5]  # down to 32.9%, as the seed preset: no "every level down to" a smaller size
    assert list(paper_comparison(short)["the paper says"]) == [
        "Random reinit loses accuracy against dense after little pruning (by 51.3%)",
        "At the end of training, the tickets' test accuracy above dense, at best (points)",
    ]
    assert len(paper_comparison(short[short.level == 0])) == 0  # nothing pruned: nothing to compare


def test_tickets_that_do_not_fit_the_training_set_do_not_agree_with_the_paper_whatever_their_gap():
    statement = (
        "At the end of training tickets fit the training set as dense does, with a smaller train-test gap, at every "
        "level down to 3.6%"
    )
    results = paper_like_results([0, *[0.3] * 16])  # every ticket 0.3 points above dense: a smaller gap everywhere
    assert paper_comparison(results).set_index("the paper says").agrees[statement] == "yes"
    short_of_100 = results.assign(final_train_accuracy=98.5)  # as after the seed preset's 5 epochs
    assert paper_comparison(short_of_100).set_index("the paper says").agrees[statement] == "no"


def test_paper_comparison_reads_the_one_shot_statements_from_the_run():
    ticket_gain = [0, *[0.3] * 16]
    one_shot_gain = [0, 0.2, 0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.0, -0.1, -0.2, -0.3, -0.4, -0.5, -0.6]
    rows = paper_comparison(paper_like_results(ticket_gain, one_shot_gain)).set_index("the paper says").to_dict("index")
    sooner = rows["One-shot tickets stop early sooner than the dense network from 67.5% down to 17.6%"]
    # 64.0% to 21.1%: 1.2x the ticket's 9,000 to 6,500, against dense's 10,000
    stops = ["10,800", "10,200", "9,600", "9,000", "8,400", "7,800"]
    assert numbers(sooner["this run"]) == ["4", "6", "10,000", "0", *stops]
    assert sooner["agrees"] == "no"
    accurate = rows["One-shot tickets more accurate than the dense network from 95.0% down to 5.17%"]
    assert numbers(accurate["this run"]) == ["9", "13", "-0.30", "0.00", "5.6%"] and accurate["agrees"] == "no"
    more = rows["Iterative tickets more accurate than one-shot ones at small sizes (points, at the sparsest level)"]
    assert numbers(more["this run"]) == ["+0.90", "0.00", "2.9%"] and more["agrees"] == "yes"
    faster = rows[
        "Iterative tickets learn faster than one-shot ones at small sizes: one-shot's early stop over the ticket's "
        "(x, at the sparsest level)"
    ]
    assert numbers(faster["this run"]) == ["1.20", "0.00", "2.9%"] and faster["agrees"] == "yes"


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


def test_the_paper_runs_table_in_docs_gives_the_readmes_verdicts_though_it_predates_training_accuracy():
    results = pd.read_csv(REPO / "docs" / "results" / "paper" / "results.csv")  # no final_train_* columns
    comparison = paper_comparison(results)
    assert list(comparison.agrees) == ["yes", "yes", "yes", "yes", "no", "no", "yes", "yes"]  # README, "What it found"
    assert numbers(comparison["this run"][1]) == ["40", "18"]
    assert numbers(comparison["this run"][3]) == ["+0.50", "0.26"]
    assert "train acc" not in summary_table(results) and generalization_conclusions(results) == []


def test_the_sooner_than_dense_row_reads_any_condition_not_only_the_ticket_and_one_shot():
    stop = paper_like_results([0, *[0.3] * 16]).pivot_table(
        index="trial", columns=["condition", "level"], values="early_stop_iteration"
    )
    _, _, this_run, agrees = sooner_than_dense("Reinit stops early sooner", stop, "reinit", "random reinit", [1, 2])
    assert "random reinit at 23,750, 22,500" in this_run and agrees == "no"  # 2.5x the ticket's 9,500 and 9,000
