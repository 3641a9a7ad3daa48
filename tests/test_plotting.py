"""The paper's figures (every level on the log axis it can be drawn on, labelled by its own percentage), and the
pictures of what a ticket keeps, each checked against the run folder it draws."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping

import numpy as np
import pandas as pd
import pytest

from lth_helpers import RunFolder
from lth_helpers.plotting import (
    CONDITION_FIGURES,
    FIGURES,
    GRID_FIGURE,
    TICKET_FIGURES,
    before_training,
    plot_accuracy_at_init,
    plot_accuracy_vs_weights,
    plot_condition_grid,
    plot_generalization,
    plot_inference,
    plot_supermasks,
    run_figures,
)
from lth_helpers.report import accuracy_at_init_conclusions, format_percent
from lth_helpers.runs import INIT
from lth_helpers.ticket_figures import plot_initial_weights, plot_input_pixels, plot_layer_sparsity
from tests.conftest import make_run, results


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


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run") / "tiny")


def save_figures(run_dir):
    """Draw a run's figures from its folder and write them into it, as the command line and the notebook do."""
    run = RunFolder(run_dir)
    figures = run_figures(run.results(), run.curves(), run.load(INIT), run.ticket_masks())
    with RunFolder.open(run_dir, run.config) as folder:
        folder.save_figures(figures)
    return [run_dir / name for name in figures]


def test_run_figures_are_the_papers_figures_and_what_the_ticket_keeps_written_into_the_run_folder(run_dir, tmp_path):
    paths = save_figures(run_dir)
    names = {path.name for path in paths}
    assert names == set(FIGURES + TICKET_FIGURES + (GRID_FIGURE,)) and len(names) == 9
    assert all(path.parent == run_dir and path.stat().st_size > 10_000 for path in paths)
    listed = json.loads((run_dir / "manifest.json").read_text())["files"]
    assert names <= set(listed)  # what --overwrite removes


