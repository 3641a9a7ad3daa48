"""Command line: run (or resume) a lottery-ticket experiment and write its tables and figures.

    python -m lth_helpers --preset seed --out runs/seed
    python -m lth_helpers --preset paper --trials 2 --controls reinit,random_prune
    python -m lth_helpers --help          # every config field, with each preset's value
    python -m lth_helpers instability runs/seed --levels 0,5   # linear mode connectivity of a finished run

Exit status 2 for bad input, a model too big for the device's memory, or a run folder that holds another run
(nothing is written); 1 when the data is missing or damaged, training diverges, memory runs out, or a file of the
run folder cannot be written or read back (finished levels are kept, the folder is left as it was); 130 when
interrupted, at any moment (the same command resumes). Every error is one line that names what to do.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd
import torch

from . import compare, instability
from .config import (
    DEVICES,
    PRESETS,
    Config,
    ConfigError,
    check_memory,
    default_preset,
    make_config,
    resolve_device,
    show_value,
)
from .data import DataError, data_dir, load_mnist
from .experiment import ExperimentError, run_experiment
from .inference import first_network, inference_table, save_ticket
from .instability import InstabilityError
from .plotting import INFERENCE_FIGURE, plot_inference, save_figures
from .report import (
    accuracy_at_init_conclusions,
    conclusions,
    inference_conclusions,
    inference_summary,
    paper_comparison,
    summary_table,
)
from .runs import DamagedFileError, RunFolder, RunFolderError, write_atomic


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not argparse's usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parse_names(text: str) -> tuple[str, ...]:
    return tuple(name for name in text.replace(" ", "").split(",") if name and name != "none")


def _parser_for(field: dataclasses.Field) -> Any:
    kind = {"int": int, "float": float, "bool": _parse_bool, "str": str}.get(str(field.type))
    return kind or _parse_names  # tuple[str, ...]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m lth_helpers",
        description=__doc__.split("\n\n")[0],
        epilog="Compare finished runs: python -m lth_helpers compare DIR DIR ... --out FILE.png. "
        "Instability analysis of a finished run: python -m lth_helpers instability RUN_DIR [--levels L,L] "
        "[--points N] [--rewind-iterations K,K] (its --help says more).",
    )
    parser.add_argument(
        "--preset",
        help=f"starting point: {', '.join(PRESETS)} (default: paper on a GPU, seed (sized for a CPU) on a CPU)",
    )
    parser.add_argument("--out", help="run folder (default: runs/PRESET-HASH, a hash of the config)")
    parser.add_argument("--overwrite", action="store_true", help="replace a run folder that holds another config")
    _add_data_and_device(parser)
    fields = parser.add_argument_group("config fields (each preset's value in brackets)")
    for field in dataclasses.fields(Config):
        if field.name == "preset":
            continue
        values = "; ".join(f"{name}: {show_value(getattr(make_config(name), field.name))}" for name in PRESETS)
        flags = dict.fromkeys((f"--{field.name.replace('_', '-')}", f"--{field.name}"))  # --prune-rate, --prune_rate
        fields.add_argument(
            *flags,
            dest=field.name,
            type=_parser_for(field),
            default=None,
            metavar="VALUE",
            help=f"{field.metadata['help']} [{values}]",
        )
    return parser


def _add_data_and_device(parser: argparse.ArgumentParser) -> None:
    """The options of every command that trains: where MNIST is, the device, the progress bars."""
    parser.add_argument("--data-dir", help="folder holding MNIST/raw (default: $LTH_DATA_DIR, else ./data)")
    parser.add_argument(
        "--device", default="auto", help=f"one of: {', '.join(DEVICES)} (default: auto, CUDA when present)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compare"]:  # the subcommand `compare DIR DIR ... --out FILE.png`, in compare.py
        return compare.main(argv[1:])
    if argv[:1] == ["instability"]:  # the subcommand `instability RUN_DIR ...`, below
        parser = _Parser(prog="python -m lth_helpers instability", description=instability.__doc__.split("\n\n")[0])
        add_instability_arguments(parser)
        return run_instability(parser.parse_args(argv[1:]), parser)
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(Config)
        if f.name != "preset" and getattr(args, f.name) is not None
    }
    try:
        device = resolve_device(args.device)
        cfg = make_config(args.preset or default_preset(device), **overrides)
        check_memory(cfg, device)
        out = Path(args.out or Path("runs") / cfg.run_name())
        RunFolder.check(out, cfg, args.overwrite)
    except DamagedFileError as error:  # not bad input: a file to restore or to overwrite
        return _fail(parser, error)
    except (ConfigError, RunFolderError) as error:
        parser.error(str(error))
    try:
        data = load_mnist(data_dir(args.data_dir), cfg.val_size, device)
        controls = ", ".join(cfg.controls) if cfg.rounds else ""  # controls train only at pruned levels
        print(
            f"{cfg.run_name()}: {_count(cfg.rounds + 1, 'level')} x {_count(cfg.trials, 'trial')}, "
            f"ticket + {controls or 'no controls'}, on {device}; run folder {out}"
        )
        with RunFolder.open(out, cfg, args.overwrite):  # held from the first read to the last file written
            results = run_experiment(cfg, out, data, overwrite=args.overwrite, progress=not args.no_progress)
            report_run(out, results, data.test_x, cfg.rounds)
    except (DataError, ExperimentError, RunFolderError, OSError) as error:  # OSError: unwritable folder
        return _fail(parser, error)
    except (MemoryError, RuntimeError) as error:  # torch's CPU allocator raises a RuntimeError
        if not isinstance(error, (MemoryError, torch.OutOfMemoryError)) and "can't allocate" not in str(error):
            raise
        return _fail(parser, f"out of memory ({_one_line(error)}); finished levels are kept in {out}")
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished levels are kept in {out}; the same command resumes", file=sys.stderr)
        return 130
    print(f"results.csv, curves.csv, inference.csv, figures, masks and tickets are in {out}")
    return 0


def _fail(parser: argparse.ArgumentParser, error: Exception | str) -> int:
    print(f"{parser.prog}: error: {_one_line(error)}", file=sys.stderr)
    return 1


def _one_line(error: Exception | str) -> str:
    return " ".join(str(error).split())


def report_run(out: Path, results: pd.DataFrame, test_x: torch.Tensor, last_level: int) -> None:
    """Print the run's tables and conclusions; write its figures, inference table and exported ticket."""
    curves = RunFolder(out).curves()
    save_figures(results, curves, out)
    print(summary_table(results).to_string())
    print("\n".join(conclusions(results) + accuracy_at_init_conclusions(curves, results)))
    comparison = paper_comparison(results)
    if len(comparison):
        print("\nThe paper's statements about LeNet-300-100, and this run:")
        print(comparison.to_string(index=False))
    report_inference(out, test_x, last_level)


