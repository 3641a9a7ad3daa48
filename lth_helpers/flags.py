"""A config on the command line: one flag per config field, its text parsed as the field's type.

    add_run_flags(parser)     # --data-dir, --device, --no-progress, --iterations, --prune-rate (or --prune_rate), ...
    cfg = make_config(preset, **config_overrides(parser.parse_args()))
    field_type(field)("0.2")  # 0.2: how the flag of a field reads its text

The subcommands that train, `run` and `sweep`, share these flags; a sweep's `--grid` values are read as they read them.
Beside them, the pieces of the command line's one-line errors that every subcommand shares: `one_line(error)` and
`is_out_of_memory(error)`. cli.py turns an error into its exit status (`cli.exit_status_of`).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import torch

from .config import DEVICES, PRESETS, Config, make_config, show_value


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parse_names(text: str) -> tuple[str, ...]:
    """Comma-separated names; "none" (or nothing) for none. An empty item ("reinit,,snip") is kept, to be refused."""
    text = text.replace(" ", "")
    return () if text in ("", "none") else tuple(text.split(","))


def field_type(field: dataclasses.Field) -> Any:
    """How a config field's flag parses its text: int, float, a boolean word, a string, or comma-separated names."""
    kind = {"int": int, "float": float, "bool": _parse_bool, "str": str}.get(str(field.type))
    return kind or _parse_names  # tuple[str, ...]


def parse_value(field: dataclasses.Field, text: str) -> Any:
    """`text` read as the flag of `field` reads it (a sweep's --grid values); ValueError saying why it cannot be."""
    parse = field_type(field)
    try:
        return parse(text)
    except argparse.ArgumentTypeError as error:
        raise ValueError(str(error)) from None
    except ValueError:
        raise ValueError(f"not {parse.__name__}") from None


def check_folder_flag(text: str) -> str:
    """A folder flag's text (argparse's `type` of --out and --data-dir), refused when empty (a variable that expanded
    to nothing, most likely) rather than taken for the default."""
    if not text:
        raise argparse.ArgumentTypeError("empty; give a folder, or leave the flag out for its default")
    return text


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of every subcommand that trains: --data-dir, --device, --no-progress."""
    parser.add_argument(
        "--data-dir", type=check_folder_flag, help="folder holding MNIST/raw (default: $LTH_DATA_DIR, else ./data)"
    )
    parser.add_argument(
        "--device", default="auto", help=f"one of: {', '.join(DEVICES)} (default: auto, CUDA when present)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of every subcommand that trains a config: add_data_flags' and one flag per config field (each
    preset's value in its help)."""
    add_data_flags(parser)
    fields = parser.add_argument_group("config fields (each preset's value in brackets)")
    for field in dataclasses.fields(Config):
        if field.name == "preset":
            continue
        values = "; ".join(f"{name}: {show_value(getattr(make_config(name), field.name))}" for name in PRESETS)
        flags = dict.fromkeys((f"--{field.name.replace('_', '-')}", f"--{field.name}"))  # --prune-rate, --prune_rate
        fields.add_argument(
            *flags,
            dest=field.name,
            type=field_type(field),
            default=None,
            metavar="VALUE",
            help=f"{field.metadata['help']} [{values}]",
        )


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields that the command line gave, by name."""
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(Config)
        if f.name != "preset" and getattr(args, f.name) is not None
    }


def one_line(error: BaseException | str) -> str:
    """`error` in one line; an OS error as the path, what went wrong and what to do."""
    if isinstance(error, OSError) and error.filename is not None:
        return f"cannot use {error.filename}: {error.strerror or error}; fix its permissions, or choose another path"
    return " ".join(str(error).split())


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` says the memory ran out: Python's MemoryError, torch's OutOfMemoryError (CUDA), or the
    RuntimeError of torch's CPU allocator ("DefaultCPUAllocator: can't allocate memory")."""
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(error, RuntimeError) and "can't allocate" in str(error)
