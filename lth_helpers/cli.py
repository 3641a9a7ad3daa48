"""Command line: run (or resume) a lottery-ticket experiment and write its tables and figures; compare runs.

    python -m lth_helpers --preset seed --out runs/seed       # the subcommand `run`, named or not
    python -m lth_helpers run --preset paper --trials 2 --controls reinit,random_prune
    python -m lth_helpers compare runs/A runs/B --out comparison.png
    python -m lth_helpers instability runs/seed --levels 0,5   # instability.py: linear mode connectivity
    python -m lth_helpers sweep --preset smoke --grid learning_rate=1e-3,2e-3 --out runs/grid   # sweep.py
    python -m lth_helpers --help          # every config field, with each preset's value

Exit status 2 for bad input, a model too big for the device's memory, or a run folder that holds another run
(nothing is written); 1 when the data is missing or damaged, training diverges, memory runs out, or a file of the
run folder cannot be written or read back (finished levels are kept, the folder is left as it was); 130 when
interrupted, at any moment (the same command resumes). Every error is one line that names what to do.

The subcommands `run`, `compare`, `sweep` and `instability` have their parsers here, over the functions of
experiment.py, report.py, compare.py, sweep.py and instability.py. A subcommand is two functions:

    def add_command(subcommands: argparse._SubParsersAction) -> None:
        parser = subcommands.add_parser("NAME", help="one line for --help", description="what it does")
        parser.add_argument(...)
        parser.set_defaults(run=NAME_command)

    def NAME_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        ...  # does the work through plain functions, and returns the exit status, 0

and `add_command` joins COMMANDS below. `subcommands.add_parser` makes the parser a `Parser`, this module's parser
class, whose errors are one line. A command line whose first word names no subcommand is the subcommand `run`.

Errors, one ladder for every subcommand: what a command raises, `main` turns into one line `PROG SUB: error: ...` on
stderr and an exit status, by the table EXIT_STATUS (`exit_status_of(error)`, `fail(sub, error)`): bad input
(`config.ConfigError` and its subclasses) 2, raised as SystemExit(2) as argparse ends a command line it refuses; a
fault (`runs.RunFolderError`, `data.DataError`, `experiment.ExperimentError`, an OSError, memory run out) 1. An error
the table does not hold is a bug, and its traceback shows. What a command prints goes through `say`, so that a reader
who stops reading (`| head -1`) stops none of its work.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from pathlib import Path
from typing import NoReturn

import pandas as pd
import torch

from . import compare, instability, sweep
from .compare import check_comparison, compare_runs, comparison_text, write_comparison
from .config import (
    PRESETS,
    Config,
    ConfigError,
    check_memory,
    default_preset,
    make_config,
    resolve_device,
)
from .data import DataError, data_dir, load_mnist
from .experiment import ExperimentError, run_levels
from .files import DamagedFileError, RunFolderError
from .flags import add_data_flags, add_run_flags, check_folder_flag, config_overrides, is_out_of_memory, one_line
from .inference import first_network, inference_conclusions, inference_summary, inference_table, smallest_form
from .paper import paper_comparison
from .plotting import INFERENCE_FIGURE, plot_inference, run_figures
from .report import accuracy_at_init_conclusions, conclusions, condition_conclusions, summary_table
from .runs import INFERENCE_TABLE, INIT, RunFolder, exported_ticket_file
from .sweep_jobs import JOB_FLAGS, make_engine

PROG = "python -m lth_helpers"
BAD_INPUT, FAULT, INTERRUPTED = 2, 1, 130  # the exit statuses besides 0

# The ladder: the exit status of each kind of error a command may raise, the first class that matches (memory run out,
# whatever its class, is a fault: `exit_status_of`).
EXIT_STATUS: dict[type[Exception], int] = {
    ConfigError: BAD_INPUT,  # a flag, a config, a folder refused before anything is written, compare's CompareError
    RunFolderError: FAULT,  # a damaged or missing file, a folder in use, a write that failed
    DataError: FAULT,  # MNIST missing, damaged, or not downloaded
    ExperimentError: FAULT,  # training diverged
    OSError: FAULT,  # a permission to fix, a full disk
}


class Parser(argparse.ArgumentParser):
    """argparse's parser, with errors on one line (exit status 2) instead of a usage block; every parser of the command
    line is one. The top-level parser keeps its subcommands' parsers by name in `commands`."""

    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        self.exit(BAD_INPUT, f"{self.prog}: error: {message}\n")


