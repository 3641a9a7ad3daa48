"""Every hyperparameter of a lottery-ticket run, in one dataclass, plus the presets and the names a run's tables use.

    from lth_helpers.config import make_config
    cfg = make_config("seed", trials=3)     # a preset with overrides; raises ConfigError when invalid

The dataclass defaults are the paper's LeNet-300-100 setting (Frankle & Carbin 2019, Figure 3 and
Appendix G); a preset is a named set of overrides on top of them. The conditions a network of a level can be
(the ticket and the controls) and the metrics of an evaluation are named here, once, for every module below the
command line: training, the run folder's tables, the report and the figures.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from .conditions import ConditionError, check_controls, help_text, label, parse
from .model import INPUT_SIZE, N_CLASSES, layer_shapes

# How tables and figures call the conditions that every run folder made before MASK:START names could hold.
CONTROLS = {name: label(name) for name in ("reinit", "random_prune", "one_shot")}
CONDITIONS = {"ticket": label("ticket"), **CONTROLS}
METRICS = ("val_loss", "val_accuracy", "test_loss", "test_accuracy")  # what an evaluation measures; accuracies in %
TRAIN_METRICS = ("train_accuracy", "train_loss")  # taken once, at the end of training, on the whole training split
INITS = ("glorot_normal", "kaiming_uniform")
DEVICES = ("auto", "cpu", "cuda")
MNIST_TRAIN_IMAGES = 60_000  # validation images are held out of these
# The most Adam steps a network may take over a run, (rounds + 1) x iterations: about 100 times the paper's
# 21 x 50,000. A budget beyond it (an exponent typed by mistake) would train for years; refused before anything starts.
MAX_STEPS = 100_000_000


# Fields added after run folders had been written: a config.json without one reads as its default, and the field
# enters the hash only away from its default, so that a folder keeps its name and resumes.
ADDED_FIELDS = ("saliency_batch_size",)


class ConfigError(ValueError):
    """A hyperparameter, preset or device that cannot be used; the message is one line."""


def _f(default: Any, help: str) -> Any:
    """A dataclass field whose help text is shown by `--help` and in the notebook."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Config:
    preset: str = _f("paper", "name of the preset this config started from (names run folders)")
    fc1_width: int = _f(300, "units in the first hidden layer")
    fc2_width: int = _f(100, "units in the second hidden layer")
    init: str = _f("glorot_normal", "weight init: glorot_normal (paper) or kaiming_uniform (PyTorch's nn.Linear)")
    learning_rate: float = _f(1.2e-3, "Adam learning rate")
    batch_size: int = _f(60, "examples per training iteration")
    iterations: int = _f(50_000, "training iterations (Adam steps) at every pruning level")
    eval_every: int = _f(100, "iterations between evaluations on validation and test sets")
    val_size: int = _f(5_000, "training images held out for validation (early stopping)")
    rounds: int = _f(20, "pruning rounds; the run trains rounds + 1 levels")
    prune_rate: float = _f(
        0.2, "fraction of surviving weights pruned per round (fc1 and fc2, or all weights if global)"
    )
    prune_rate_output: float = _f(0.1, "fraction of surviving fc3 weights pruned per round (layer-wise pruning only)")
    global_pruning: bool = _f(False, "rank all weights of a network together instead of layer by layer")
    rewind_iteration: int = _f(0, "rewind survivors to their weights after this many iterations (0 = initialization)")
    controls: tuple[str, ...] = _f(("reinit",), help_text())
    trials: int = _f(5, "independent repetitions with different seeds")
    seed: int = _f(0, "base random seed (initialization, batch order, controls)")
    saliency_batch_size: int = _f(100, "training images each trial's SNIP and GraSP scores are taken on (seeded)")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # the frozen dataclass's own values, normalized before they are checked
            object.__setattr__(self, f.name, _normalized(f.name, str(f.type), getattr(self, f.name)))
        try:  # one name per condition (ticket:reinit is reinit): one hash, one run folder
            object.__setattr__(self, "controls", check_controls(self.controls))
        except ConditionError as error:
            raise ConfigError(f"controls: {error}") from None
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        """The config `to_dict` gave: every field, each checked; a missing one is an error, not its default."""
        values = {**{name: getattr(cls, name) for name in ADDED_FIELDS}, **values}
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in values]
        if missing:
            raise ConfigError(f"it lacks the field{'s' * (len(missing) > 1)} {', '.join(missing)}")
        return replace(cls(), **values)

    def level_conditions(self, level: int) -> tuple[str, ...]:
        """The conditions trained at `level`: the ticket, and from the first pruned level on each control."""
        return ("ticket", *self.controls) if level > 0 else ("ticket",)

    def short_hash(self) -> str:
        """Eight hex digits that change whenever a hyperparameter changes (the preset name excluded)."""
        values = {
            k: v
            for k, v in self.to_dict().items()
            if k != "preset" and not (k in ADDED_FIELDS and v == getattr(Config, k))
        }
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:8]

    def run_name(self) -> str:
        return f"{self.preset}-{self.short_hash()}"


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's LeNet-300-100 experiment: the dataclass defaults.
    "paper": {},
    # Sized for a CPU: 5 epochs of 55,000 images a level, PyTorch's default init, global pruning of 20% a round.
    "seed": dict(
        init="kaiming_uniform",
        learning_rate=1e-3,
        batch_size=64,
        iterations=5 * (55_000 // 64),
        eval_every=215,
        rounds=5,
        prune_rate=0.2,
        global_pruning=True,
        trials=1,
    ),
    # The smallest run: for tests and for trying the pipeline end to end.
    "smoke": dict(iterations=400, eval_every=100, rounds=1, trials=1, controls=("reinit", "random_prune")),
}


