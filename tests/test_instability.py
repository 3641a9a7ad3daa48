"""Instability analysis: the copies, the straight paths between them, the instability read from the paths, the files
written into the run folder, and the subcommand's exits."""

from __future__ import annotations

import io
import os
import shutil

import pandas as pd
import pytest
import torch

import lth_helpers.cli as cli
import lth_helpers.instability as instability
from lth_helpers import RunFolder
from lth_helpers.experiment import ExperimentError, level_networks
from lth_helpers.instability import (
    InstabilityError,
    Pair,
    instability_analysis,
    path_model,
    path_table,
    replay_dense,
    train_copies,
)
from lth_helpers.instability_report import pair_instability
from lth_helpers.model import LAYERS, concat, select
from lth_helpers.pruning import build_model
from lth_helpers.training import DivergenceError, Evaluator, train_networks
from tests.conftest import REPO, make_run, synthetic_splits, tiny_config

CONTROLS = ("reinit", "random_prune", "one_shot")


def evaluate(model, x, y):
    """Test loss and accuracy of every network, (n,) each."""
    losses, accuracies = Evaluator([(x, y)], model.n_networks)(model)
    return losses[0], accuracies[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run with every control and late rewinding (rewind.pt), written once; tests work on copies."""
    return make_run(tmp_path_factory.mktemp("finished") / "run", controls=CONTROLS, rewind_iteration=5)


@pytest.fixture
def copy(finished, tmp_path):
    return shutil.copytree(finished, tmp_path / "run")


def snapshot(folder):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def level_pairs(folder, level):
    cfg = RunFolder(folder).config
    run = RunFolder(folder)
    networks = level_networks(cfg, level, run.load("rewind.pt"), run.load_masks(level))
    return cfg, [Pair(level, n.condition, n.trial, 0, n.params, n.masks) for n in networks]


def test_both_copies_start_alike_train_on_other_batches_and_are_the_ends_of_their_path(finished):
    cfg, pairs = level_pairs(finished, 2)
    data = synthetic_splits()
    ends = train_copies(cfg, pairs, data, progress=False)
    paths = path_table(pairs, ends, data, points=5)
    for i, pair in enumerate(pairs):
        first, second = select(ends, [2 * i]), select(ends, [2 * i + 1])
        assert not torch.equal(first["fc1.weight"], second["fc1.weight"])  # other batch orders, other minima
        for name in LAYERS:  # the mask applied: pruned weights stay zero in both copies
            assert bool((first[f"{name}.weight"][pair.masks[name] == 0] == 0).all())
        path = paths[(paths.level == 2) & (paths.condition == pair.condition) & (paths.trial == pair.trial)]
        for end, alpha in ((first, 0.0), (second, 1.0)):
            row = path[path.alpha == alpha].iloc[0]
            for split, x, y in (("test", data.test_x, data.test_y), ("train", data.train_x, data.train_y)):
                loss, accuracy = evaluate(build_model(end, pair.masks), x, y)
                assert row[f"{split}_error"] == pytest.approx(100 - float(accuracy[0]))
                assert row[f"{split}_loss"] == pytest.approx(float(loss[0]), rel=1e-5)
    assert sorted(paths.alpha.unique()) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_the_copies_trained_in_one_stack_train_as_each_pair_would_alone(finished):
    cfg, pairs = level_pairs(finished, 3)
    data = synthetic_splits()
    together = train_copies(cfg, pairs, data, progress=False)
    for i in (0, len(pairs) - 1):
        alone = train_copies(cfg, pairs[i : i + 1], data, progress=False)
        for key, value in alone.items():
            torch.testing.assert_close(together[key][2 * i : 2 * i + 2], value, rtol=1e-3, atol=1e-4)


def test_every_point_of_a_path_is_the_interpolated_masked_network_and_the_stack_evaluates_each_as_alone(finished):
    _, pairs = level_pairs(finished, 3)
    masks, first = concat([pair.masks for pair in pairs[:2]]), concat([pair.start for pair in pairs[:2]])
    generator = torch.Generator().manual_seed(1)
    second = {key: value + 0.01 * torch.randn(value.shape, generator=generator) for key, value in first.items()}
    alphas = torch.linspace(0, 1, 4)
    model = path_model(first, second, masks, alphas)
    weights = dict(model.named_parameters())
    data = synthetic_splits()
    losses, accuracies = evaluate(model, data.test_x, data.test_y)
    for i in range(2):
        for p, alpha in enumerate(alphas.tolist()):
            network, point = i * len(alphas) + p, {}
            for key in first:
                mask = masks[key.split(".")[0]][i] if key.endswith("weight") else 1
                expected = ((1 - alpha) * first[key][i] + alpha * second[key][i]) * mask
                torch.testing.assert_close(weights[key][network], expected)
                if alpha in (0, 1):  # the ends are the two networks exactly, mask applied
                    assert torch.equal(weights[key][network], (second if alpha else first)[key][i] * mask)
                point[key] = expected[None]
            loss, accuracy = evaluate(build_model(point, select(masks, [i])), data.test_x, data.test_y)
            assert float(accuracies[network]) == pytest.approx(float(accuracy[0]))
            assert float(losses[network]) == pytest.approx(float(loss[0]), rel=1e-5)


def test_instability_is_the_largest_error_on_the_path_minus_the_mean_of_its_ends():
    rows = []
    for condition, errors in (("ticket", [2.0, 2.5, 3.0, 2.0, 1.0]), ("reinit", [4.0, 9.0, 4.5, 5.0, 6.0])):
        for point, error in enumerate(errors):
            rows.append((1, condition, 0, 0, 0, 50.0, point, point / 4, error, 0.1, error / 2, 0.05))
    summary = pair_instability(pd.DataFrame(rows, columns=list(instability.COLUMNS))).set_index("condition")
    assert summary.loc["ticket", "instability"] == pytest.approx(3.0 - 1.5)
    assert summary.loc["reinit", "instability"] == pytest.approx(9.0 - 5.0)
    assert summary.loc["reinit", "train_instability"] == pytest.approx((9.0 - 5.0) / 2)  # the training split's
    assert list(summary.stable) == [True, False]  # under 2 points is stable
    assert list(summary.index) == ["ticket", "reinit"]  # the ticket first, then the controls


def test_the_dense_networks_weights_at_iteration_k_are_replayed_as_the_run_trained_them(finished):
    cfg = RunFolder(finished).config
    replayed = replay_dense(cfg, RunFolder(finished).load("init.pt"), synthetic_splits(), cfg.rewind_iteration, False)
    saved = RunFolder(finished).load("rewind.pt")  # the run's own snapshot at that iteration
    for key, value in saved.items():
        torch.testing.assert_close(replayed[key], value, rtol=0, atol=0)


def test_the_analysis_writes_its_table_and_figure_and_a_rerun_computes_only_the_missing_paths(copy, monkeypatch):
    cfg = RunFolder(copy).config
    data = synthetic_splits()
    first = instability_analysis(copy, data, levels=[0, 3], points=5, progress=False)
    assert {(lv, c) for lv, c in zip(first.level, first.condition)} == {(0, "ticket")} | {
        (3, c) for c in ("ticket", *CONTROLS)
    }
    assert (first.groupby(list(instability.KEYS)).size() == 5).all()
    # every pruned level trains from the rewind iteration, as the run trained it, whatever the start rule
    assert set(first[first.level > 0].rewind_iteration) == {cfg.rewind_iteration}
    assert {instability.TABLE, instability.FIGURE} <= RunFolder(copy)._read_manifest()  # --overwrite removes them
    pd.testing.assert_frame_equal(pd.read_csv(copy / instability.TABLE), first)
    assert (copy / instability.FIGURE).stat().st_size > 10_000

    trained = []
    real = instability.train_copies

    def counting(cfg, pairs, *args, **kwargs):
        trained.extend(pair.key for pair in pairs)
        return real(cfg, pairs, *args, **kwargs)

    monkeypatch.setattr(instability, "train_copies", counting)
    second = instability_analysis(copy, data, levels=[0, 3, 2], rewind_iterations=[0, 5, 10], points=5, progress=False)
    assert sorted(trained) == sorted(
        [(0, "ticket", t, k, 0) for t in range(cfg.trials) for k in (0, 10)]
        + [(2, c, t, 5, 0) for c in ("ticket", *CONTROLS) for t in range(cfg.trials)]
    )
    kept = second.merge(first, on=[*instability.KEYS, "point"], suffixes=("", "_before"))
    assert len(kept) == len(first) and (kept.test_error == kept.test_error_before).all()  # reused as they were


def damage_text(text):
    return "level,condition\n1,tikcet\n"


def damage_value(text):  # one test error out of range, in an otherwise well-formed table
    table = pd.read_csv(io.StringIO(text))
    table.loc[3, "test_error"] = 150.0
    return table.to_csv(index=False)


def damage_trial(text):  # the paths of a trial the run does not have
    table = pd.read_csv(io.StringIO(text))
    table.loc[table.trial == 1, "trial"] = 7
    return table.to_csv(index=False)


def damage_twice(text):  # a point twice
    table = pd.read_csv(io.StringIO(text))
    return pd.concat([table, table.iloc[[0]]]).to_csv(index=False)


@pytest.mark.parametrize("damage", [damage_text, damage_value, damage_trial, damage_twice])
def test_a_damaged_table_is_computed_again_and_replaced(copy, damage):
    data = synthetic_splits()
    first = instability_analysis(copy, data, levels=[1], points=3, progress=False)
    file = copy / instability.TABLE
    file.write_text(damage(file.read_text()))
    again = instability_analysis(copy, data, levels=[1], points=3, progress=False)
    on_disk = pd.read_csv(file)
    pd.testing.assert_frame_equal(on_disk, again)
    pd.testing.assert_frame_equal(on_disk, first)  # computed again: the same paths, none of the damage kept


def test_a_diverging_copy_is_named_and_nothing_is_written(copy, monkeypatch):
    def diverges(*args, **kwargs):
        raise DivergenceError(network=3, iteration=12)

    monkeypatch.setattr(instability, "train_networks", diverges)
    before = snapshot(copy)
    # a pruned level's copies all start at the rewind iteration, one stack: the fourth is the ticket's trial 1, copy 1
    with pytest.raises(ExperimentError, match="level 1, condition ticket, trial 1, pair 0, copy 1, iteration 12"):
        instability_analysis(copy, synthetic_splits(), levels=[1], progress=False)
    assert snapshot(copy) == before


# ---------------------------------------------------------------------------------------------
# python -m lth_helpers instability RUN_DIR


@pytest.fixture
def command(monkeypatch, capsys):
    """The subcommand on synthetic data; returns (exit status, stdout, stderr)."""
    monkeypatch.setattr(instability, "load_mnist", lambda root, val_size, device: synthetic_splits())

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = cli.main(["instability", *args, "--no-progress"])
        except SystemExit as exit_:
            code = exit_.code
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_the_subcommand_prints_the_instability_and_writes_the_files(copy, command):
    code, out, err = command(str(copy), "--levels", "0,3", "--points", "4", "--rewind-iterations", "0,5")
    assert code == 0, err
    assert "instability" in out and "of weights, instability:" in out and "dense network ends in two minima" in out
    table = pd.read_csv(copy / instability.TABLE)
    assert sorted(table.level.unique()) == [0, 3] and sorted(table[table.level == 0].rewind_iteration.unique()) == [
        0,
        5,
    ]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--levels", "9"], "level 9 is not a level of this run (0 to 3)"),
        (["--levels", "-1"], "level -1 is not a level of this run"),
        (["--levels", "one"], "expected whole numbers separated by commas"),
        (["--points", "1"], "points must be a whole number from 2"),
        (["--points", "1000000000000"], "points must be a whole number from 2"),
        (["--points", "9223372036854775808"], "points must be a whole number from 2"),
        (["--pairs", "0"], "pairs must be a whole number from 1 to 100"),
        (["--pairs", "101"], "pairs must be a whole number from 1 to 100"),
        (["--pairs", "9223372036854775808"], "pairs must be a whole number from 1 to 100"),
        (["--levels", "0,9223372036854775808"], "is not a level of this run"),
        (["--rewind-iterations", "9223372036854775808"], "is not an iteration of training"),
        (["--conditions", "tikcet"], "conditions must name some of this run's"),
        (["--rewind-iterations", "30"], "rewind iteration 30 is not an iteration of training (0 to 29)"),
        (["--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(args, says, copy, command):
    before = snapshot(copy)
    code, _, err = command(str(copy), *args)
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1
    assert snapshot(copy) == before


def test_an_unfinished_run_or_no_run_folder_exits_2_and_writes_nothing(copy, command, tmp_path):
    progress = copy / "progress.json"
    progress.write_text(progress.read_text().replace('"levels_done": 4', '"levels_done": 2'))
    before = snapshot(copy)
    code, _, err = command(str(copy))
    assert code == 2 and "is not finished (2 of 4 levels)" in err and snapshot(copy) == before
    (tmp_path / "empty").mkdir()
    code, _, err = command(str(tmp_path / "empty"))
    assert code == 2 and "is not a run folder" in err and not any((tmp_path / "empty").iterdir())


def test_a_damaged_run_folder_exits_1_with_one_line_and_is_left_as_it_was(copy, command):
    masks = copy / "masks" / "level_03.pt"
    masks.write_bytes(masks.read_bytes()[:100])
    before = snapshot(copy)
    code, _, err = command(str(copy), "--levels", "3")
    assert code == 1 and f"{masks} cannot be read" in err and len(err.strip().splitlines()) == 1
    assert snapshot(copy) == before


def test_ctrl_c_during_the_analysis_exits_130_and_writes_nothing(copy, command, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(instability, "train_networks", interrupted)
    before = snapshot(copy)
    code, _, err = command(str(copy), "--levels", "1")
    assert code == 130 and "wrote nothing" in err and snapshot(copy) == before


def test_the_copies_follow_the_config_of_the_run(finished, monkeypatch):
    seen = {}

    def recording(model, data, **kwargs):
        seen.update(kwargs, n=model.n_networks)
        return train_networks(model, data, **kwargs)

    monkeypatch.setattr(instability, "train_networks", recording)
    cfg, pairs = level_pairs(finished, 1)
    train_copies(cfg, pairs, synthetic_splits(), progress=False)
    assert seen["iterations"] == cfg.iterations and seen["learning_rate"] == cfg.learning_rate
    assert seen["batch_size"] == cfg.batch_size and seen["n"] == 2 * len(pairs)
    assert len(set(seen["batch_seeds"])) == 2 * len(pairs)  # every copy its own batch order
    assert tiny_config(controls=CONTROLS, rewind_iteration=5).short_hash() == cfg.short_hash()


# ---------------------------------------------------------------------------------------------
# Links, bounds, copies of tables, the two files as a set, a reader who stops early


@pytest.mark.parametrize("name", ["config.json", "results.csv", "progress.json", "instability.csv", "instability.png"])
def test_a_symbolic_link_where_the_analysis_reads_or_writes_is_refused_in_one_line_and_never_followed(
    name, copy, command, tmp_path
):
    instability_analysis(copy, synthetic_splits(), levels=[1], points=3, progress=False)  # every file in place
    elsewhere = tmp_path / "elsewhere" / name
    elsewhere.parent.mkdir()
    shutil.move(copy / name, elsewhere)
    (copy / name).symlink_to(elsewhere)
    target, before = elsewhere.read_bytes(), snapshot(copy)
    code, out, err = command(str(copy), "--levels", "1", "--points", "3")
    assert code == 2 and "symbolic link" in err and name in err and len(err.strip().splitlines()) == 1, err
    assert (copy / name).is_symlink() and elsewhere.read_bytes() == target and snapshot(copy) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_a_folder_that_may_not_be_read_exits_1_with_one_line(copy, command):
    copy.chmod(0)
    try:
        code, _, err = command(str(copy), "--levels", "1")
    finally:
        copy.chmod(0o755)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_a_copy_of_a_runs_tables_is_named_as_one(command, tmp_path):
    tables = shutil.copytree(REPO / "docs" / "results" / "seed", tmp_path / "seed")
    before = snapshot(tables)
    code, _, err = command(str(tables))
    assert code == 2 and "a copy of a run's tables" in err and "not finished" not in err, err
    assert snapshot(tables) == before


def test_a_figure_that_cannot_be_written_leaves_neither_file_and_says_so(copy, command):
    (copy / instability.FIGURE).mkdir()  # a folder in its place: the figure's write fails, after the table's
    (copy / instability.FIGURE / "keep").write_text("mine")
    code, _, err = command(str(copy), "--levels", "1", "--points", "3")
    assert code == 1 and len(err.strip().splitlines()) == 1 and instability.FIGURE in err, err
    assert "wrote nothing" in err and not (copy / instability.TABLE).exists()


def test_a_figure_that_cannot_be_written_leaves_the_earlier_table_as_it_was(copy, command):
    code, _, err = command(str(copy), "--levels", "1", "--points", "3")
    table = (copy / instability.TABLE).read_bytes()
    (copy / instability.FIGURE).unlink()
    (copy / instability.FIGURE).mkdir()
    (copy / instability.FIGURE / "keep").write_text("mine")
    code, _, err = command(str(copy), "--levels", "1,2", "--points", "3")
    assert code == 1 and "wrote nothing" in err, err
    assert (copy / instability.TABLE).read_bytes() == table


def test_a_reader_who_stops_reading_early_ends_nothing_early_and_sees_no_error(copy, monkeypatch, capfd):
    monkeypatch.setattr(instability, "load_mnist", lambda root, val_size, device: synthetic_splits())
    read, write = os.pipe()
    os.close(read)  # `| head -1` that has read its line: every write from here on meets a closed pipe
    stdout = os.fdopen(write, "w")
    monkeypatch.setattr("sys.stdout", stdout)
    try:
        code = cli.main(["instability", str(copy), "--levels", "1", "--points", "3", "--no-progress"])
    finally:
        stdout.close()
    assert code == 0 and capfd.readouterr().err == ""
    assert (copy / instability.TABLE).exists() and (copy / instability.FIGURE).exists()


def test_copies_from_a_late_rewind_point_train_from_it_to_the_end(finished, monkeypatch):
    cfg = RunFolder(finished).config
    calls = []

    def recording(model, data, **kwargs):
        calls.append((kwargs.get("start_iteration", 0), kwargs["iterations"], model.n_networks))
        return train_networks(model, data, **kwargs)

    monkeypatch.setattr(instability, "train_networks", recording)
    run = RunFolder(finished)
    pairs = [
        Pair(
            1,
            "ticket",
            0,
            cfg.rewind_iteration,
            select(run.load("rewind.pt"), [0]),
            select(run.load_masks(1)["ticket"], [0]),
        ),
        Pair(1, "reinit", 0, 0, select(run.load("init.pt"), [0]), select(run.load_masks(1)["ticket"], [0])),
    ]
    train_copies(cfg, pairs, synthetic_splits(), progress=False)
    # the ticket's copies take T - k steps, from iteration k; the reinitialized network's, T from 0
    assert sorted(calls) == [(0, cfg.iterations, 2), (cfg.rewind_iteration, cfg.iterations, 2)]


def test_several_pairs_give_each_network_its_mean_and_spread_and_pair_0_is_the_single_pairs_analysis(
    finished, tmp_path, command
):
    one, three = (shutil.copytree(finished, tmp_path / name) for name in ("one", "three"))
    data = synthetic_splits()
    single = instability_analysis(one, data, levels=[1], points=3, progress=False)
    several = instability_analysis(three, data, levels=[1], points=3, pairs=3, progress=False)
    assert (several.groupby(list(instability.KEYS[:4])).pair.nunique() == 3).all()
    first = several[several.pair == 0].reset_index(drop=True)
    columns = [*instability.KEYS, "point", "test_error", "test_loss"]
    pd.testing.assert_frame_equal(first[columns], single[columns])
    ends = several[several.point == 0].groupby(list(instability.KEYS[:4])).test_loss.nunique()
    assert (ends == 3).all()  # each pair its own batch orders, its own minima
    code, out, err = command(str(three), "--levels", "1", "--points", "3", "--pairs", "3")
    assert code == 0 and "±" in out and "3 pairs of copies" in out, err


def test_conditions_are_asked_for_by_any_of_their_names_and_each_once(finished):
    cfg, results = RunFolder(finished).config, RunFolder(finished).results()
    common = dict(levels=[1], points=3, pairs=1, rewind_iterations=None)
    by_legacy = instability.wanted_pairs(cfg, results, conditions=["reinit"], **common)
    assert instability.wanted_pairs(cfg, results, conditions=["ticket:reinit"], **common) == by_legacy
    assert {key[1] for key in by_legacy} == {"reinit"}
    for twice in (["reinit", "ticket:reinit"], ["one_shot", "one_shot"]):
        with pytest.raises(InstabilityError, match="each once"):
            instability.wanted_pairs(cfg, results, conditions=twice, **common)
    with pytest.raises(InstabilityError, match="conditions must name some of this run's ticket, reinit"):
        instability.wanted_pairs(cfg, results, conditions=["snipp"], **common)
