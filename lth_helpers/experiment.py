"""The iterative magnitude pruning experiment (Frankle & Carbin 2019, Algorithm in Section 1), resumable.

    results = run_experiment(make_config("seed"), Path("runs/seed"), data)

For each trial: initialize theta_0 (1). At every level: train the ticket m * theta_0 (2), prune the
smallest surviving weights to get the next mask m (3), and rewind the survivors to theta_0 (4) for
the next level. The controls of each level (conditions.py) keep the ticket's sparsity with masks of
their own rule (random, one-shot, SNIP, ...) and start from values of their own rule (theta_0, a fresh
draw, a signed constant, the trained weights, ...). All networks of a level (trials x conditions)
train together as one stacked model.

Every level is saved in the run folder (runs.py) as soon as it is finished, so a rerun continues
after the last finished level. `run_experiment` opens the folder for the whole run; a caller that holds it open
already (the command line) runs the levels with `run_levels`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from .conditions import (
    MASK_RULES,
    START_RULES,
    MaskInputs,
    StartInputs,
    fine_tunes,
    mask_rules,
    parse,
    start_iteration,
)
from .config import TRAIN_METRICS, Config, ConfigError, check_memory
from .data import MNISTSplits
from .model import INPUT_SIZE, LAYERS, N_CLASSES, Params, concat, init_params, layer_shapes, select, to_device
from .pruning import Masks, build_model, count_remaining, full_masks, prune_by_magnitude
from .runs import DENSE, INIT, REWIND, RunFolder, masks_file, ticket_file, trained_file
from .training import DIVERGED_LOSS, DivergenceError, TrainResult, train_networks, training_split_metrics


class ExperimentError(RuntimeError):
    """Training diverged; the levels finished before are kept."""


@dataclass
class Network:
    """What one network of a level trains from: its starting weights and mask, and the order of its batches."""

    condition: str  # "ticket" or a control (conditions.py)
    trial: int
    params: Params  # a stack of one: where training starts
    masks: Masks  # a stack of one
    batch_seed: int  # order of the training examples; shared by the conditions of a trial and level


def derive_seed(base: int, *parts: object) -> int:
    """A 63-bit seed for one purpose (init, batches, reinit, ...), independent of every other."""
    digest = hashlib.sha256(repr((base, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# ---------------------------------------------------------------------------------------------
# The algorithm


def run_experiment(
    cfg: Config, out_dir: Path, data: MNISTSplits, *, overwrite: bool = False, progress: bool = True
) -> pd.DataFrame:
    """Run (or resume) every level of `cfg` in the run folder `out_dir`, which it opens and holds until the run
    ends; returns results.csv as a DataFrame.

    Refuses (ConfigError, before anything is written) data that do not match `cfg` and a model too big for the
    device's memory.
    """
    check_data(cfg, data)
    check_memory(cfg, data.train_x.device)
    with RunFolder.open(Path(out_dir), cfg, overwrite) as run:  # no other run can use the folder meanwhile
        return run_levels(cfg, run, data, progress)


def check_data(cfg: Config, data: MNISTSplits) -> None:
    """Raise ConfigError unless `data` is what `cfg` trains on: `cfg.val_size` validation images, one device, float32
    images and int64 labels of the ten classes paired, a batch's worth of training images. config.json records `cfg`, so
    it must hold."""
    tensors = vars(data)
    devices = {str(t.device) for t in tensors.values()}
    if len(devices) > 1:
        raise ConfigError(f"the data are on several devices ({', '.join(sorted(devices))}); move them to one")
    if len(data.val_y) != cfg.val_size:
        raise ConfigError(
            f"the data hold {len(data.val_y):,} validation images but val_size is {cfg.val_size:,}; "
            f"load them with load_mnist(root, cfg.val_size, device)"
        )
    for split in ("train", "val", "test"):
        x, y = tensors[f"{split}_x"], tensors[f"{split}_y"]
        if x.dim() != 2 or x.shape[1] != INPUT_SIZE or y.shape != x.shape[:1] or not len(y):
            raise ConfigError(
                f"{split}_x must be (n, {INPUT_SIZE}) images with n > 0 labels in {split}_y, "
                f"got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        if x.dtype != torch.float32 or y.dtype != torch.int64 or not 0 <= int(y.min()) <= int(y.max()) < N_CLASSES:
            raise ConfigError(
                f"{split}_x must be float32 images and {split}_y int64 labels from 0 to {N_CLASSES - 1}, "
                f"got {x.dtype} and {y.dtype} labels"
            )
    if cfg.batch_size > len(data.train_y):
        raise ConfigError(f"batch_size ({cfg.batch_size}) is more than the {len(data.train_y):,} training images")


def run_levels(cfg: Config, run: RunFolder, data: MNISTSplits, progress: bool = True) -> pd.DataFrame:
    """The algorithm, from the first level that `run`, a folder opened for `cfg`, has not finished to the last;
    returns results.csv as a DataFrame."""
    theta_0 = run.cached(
        INIT,
        lambda: init_params(
            [derive_seed(cfg.seed, "init", t) for t in range(cfg.trials)], cfg.fc1_width, cfg.fc2_width, cfg.init
        ),
    )
    if not run.exists(masks_file(0)):
        unpruned = full_masks(cfg.trials, layer_shapes(cfg.fc1_width, cfg.fc2_width))
        run.save_masks(0, dict.fromkeys(mask_rules(cfg.controls), unpruned))
    first, n_levels = run.levels_done, cfg.rounds + 1  # a resumed run starts after the levels already done
    dense = run.load(DENSE) if first else None  # every trial's trained dense network, read once
    for level in tqdm(range(first, n_levels), desc="levels", total=n_levels, initial=first, disable=not progress):
        masks = run.load_masks(level)
        rewind_point = run.load(REWIND) if level and cfg.rewind_iteration else theta_0
        trained = cut_from(cfg, run, level)
        networks = level_networks(cfg, level, rewind_point, masks, trained)
        result, train_metrics = _train_level(cfg, level, networks, data, progress)
        ticket = select(result.params, [i for i, net in enumerate(networks) if net.condition == "ticket"])
        run.save(ticket_file(level), select(ticket, [0]))  # trial 0, for export
        if level == 0:
            run.save(DENSE, ticket)  # every trial's trained dense network
            dense = to_device(ticket, "cpu")  # as a resumed run reads it back
        if level == 0 and cfg.rewind_iteration:
            run.save(REWIND, select(result.snapshot, list(range(cfg.trials))))
        if level < cfg.rounds and fine_tunes(cfg.controls):
            run.save(trained_file(level), ticket)  # what the next level's fine-tuned networks start from
        if level < cfg.rounds:
            run.save_masks(level + 1, next_masks(cfg, level + 1, masks, ticket, theta_0, dense, data))
        run.finish_level(level, level_rows(level, networks, result, train_metrics), curve_rows(level, networks, result))
    return run.results()


def next_masks(
    cfg: Config, level: int, masks: dict[str, Masks], trained: Params, theta_0: Params, dense: Params, data: MNISTSplits
) -> dict[str, Masks]:
    """The masks of `level`: the trained tickets pruned by magnitude (step 3), then each other mask rule's masks at
    the ticket's new sparsity."""
    ticket = prune_ticket(cfg, trained, masks["ticket"], data.train_x.device)
    new = {"ticket": ticket}
    for name in mask_rules(cfg.controls)[1:]:
        inputs = MaskInputs(
            global_ranking=cfg.global_pruning,
            ticket=ticket,
            previous=masks[name],
            init=theta_0,
            dense=dense,
            saliency_batch=lambda trial: saliency_batch(cfg, data, trial),
            generator=torch.Generator().manual_seed(derive_seed(cfg.seed, name, level)),
        )
        new[name] = MASK_RULES[name].make(inputs)
    return new


