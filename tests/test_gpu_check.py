"""benchmarks/gpu_check.py, the parts that run without a GPU: a part cut off at its limit is reported as cut off,
and the profile's table is summed up in one line."""

from __future__ import annotations

import json
import sys

from tests.conftest import load_script


def test_a_part_that_runs_past_its_limit_is_cut_off_and_a_failing_one_reports_its_status():
    check = load_script("gpu_check.py")
    status, seconds, out = check.run_part(
        [sys.executable, "-c", "print('begun', flush=True); import time; time.sleep(30)"], 2, {}
    )
    assert status is None and seconds < 20
    status, _, out = check.run_part([sys.executable, "-c", "print('done'); raise SystemExit(3)"], 20, {})
    assert status == 3 and "done" in out


def test_the_profile_table_is_summed_up_in_one_line(tmp_path):
    check = load_script("gpu_check.py")
    table = tmp_path / "profile.json"
    assert check.profile_summary(table) == "no table written"
    rows = [
        ("graph step, 10 networks", 237.0, 177.0, 35, 42_000),
        ("graph step, 10 networks, unpruned", 200.0, 150.0, 32, 50_000),
    ]
    table.write_text(json.dumps(rows))
    summary = check.profile_summary(table)
    assert "10 nets: graph 237 us/35 k" in summary and "graph pruned/dense at 10: 1.185" in summary
