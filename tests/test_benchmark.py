"""benchmarks/benchmark.py runs end to end (on the CPU, a few iterations a measurement) and prints its table.

Its numbers are not checked here (performance goals live in the benchmark, not in timed tests); what is checked is
that the script still runs with the package as it is.
"""

from __future__ import annotations

import re
import sys

from tests.conftest import load_script


def test_the_benchmark_prints_every_measurement_that_fits_and_the_paper_projection(monkeypatch, capsys):
    benchmark = load_script("benchmark.py")
    monkeypatch.setattr(sys, "argv", ["benchmark.py", "--device", "cpu", "--iterations", "30"])
    benchmark.main()
    out = capsys.readouterr().out
    rows = re.findall(r"^\| (.+?) \| ([\d,]+) \| ([\d.]+)x \|$", out, re.MULTILINE)
    assert [label for label, _, _ in rows] == [
        "usual loop: DataLoader + transforms, prune hooks, 1 network",
        "lth_helpers: 1 stacked",
        "lth_helpers: 2 stacked",
        "lth_helpers: 10 stacked, unpruned (no masks, no hooks)",
        "lth_helpers: 10 stacked",
    ]
    assert all(int(rate.replace(",", "")) > 0 for _, rate, _ in rows) and rows[0][2] == "1.0"
    # 30 iterations hold no evaluation every 215 or 100: those rows are skipped, not timed again as training alone
    assert "evaluating every 215: skipped, needs --iterations above 215" in out
    assert "evaluating every 100: skipped" in out
    assert "paper preset: 10,250,000 network-iterations; projected from 'lth_helpers: 10 stacked'" in out


def test_trainings_counts_the_controls_from_the_first_pruned_level():
    benchmark = load_script("benchmark.py")
    paper = benchmark.make_config("paper")  # 5 trials; 21 levels; a reinit control at the 20 pruned ones
    assert benchmark.trainings(paper) == 5 * (1 + 20 * 2)
    assert benchmark.trainings(paper, first_level=20) == 5 * 2


def test_the_conditions_benchmark_prints_a_row_per_count(monkeypatch, capsys):
    conditions = load_script("conditions.py")
    monkeypatch.setattr(sys, "argv", ["conditions.py", "--conditions", "2,3", "--iterations", "10"])
    conditions.main()
    rows = re.findall(r"^\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", capsys.readouterr().out, re.MULTILINE)
    assert [int(n) for n, *_ in rows] == [2, 3] and all(float(train) > 0 for _, _, train, _ in rows)
