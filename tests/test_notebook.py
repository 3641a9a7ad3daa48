"""lottery_ticket.ipynb: committed clean, and it runs top to bottom on the real MNIST files, the loop by hand
agreeing with the package."""

from __future__ import annotations

import json
import re

import nbformat
import pandas as pd
from nbclient import NotebookClient

from lth_helpers.config import make_config
from lth_helpers.instability import FIGURE, TABLE
from lth_helpers.plotting import FIGURES, TICKET_FIGURES
from tests.conftest import REPO

NOTEBOOK = REPO / "lottery_ticket.ipynb"


def test_notebook_is_committed_without_outputs_and_keeps_the_gpu_runtime():
    notebook = json.loads(NOTEBOOK.read_text())
    dirty = [
        i
        for i, cell in enumerate(notebook["cells"])
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count"))
    ]
    assert dirty == [], f"cells {dirty} hold outputs: clear them before committing"
    assert notebook["metadata"].get("accelerator") == "GPU"
    tagged = [cell for cell in notebook["cells"] if "parameters" in cell.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1


def test_notebook_runs_top_to_bottom_with_the_smoke_preset(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    index = next(i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", []))
    # papermill's convention: a cell after the tagged one. Global pruning, as the CPU's default preset prunes: the
    # by-hand section prunes layer-wise all the same, and the package agrees with it.
    injected = f'PRESET = "smoke"\nOVERRIDES = {{"global_pruning": True}}\nRUNS_DIR = {str(tmp_path)!r}'
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(injected, metadata={"tags": ["injected-parameters"]}))
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "stop acc" in html and "reinit acc" in html  # the summary table
    # the paper's 4 figures (generalization among them), the ticket's 4, the instability paths, the condition grid and
    # the supermasks, inference, the comparison of the runs, the sweep's
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 13
    markdown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "The dense network reaches" in markdown and "multiply-adds per example" in markdown
    assert "Before any training, the dense network scores" in markdown
    assert "At the end of training the dense network scores" in markdown  # the generalization gap
    assert "the dense network ends in two minima whose straight path rises" in markdown  # the instability analysis
    assert "of weights, instability: winning ticket" in markdown
    assert "of weights, against the ticket's" in markdown and "SNIP, random reinit" in markdown  # what makes a ticket
    assert "largest on the path" in html and "train acc" in html
    assert "speedup b1000" in html
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "pre-hooks:  ['L1Unstructured']" in printed and "buffers:    ['weight_mask']" in printed
    assert "after assigning weight.data, rewound: False" in printed
    assert "after writing weight_orig, rewound: True" in printed
    assert "By hand, a round prunes layer-wise" in printed and "The config prunes globally" in printed
    control = re.search(r"ticket (\S+)% \(loss \S+\), random reinit (\S+)% \(loss \S+\)", printed)
    assert control and min(float(control.group(1)), float(control.group(2))) > 80  # both trained, side by side
    assert re.search(r"the ticket is [+-]\d+\.\d\d points against random reinit", printed)
    assert "weight_orig still holds theta_0: True" in printed  # the pruned entries never moved
    assert "the last step's gradient of weight_orig there: 0.0" in printed
    assert "the weight the network computes with is zero there: True" in printed
    assert "trained ticket's fc1 after prune.remove:" in printed and "buffers:    []" in printed
    gap = re.search(r"Same masks at every level; test losses differ by at most (\S+)", printed)
    assert gap and float(gap.group(1)) < 1e-9  # the package computes what the loop by hand computes
    assert "mask entries that differ" in html
    assert "Only one finished run" in printed  # the comparison of runs, with one run in RUNS_DIR
    run_dir = tmp_path / make_config("smoke", global_pruning=True).run_name()
    listed = json.loads((run_dir / "manifest.json").read_text())["files"]  # what --overwrite clears
    for name in ("results.csv", "curves.csv", "inference.csv", *FIGURES, *TICKET_FIGURES, TABLE, FIGURE):
        assert (run_dir / name).exists() and name in listed, name
    paths = pd.read_csv(run_dir / TABLE)  # the dense network and the sparsest level, ticket and both controls
    assert set(zip(paths.level, paths.condition)) == {(0, "ticket"), (1, "ticket"), (1, "reinit"), (1, "random_prune")}
    # the sweep of the "Try this" section, in its own folder: the comparison of RUNS_DIR's runs saw only the run above
    sweep = pd.read_csv(tmp_path / "sweep" / "sweep.csv")
    points = [make_config("smoke", global_pruning=g).run_name() for g in (False, True)]
    assert sweep.drop_duplicates("run").run.tolist() == points and (sweep.state == "done").all()
    assert (tmp_path / "sweep" / "sweep.png").stat().st_size > 0 and "&gt;= dense down to" in html  # the overview