def replace(cfg: Config, **overrides: Any) -> Config:
    """`dataclasses.replace` that names an unknown field in a one-line ConfigError."""
    names = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"unknown config field {unknown[0]!r}; known fields: {', '.join(sorted(names))}")
    return dataclasses.replace(cfg, **overrides)


def make_config(preset: str = "paper", **overrides: Any) -> Config:
    """The named preset with `overrides` applied on top."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    cfg = replace(Config(), preset=preset, **{**PRESETS[preset], **overrides})
    refuse_unused_choices(cfg, overrides)
    return cfg


def refuse_unused_choices(cfg: Config, chosen: Iterable[str]) -> None:
    """Raise ConfigError for a field the user chose (`chosen`: their names) that `cfg` does not use: it would change
    the run folder's name and not the run: prune_rate_output with global pruning, which ranks every layer at
    prune_rate; saliency_batch_size without a snip or grasp control. Checked where a user's choices meet a preset
    (make_config, a sweep's grid), not when a saved config is read back."""
    if "saliency_batch_size" in chosen and not any(parse(c).mask.startswith(("snip", "grasp")) for c in cfg.controls):
        raise ConfigError(
            "saliency_batch_size applies to the snip and grasp mask rules only, and no control of this config uses "
            "them; add one to --controls, or leave saliency_batch_size out"
        )
    if "prune_rate_output" in chosen and cfg.global_pruning:
        raise ConfigError(
            "prune_rate_output applies to layer-wise pruning only, and this config prunes globally; "
            "add global_pruning=False (--global-pruning false)"
        )


def show_value(value: Any) -> str:
    """A config value as the command line writes it: a tuple of names comma-separated ("none" when empty)."""
    return ",".join(value) or "none" if isinstance(value, tuple) else str(value)


def _normalized(name: str, kind: str, value: Any) -> Any:
    """`value` as the field's own type, so that config.json stays plain JSON and the hash stays the same: numpy and
    other integers as int, every real number of a float field (ints included) as float, a list of names as a tuple.
    Raises ConfigError for a value of another kind (a bool or a string where a number is
    meant, a string for a tuple)."""
    if kind == "int" and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if kind == "float" and isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            return float(value)  # 1 and 1.0 are one learning rate: one hash, one run folder
        except OverflowError:  # an integer such as 10**400
            raise ConfigError(f"{name} must be a finite real number, got a number too large for a float") from None
    if kind == "tuple[str, ...]":
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a tuple of names, such as ('reinit',), got {value!r}")
        value = tuple(value)
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name} must be a tuple of names (strings), got {value!r}")
        return value
    expected = {"int": (int,), "float": (float,), "bool": (bool,), "str": (str,)}[kind]
    if not isinstance(value, expected) or (kind != "bool" and isinstance(value, bool)):
        what = {"int": "an integer", "float": "a real number", "bool": "True or False", "str": "a string"}[kind]
        raise ConfigError(f"{name} must be {what}, got {value!r}")
    return value


