"""What a network of a level can be: a mask rule (which weights it keeps) crossed with a start rule (the values they
start from), each rule one entry of this module.

    parse("ticket:signed_constant")      # Condition(mask='ticket', start='signed_constant')
    canonical("ticket:reinit")           # 'reinit': today's names keep their meaning
    label("snip:reinit"), style("snip:reinit")

The winning ticket is the mask rule `ticket` (iterative magnitude pruning) on the start rule `rewind` (theta_0, or
theta_k with late rewinding). Every other condition is a control, named `MASK` (on the rewind start) or `MASK:START`;
`reinit` is the ticket's mask on a fresh draw, as in Frankle & Carbin (2019). Each mask rule keeps, at every level,
the ticket's sparsity: its per-layer counts under layer-wise pruning, its total under global pruning, ranked across
layers. Adding a rule is one entry in MASK_RULES or START_RULES and its function (criteria.py, starts.py, pruning.py).

Every consumer reads conditions from here: the config's `controls`, the experiment, the run folder's masks, the
tables, the figures' labels and styles, the report, and `--help`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from . import criteria, starts
from .model import Params, init_params, select
from .pruning import Masks, random_masks_like


class ConditionError(ValueError):
    """A condition name that names no rule, or a combination that makes no sense; the message is one line."""


@dataclass
class MaskInputs:
    """What a mask rule may use to make the masks of one level (every trial at once)."""

    global_ranking: bool  # the config prunes globally: rules rank every layer together
    ticket: Masks  # the ticket's masks at this level: the sparsity every rule keeps
    previous: Masks  # this rule's own masks at the level before
    init: Params  # theta_0 of every trial
    dense: Params  # every trial's trained dense network (level 0's final weights)
    saliency_batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]]  # trial -> (images, labels), fixed per trial
    generator: torch.Generator  # seeded for this rule and level


@dataclass
class StartInputs:
    """What a start rule may use to make one network's starting weights (a stack of one)."""

    init_scheme: str  # the config's initialization (a fresh draw, the signed constant's scale)
    rewind_point: Params  # theta_0, or theta_k with late rewinding: where the ticket starts
    mask: Masks  # the network's mask
    trained: Params | None  # the trained weights its mask was cut from (fine-tuning starts there)
    seed: int  # seeded for this rule, trial and level


@dataclass(frozen=True)
class MaskRule:
    label: str  # how tables and figures call it
    color: str  # its colour in every figure (the start rule sets the marker and line)
    cite: str  # where it comes from
    make: Callable[[MaskInputs], Masks] | None  # the level's masks; None for the ticket, which the algorithm prunes
    nested: bool  # its masks only shrink from level to level (checked when a run folder is read)
    cut_from_dense: bool  # fine-tuning starts from the trained dense network, not the previous level's ticket
    make_inverted: Callable[[MaskInputs], Masks] | None = None  # a scored rule's form that keeps the lowest scores


def _scored(
    label: str, color: str, cite: str, score: Callable[[MaskInputs], criteria.Scores], cut_from_dense: bool = True
) -> MaskRule:
    """A rule that keeps the highest scores, at the ticket's sparsity; its inverted form keeps the lowest. Fixed
    scores make nested masks: the fewer weights a level keeps, the fewer of the same top ones."""

    def top(invert: bool) -> Callable[[MaskInputs], Masks]:
        def make(i: MaskInputs) -> Masks:
            scores = score(i)
            return criteria.keep_top(criteria.invert(scores) if invert else scores, i.ticket, i.global_ranking)

        return make

    return MaskRule(label, color, cite, top(False), True, cut_from_dense, top(True))


def _final(criterion: Callable[[Params, Params], criteria.Scores]) -> Callable[[MaskInputs], criteria.Scores]:
    """A criterion of Zhou et al. (2019): scores from theta_0 and the trial's trained dense network."""
    return lambda i: criterion(i.init, i.dense)


def _at_init(score: Callable[..., criteria.Scores]) -> Callable[[MaskInputs], criteria.Scores]:
    """A pruning-at-initialization score (SNIP, GraSP) of theta_0, each trial on its own fixed batch of images."""

    def scores(i: MaskInputs) -> criteria.Scores:
        per_trial = [score(select(i.init, [t]), *i.saliency_batch(t)) for t in range(len(i.init["fc1.weight"]))]
        return {name: torch.cat([s[name] for s in per_trial]) for name in per_trial[0]}

    return scores


def _synflow(invert: bool) -> Callable[[MaskInputs], Masks]:
    return lambda i: criteria.synflow_masks(i.init, i.ticket, i.global_ranking, invert=invert)