def report_inference(out: Path, test_x: torch.Tensor, last_level: int) -> None:
    """Time every level's ticket in each inference form; export the sparsest ticket in its smallest form."""
    print("\nWhat does the ticket buy? Inference on the CPU, trial 0's ticket at every level:")
    table = inference_table(out, test_x)
    write_atomic(out / "inference.csv", lambda tmp: table.to_csv(tmp, index=False))
    figure = plot_inference(table)
    write_atomic(out / INFERENCE_FIGURE, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    print(inference_summary(table).to_string())
    print("\n".join(inference_conclusions(table)))
    run = RunFolder(out)
    ticket = out / f"ticket_level_{last_level:02d}.pt"
    form = save_ticket(
        ticket,
        first_network(run.load(f"tickets/level_{last_level:02d}.pt")),
        first_network(run.load_masks(last_level)["ticket"]),
    )
    print(
        f"exported the level-{last_level} ticket as {form}: {ticket} ({ticket.stat().st_size / 1024:,.0f} KB); "
        f"load it with lth_helpers.inference.load_ticket"
    )


# ---------------------------------------------------------------------------------------------
# python -m lth_helpers instability RUN_DIR [--levels L,L] [--points N] [--rewind-iterations K,K]


def _parse_counts(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from None


def add_instability_arguments(parser: argparse.ArgumentParser) -> None:
    """The instability subcommand's arguments (see instability.py)."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder")
    parser.add_argument(
        "--levels",
        type=_parse_counts,
        metavar="L,L",
        help="levels to analyse (default: those nearest the paper's Figure 3 sparsities, 100%% down to 1.9%%)",
    )
    parser.add_argument(
        "--points",
        type=int,
        default=instability.POINTS,
        metavar="N",
        help=f"evenly spaced points along each straight path, both ends included (default: {instability.POINTS})",
    )
    parser.add_argument(
        *("--rewind-iterations", "--rewind_iterations"),
        dest="rewind_iterations",
        type=_parse_counts,
        metavar="K,K",
        help="iterations of the dense network's training that its copies start from (default: the run's rewind "
        "point); level 0 is analysed from each",
    )
    _add_data_and_device(parser)


def run_instability(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Exit 2 for bad input (not a finished run folder, a level it lacks, too few points, a rewind iteration outside
    training, an unknown device), 1 when MNIST is missing or damaged, the folder is damaged or in use, a copy diverges
    or a file cannot be written, 130 when interrupted; nothing is written unless the analysis finishes."""
    run_dir = Path(args.run_dir)
    try:
        device = resolve_device(args.device)
        cfg = instability.finished_config(run_dir)
        instability.wanted_pairs(cfg, args.levels, args.rewind_iterations, args.points, RunFolder(run_dir).results())
    except DamagedFileError as error:
        return _fail(parser, error)
    except (ConfigError, InstabilityError) as error:
        parser.error(str(error))
    try:
        data = load_mnist(data_dir(args.data_dir), cfg.val_size, device)
        paths = instability.instability_analysis(
            run_dir,
            data,
            levels=args.levels,
            points=args.points,
            rewind_iterations=args.rewind_iterations,
            progress=not args.no_progress,
        )
    except (DataError, ExperimentError, RunFolderError, OSError) as error:
        return _fail(parser, error)
    except KeyboardInterrupt:
        print("\ninterrupted: nothing was written; the same command starts the analysis again", file=sys.stderr)
        return 130
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(instability.instability_table(paths).to_string())
    print("\n".join(instability.instability_conclusions(paths)))
    print(f"{instability.TABLE} and {instability.FIGURE} are in {run_dir}")
    return 0
