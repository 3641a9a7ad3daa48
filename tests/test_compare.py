"""Runs compared: labels name what differs, the table is the runs' own numbers, and bad folders write nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from lth_helpers import RunFolder
from lth_helpers.cli import main
from lth_helpers.compare import CompareError, compare_runs, finished_runs, plot_comparison, run_labels
from lth_helpers.config import make_config
from tests.conftest import make_run
from tests.test_cli import run_unread


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return make_run(root / "layerwise", rounds=2), make_run(root / "global", rounds=2, global_pruning=True)


def test_each_run_is_labelled_by_the_fields_that_differ():
    seed, smoke = make_config("seed"), make_config("smoke")
    assert run_labels([seed, make_config("seed", rewind_iteration=500)], ["a", "b"]) == [
        "rewind_iteration=0",
        "rewind_iteration=500",
    ]
    assert run_labels([seed, make_config("smoke", trials=3)], ["a", "b"]) == ["seed", "smoke"]
    assert run_labels([seed, smoke, make_config("smoke", trials=3)], ["a", "b", "c"]) == [
        "seed",
        "smoke, trials=1",
        "smoke, trials=3",
    ]
    assert run_labels([smoke, smoke], ["first", "second"]) == ["first", "second"]  # nothing differs: folder names


def test_the_table_holds_each_runs_ticket_mean_and_std_and_the_figure_draws_every_run(runs):
    table = compare_runs(runs)
    assert list(table.run.unique()) == ["global_pruning=False", "global_pruning=True"]
    for path, label in zip(runs, table.run.unique()):
        results = RunFolder(path).results()
        ticket = results[results.condition == "ticket"].groupby("level")
        rows = table[table.run == label].set_index("level")
        assert rows.accuracy_mean.tolist() == pytest.approx(ticket.early_stop_test_accuracy.mean().tolist())
        assert rows.accuracy_std.tolist() == pytest.approx(ticket.early_stop_test_accuracy.std().tolist())
        assert rows.stop_iteration_mean.tolist() == pytest.approx(ticket.early_stop_iteration.mean().tolist())
        assert (rows.trials == 2).all() and rows.percent_remaining.iloc[0] == 100
    fig = plot_comparison(table)
    for ax in fig.axes:
        assert len(ax.containers) == 2  # one errorbar line per run
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(table.run.unique())


def test_the_command_writes_the_figure_and_prints_the_table(runs, tmp_path, capsys):
    out = tmp_path / "comparison.png"
    assert main(["compare", *map(str, runs), "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    assert "global_pruning=True" in capsys.readouterr().out


@pytest.mark.parametrize(
    "problem, message",
    [
        ("architecture", "different architectures"),
        ("missing", "is not a folder"),
        ("not a run", "is not a run folder"),
        ("one run", "at least two run folders"),
        ("extension", "needs a figure extension"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(problem, message, runs, tmp_path, capsys):
    others = {
        "missing": [str(tmp_path / "nothing here")],
        "not a run": [str(tmp_path)],
        "one run": [],
    }.get(problem, [str(runs[1])])
    if problem == "architecture":
        others = [str(make_run(tmp_path / "wide", rounds=1, fc1_width=50))]
    out = tmp_path / ("comparison.txt" if problem == "extension" else "comparison.png")
    with pytest.raises(SystemExit) as exit:
        main(["compare", str(runs[0]), *others, "--out", str(out)])
    error = capsys.readouterr().err
    assert exit.value.code == 2 and message in error and error.count("\n") == 1
    assert not out.exists()


def test_a_damaged_run_folder_exits_1_with_one_line_and_writes_nothing(runs, tmp_path, capsys):
    damaged = make_run(tmp_path / "damaged", rounds=1)
    (damaged / "results.csv").write_text("level,condition\n0,tick")  # cut short
    out = tmp_path / "comparison.png"
    assert main(["compare", str(runs[0]), str(damaged), "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert "results.csv cannot be read" in error and error.count("\n") == 1
    assert not out.exists()


def test_a_figure_that_cannot_be_written_leaves_the_old_one_whole(runs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "comparison.png"
    out.write_bytes(b"the figure of an earlier comparison")

    def disk_full(self, file, **kwargs):
        Path(file).write_bytes(b"half a figu")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", disk_full)
    assert main(["compare", str(runs[0]), str(runs[1]), "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert f"cannot write {out}: No space left on device" in error and error.count("\n") == 1
    assert out.read_bytes() == b"the figure of an earlier comparison" and list(tmp_path.iterdir()) == [out]


def test_a_folder_given_twice_is_refused_and_runs_with_one_name_get_distinct_labels(runs, tmp_path):
    with pytest.raises(CompareError, match="more than once"):
        compare_runs([runs[0], runs[0].parent / ".." / runs[0].parent.name / runs[0].name])
    with pytest.raises(CompareError, match="a list of run folders"):
        compare_runs(str(runs[0]))
    twin = make_run(tmp_path / runs[0].name, rounds=2)  # the same config and folder name, elsewhere
    assert set(compare_runs([runs[0], twin]).run) == {str(runs[0]), str(twin)}


def test_finished_runs_are_the_complete_runs_of_one_architecture(runs, tmp_path):
    root = runs[0].parent
    assert finished_runs(root, make_config("smoke", fc1_width=40, fc2_width=20)) == sorted(runs)
    assert finished_runs(root, make_config("smoke")) == []  # 784-300-100-10: none of these
    with pytest.raises(CompareError, match="no run folders"):
        compare_runs([])
    damaged = make_run(tmp_path / "damaged", rounds=2)
    (damaged / "results.csv").write_text((damaged / "results.csv").read_text()[:-40])
    assert finished_runs(tmp_path, make_config("smoke", fc1_width=40, fc2_width=20)) == []  # damaged: not finished


def test_a_copy_of_a_runs_tables_is_named_as_a_copy_not_as_a_run_still_training(runs):
    docs_copy = Path(__file__).resolve().parents[1] / "docs" / "results" / "seed"  # config.json and results.csv alone
    with pytest.raises(CompareError, match="a copy of a run's tables"):
        compare_runs([runs[0], docs_copy])


def test_a_comparison_whose_reader_has_gone_writes_its_figure_and_ends_quietly(runs, tmp_path):
    out = tmp_path / "comparison.png"
    done = run_unread([sys.executable, "-m", "lth_helpers", "compare", *map(str, runs), "--out", str(out)])
    assert (done.returncode, done.stderr) == (0, "")
    assert out.stat().st_size > 10_000
