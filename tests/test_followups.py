"""The follow-up papers' statements: each read from the run's numbers, judged only where the run trained what it
compares and reached the size it names, and turned by the numbers (yes or no) rather than fixed."""

from __future__ import annotations

import pandas as pd
import pytest

from lth_helpers.followups import followup_rows
from lth_helpers.paper import paper_comparison
from lth_helpers.report import before_training, condition_conclusions

PERCENTS = [100.0, 51.2, 21.0, 8.6, 5.0, 3.6, 2.0]


def results(accuracy: dict[str, float], percents: list[float] = PERCENTS) -> pd.DataFrame:
    """Two trials; at every pruned level condition c scores accuracy[c] (trial 1: 0.1 more), the dense network 98."""
    rows = []
    for trial in range(2):
        for level, percent in enumerate(percents):
            for condition, value in ({"ticket": 98.0} if level == 0 else accuracy).items():
                rows.append(
                    dict(
                        level=level,
                        condition=condition,
                        trial=trial,
                        percent_remaining=percent,
                        early_stop_test_accuracy=value + 0.1 * trial,
                        early_stop_iteration=1000,
                    )
                )
    return pd.DataFrame(rows)


AS_THE_PAPERS_SAY = {
    "ticket": 98.0,
    "reinit": 96.0,
    "ticket:signed_constant": 97.8,
    "shuffle": 96.5,
    "random_prune": 95.0,
    "snip": 97.2,
    "snip_shuffled": 97.3,
    "snip:reinit": 97.2,
    "ticket:fine_tune": 97.5,
    "one_shot": 97.6,
    "magnitude_increase": 97.5,
    "movement": 97.2,
}


def rows_by_paper(accuracy: dict[str, float], percents: list[float] = PERCENTS) -> dict[str, str]:
    return {statement: agrees for statement, _, _, agrees in followup_rows(results(accuracy, percents))}


def test_a_run_that_behaves_as_the_papers_say_agrees_with_every_statement_it_can_judge():
    rows = rows_by_paper(AS_THE_PAPERS_SAY)
    assert len(rows) == 9  # no curves: the supermask row needs accuracy before training
    assert set(rows.values()) == {"yes"}, rows


@pytest.mark.parametrize(
    "change, statement",
    [
        ({"ticket:signed_constant": 96.0}, "signs suffice"),
        ({"movement": 95.0}, "magnitude increase and movement"),
        ({"snip": 94.0}, "beats random pruning"),
        ({"snip_shuffled": 95.5}, "lose nothing to shuffling"),
        ({"snip:reinit": 95.5}, "lose nothing to a fresh draw"),
        ({"shuffle": 98.0}, "the ticket (pruned after training) loses"),
        ({"ticket:fine_tune": 98.8}, "rewinding the weights"),
        ({"snip": 90.0}, "SNIP at 5%"),
    ],
)
def test_each_statement_turns_to_no_when_the_run_contradicts_it(change, statement):
    rows = rows_by_paper({**AS_THE_PAPERS_SAY, **change})
    hits = [agrees for text, agrees in rows.items() if statement in text]
    assert hits and "no" in hits, rows


def test_statements_wait_for_the_sizes_they_name_and_the_conditions_they_compare():
    short = PERCENTS[:4]  # down to 8.6%: no level near 3.6%, 5% or 2%
    assert rows_by_paper(AS_THE_PAPERS_SAY, short) == {}
    assert rows_by_paper({"ticket": 98.0, "reinit": 96.0}) == {}  # Frankle & Carbin's own rows say it
    with_snip = rows_by_paper({"ticket": 98.0, "reinit": 96.0, "snip": 97.0})
    assert (
        with_snip[
            "Frankle et al. 2021: unlike those masks, the ticket (pruned after training) loses to a fresh draw (points)"
        ]
        == "yes"
    )


def test_one_shot_statements_wait_for_the_sizes_they_name():
    two_rounds = results({"ticket": 98.2, "one_shot": 98.0, "reinit": 97.0}, [100.0, 80.0, 64.0])
    statements = " ".join(paper_comparison(two_rounds)["the paper says"])
    assert "One-shot" not in statements and "one-shot ones" not in statements
    down_to_2 = results({"ticket": 98.2, "one_shot": 98.1, "reinit": 97.0})
    statements = " ".join(paper_comparison(down_to_2)["the paper says"])
    assert "One-shot tickets more accurate" in statements and "Iterative tickets more accurate" in statements


def curves_of(table: pd.DataFrame, at_init: dict[str, float], k: int = 0) -> pd.DataFrame:
    """Two evaluations per network: before training (iteration k at pruned levels) at at_init[condition] (the dense
    network 10%), and after."""
    before = table.assign(
        iteration=[k if lv else 0 for lv in table.level],
        test_accuracy=[at_init.get(c, 10.0) if lv else 10.0 for c, lv in zip(table.condition, table.level)],
    )
    after = table.assign(iteration=100, test_accuracy=table.early_stop_test_accuracy)
    return pd.concat([before, after], ignore_index=True)[["level", "condition", "trial", "iteration", "test_accuracy"]]


@pytest.mark.parametrize("supermask, agrees", [(80.0, "yes"), (30.0, "direction only"), (10.2, "no")])
def test_the_supermask_row_reads_the_accuracy_before_training_of_late_rewound_levels_too(supermask, agrees):
    table = results({**AS_THE_PAPERS_SAY, "large_final_same_sign:signed_constant": 97.0})
    curves = curves_of(table, {"large_final_same_sign:signed_constant": supermask}, k=20)
    assert (before_training(curves).groupby("level").iteration.max() == [0, *[20] * 6]).all()
    row = next(r for r in followup_rows(table, curves) if "supermask" in r[0])
    assert row[1].startswith("86") and f"{supermask:.1f}" in row[2] and row[3] == agrees


def test_the_conditions_sentences_rank_every_condition_and_name_the_supermasks_but_not_trained_starts():
    table = results({**AS_THE_PAPERS_SAY, "large_final_same_sign:signed_constant": 97.0})
    at_init = {"large_final_same_sign:signed_constant": 70.0, "ticket:fine_tune": 97.0, "snip": 12.0}
    ranking, untrained = condition_conclusions(table, curves_of(table, at_init))
    assert ranking.index("winning ticket, signed constant -0.20") < ranking.index("SNIP -0.80")
    assert "large final, same sign, signed constant 70.0% at 51.2%" in untrained  # the first best level
    assert "fine-tuned" not in untrained and "SNIP" not in untrained