def saliency_batch(cfg: Config, data: MNISTSplits, trial: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images a trial's SNIP and GraSP scores are taken on: `cfg.saliency_batch_size` of them, chosen by
    a seed of their own, the same at every level."""
    generator = torch.Generator().manual_seed(derive_seed(cfg.seed, "saliency_batch", trial))
    index = torch.randperm(len(data.train_y), generator=generator)[: cfg.saliency_batch_size].to(data.train_x.device)
    return data.train_x[index].cpu(), data.train_y[index].cpu()


def cut_from(cfg: Config, run: RunFolder, level: int) -> dict[str, Params] | None:
    """The trained weights that the level's masks were cut from, for fine-tuning: the previous level's trained
    tickets (`ticket`) and the trained dense networks (`dense`); None where no condition fine-tunes."""
    if not level or not fine_tunes(cfg.controls):
        return None
    return {"ticket": run.load(trained_file(level - 1)), "dense": run.load(DENSE)}


def level_networks(
    cfg: Config,
    level: int,
    rewind_point: Params,
    masks: dict[str, Masks],
    trained: dict[str, Params] | None = None,
) -> list[Network]:
    """The ticket of every trial, then (after level 0) each control of every trial: its mask rule's mask, its start
    rule's weights. `trained` (see cut_from) is needed only where a control fine-tunes."""
    networks = []
    for condition in cfg.level_conditions(level):
        rule = parse(condition)
        for trial in range(cfg.trials):
            mask = select(masks[rule.mask], [trial])
            cut_from = None
            if trained is not None:
                cut_from = select(trained["dense" if MASK_RULES[rule.mask].cut_from_dense else "ticket"], [trial])
            start = StartInputs(
                init_scheme=cfg.init,
                rewind_point=select(rewind_point, [trial]),
                mask=mask,
                trained=cut_from,
                seed=derive_seed(cfg.seed, rule.start, trial, level),
            )
            params = START_RULES[rule.start].make(start)
            networks.append(Network(condition, trial, params, mask, derive_seed(cfg.seed, "batches", trial, level)))
    return networks


def prune_ticket(cfg: Config, trained: Params, masks: Masks, device: torch.device) -> Masks:
    """One round of magnitude pruning of the trained tickets: the masks of the next level."""
    model = build_model(to_device(trained, device), to_device(masks, device))
    rates = {"fc1": cfg.prune_rate, "fc2": cfg.prune_rate, "fc3": cfg.prune_rate_output}
    new = prune_by_magnitude(model, rates, cfg.prune_rate if cfg.global_pruning else None)
    return to_device(new, "cpu")


def _train_level(
    cfg: Config, level: int, networks: list[Network], data: MNISTSplits, progress: bool
) -> tuple[TrainResult, dict[str, torch.Tensor]]:
    """Train the level's networks in one stack; also returns their TRAIN_METRICS at the end of training (the paper
    reads generalization from training against test accuracy)."""
    device = data.train_x.device
    model = build_model(
        to_device(concat([n.params for n in networks]), device), to_device(concat([n.masks for n in networks]), device)
    )
    try:
        result = train_networks(
            model,
            data,
            iterations=cfg.iterations,
            batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate,
            eval_every=cfg.eval_every,
            batch_seeds=[n.batch_seed for n in networks],
            snapshot_iteration=cfg.rewind_iteration if level == 0 and cfg.rewind_iteration else None,
            start_iteration=start_iteration(cfg.rewind_iteration, level),
            desc=f"level {level}",
            progress=progress,
        )
    except DivergenceError as error:
        net = networks[error.network]
        kept = f"levels 0-{level - 1} are kept" if level else "no level had finished"
        raise ExperimentError(
            f"training diverged (loss {DIVERGED_LOSS}) at level {level}, condition {net.condition}, trial {net.trial}, "
            f"iteration {error.iteration}; {kept}; a lower learning_rate may help"
        ) from None
    return result, training_split_metrics(model, data)


# ---------------------------------------------------------------------------------------------
# Results as tables


def level_rows(
    level: int, networks: list[Network], result: TrainResult, train_metrics: dict[str, torch.Tensor]
) -> list[dict]:
    """One results.csv row per network of the level (its columns: tables.TABLE_COLUMNS, checked as it is written)."""
    total_weights = sum(m.numel() for m in networks[0].masks.values())
    val_loss = result.metrics["val_loss"]
    best = val_loss.argmin(dim=0)  # first evaluation with the lowest validation loss, per network
    rows = []
    for i, net in enumerate(networks):
        counts = {name: int(c) for name, c in count_remaining(net.masks).items()}
        remaining = sum(counts.values())
        rows.append(
            {
                "level": level,
                "condition": net.condition,
                "trial": net.trial,
                "weights_remaining": remaining,
                "percent_remaining": 100 * remaining / total_weights,
                **{f"{name}_remaining": counts[name] for name in LAYERS},
                "early_stop_iteration": result.iterations[best[i]],
                "early_stop_val_loss": float(val_loss[best[i], i]),
                "early_stop_test_accuracy": float(result.metrics["test_accuracy"][best[i], i]),
                "final_test_accuracy": float(result.metrics["test_accuracy"][-1, i]),
                "final_test_loss": float(result.metrics["test_loss"][-1, i]),
                **{f"final_{name}": float(train_metrics[name][i]) for name in TRAIN_METRICS},
                "train_seconds": result.seconds,  # the level's wall time, shared by the networks trained together
            }
        )
    return rows


def curve_rows(level: int, networks: list[Network], result: TrainResult) -> list[dict]:
    """One curves.csv row per network and evaluation point."""
    return [
        {
            "level": level,
            "condition": net.condition,
            "trial": net.trial,
            "iteration": iteration,
            **{name: float(values[k, i]) for name, values in result.metrics.items()},
        }
        for i, net in enumerate(networks)
        for k, iteration in enumerate(result.iterations)
    ]
