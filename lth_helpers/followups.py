"""What the lottery ticket's follow-up papers say about LeNet-300-100 on MNIST, beside a run's numbers.

    rows = followup_rows(results, curves)   # (the paper says, paper, this run, agrees), as paper_comparison's

Zhou, Lan, Liu & Yosinski (NeurIPS 2019): supermasks, signs, the mask criteria. Lee, Ajanthan & Torr (ICLR 2019):
SNIP on LeNet-300-100. Frankle, Dziugaite, Roy & Carbin (ICLR 2021): masks found at initialization choose layer
densities, not weights. Renda, Frankle & Carbin (ICLR 2020): rewinding against fine-tuning. A statement is judged
only from a run that trained the conditions it compares and reached (within 10%) the size it names: 3.6% of the
weights, the paper's smallest size on its LeNet figures, unless the row names another. The papers' numbers are
quoted from their abstracts, where the row says so; the others state a direction and say where.
"""

from __future__ import annotations

import pandas as pd

from .conditions import label
from .report import before_training, format_percent, mean_std, nearest_level, percent_by_level

CHANCE = 10.0  # accuracy (%) of a guess among MNIST's ten classes
SAME = 0.5  # points: a difference of accuracy smaller than this counts as none ("the same or higher")
SMALL = 3.6  # % of weights: the size most statements are judged at
INIT_METHODS = ("snip", "grasp", "synflow")  # the pruning-at-initialization rules of Frankle et al. (2021)

Row = tuple[str, str, str, str]


def followup_rows(results: pd.DataFrame, curves: pd.DataFrame | None = None) -> list[Row]:
    """Every follow-up statement this run can judge (see the module docstring)."""
    acc = results.pivot_table(index="trial", columns=["condition", "level"], values="early_stop_test_accuracy")
    percent = percent_by_level(results)
    small = nearest_level(percent, SMALL, within=0.1)
    rows = [] if curves is None else _supermask_rows(curves, percent)
    if small is not None and small > 0:
        rows += _zhou_rows(acc, small, percent)
        rows += _frankle_2021_rows(acc, small, percent)
        rows += _renda_rows(acc, small, percent)
    rows += _snip_rows(acc, percent)
    return rows


def _has(acc: pd.DataFrame, *conditions: str) -> bool:
    return set(conditions) <= set(acc.columns.get_level_values(0))


def _gap(acc: pd.DataFrame, first: str, second: str, level: int) -> pd.Series:
    """Per trial: `first`'s accuracy minus `second`'s at `level` (points)."""
    return acc[first, level] - acc[second, level]


def _at(level: int, percent: pd.Series) -> str:
    return f"at {format_percent(percent[level])}"


def _supermask_rows(curves: pd.DataFrame, percent: pd.Series) -> list[Row]:
    """Zhou et al. (2019), abstract: "Supermasks, masks that can be applied to an untrained, randomly initialized
    network to produce a model with performance far better than chance (86% on MNIST ...)", which secondary accounts
    of the paper's Section 5 give as the large final, same sign mask on signed constants."""
    supermask = "large_final_same_sign:signed_constant"
    first = before_training(curves)
    at_init = first[(first.condition == supermask) & (first.level > 0)].groupby("level").test_accuracy.mean()
    if not len(at_init):
        return []
    level = int(at_init.idxmax())
    best = at_init[level]
    excess = best - CHANCE
    verdict = "yes" if excess >= (86 - CHANCE) / 2 else "direction only" if excess > SAME else "no"
    return [
        (
            "Zhou et al. 2019: a supermask, the large final, same sign mask on signed constants, scores far above "
            "chance untrained (test accuracy before training, %, the best level)",
            "86 (abstract)",
            f"{best:.1f} {_at(level, percent)}",
            verdict,
        )
    ]


def _zhou_rows(acc: pd.DataFrame, small: int, percent: pd.Series) -> list[Row]:
    """Zhou et al. (2019): signs suffice to reinitialize ("signs are all you need to make the reinitialized network
    train", abstract); the criteria close to large final magnitude (Figure 2): magnitude increase and movement do
    about as well as large final, the one-shot ticket."""
    rows = []
    if _has(acc, "ticket", "ticket:signed_constant", "reinit"):
        signed, fresh = _gap(acc, "ticket", "ticket:signed_constant", small), _gap(acc, "ticket", "reinit", small)
        rows.append(
            (
                "Zhou et al. 2019: signs suffice: the ticket's mask on signed constants trains nearly as well as the "
                "ticket, on a fresh draw it does not (shortfall against the ticket, points)",
                "smaller with signs (abstract, Figure 4)",
                f"signed constant {mean_std(signed, '+.2f')}, random reinit {mean_std(fresh, '+.2f')} "
                f"{_at(small, percent)}",
                "yes" if signed.mean() < fresh.mean() - SAME else "no",
            )
        )
    criteria = [c for c in ("magnitude_increase", "movement", "large_final_same_sign") if _has(acc, c, "one_shot")]
    if criteria:
        gaps = {c: _gap(acc, c, "one_shot", small) for c in criteria}
        rows.append(
            (
                "Zhou et al. 2019: masks by magnitude increase and movement do about as well as large final "
                "magnitude (one-shot; against it, points)",
                "about as well (Figure 2)",
                "; ".join(f"{label(c)} {mean_std(g, '+.2f')}" for c, g in gaps.items()) + f" {_at(small, percent)}",
                "yes" if all(g.mean() > -1 for g in gaps.values()) else "no",
            )
        )
    return rows


