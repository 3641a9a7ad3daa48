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

Subcommands. Each lives in the module that does its work, as two functions of one shape (`compare.py`, `sweep.py`
and `instability.py` have them):

    def add_command(subcommands: argparse._SubParsersAction) -> None:
        parser = subcommands.add_parser("NAME", help="one line for --help", description="what it does")
        parser.add_argument(...)
        parser.set_defaults(run=NAME_command)

    def NAME_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        ...  # the exit status; parser.error(message) refuses bad input in one line, with exit status 2

and `add_command` joins COMMANDS below. `subcommands.add_parser` makes the parser a `Parser`, this module's parser
class, whose errors are one line. A command line whose first word names no subcommand is the subcommand `run`.
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
from .config import (
    PRESETS,
    ConfigError,
    check_memory,
    default_preset,
    make_config,
    resolve_device,
)
from .data import DataError, data_dir, load_mnist
from .experiment import ExperimentError, run_levels
from .flags import add_run_flags, config_overrides, fail, folder, one_line
from .inference import first_network, inference_conclusions, inference_summary, inference_table, smallest_form
from .paper import paper_comparison
from .plotting import INFERENCE_FIGURE, plot_inference, run_figures
from .report import accuracy_at_init_conclusions, conclusions, summary_table
from .runs import INFERENCE_TABLE, INIT, DamagedFileError, RunFolder, RunFolderError, exported_ticket_file

PROG = "python -m lth_helpers"


class Parser(argparse.ArgumentParser):
    """argparse's parser, with errors on one line (exit status 2) instead of a usage block; every parser of the command
    line is one. The top-level parser keeps its subcommands' parsers by name in `commands`."""

    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


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
    return args.run(args, parser.commands[args.subcommand])


# ---------------------------------------------------------------------------------------------
# run


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
    parser.add_argument("--out", type=folder, help="run folder (default: runs/PRESET-HASH, a hash of the config)")
    parser.add_argument("--overwrite", action="store_true", help="replace a run folder that holds another config")
    add_run_flags(parser)
    parser.set_defaults(run=run_command)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def run_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        device = resolve_device(args.device)
        cfg = make_config(default_preset(device) if args.preset is None else args.preset, **config_overrides(args))
        check_memory(cfg, device)
        out = Path(args.out or Path("runs") / cfg.run_name())
        RunFolder.check(out, cfg, args.overwrite)  # before the data are loaded: a folder refused is bad input
    except (DamagedFileError, OSError) as error:  # not bad input: a file to restore, a permission to fix
        return fail(parser, error)
    except (ConfigError, RunFolderError) as error:
        parser.error(str(error))
    finished = False  # every file written: a Ctrl-C after that cuts short only the last lines printed
    try:
        data = load_mnist(data_dir(args.data_dir), cfg.val_size, device)
        controls = ", ".join(cfg.controls) if cfg.rounds else ""  # controls train only at pruned levels
        print(
            f"{cfg.run_name()}: {_count(cfg.rounds + 1, 'level')} x {_count(cfg.trials, 'trial')}, "
            f"ticket + {controls or 'no controls'}, on {device}; run folder {out}"
        )
        with RunFolder.open(out, cfg, args.overwrite) as run:  # held from the first read to the last file written
            if run.levels_done:
                print(f"{run.levels_done} of {_count(cfg.rounds + 1, 'level')} already finished in {out}: kept")
            results = run_levels(cfg, run, data, progress=not args.no_progress)
            report = write_report(run, results, data.test_x, cfg.rounds)
        finished = True
        print("\n".join(report))
        print(f"results.csv, curves.csv, inference.csv, figures, masks and tickets are in {out}")
    except BrokenPipeError as error:  # the reader stopped reading (`| head`): say no more, on a stdout that is gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0 if finished else fail(parser, error)
    except (DataError, ExperimentError, RunFolderError, OSError) as error:  # OSError: unwritable folder
        return fail(parser, error)
    except (MemoryError, RuntimeError) as error:  # torch's CPU allocator raises a RuntimeError
        if not isinstance(error, (MemoryError, torch.OutOfMemoryError)) and "can't allocate" not in str(error):
            raise
        return fail(parser, f"out of memory ({one_line(error)}); finished levels are kept in {out}")
    except KeyboardInterrupt:
        if finished:
            return 0
        print(f"\ninterrupted: finished levels are kept in {out}; the same command resumes", file=sys.stderr)
        return 130
    return 0


def write_report(run: RunFolder, results: pd.DataFrame, test_x: torch.Tensor, last_level: int) -> list[str]:
    """Write the run's figures, inference table and exported ticket into the open run folder `run`, and return what
    the command prints of the run: its tables and conclusions. Every file comes before any line is printed, so that
    a reader who stops reading early (`| head`) loses no file."""
    curves = run.curves()
    run.save_figures(run_figures(results, curves, run.load(INIT), run.ticket_masks()))
    lines = [summary_table(results).to_string(), *conclusions(results), *accuracy_at_init_conclusions(curves, results)]
    comparison = paper_comparison(results)
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


COMMANDS = (add_run_command, compare.add_command, sweep.add_command, instability.add_command)  # see the docstring
