"""The two tables of a run folder, results.csv and curves.csv: their one schema, and the checks a table passes as it is
written and read back (runs.py writes and reads them).

TABLE_COLUMNS lists each table's columns in order, with what each holds. experiment.level_rows and curve_rows write
rows with these keys; a table with another column, a column out of order, or a value of the wrong kind is damaged. A
results.csv written before ADDED_COLUMNS existed lacks them, and reads without them.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from .conditions import is_condition
from .config import METRICS, TRAIN_METRICS, Config
from .model import LAYERS

RESULTS, CURVES = "results.csv", "curves.csv"
# Each column, in order, and what it holds: "int" (whole numbers), "float" (numbers), "condition" (a condition's name).
TABLE_COLUMNS: dict[str, dict[str, str]] = {
    RESULTS: {
        **{"level": "int", "condition": "condition", "trial": "int"},
        **{"weights_remaining": "int", "percent_remaining": "float"},
        **{f"{name}_remaining": "int" for name in LAYERS},
        **{"early_stop_iteration": "int", "early_stop_val_loss": "float", "early_stop_test_accuracy": "float"},
        **{"final_test_accuracy": "float", "final_test_loss": "float"},
        **{f"final_{name}": "float" for name in TRAIN_METRICS},
        "train_seconds": "float",
    },
    CURVES: {
        **{"level": "int", "condition": "condition", "trial": "int", "iteration": "int"},
        **dict.fromkeys(METRICS, "float"),
    },
}
ADDED_COLUMNS = {f"final_{name}" for name in TRAIN_METRICS}  # absent from a results.csv written before they were added


def check_table(name: str, table: pd.DataFrame, missing: set[str] = ADDED_COLUMNS) -> None:
    """Raise ValueError unless `table` has the columns of `name`'s schema, in order, but for some of `missing`, each
    holding what the schema says."""
    schema = TABLE_COLUMNS[name]
    if tuple(table.columns) != tuple(c for c in schema if c in table.columns) or set(schema) - missing - set(table):
        raise ValueError(f"its columns are not those of a run's {name}: {', '.join(map(str, table.columns))}")
    if not len(table):  # no rows, no values to check (pandas reads the columns of a header alone as text)
        return
    for column in table.columns:
        kind, values = schema[column], table[column]
        strange = [c for c in dict.fromkeys(values) if not is_condition(c)] if kind == "condition" else []
        if strange:
            raise ValueError(f"its condition column holds {strange[0]!r}, which names no condition")
        if kind == "int" and not pd.api.types.is_integer_dtype(values):
            raise ValueError(f"its {column} column holds other things than whole numbers")
        if kind == "float" and not pd.api.types.is_numeric_dtype(values):
            raise ValueError(f"its {column} column holds other things than numbers")


def read_table(file: Path, name: str, levels: int, recorded: int | None, cfg: Config | None) -> pd.DataFrame:
    """The rows of the `levels` finished levels of the table `file` (results.csv or curves.csv, `name`), checked: they
    must be the `recorded` rows progress.json counted, each network a level trained once. Rows of a level cut off before
    it was finished are dropped. Any fault raises ValueError."""
    text = file.read_bytes()
    if not text.endswith(b"\n"):
        raise ValueError("it ends in the middle of a row")
    table = pd.read_csv(io.BytesIO(text))  # the bytes just checked: the file is read once
    check_table(name, table)
    finished = table[table["level"] < levels].reset_index(drop=True)
    if len(finished) != recorded:
        raise ValueError(f"{len(finished)} rows of finished levels, progress.json recorded {recorded}")
    _check_networks(name, finished, levels, cfg)
    return finished


def _check_networks(name: str, table: pd.DataFrame, levels: int, cfg: Config | None) -> None:
    """Raise ValueError unless `table`, the rows of `levels` finished levels, holds no row twice and (where the config
    is known) the rows of every network each level trained, and no other: results and progress agree."""
    twice = table[table.duplicated(["level", "condition", "trial", *(["iteration"] if name == CURVES else [])])]
    if len(twice):
        row = twice.iloc[0]
        raise ValueError(f"its row of level {row.level}, condition {row.condition}, trial {row.trial} appears twice")
    if cfg is None:
        return
    trained = {(lv, c, t) for lv in range(levels) for c in cfg.level_conditions(lv) for t in range(cfg.trials)}
    held = set(zip(table["level"].tolist(), table["condition"].tolist(), table["trial"].tolist()))
    if trained - held:
        level, condition, trial = min(trained - held)
        raise ValueError(f"level {level} has no row for condition {condition}, trial {trial}")
    if held - trained:
        level, condition, trial = min(held - trained)
        raise ValueError(
            f"it has rows for level {level}, condition {condition}, trial {trial}, which the run never trains"
        )