def _frankle_2021_rows(acc: pd.DataFrame, small: int, percent: pd.Series) -> list[Row]:
    """Frankle, Dziugaite, Roy & Carbin (2021), abstract: the methods of pruning at initialization "surpass the
    trivial baseline of random pruning, [but] remain below the accuracy of magnitude pruning after training"; their
    accuracy "is the same or higher when randomly shuffling which weights these methods prune within each layer or
    sampling new initial values", unlike pruning after training. Their networks are larger (VGG, ResNet)."""
    methods = [m for m in INIT_METHODS if _has(acc, m)]
    rows = []
    if methods and _has(acc, "ticket", "random_prune"):
        above = {m: _gap(acc, m, "random_prune", small) for m in methods}
        below = {m: _gap(acc, "ticket", m, small) for m in methods}
        rows.append(
            (
                "Frankle et al. 2021: pruning at initialization beats random pruning and falls short of the ticket "
                "(points above random pruning; below the ticket)",
                "between the two (abstract)",
                "; ".join(f"{label(m)} {mean_std(above[m], '+.2f')}, {mean_std(-below[m], '+.2f')}" for m in methods)
                + f" {_at(small, percent)}",
                "yes" if all(above[m].mean() > 0 and below[m].mean() > 0 for m in methods) else "no",
            )
        )
    for ablation, suffix in (("shuffling within layers", "_shuffled"), ("a fresh draw", ":reinit")):
        pairs = [(m, f"{m}{suffix}") for m in methods if _has(acc, f"{m}{suffix}")]
        if not pairs:
            continue
        gaps = {m: _gap(acc, changed, m, small) for m, changed in pairs}
        rows.append(
            (
                f"Frankle et al. 2021: masks found at initialization lose nothing to {ablation} (points)",
                "the same or higher (abstract)",
                "; ".join(f"{label(m)} {mean_std(g, '+.2f')}" for m, g in gaps.items()) + f" {_at(small, percent)}",
                "yes" if all(g.mean() > -SAME for g in gaps.values()) else "no",
            )
        )
    hurt = [(name, c) for name, c in (("shuffling", "shuffle"), ("a fresh draw", "reinit")) if _has(acc, c)]
    if hurt and methods:  # the contrast with the methods at initialization (reinit alone: Frankle & Carbin's rows)
        gaps = {name: _gap(acc, c, "ticket", small) for name, c in hurt}
        rows.append(
            (
                "Frankle et al. 2021: unlike those masks, the ticket (pruned after training) loses to "
                + " and to ".join(gaps)
                + " (points)",
                "it loses (abstract)",
                "; ".join(f"{name} {mean_std(g, '+.2f')}" for name, g in gaps.items()) + f" {_at(small, percent)}",
                "yes" if all(g.mean() < -SAME for g in gaps.values()) else "no",
            )
        )
    return rows


def _renda_rows(acc: pd.DataFrame, small: int, percent: pd.Series) -> list[Row]:
    """Renda, Frankle & Carbin (2020), abstract: "Both rewinding techniques outperform fine-tuning". Here the
    learning rate is constant, so `fine_tune` trains the trained weights on at the same rate, for the same number
    of steps: fine-tuning and learning-rate rewinding at once (docs/conditions.md)."""
    if not _has(acc, "ticket", "ticket:fine_tune"):
        return []
    gaps = pd.concat([_gap(acc, "ticket", "ticket:fine_tune", lv) for lv in range(1, small + 1)], axis=1)
    ahead = int((gaps.mean() >= -SAME).sum())
    return [
        (
            "Renda et al. 2020: rewinding the weights is at least as accurate as retraining the trained weights for "
            "the same budget (rewound ticket against the fine-tuned one, points)",
            "yes (abstract)",
            f"at {ahead} of {gaps.shape[1]} levels down to {format_percent(percent[small])}; "
            f"{mean_std(gaps.iloc[:, -1], '+.2f')} {_at(small, percent)}",
            "yes" if ahead == gaps.shape[1] else "no",
        )
    ]


def _snip_rows(acc: pd.DataFrame, percent: pd.Series) -> list[Row]:
    """Lee, Ajanthan & Torr (2019): SNIP prunes LeNet-300-100 to 5% and 2% of its weights in one shot at
    initialization with little loss of accuracy (Section 5, Table 2; its abstract: "virtually the same accuracy as
    the reference network"). Judged at each of those sizes the run reaches."""
    if not _has(acc, "snip", "ticket"):
        return []
    rows = []
    for size in (5.0, 2.0):
        level = nearest_level(percent, size, within=0.1)
        if level is None or level == 0:
            continue
        loss = acc["snip", level] - acc["ticket", 0]
        rows.append(
            (
                f"Lee et al. 2019: SNIP at {size:g}% of LeNet-300-100's weights, against the dense network (points)",
                "virtually the same (abstract, Table 2)",
                f"{mean_std(loss, '+.2f')} {_at(level, percent)}",
                "yes" if loss.mean() > -1 else "no",
            )
        )
    return rows