def build_parser() -> Parser:
    """The command line: one subcommand for each function of COMMANDS."""
    parser = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    subcommands = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    for add_command in COMMANDS:
        add_command(subcommands)
    parser.commands = subcommands.choices
    others = [
        sub.format_usage().removeprefix("usage: ").strip() for name, sub in parser.commands.items() if name != "run"
    ]
    parser.commands["run"].epilog = "Other subcommands, each with its own --help: " + "; ".join(others)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`python -m lth_helpers ARGV`: the exit status; bad input raises SystemExit(2), as argparse does."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv and not argv[0].startswith("-") and argv[0] not in parser.commands:  # run takes no bare word: a typo
        close = difflib.get_close_matches(argv[0], parser.commands, n=1)
        parser.error(
            f"unknown subcommand {argv[0]!r}; choose one of: {', '.join(parser.commands)}"
            + (f" (did you mean {close[0]}?)" if close else "")
        )
    if not argv or argv[0] not in parser.commands:
        argv = ["run", *argv]  # `python -m lth_helpers --preset seed`: the subcommand run
    args = parser.parse_args(argv)
    try:
        return args.run(args, parser.commands[args.subcommand])
    except Exception as error:
        if exit_status_of(error) is None:
            raise  # not an error the command line expects: a bug, whose traceback says where
        return fail(args.subcommand, error)


# ---------------------------------------------------------------------------------------------
# errors and output


def exit_status_of(error: BaseException) -> int | None:
    """The exit status the command line ends with for `error` (EXIT_STATUS), or None for an error it does not
    expect."""
    if is_out_of_memory(error):
        return FAULT
    return next((status for kind, status in EXIT_STATUS.items() if isinstance(error, kind)), None)


def fail(sub: str, error: Exception, line: str | None = None) -> int:
    """End the subcommand `sub` for `error`: print `PROG SUB: error: LINE` on stderr, LINE being `line` or else the
    error in one line, and return the error's exit status (exit_status_of). Bad input raises SystemExit(2) instead,
    as argparse ends a command line it refuses, so that both end a caller of `main` alike. An error with no exit
    status is raised again."""
    status = exit_status_of(error)
    if status is None:
        raise error
    print(f"{PROG if sub == 'run' else f'{PROG} {sub}'}: error: {line or one_line(error)}", file=sys.stderr)
    if status == BAD_INPUT:
        raise SystemExit(status)
    return status


def say(*lines: str) -> None:
    """Print `lines` on stdout. Once its reader has gone (`| head -1`), print nothing more and carry on: what a command
    does and writes never depends on whether anyone reads what it prints."""
    try:
        print(*lines, sep="\n", flush=True)  # flushed: a reader gone is found here, not at a later print or at exit
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # what is left in stdout's buffer, and every later line, goes nowhere
        os.close(devnull)


# ---------------------------------------------------------------------------------------------
# run


class FolderRefusedError(ConfigError):
    """A run folder refused before anything is read or written (it holds another run, or a file stands where it would
    be): bad input, exit status 2."""