_ZHOU = "Zhou, Lan, Liu & Yosinski (NeurIPS 2019), Section 2"
_FRANKLE = "Frankle & Carbin (ICLR 2019), Section 2"
_BASE_MASK_RULES = {
    "ticket": MaskRule("winning ticket", "tab:blue", "Frankle & Carbin (ICLR 2019), Section 1", None, True, False),
    "random_prune": MaskRule(
        "random pruning",
        "tab:green",
        _FRANKLE,
        lambda i: random_masks_like(i.ticket, i.previous, i.generator),
        True,
        False,
    ),
    "one_shot": _scored("one-shot pruning", "tab:red", _FRANKLE, _final(criteria.large_final)),
    "shuffle": MaskRule(
        "shuffled ticket mask",
        "tab:olive",
        "Frankle, Dziugaite, Roy & Carbin (ICLR 2021), Section 5",
        lambda i: criteria.shuffle_masks(i.ticket, i.generator),
        False,
        False,
    ),
    "large_init": _scored("large init", "tab:purple", _ZHOU, _final(criteria.large_init)),
    "magnitude_increase": _scored("magnitude increase", "tab:brown", _ZHOU, _final(criteria.magnitude_increase)),
    "movement": _scored("movement", "tab:pink", _ZHOU, _final(criteria.movement)),
    "large_final_same_sign": _scored(
        "large final, same sign", "tab:cyan", _ZHOU, _final(criteria.large_final_same_sign)
    ),
    "snip": _scored("SNIP", "tab:orange", "Lee, Ajanthan & Torr (ICLR 2019)", _at_init(criteria.snip_scores)),
    "grasp": _scored("GraSP", "tab:gray", "Wang, Zhang & Grosse (ICLR 2020)", _at_init(criteria.grasp_scores)),
    # SynFlow's scores change as it prunes (its iterative schedule), so its masks at two sparsities need not nest.
    "synflow": MaskRule(
        "SynFlow",
        "black",
        "Tanaka, Kunin, Yamins & Ganguli (NeurIPS 2020)",
        _synflow(False),
        False,
        True,
        _synflow(True),
    ),
}
INVERTED = "_inverted"  # the suffix of a scored rule's inverted form: snip_inverted keeps SNIP's lowest scores
SHUFFLED = "_shuffled"  # the suffix of a rule's shuffled form: snip_shuffled is SNIP's mask permuted in each layer
_FRANKLE_2021 = "Frankle, Dziugaite, Roy & Carbin (ICLR 2021), Section 5"


def _shuffled(rule: MaskRule) -> Callable[[MaskInputs], Masks]:
    return lambda i: criteria.shuffle_masks(rule.make(i), i.generator)


# Frankle et al. (2021)'s ablations of a scored rule, which ask whether it chose weights or only layer densities:
# the inverted form keeps the lowest scores; the shuffled form permutes its mask within each layer (random pruning
# at the rule's own per-layer densities; `shuffle` is the ticket's).
MASK_RULES: dict[str, MaskRule] = {
    **_BASE_MASK_RULES,
    **{
        f"{name}{INVERTED}": MaskRule(
            f"{rule.label}, inverted", rule.color, _FRANKLE_2021, rule.make_inverted, rule.nested, rule.cut_from_dense
        )
        for name, rule in _BASE_MASK_RULES.items()
        if rule.make_inverted
    },
    **{
        f"{name}{SHUFFLED}": MaskRule(
            f"{rule.label}, shuffled", rule.color, _FRANKLE_2021, _shuffled(rule), False, rule.cut_from_dense
        )
        for name, rule in _BASE_MASK_RULES.items()
        if rule.make_inverted
    },
}


@dataclass(frozen=True)
class StartRule:
    label: str  # how tables and figures call it, after the mask's label
    marker: str  # its marker and line style in every figure
    linestyle: str
    cite: str
    make: Callable[[StartInputs], Params]
    # Starts from the trained weights the mask was cut from: a run keeps them for the next level, and the network's
    # accuracy before training is a trained network's, no mask's alone.
    trained: bool = False


def _reinit(s: StartInputs) -> Params:
    fc1_width, fc2_width = (s.rewind_point[f"{name}.weight"].shape[-1] for name in ("fc2", "fc3"))
    return init_params([s.seed], fc1_width, fc2_width, s.init_scheme)


def _fine_tune(s: StartInputs) -> Params:
    if s.trained is None:  # a level-0 network has no trained weights to start from; the caller never asks
        raise ValueError("fine-tuning needs the trained weights the mask was cut from")
    return s.trained


START_RULES: dict[str, StartRule] = {
    "rewind": StartRule("rewound", "o", "-", "Frankle & Carbin (ICLR 2019), Section 1", lambda s: s.rewind_point),
    "reinit": StartRule("random reinit", "s", "--", "Frankle & Carbin (ICLR 2019), Section 2", _reinit),
    "reshuffle": StartRule(
        "reshuffled", "v", ":", _ZHOU, lambda s: starts.reshuffle(s.rewind_point, s.mask, _generator(s.seed))
    ),
    "signed_constant": StartRule(
        "signed constant", "P", "-.", _ZHOU, lambda s: starts.signed_constant(s.rewind_point, s.mask, s.init_scheme)
    ),
    "fine_tune": StartRule(
        "fine-tuned", "X", (0, (5, 1)), "Renda, Frankle & Carbin (ICLR 2020)", _fine_tune, trained=True
    ),
}
DEFAULT_START = "rewind"
LEGACY = {"reinit": ("ticket", "reinit")}  # the names whose meaning predates the MASK:START form


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@dataclass(frozen=True)
class Condition:
    mask: str
    start: str