def test_input_pixels_show_each_pixels_surviving_fc1_connections_and_dead_pixels(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    run = RunFolder(copy)
    masks = run.load_masks(3)
    masks["ticket"]["fc1"][0, :, :28] = 0  # the top row of pixels loses every connection
    with RunFolder.open(copy, run.config) as folder:
        folder.save_masks(3, masks)
    fig = plot_input_pixels(run.ticket_masks())
    percent = run.results().query("condition == 'ticket'").groupby("level").percent_remaining.first()
    kept = sum(int(m[0].sum()) for m in masks["ticket"].values()) / sum(m[0].numel() for m in masks["ticket"].values())
    expected = [format_percent(p) for p in (percent[1], percent[2], 100 * kept)]  # level 3 has lost 28 x 40 more
    assert [ax.get_title().split(" of")[0] for ax in fig.axes[:3]] == expected
    image = fig.axes[2].get_images()[0]
    assert np.array_equal(image.get_array(), masks["ticket"]["fc1"][0].sum(0).view(28, 28).numpy())
    assert fig.axes[2].get_title().endswith(f"{int((image.get_array() == 0).sum())} dead pixels")
    assert int((image.get_array() == 0).sum()) >= 28
    assert {tuple(ax.get_images()[0].get_clim()) for ax in fig.axes[:3]} == {(0.5, 40)}  # one colour scale


def test_the_pictures_of_a_ticket_read_only_the_levels_they_draw(run_dir):
    run, asked = RunFolder(run_dir), []

    class Recorded(Mapping):  # a run folder's masks by level, noting which levels are read
        def __getitem__(self, level):
            asked.append(level)
            return run.ticket_masks()[level]

        def __iter__(self):
            return iter(run.ticket_masks())

        def __len__(self):
            return len(run.ticket_masks())

    plot_input_pixels(Recorded())
    assert asked == [1, 2, 3]  # the pruned levels of 4
    asked.clear()
    plot_initial_weights(run.load(INIT), Recorded(), run.results())
    assert asked == [3]


def test_accuracy_at_init_plots_the_iteration_0_test_accuracy_of_every_condition(run_dir):
    run = RunFolder(run_dir)
    results, curves = run.results(), run.curves()
    ax = plot_accuracy_at_init(curves, results).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    at_init = curves[curves.iteration == 0].groupby(["condition", "level"]).test_accuracy.mean()
    drawn = {container.get_label(): container.lines[0] for container in ax.containers}  # one errorbar a condition
    # errorbar keeps its data as objects, which np.allclose takes only from numpy 2 on
    assert np.allclose(drawn["winning ticket"].get_ydata().astype(float), at_init["ticket"].values)
    assert np.allclose(drawn["random reinit"].get_ydata()[1:].astype(float), at_init["reinit"].values)
    assert "chance (10%)" in lines


def test_initial_weights_compare_the_init_values_of_kept_and_pruned_weights(run_dir):
    run = RunFolder(run_dir)
    theta_0, masks = run.load("init.pt"), run.load_masks(3)["ticket"]  # 3: the sparsest level, nearest 7%
    fig = plot_initial_weights(theta_0, run.ticket_masks(), run.results())
    for ax, name in zip(fig.axes, ("fc1", "fc2", "fc3")):
        values, kept = theta_0[f"{name}.weight"][0], masks[name][0].bool()
        kept_mean, pruned_mean = values[kept].abs().mean(), values[~kept].abs().mean()
        assert ax.get_title() == f"{name}: mean |θ0| {kept_mean:.3f} kept, {pruned_mean:.3f} pruned"
        assert kept_mean > pruned_mean  # magnitude pruning keeps the weights that stay large; they start larger
    assert "(level 3, trial 0)" in fig.texts[0].get_text()
    level_1 = plot_initial_weights(theta_0, run.ticket_masks(), run.results(), level=1)
    assert "(level 1, trial 0)" in level_1.texts[0].get_text()


def test_layer_sparsity_plots_each_layers_own_percent_remaining(run_dir):
    results = RunFolder(run_dir).results()
    ax = plot_layer_sparsity(results).axes[0]
    rows = results[(results.trial == 0) & (results.condition == "ticket")]
    fc1 = next(line for line in ax.get_lines() if line.get_label().startswith("fc1"))
    assert np.allclose(fc1.get_ydata(), 100 * rows.fc1_remaining / rows.fc1_remaining.iloc[0])
    fc3 = next(line for line in ax.get_lines() if line.get_label().startswith("fc3"))
    assert np.allclose(fc3.get_ydata(), 100 * 0.9 ** rows.level.to_numpy(), atol=1)  # prune_rate_output 0.1
    random = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert len(random) == 3 and random[0].get_label() == "random pruning (same counts)"


def test_the_sentences_on_accuracy_at_init_read_the_iteration_0_rows():
    curves = pd.DataFrame(
        [(0, "ticket", 9.8), (1, "ticket", 40.0), (2, "ticket", 55.5), (1, "reinit", 10.2), (2, "reinit", 11.0)],
        columns=["level", "condition", "test_accuracy"],
    ).assign(iteration=0, trial=0)
    curves = pd.concat([curves, curves.assign(iteration=100, test_accuracy=97.0)])  # trained: not read
    results = curves[curves.iteration == 0].assign(percent_remaining=lambda t: 100 * 0.8**t.level)
    text = " ".join(accuracy_at_init_conclusions(curves, results))
    assert "the dense network scores 9.80% on the test set" in text
    assert "scores 55.50% at 64.0% of weights (at worst 40.00%, at 80.0%): the mask alone already classifies" in text
    assert "Untrained at 64.0% of weights: the ticket 55.50%, random reinit 11.00%." in text
    flat = curves.assign(test_accuracy=lambda t: t.test_accuracy.clip(upper=12))
    assert "is not far above chance" in " ".join(accuracy_at_init_conclusions(flat, results))


@pytest.mark.filterwarnings("error")
def test_a_run_with_no_pruned_level_gets_every_figure_without_warnings(tmp_path):
    run_dir = make_run(tmp_path / "dense", rounds=0)
    run = RunFolder(run_dir)
    assert all(path.exists() for path in save_figures(run_dir))
    dense = plot_initial_weights(run.load(INIT), run.ticket_masks(), run.results())
    assert dense.axes[0].get_title().endswith("kept")  # nothing pruned: one histogram


def test_the_one_shot_control_is_drawn_beside_the_others_where_a_run_has_it():
    table = results([97.0, 97.5, 97.2], [0, 97.1, 96.5])
    one_shot = table[table.condition == "reinit"].assign(condition="one_shot", early_stop_test_accuracy=[97.3, 97.0])
    table = pd.concat([table, one_shot], ignore_index=True)
    for figure in (plot_accuracy_vs_weights(table), plot_generalization(table)):
        labels = [text.get_text() for text in figure.axes[-1].get_legend().get_texts()]
        assert labels == ["winning ticket", "random reinit", "one-shot pruning"]
    line = plot_accuracy_vs_weights(table).axes[0].containers[2].lines[0]  # the one-shot control, joined to dense
    assert list(line.get_ydata()) == [97.0, 97.3, 97.0]
    gap = plot_generalization(table).axes[1].get_lines()[2]  # one-shot's training minus test accuracy, per level
    np.testing.assert_allclose(gap.get_ydata(), [99.0 - 97.0, 99.1 - 97.1, 99.2 - 96.5])


def conditions_tables(late: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """results.csv and curves.csv of a run of 3 levels, 2 trials and a few conditions, with late rewinding to `late`:
    condition c of level l, trial t scores 50 + 10 l + t + c before training and 90 + l + t + c/10 at early stopping
    (c: the condition's place in NAMES)."""
    names = ("ticket", "reinit", "snip", "ticket:signed_constant", "snip:signed_constant", "random_prune:reshuffle")
    results_rows, curve_rows = [], []
    for level in range(3):
        for c, name in enumerate(names if level else ("ticket",)):
            for trial in range(2):
                key = dict(level=level, condition=name, trial=trial)
                results_rows.append(
                    dict(key, percent_remaining=100 * 0.5**level, early_stop_test_accuracy=90 + level + trial + c / 10)
                )
                start = late if level else 0
                for iteration, accuracy in ((start, 50 + 10 * level + trial + c), (start + 20, 99.0)):
                    curve_rows.append(dict(key, iteration=iteration, test_accuracy=accuracy))
    return pd.DataFrame(results_rows), pd.DataFrame(curve_rows)


def test_before_training_is_each_networks_first_evaluation_iteration_k_at_pruned_levels_with_late_rewinding():
    results, curves = conditions_tables(late=5)
    first = before_training(curves)
    assert len(first) == len(results)  # one row per network
    assert set(first[first.level == 0].iteration) == {0} and set(first[first.level > 0].iteration) == {5}
    assert (first.test_accuracy < 99).all()
    ax = plot_accuracy_at_init(curves, results).axes[0]
    ticket = next(container.lines[0] for container in ax.containers if container.get_label() == "winning ticket")
    assert np.allclose(ticket.get_ydata().astype(float), [50.5, 60.5, 70.5])  # the pruned levels are drawn too


def test_the_supermask_panels_hold_the_rewound_masks_and_the_signed_constant_masks():
    results, curves = conditions_tables()
    fig = plot_supermasks(curves, results)
    legends = [[text.get_text() for text in ax.get_legend().get_texts()] for ax in fig.axes]
    assert legends == [
        ["winning ticket", "random reinit", "SNIP", "chance (10%)"],
        ["winning ticket, signed constant", "SNIP, signed constant", "chance (10%)"],
    ]
    snip = next(line for line in fig.axes[1].get_lines() if line.get_label() == "SNIP, signed constant")
    assert list(snip.get_xdata()) == [50, 25] and list(snip.get_ydata()) == [60 + 4.5, 70 + 4.5]  # mean of 2 trials
    assert fig.axes[0].get_xscale() == "log"
    no_signed = ~results.condition.str.endswith("signed_constant")
    alone = plot_supermasks(curves[~curves.condition.str.endswith("signed_constant")], results[no_signed])
    assert len(alone.axes) == 1  # no signed constant start: no right panel


def test_the_condition_grid_holds_the_mean_of_each_mask_on_each_start_and_blanks_the_pairs_not_trained():
    results, curves = conditions_tables()
    fig = plot_condition_grid(results, 30.0)  # nearest: level 2, 25%
    ax = fig.axes[0]
    image = ax.get_images()[0].get_array()
    rows = [label.get_text() for label in ax.get_yticklabels()]
    columns = [label.get_text() for label in ax.get_xticklabels()]
    assert rows == ["winning ticket", "random pruning", "SNIP"]
    assert columns == ["rewound", "random reinit", "reshuffled", "signed constant"]
    expected = {  # mean over trials 0 and 1 at level 2: 90 + 2 + 0.5 + c / 10
        ("winning ticket", "rewound"): 92.5,
        ("winning ticket", "random reinit"): 92.6,
        ("SNIP", "rewound"): 92.7,
        ("winning ticket", "signed constant"): 92.8,
        ("SNIP", "signed constant"): 92.9,
        ("random pruning", "reshuffled"): 93.0,
    }
    for r, row in enumerate(rows):
        for c, column in enumerate(columns):
            if (row, column) in expected:
                assert image[r, c] == pytest.approx(expected[row, column])
            else:
                assert image.mask[r, c]  # not trained: blank
    texts = {text.get_text() for text in ax.texts}
    assert texts == {f"{value:.1f}" for value in expected.values()}
    assert "25.0% of weights remaining" in fig.texts[0].get_text()
    before = plot_condition_grid(results, 30.0, curves).axes[1].get_images()[0].get_array()
    assert before[0, 0] == pytest.approx(70.5) and before[2, 3] == pytest.approx(74.5)  # SNIP, signed constant: c=4
    with pytest.raises(ValueError, match="pruned level"):
        plot_condition_grid(results[results.level == 0], 30.0)


def test_run_figures_add_the_supermasks_and_the_grid_only_where_the_run_has_their_conditions(run_dir):
    run = RunFolder(run_dir)  # the ticket, reinit and random pruning
    results, curves, theta_0, ticket_masks = run.results(), run.curves(), run.load(INIT), run.ticket_masks()

    def names(*kept: str) -> set[str]:
        return set(run_figures(results[results.condition.isin(kept)], curves, theta_0, ticket_masks))

    assert names("ticket", "reinit") == set(FIGURES + TICKET_FIGURES)
    assert names("ticket", "random_prune") == set(FIGURES + TICKET_FIGURES)  # accuracy_at_init.png shows these
    assert names("ticket", "reinit", "random_prune") == set(FIGURES + TICKET_FIGURES + (GRID_FIGURE,))
    snip = results[results.condition == "random_prune"].assign(condition="snip")  # a rule of Zhou et al. or later
    snip_curves = curves[curves.condition == "random_prune"].assign(condition="snip")
    with_snip = run_figures(pd.concat([results, snip]), pd.concat([curves, snip_curves]), theta_0, ticket_masks)
    assert set(with_snip) == set(FIGURES + TICKET_FIGURES + CONDITION_FIGURES)