def add_run_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "run",
        prog=PROG,  # its usage and errors read as the bare command, which means run
        help="run (or resume) an experiment; the subcommand when none is named",
        description="Run (or resume) a lottery-ticket experiment and write its tables and figures.",
    )
    parser.add_argument(
        "--preset",
        help=f"starting point: {', '.join(PRESETS)} (default: paper on a GPU, seed (sized for a CPU) on a CPU)",
    )
    parser.add_argument(
        "--out", type=check_folder_flag, help="run folder (default: runs/PRESET-HASH, a hash of the config)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a run folder that holds another config")
    add_run_flags(parser)
    parser.set_defaults(run=run_command)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def check_run_folder(out: Path, cfg: Config, overwrite: bool) -> None:
    """RunFolder.check before the data are loaded: a folder it refuses is bad input (FolderRefusedError), a damaged
    file in it a fault (DamagedFileError)."""
    try:
        RunFolder.check(out, cfg, overwrite)
    except DamagedFileError:
        raise
    except RunFolderError as error:
        raise FolderRefusedError(str(error)) from None


def run_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    device = resolve_device(args.device)
    cfg = make_config(default_preset(device) if args.preset is None else args.preset, **config_overrides(args))
    check_memory(cfg, device)
    out = Path(args.out or Path("runs") / cfg.run_name())
    check_run_folder(out, cfg, args.overwrite)
    finished = False  # every file written: a Ctrl-C after that cuts short only the last lines printed
    try:
        data = load_mnist(data_dir(args.data_dir), cfg.val_size, device)
        controls = ", ".join(cfg.controls) if cfg.rounds else ""  # controls train only at pruned levels
        say(
            f"{cfg.run_name()}: {_count(cfg.rounds + 1, 'level')} x {_count(cfg.trials, 'trial')}, "
            f"ticket + {controls or 'no controls'}, on {device}; run folder {out}"
        )
        with RunFolder.open(out, cfg, args.overwrite) as run:  # held from the first read to the last file written
            if run.levels_done:
                say(f"{run.levels_done} of {_count(cfg.rounds + 1, 'level')} already finished in {out}: kept")
            results = run_levels(cfg, run, data, progress=not args.no_progress)
            report = write_report(run, results, data.test_x, cfg.rounds)
        finished = True
        say(*report, f"results.csv, curves.csv, inference.csv, figures, masks and tickets are in {out}")
    except KeyboardInterrupt:
        if finished:
            return 0
        print(f"\ninterrupted: finished levels are kept in {out}; the same command resumes", file=sys.stderr)
        return INTERRUPTED
    except Exception as error:
        if not is_out_of_memory(error):
            raise  # main's ladder
        return fail("run", error, f"out of memory ({one_line(error)}); finished levels are kept in {out}")
    return 0


def write_report(run: RunFolder, results: pd.DataFrame, test_x: torch.Tensor, last_level: int) -> list[str]:
    """Write the run's figures, inference table and exported ticket into the open run folder `run`, and return what
    the command prints of the run: its tables and conclusions. Every file comes before any line is printed, so that
    a reader who stops reading early (`| head`) loses no file."""
    curves = run.curves()
    run.save_figures(run_figures(results, curves, run.load(INIT), run.ticket_masks()))
    lines = [summary_table(results).to_string(), *conclusions(results), *accuracy_at_init_conclusions(curves, results)]
    lines += condition_conclusions(results, curves)
    comparison = paper_comparison(results, curves)
    if len(comparison):  # a list: as a table it runs past 300 columns
        lines.append("\nThe paper's statements about LeNet-300-100, and this run:")
        lines += [
            f"- {statement}\n    paper: {paper}; this run: {this_run}; agrees: {agrees}"
            for statement, paper, this_run, agrees in comparison.itertuples(index=False, name=None)
        ]
    return lines + write_inference(run, test_x, last_level)


def write_inference(run: RunFolder, test_x: torch.Tensor, last_level: int) -> list[str]:
    """Time every level's ticket in each inference form and export the sparsest ticket in its smallest form, into the
    open run folder `run`; return the lines that report them."""
    tickets, masks = run.trained_tickets(), run.ticket_masks()
    table = inference_table(tickets, masks, test_x)
    run.save_table(INFERENCE_TABLE, table)
    run.save_figures({INFERENCE_FIGURE: plot_inference(table)})
    exported = smallest_form(first_network(tickets[last_level]), first_network(masks[last_level]))
    name = exported_ticket_file(last_level)
    run.save(name, exported)
    file = run.path / name
    return [
        "\nWhat does the ticket buy? Inference on the CPU, trial 0's ticket at every level:",
        inference_summary(table).to_string(),
        *inference_conclusions(table),
        f"exported the level-{last_level} ticket as {exported['form']}: {file} ({file.stat().st_size / 1024:,.0f} KB); "
        f"load it with lth_helpers.inference.load_ticket",
    ]