def validate(cfg: Config) -> None:
    """Raise ConfigError naming the first unusable value."""
    for name in (
        "fc1_width",
        "fc2_width",
        "batch_size",
        "iterations",
        "eval_every",
        "val_size",
        "trials",
        "saliency_batch_size",
    ):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    for name in ("rounds", "rewind_iteration", "seed"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
    steps = (cfg.rounds + 1) * cfg.iterations
    if steps > MAX_STEPS:
        raise ConfigError(
            f"(rounds + 1) x iterations is {steps:,} training steps a network, more than the {MAX_STEPS:,} a run may "
            f"take (the paper's: 21 x 50,000); lower iterations or rounds"
        )
    for name in ("prune_rate", "prune_rate_output"):
        value = getattr(cfg, name)
        if not isinstance(value, (int, float)) or not 0 < value < 1:
            raise ConfigError(f"{name} must lie strictly between 0 and 1, got {value!r}")
    if not cfg.learning_rate > 0 or not math.isfinite(cfg.learning_rate):
        raise ConfigError(f"learning_rate must be positive and finite, got {cfg.learning_rate!r}")
    if cfg.init not in INITS:
        raise ConfigError(f"unknown init {cfg.init!r}; choose one of: {', '.join(INITS)}")
    if cfg.saliency_batch_size > MNIST_TRAIN_IMAGES - cfg.val_size:
        raise ConfigError(
            f"saliency_batch_size ({cfg.saliency_batch_size}) is more than the "
            f"{MNIST_TRAIN_IMAGES - cfg.val_size:,} training images that val_size ({cfg.val_size}) leaves"
        )
    if cfg.rewind_iteration >= cfg.iterations:
        raise ConfigError(f"rewind_iteration ({cfg.rewind_iteration}) must be below iterations ({cfg.iterations})")
    if cfg.val_size >= MNIST_TRAIN_IMAGES:
        raise ConfigError(
            f"val_size ({cfg.val_size}) must leave some of MNIST's {MNIST_TRAIN_IMAGES:,} training images to train on"
        )
    if cfg.batch_size > MNIST_TRAIN_IMAGES - cfg.val_size:
        raise ConfigError(
            f"batch_size ({cfg.batch_size}) is more than the {MNIST_TRAIN_IMAGES - cfg.val_size:,} training images "
            f"that val_size ({cfg.val_size}) leaves"
        )


def default_preset(device: torch.device) -> str:
    """The preset a run uses when none is named: `paper` on a GPU, `seed` (a run sized for a CPU) on a CPU.
    (`Config()` itself is the paper's setting; how long each preset takes on named machines: docs/performance.md.)"""
    return "paper" if device.type == "cuda" else "seed"


COPIES_PER_WEIGHT = 8  # what training holds per weight: weight, mask, masked weight, gradient, Adam's two moments,
# the trained weights and a rewind snapshot


def memory_needed(cfg: Config) -> int:
    """Bytes of float32 tensors that training the largest level of `cfg` holds: its networks' weights, held
    COPIES_PER_WEIGHT times (activations, a batch by the widths, are small beside them)."""
    weights = sum(out * (inputs + 1) for out, inputs in layer_shapes(cfg.fc1_width, cfg.fc2_width).values())
    return 4 * COPIES_PER_WEIGHT * weights * _largest_level(cfg)


def _largest_level(cfg: Config) -> int:
    """Networks trained together at a pruned level (the trials' tickets and controls), or at level 0 alone."""
    return cfg.trials * (1 + (len(cfg.controls) if cfg.rounds else 0))


def check_memory(cfg: Config, device: torch.device) -> None:
    """Raise ConfigError, before anything is allocated, if `cfg`'s model cannot fit in `device`'s memory (all of it,
    counting what other programs use as free): a width of a billion would otherwise fail deep inside torch."""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
    elif hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    else:  # no way to ask: torch's own error will say
        return
    needed = memory_needed(cfg)
    if needed > total:
        raise ConfigError(
            f"the model does not fit: {_largest_level(cfg)} network(s) of widths "
            f"{INPUT_SIZE}-{cfg.fc1_width}-{cfg.fc2_width}-{N_CLASSES} need about {needed / 2**30:,.1f} GiB to train, "
            f"and {device.type} has {total / 2**30:,.1f} GiB; choose smaller widths (--fc1-width, --fc2-width) or "
            f"fewer trials"
        )


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without one is a ConfigError."""
    if name not in DEVICES:
        raise ConfigError(f"unknown device {name!r}; choose one of: {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is available (use --device cpu)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)
