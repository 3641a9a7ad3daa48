"""lth_helpers: the Lottery Ticket Hypothesis (Frankle & Carbin, ICLR 2019) on MNIST with LeNet-300-100.

    python -m lth_helpers --preset seed --out runs/seed      # see cli.py

Modules, one per concept: config (hyperparameters, presets), data (MNIST as tensors, batches),
model (a stack of MLPs), pruning (torch.nn.utils.prune, rewinding, control masks), training
(the training loop, the plain reference step, evaluation), fast_step (the default training step and
every speed trick it uses), experiment (the iterative pruning loop, resumable),
files (whole-file writes, checked reads, the folder lock), tables (the schema of results.csv and
curves.csv), runs (the run folder: resume, its checks, --overwrite), inference (what a ticket costs to run:
compacted and sparse forms, and the sentences about them), report (tables and computed conclusions), paper (the
paper's statements beside a run's numbers), plotting (the paper's figures and those that compare conditions),
ticket_figures (what a ticket keeps), compare (runs, or a sweep's points, side by side), flags (a config on the command
line), sweep (grids of configs), sweep_jobs (a sweep's points as submitit jobs), instability (linear mode connectivity
of a finished run's networks), instability_report (its paths read), cli.
"""

from . import _startup  # noqa: F401  first, before torch: Ctrl-C while `python -m lth_helpers` starts is one line
from .compare import CompareError, compare_runs, finished_runs, plot_comparison, plot_sweep, sweep_overview
from .config import Config, ConfigError, default_preset, make_config, resolve_device
from .data import data_dir, load_mnist
from .experiment import run_experiment
from .fast_step import FastStep
from .inference import inference_conclusions, inference_summary, inference_table, load_ticket, smallest_form
from .instability import instability_analysis
from .instability_report import instability_conclusions, instability_table, pair_instability
from .model import LAYERS, StackedMLP, init_params, layer_shapes
from .paper import paper_comparison
from .plotting import (
    plot_accuracy_at_init,
    plot_accuracy_vs_weights,
    plot_condition_grid,
    plot_curves,
    plot_early_stop_vs_weights,
    plot_generalization,
    plot_inference,
    plot_instability,
    plot_supermasks,
    run_figures,
)
from .pruning import build_model, full_masks, get_masks, prune_by_magnitude, rewind_
from .report import (
    accuracy_at_init_conclusions,
    before_training,
    conclusions,
    condition_conclusions,
    generalization_conclusions,
    one_shot_conclusions,
    summary_table,
)
from .runs import RunFolder
from .sweep import run_sweep
from .ticket_figures import plot_initial_weights, plot_input_pixels, plot_layer_sparsity
from .training import ReferenceStep, reference_step, train_networks

__all__ = [
    "CompareError",
    "accuracy_at_init_conclusions",
    "compare_runs",
    "finished_runs",
    "before_training",
    "plot_accuracy_at_init",
    "plot_condition_grid",
    "plot_supermasks",
    "plot_comparison",
    "plot_initial_weights",
    "plot_input_pixels",
    "plot_layer_sparsity",
    "generalization_conclusions",
    "inference_conclusions",
    "instability_analysis",
    "instability_conclusions",
    "instability_table",
    "one_shot_conclusions",
    "pair_instability",
    "plot_generalization",
    "plot_instability",
    "inference_summary",
    "inference_table",
    "load_ticket",
    "plot_inference",
    "smallest_form",
    "LAYERS",
    "Config",
    "ConfigError",
    "FastStep",
    "ReferenceStep",
    "RunFolder",
    "StackedMLP",
    "build_model",
    "conclusions",
    "condition_conclusions",
    "data_dir",
    "default_preset",
    "full_masks",
    "get_masks",
    "init_params",
    "layer_shapes",
    "load_mnist",
    "make_config",
    "paper_comparison",
    "plot_accuracy_vs_weights",
    "plot_curves",
    "plot_early_stop_vs_weights",
    "prune_by_magnitude",
    "reference_step",
    "resolve_device",
    "rewind_",
    "run_experiment",
    "run_figures",
    "run_sweep",
    "plot_sweep",
    "sweep_overview",
    "summary_table",
    "train_networks",
]
