"""The paper's figures: every level on the log axis it can be drawn on, labelled by its own percentage."""

from __future__ import annotations

from lth_helpers.plotting import plot_accuracy_vs_weights
from tests.test_report import results


def test_levels_are_ticked_at_their_own_percentages_and_a_level_pruned_to_nothing_is_left_off():
    table = results([97.0, 97.5, 96.0, 11.35], [0, 97.1, 95.0, 11.35])  # 100, 50, 25, 12.5 percent
    table.loc[table.level == 3, "percent_remaining"] = 0.0  # a level pruned to nothing: log(0) has no place
    table.loc[table.level == 2, "percent_remaining"] = 0.0101
    ax = plot_accuracy_vs_weights(table).axes[0]
    assert list(ax.get_xticks()) == [100, 50, 0.0101]
    assert [ax.xaxis.get_major_formatter()(x) for x in ax.get_xticks()] == ["100", "50", "0.0101"]
    assert all(min(line.get_xdata()) > 0 for line in ax.get_lines())
