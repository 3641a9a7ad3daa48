"""The package's layers point down: each module imports only the modules that docs/design.md's table of modules lets
it import, there is no import circle (imports inside functions counted), the run folder knows nothing of training or
figures (so it spells the figures' file names, held equal to plotting's here), and the report and the figures read no
run folder."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "lth_helpers"
MODULES = sorted(path.stem for path in PACKAGE.glob("*.py"))


def package_imports(file: Path) -> set[str]:
    """The package's modules that `file` imports, wherever in it (a function's imports too); `__init__` for a name
    imported from the package itself, which runs the package's __init__.py."""
    found = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("lth_helpers")):
            parts = (node.module or "").split(".")[node.level == 0 :]  # lth_helpers.runs, .runs: runs
            names = [parts[0]] if parts and parts[0] else [alias.name for alias in node.names]
            found |= {name if name in MODULES else "__init__" for name in names}
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("lth_helpers.")}
    return found


def find_circle(imports: dict[str, set[str]]) -> list[str] | None:
    """A chain of imports that comes back to where it started, if there is one."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module) :] + [module]
        if module in done:
            return None
        for imported in sorted(imports.get(module, ())):
            circle = visit(imported, [*path, module])
            if circle:
                return circle
        done.add(module)
        return None

    return next((circle for module in sorted(imports) if (circle := visit(module, []))), None)


def design_table() -> dict[str, set[str]]:
    """docs/design.md's table of modules: module -> the modules it may import (its last column)."""
    rows = re.findall(r"^\| `(\w+)\.py` \|.*\| ([^|]*) \|$", (REPO / "docs" / "design.md").read_text(), re.MULTILINE)
    return {module: set(re.findall(r"`(\w+)`", may_import)) for module, may_import in rows}


IMPORTS = {module: package_imports(PACKAGE / f"{module}.py") for module in MODULES}


def test_each_module_imports_only_what_the_design_lets_it_and_the_design_names_every_module():
    allowed = design_table()
    assert set(allowed) == set(MODULES) - {"__init__", "__main__"}
    for module, may_import in allowed.items():
        assert IMPORTS[module] <= may_import, f"{module} imports {sorted(IMPORTS[module] - may_import)}"


def test_no_import_circle_and_the_finder_finds_one():
    assert find_circle(IMPORTS) is None
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert package_imports(PACKAGE / "__main__.py") == {"_startup", "cli"}  # the finder reads relative imports


def test_the_run_folder_knows_no_training_or_figures_and_the_report_and_figures_read_no_folder():
    assert not IMPORTS["runs"] & {"training", "experiment", "plotting", "report", "inference", "cli", "compare"}
    for module in ("plotting", "report", "inference"):
        assert "runs" not in IMPORTS[module], module


def test_overwrite_knows_every_file_the_figures_and_the_instability_analysis_write():
    # runs.py may not import plotting or instability, so it spells their file names; this holds the lists equal.
    from lth_helpers import instability, plotting, runs

    written = {*plotting.FIGURES, *plotting.TICKET_FIGURES, *plotting.CONDITION_FIGURES, plotting.INFERENCE_FIGURE}
    written |= {runs.INFERENCE_TABLE, instability.TABLE, instability.FIGURE}
    assert written <= set(runs.TOOL_FILES), sorted(written - set(runs.TOOL_FILES))
    assert set(runs.TOOL_FILES) - written == {*runs.STATE_FILES, runs.MANIFEST}
