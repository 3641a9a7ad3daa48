"""The paper's figures: every level on the log axis it can be drawn on, labelled by its own percentage."""

from __future__ import annotations

import pandas as pd

from lth_helpers.plotting import plot_accuracy_vs_weights, plot_inference
from tests.conftest import results


def test_levels_are_ticked_at_their_own_percentages_and_a_level_pruned_to_nothing_is_left_off():
    table = results([97.0, 97.5, 96.0, 11.35], [0, 97.1, 95.0, 11.35])  # 100, 50, 25, 12.5 percent
    table.loc[table.level == 3, "percent_remaining"] = 0.0  # a level pruned to nothing: log(0) has no place
    table.loc[table.level == 2, "percent_remaining"] = 0.0101
    ax = plot_accuracy_vs_weights(table).axes[0]
    assert list(ax.get_xticks()) == [100, 50, 0.0101]
    assert [ax.xaxis.get_major_formatter()(x) for x in ax.get_xticks()] == ["100", "50", "0.0101"]
    assert all(min(line.get_xdata()) > 0 for line in ax.get_lines())


def test_the_inference_figure_leaves_off_a_level_pruned_to_nothing():
    table = pd.DataFrame({"percent_remaining": [100.0, 1.0, 0.0]})
    for column in ("dense_ms_batch1", "compact_ms_batch1", "sparse_ms_batch1"):
        table[column] = [0.04, 0.03, 0.02]
    for column in ("dense_ms_batch1000", "compact_ms_batch1000", "sparse_ms_batch1000"):
        table[column] = [2.0, 1.0, 0.5]
    for ax in plot_inference(table).axes:
        assert all(list(line.get_xdata()) == [100.0, 1.0] for line in ax.get_lines())