def parse(name: str) -> Condition:
    """The mask rule and start rule of a condition name (`MASK`, `MASK:START` or a legacy name such as `reinit`);
    raises ConditionError naming the known rules."""
    if name in LEGACY:
        return Condition(*LEGACY[name])
    mask, colon, start = name.partition(":")
    where = f" in {name!r}" if colon else ""
    if mask not in MASK_RULES:
        raise ConditionError(f"unknown mask rule {mask!r}{where}; known mask rules: {', '.join(MASK_RULES)}")
    if colon and start not in START_RULES:
        raise ConditionError(f"unknown start rule {start!r}{where}; known start rules: {', '.join(START_RULES)}")
    return Condition(mask, start or DEFAULT_START)


def is_condition(name: object) -> bool:
    """Whether `name` is a condition's one name (canonical), as the tables hold them."""
    try:
        return isinstance(name, str) and (name == "ticket" or canonical(name) == name)
    except ConditionError:
        return False


def canonical(name: str) -> str:
    """The one name of a condition: `MASK` on the rewind start, `reinit` for the ticket's mask on a fresh draw,
    `MASK:START` otherwise."""
    condition = parse(name)
    for legacy, pair in LEGACY.items():
        if (condition.mask, condition.start) == pair:
            return legacy
    return condition.mask if condition.start == DEFAULT_START else f"{condition.mask}:{condition.start}"


def check_controls(controls: tuple[str, ...]) -> tuple[str, ...]:
    """`controls` in canonical names and in the registry's order (one set of conditions, one config, whatever order it
    was given in); raises ConditionError for an unknown rule, the ticket itself, or a condition named twice (`reinit`
    and `ticket:reinit` are one)."""
    names = [canonical(c) for c in controls]
    if "ticket" in names:
        raise ConditionError("ticket (ticket:rewind) is the winning ticket itself, always trained; it is no control")
    for i, name in enumerate(names):
        if name in names[:i]:
            first = controls[names.index(name)]
            raise ConditionError(
                f"{name} is named twice"
                + (f" ({first} and {controls[i]} are one condition)" if first != controls[i] else "")
            )
    return tuple(sorted(names, key=order))


def label(name: str) -> str:
    """How tables and figures call a condition: `random reinit`, `SNIP`, `winning ticket, signed constant`."""
    condition = parse(name)
    if name in LEGACY:
        return START_RULES[condition.start].label
    mask = MASK_RULES[condition.mask].label
    return mask if condition.start == DEFAULT_START else f"{mask}, {START_RULES[condition.start].label}"


def style(name: str) -> dict[str, Any]:
    """Matplotlib keywords for a condition: the mask rule's colour (hollow markers for an inverted rule), the start
    rule's marker and line, so that one colour is one mask and one line is one start."""
    condition = parse(name)
    start = START_RULES[condition.start]
    kwargs = dict(color=MASK_RULES[condition.mask].color, marker=start.marker, linestyle=start.linestyle)
    if condition.mask.endswith(INVERTED):
        kwargs["markerfacecolor"] = "none"
    if condition.mask.endswith(SHUFFLED):
        kwargs["markerfacecolor"] = "white"
        kwargs["markeredgecolor"] = "black"
    return kwargs


def order(name: str) -> tuple[int, int]:
    """A condition's place in tables and legends: by mask rule, then start rule, as the registry lists them."""
    condition = parse(name)
    return list(MASK_RULES).index(condition.mask), list(START_RULES).index(condition.start)


def mask_rules(controls: tuple[str, ...]) -> tuple[str, ...]:
    """The mask rules whose masks a level's mask file holds for a config with `controls`: the ticket's and the
    random control's always (as every run folder has held them), then those of the controls, in MASK_RULES' order."""
    used = {"ticket", "random_prune", *(parse(c).mask for c in controls)}
    return tuple(name for name in MASK_RULES if name in used)


def starts_trained(name: str) -> bool:
    """Whether the condition `name` starts from trained weights (its start rule's `trained`)."""
    return START_RULES[parse(name).start].trained


def fine_tunes(controls: tuple[str, ...]) -> bool:
    """Whether a config with `controls` fine-tunes: each level then keeps every trial's trained ticket
    (trained/level_NN.pt), which the next level's fine-tuned networks start from."""
    return any(starts_trained(c) for c in controls)


def start_iteration(rewind_iteration: int, level: int) -> int:
    """Where a level's training starts: level 0 trains from 0 to T; a pruned level, rewound to iteration k, trains
    from k to T (Frankle, Dziugaite, Roy & Carbin, ICML 2020; open_lth), every condition alike so that each trains
    the same number of steps."""
    return rewind_iteration if level else 0


def help_text() -> str:
    """The controls' names for `--help` and the config's field help."""
    masks = ", ".join(MASK_RULES)
    return (
        f"controls trained beside the ticket, comma-separated, each MASK or MASK:START (legacy: reinit = "
        f"ticket:reinit). Mask rules: {masks}. Start rules: {', '.join(START_RULES)} (default {DEFAULT_START})"
    )