# ---------------------------------------------------------------------------------------------
# compare


def add_compare_command(subcommands: argparse._SubParsersAction) -> None:
    """`python -m lth_helpers compare DIR DIR ... --out FILE.png`."""
    parser = subcommands.add_parser(
        "compare",
        help="several finished runs side by side, in a table and a figure",
        description=compare.__doc__.split("\n\n")[0],
    )
    parser.add_argument("runs", nargs="+", metavar="DIR", help="run folders to compare (two or more)")
    parser.add_argument("--out", required=True, metavar="FILE.png", help="where to write the figure")
    parser.set_defaults(run=compare_command)


def compare_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Print the runs' table and write their figure. Bad input (CompareError) ends with 2, a damaged or unreadable
    run folder or a figure that cannot be written with 1; nothing is written unless every folder could be read."""
    out = Path(args.out)
    check_comparison(args.runs, out)
    table = compare_runs(args.runs)
    say(comparison_text(table))
    write_comparison(table, out)
    say(f"wrote {out}")
    return 0


# ---------------------------------------------------------------------------------------------
# sweep


def add_sweep_command(subcommands: argparse._SubParsersAction) -> None:
    """`python -m lth_helpers sweep --preset P --grid FIELD=V1,V2 ... --out SWEEP_DIR`."""
    parser = subcommands.add_parser(
        "sweep",
        usage="%(prog)s --preset PRESET --grid FIELD=V1,V2,... [--grid ...] --out SWEEP_DIR [options]",
        help="a grid of configs, each point a run folder; resumable, here or through submitit",
        description="Run a grid of configs, each point an ordinary run folder in SWEEP_DIR; the same command "
        "resumes. Exit status 2 for bad input (nothing written), 1 when a point failed (the others ran) or a file "
        "could not be written or read, 130 when interrupted.",
        epilog="docs/sweeps.md: local runs, the GPUs of one machine, Slurm, resume and failures, cost.",
    )
    parser.add_argument("--preset", required=True, help="the base config's preset: smoke, seed or paper")
    parser.add_argument("--out", required=True, type=check_folder_flag, metavar="SWEEP_DIR", help="the sweep folder")
    parser.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="FIELD=V1,V2,...",
        help="a config field and its values, parsed as its flag parses them (repeat for more fields; a list-valued "
        f"field separates its values with {sweep.LIST_SEPARATOR}: controls=reinit{sweep.LIST_SEPARATOR}reinit,"
        "random_prune)",
    )
    parser.add_argument("--dry-run", action="store_true", help="list the points and where each stands; run nothing")
    parser.add_argument("--overwrite", action="store_true", help="make this grid the folder's sweep (docs/sweeps.md)")
    add_run_flags(parser)
    engine = parser.add_argument_group("where the points run")
    engine.add_argument("--engine", choices=("local", "submitit"), default="local", help="local: in this process")
    engine.add_argument("--cluster", choices=("auto", "slurm", "local", "debug"), help="submitit's executor")
    for name, (kind, text, _) in JOB_FLAGS.items():
        engine.add_argument(f"--{name.replace('_', '-')}", type=kind, help=text)
    parser.set_defaults(run=sweep_command)


def sweep_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Check everything before writing anything (bad input: exit 2), then run the points that are not done and write
    the summary; exit status 1 when a point failed (the others ran), and the failed points named on stderr."""
    try:
        grid, overrides = sweep.parse_grid(args.grid), config_overrides(args)
        for name in (name for name in grid if name in overrides):
            raise ConfigError(f"{name} is given both as a flag and in --grid; give it once")
        planned = sweep.plan_sweep(make_config(args.preset, **overrides), grid, args.out, args.overwrite)
        engine = make_engine(args.engine, {"cluster": args.cluster} | {k: getattr(args, k) for k in JOB_FLAGS})
        sweep.check_engine(planned, engine, args.device)
        say(f"{args.out}: {len(planned.points)} points ({' x '.join(planned.grid)}) of the {args.preset} preset")
        if args.dry_run:
            say(sweep.dry_run(planned))
            return 0
        table = sweep.run_planned(planned, engine, args.data_dir, args.device, not args.no_progress, say)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished levels are kept in {args.out}; the same command resumes", file=sys.stderr)
        return INTERRUPTED
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        say(
            compare.sweep_overview(table).to_string(index=False),
            f"wrote {planned.folder / sweep.TABLE_FILE} and {sweep.FIGURE_FILE}",
        )
    failed = table.drop_duplicates("run").query("state == 'failed'")
    for row in failed.itertuples():
        print(f"failed: {row.run}: {row.failure}", file=sys.stderr)
    if len(failed):
        print(f"{len(failed)} of {len(planned.points)} points failed; the same command retries them", file=sys.stderr)
    return FAULT if len(failed) else 0


