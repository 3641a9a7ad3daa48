"""The dependency lists agree: pyproject.toml's, requirements.txt's lower bounds, requirements-oldest.txt's pins.

The Colab notebook installs the package with pip (pyproject.toml), the quick start with requirements.txt, and the
oldest supported versions are checked with requirements-oldest.txt: a bound raised in one list and not the others
would claim support that nothing checks.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO

REQUIREMENT = re.compile(r"^([A-Za-z0-9_.-]+)\s*(>=|==)\s*([0-9][0-9A-Za-z.]*)$")


def parse(lines: list[str], operator: str) -> dict[str, str]:
    """{package: version} from requirement lines such as "torch>=2.4  # why"; comments and -r lines are skipped."""
    found = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        match = REQUIREMENT.match(line)
        assert match and match[2] == operator, f"not a plain '{operator}' requirement: {line!r}"
        found[match[1].lower()] = match[3]
    return found


def read(name: str, operator: str) -> dict[str, str]:
    return parse((REPO / name).read_text().splitlines(), operator)


def test_parse_reads_bounds_and_refuses_other_forms():
    assert parse(["# runtime", "torch>=2.4  # why", "", "-r other.txt", "tqdm >= 4.64"], ">=") == {
        "torch": "2.4",
        "tqdm": "4.64",
    }
    with pytest.raises(AssertionError):
        parse(["torch>=2.4,<3"], ">=")
    with pytest.raises(AssertionError):
        parse(["torch==2.4.0"], ">=")


def test_pyproject_lists_the_requirements_lower_bounds():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert parse(pyproject["project"]["dependencies"], ">=") == read("requirements.txt", ">=")


def test_the_oldest_pins_are_the_lower_bounds():
    bounds, pins = read("requirements.txt", ">="), read("requirements-oldest.txt", "==")
    assert set(bounds) <= set(pins)
    for package, bound in bounds.items():
        # "2.4" is met first by 2.4.0: the pin must be the bound itself, padded with zeros
        assert pins[package].split(".")[: len(bound.split("."))] == bound.split("."), package
        assert set(pins[package].split(".")[len(bound.split(".")) :]) <= {"0"}, package


def test_the_cluster_extra_is_what_the_dev_requirements_install_and_the_oldest_pin():
    """submitit, the optional engine of sweeps: one lower bound in pyproject's extra, requirements-dev.txt (so that
    CI tests it) and requirements-oldest.txt."""
    tomllib = pytest.importorskip("tomllib")
    extra = parse(
        tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["cluster"], ">="
    )
    dev = [line for line in (REPO / "requirements-dev.txt").read_text().splitlines() if line.startswith("submitit")]
    assert extra == parse(dev, ">=") == {"submitit": "1.5"}
    assert read("requirements-oldest.txt", "==")["submitit"] == "1.5.0"