# instability


def add_instability_command(subcommands: argparse._SubParsersAction) -> None:
    """`python -m lth_helpers instability RUN_DIR [--levels L,L] [--conditions C,C] [--points N] [--pairs N]
    [--rewind-iterations K,K]`."""
    parser = subcommands.add_parser(
        "instability",
        help="linear mode connectivity of a finished run: two copies of its networks, the straight path between them",
        description=instability.__doc__.split("\n\n")[0],
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder")
    parser.add_argument(
        "--levels",
        type=_whole_numbers,
        metavar="L,L",
        help="levels to analyse (default: those nearest the paper's Figure 3 sparsities, 100%% down to 1.9%%)",
    )
    parser.add_argument(
        "--conditions",
        type=_names,
        metavar="C,C",
        help="conditions to analyse at pruned levels: ticket and the run's controls (default: all of them)",
    )
    parser.add_argument(
        "--points",
        type=int,
        default=instability.POINTS,
        metavar="N",
        help=f"evenly spaced points along each straight path, both ends included, 2 to {instability.MAX_POINTS} "
        f"(default: {instability.POINTS})",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=1,
        metavar="N",
        help=f"pairs of copies per network, 1 to {instability.MAX_PAIRS}: the instability is their mean ± std "
        "(default: 1)",
    )
    parser.add_argument(
        *("--rewind-iterations", "--rewind_iterations"),
        dest="rewind_iterations",
        type=_whole_numbers,
        metavar="K,K",
        help="iterations of the dense network's training that its copies start from (default: the run's rewind "
        "point); level 0 is analysed from each",
    )
    add_data_flags(parser)
    parser.set_defaults(run=instability_command)


def _whole_numbers(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from None


def _names(text: str) -> list[str]:
    return [part for part in text.replace(" ", "").split(",") if part]


def instability_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the analysis (instability.analyse), then print its lines: every one after both files are written, so that
    a reader who stops reading early (`| head`) ends nothing early. Its errors go through main's ladder (bad input 2,
    a fault 1); Ctrl-C ends with one line and 130, nothing written."""
    try:
        lines = instability.analyse(
            args.run_dir,
            levels=args.levels,
            conditions=args.conditions,
            points=args.points,
            pairs=args.pairs,
            rewind_iterations=args.rewind_iterations,
            data_dir=args.data_dir,
            device=args.device,
            progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: the analysis wrote nothing ({instability.BOTH} are as they were); the same command starts "
            "it again",
            file=sys.stderr,
        )
        return INTERRUPTED
    say(*lines)
    return 0


COMMANDS = (add_run_command, add_compare_command, add_sweep_command, add_instability_command)  # see the docstring
