"""What a winning ticket buys at inference: dead units, multiply-adds, and three ways to run it.

    forms = inference_forms(params, masks)     # one network's trained weights and masks
    compact = forms["compact"]                 # a smaller dense MLP, the same function
    table = inference_table(run.trained_tickets(), run.ticket_masks(), x)   # every level of a RunFolder

A masked dense layer still multiplies by every zero, so pruned training and masked inference cost
what dense ones do. A pruned network is only cheaper when it is run as a smaller or a sparse one:
- compact: drop the dead units (an input pixel whose outgoing weights are all pruned, a hidden unit
  whose incoming or outgoing weights are all pruned) and keep a smaller dense MLP. A unit with no
  incoming weights still outputs relu(bias), a constant: it is folded into the next layer's bias,
  so the compact network computes exactly the same function.
- sparse: the masked weights as CSR matrices (torch.sparse), multiplying only the non-zeros (empty
  rows and columns cost nothing in CSR, so it needs no compaction).
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .model import INPUT_SIZE, LAYERS, Params
from .report import format_percent

FORMS = ("dense", "compact", "sparse")  # dense: the masked network as trained, zeros multiplied too
BATCH_SIZES = (1, 1000)


class InferenceMLP(nn.Module):
    """A three-layer MLP for inference only: optionally reads a subset of the input pixels; dense or CSR weights.

    Dense weights run batch-major (x @ W.T, as nn.Linear); CSR weights run feature-major (W @ x.T),
    the orientation in which torch's sparse-dense product is fast.
    """

    def __init__(self, weights: list[torch.Tensor], biases: list[torch.Tensor], inputs: torch.Tensor | None = None):
        super().__init__()
        self.sparse = weights[0].layout == torch.sparse_csr
        self.register_buffer("inputs", inputs)  # indices of the input pixels read, or None for all
        for name, w, b in zip(LAYERS, weights, biases):
            self.register_buffer(f"{name}_weight", w)
            self.register_buffer(f"{name}_bias", b[:, None].contiguous() if self.sparse else b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, 784) -> logits (batch, 10)."""
        if self.inputs is not None:
            x = x.index_select(1, self.inputs)
        h = feature_major(x) if self.sparse else x
        for name in LAYERS:
            weight, bias = getattr(self, f"{name}_weight"), getattr(self, f"{name}_bias")
            h = torch.addmm(bias, weight, h) if self.sparse else F.linear(h, weight, bias)
            h = F.relu(h) if name != "fc3" else h
        return h.T if self.sparse else h

    def n_bytes(self) -> int:
        """Bytes of every tensor the network needs: weights, biases, indices."""
        return sum(_tensor_bytes(t) for t in self.buffers())

    def shape(self) -> str:
        """Layer widths, input to output, e.g. '512-180-61-10'."""
        n_inputs = INPUT_SIZE if self.inputs is None else len(self.inputs)
        return "-".join(str(n) for n in (n_inputs, *(len(getattr(self, f"{n}_bias")) for n in LAYERS)))


def feature_major(x: torch.Tensor, block: int = 256) -> torch.Tensor:
    """x.T as a contiguous tensor, copied in blocks of rows that stay in cache.

    torch's sparse x dense product wants a contiguous dense operand, and a plain x.T.contiguous() of a
    large batch strides through memory column by column; on a CPU it can take longer than the sparse
    product itself. Copied in blocks of rows, both sides of the copy stay in cache.
    """
    out = x.new_empty(x.shape[1], x.shape[0])
    for start in range(0, x.shape[0], block):
        out[:, start : start + block] = x[start : start + block].T
    return out


def _tensor_bytes(t: torch.Tensor) -> int:
    if t.layout == torch.sparse_csr:
        return sum(_tensor_bytes(p) for p in (t.crow_indices(), t.col_indices(), t.values()))
    return t.numel() * t.element_size()


def to_csr(dense: torch.Tensor) -> torch.Tensor:
    """CSR with int32 indices: half the index bytes of torch's default int64."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta": the ops used here are stable
        csr = dense.to_sparse_csr()
        return torch.sparse_csr_tensor(
            csr.crow_indices().int(), csr.col_indices().int(), csr.values(), csr.shape, check_invariants=True
        )


def dead_units(masks: dict[str, torch.Tensor]) -> dict[str, int]:
    """Units with no surviving weight in or out, per layer, for one network's masks (layer -> (out, in)): `_dead_in`
    counts a hidden layer's units with no weight in, `_dead_out` those with weights in but none out, so that each dead
    unit counts once and the two add up to the layer's dead units."""
    w1, w2, w3 = (masks[name].bool() for name in LAYERS)
    fc1_in, fc2_in = w1.any(1), w2.any(1)
    return {
        "dead_inputs": int((~w1.any(0)).sum()),
        "fc1_dead_in": int((~fc1_in).sum()),
        "fc1_dead_out": int((fc1_in & ~w2.any(0)).sum()),
        "fc2_dead_in": int((~fc2_in).sum()),
        "fc2_dead_out": int((fc2_in & ~w3.any(0)).sum()),
    }


def compact(params: Params, masks: dict[str, torch.Tensor]) -> InferenceMLP:
    """One network (params and masks without the stack dimension) without its dead units, the same function."""
    weights = [params[f"{n}.weight"] * masks[n] for n in LAYERS]
    biases = [params[f"{n}.bias"].clone() for n in LAYERS]
    keep = [torch.ones(INPUT_SIZE, dtype=torch.bool)] + [torch.ones(len(b), dtype=torch.bool) for b in biases[:2]]
    changed = True
    while changed:  # removing a unit can leave the units feeding it without any outgoing weight
        changed = False
        for layer in (1, 2):  # hidden layers fc1 (layer 1) and fc2 (layer 2): keep[layer] marks their units
            w_in, w_out = weights[layer - 1], weights[layer]
            no_out = ~(w_out != 0).any(0) & keep[layer]
            no_in = ~(w_in[:, keep[layer - 1]] != 0).any(1) & keep[layer] & ~no_out
            if no_in.any():  # a constant relu(bias): fold it into the next layer's bias
                biases[layer] += w_out[:, no_in] @ F.relu(biases[layer - 1][no_in])
                w_out[:, no_in] = 0
            drop = no_out | no_in
            if drop.any():
                keep[layer] &= ~drop
                w_in[drop] = 0
                changed = True
        dead_inputs = ~(weights[0] != 0).any(0) & keep[0]
        if dead_inputs.any():
            keep[0] &= ~dead_inputs
            changed = True
    # Reading a subset of the pixels is a strided gather, not free: only when a pixel is dead.
    inputs = keep[0].nonzero().flatten().int() if not keep[0].all() else None
    kept = [weights[0][keep[1]][:, keep[0]], weights[1][keep[2]][:, keep[1]], weights[2][:, keep[2]]]
    return InferenceMLP([w.contiguous() for w in kept], [biases[0][keep[1]], biases[1][keep[2]], biases[2]], inputs)


def inference_forms(params: Params, masks: dict[str, torch.Tensor]) -> dict[str, InferenceMLP]:
    """The three ways to run one pruned network (params and masks without the stack dimension)."""
    weights = [(params[f"{n}.weight"] * masks[n]).contiguous() for n in LAYERS]
    biases = [params[f"{n}.bias"] for n in LAYERS]
    return {
        "dense": InferenceMLP(weights, biases),
        "compact": compact(params, masks),
        "sparse": InferenceMLP([to_csr(w) for w in weights], biases),
    }


@torch.inference_mode()
def median_latencies(
    modules: Mapping[str, nn.Module], x: torch.Tensor, repeats: int = 30, warmup: int = 5
) -> dict[str, float]:
    """Median seconds of one forward pass over `x` for each module (on CUDA, synchronized each pass).

    The modules take turns, one pass each, so that the machine's drift and hiccups fall on all of them
    alike rather than on whichever was timed last, and the order rotates every round, because a pass's
    place in the round changes its time (measured with two copies of the same network).
    """
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    for module in modules.values():
        for _ in range(warmup):
            module(x)
    times: dict[str, list[float]] = {name: [] for name in modules}
    names = list(modules)
    for round_ in range(repeats):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            module = modules[name]
            sync()
            start = time.perf_counter()
            module(x)
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def level_inference_row(
    params: Params, masks: dict[str, torch.Tensor], x: torch.Tensor, repeats: int = 30, cuda: bool = False
) -> dict:
    """Sizes, multiply-adds, dead units and latencies (CPU, and CUDA if asked) of one pruned network."""
    forms = inference_forms(params, masks)
    remaining = int(sum(int(m.sum()) for m in masks.values()))
    compact_weights = [forms["compact"].get_buffer(f"{n}_weight") for n in LAYERS]
    row = {
        "weights_remaining": remaining,
        "dense_macs": sum(m.numel() for m in masks.values()),
        "compact_macs": sum(w.numel() for w in compact_weights),
        "sparse_macs": remaining,
        "compact_shape": forms["compact"].shape(),
        **dead_units(masks),
    }
    row.update({f"{form}_bytes": module.n_bytes() for form, module in forms.items()})
    for device in ("cpu", "cuda") if cuda else ("cpu",):
        on_device, inputs = {form: module.to(device) for form, module in forms.items()}, x.to(device)
        for batch in BATCH_SIZES:
            for form, seconds in median_latencies(on_device, inputs[:batch], repeats).items():
                row[f"{form}_ms_batch{batch}" + ("_cuda" if device == "cuda" else "")] = 1000 * seconds
    return row


def smallest_form(params: Params, masks: dict[str, torch.Tensor]) -> dict[str, Any]:
    """One network in whichever form is smallest (dense, compact or CSR): its tensors, and the form's name under
    "form". Saved with torch.save (or a run folder's `save`), `load_ticket` reads it back."""
    forms = inference_forms(params, masks)
    form = min(FORMS, key=lambda name: forms[name].n_bytes())
    return {"form": form, **dict(forms[form].named_buffers())}


def load_ticket(path: Path) -> InferenceMLP:
    """A ticket saved from `smallest_form`, ready to run."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch notes that it validates the CSR tensors it loads
        state = torch.load(path, weights_only=True)
    biases = [state[f"{n}_bias"].flatten() for n in LAYERS]  # CSR forms keep them as columns
    return InferenceMLP([state[f"{n}_weight"] for n in LAYERS], biases, state.get("inputs"))


def first_network(stack: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The first network (trial 0) of a stack of params or masks, without the stack dimension."""
    return {key: value[0] for key, value in stack.items()}


def inference_table(
    tickets: Mapping[int, Params],
    masks: Mapping[int, dict[str, torch.Tensor]],
    x: torch.Tensor,
    repeats: int = 30,
    cuda: bool | None = None,
) -> pd.DataFrame:
    """One row per level of `tickets` (level -> trained weights, a stack whose first network is drawn; `masks`
    alike): that network in every form, timed on the CPU and, where present (or `cuda` says so), on CUDA (columns
    ending in _cuda); `x` supplies the inputs. A RunFolder gives both: `trained_tickets()`, `ticket_masks()`."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    rows = []
    for level in tickets:
        params, kept = first_network(tickets[level]), first_network(masks[level])
        row = level_inference_row(params, kept, x.cpu(), repeats, cuda)
        rows.append({"level": level, "percent_remaining": 100 * row["weights_remaining"] / row["dense_macs"], **row})
    return add_best_forms(pd.DataFrame(rows))


def add_best_forms(table: pd.DataFrame) -> pd.DataFrame:
    """Add, for every batch size (and device), the fastest form and its speedup over dense.

    Where compaction removed nothing, the compact network is the dense network: its time is a second
    sample of the same computation, so it is not credited as a faster form (that would be timing noise).
    """
    same_as_dense = table.compact_macs == table.dense_macs
    for suffix in ("", "_cuda") if "dense_ms_batch1_cuda" in table else ("",):
        for batch in BATCH_SIZES:
            latency = table[[f"{form}_ms_batch{batch}{suffix}" for form in FORMS]].copy()
            latency.loc[same_as_dense, f"compact_ms_batch{batch}{suffix}"] = float("inf")
            table[f"best_form_batch{batch}{suffix}"] = latency.idxmin(axis=1).str.split("_").str[0]
            table[f"speedup_batch{batch}{suffix}"] = table[f"dense_ms_batch{batch}{suffix}"] / latency.min(axis=1)
    return table


def inference_summary(table: pd.DataFrame) -> pd.DataFrame:
    """The inference table for reading: size, multiply-adds and latency of each form, per level."""
    out = pd.DataFrame(
        {
            "% left": table.percent_remaining.round(2),
            "compact shape": table.compact_shape,
            "dead inputs": table.dead_inputs,
            "MACs compact": table.compact_macs,
            "MACs sparse": table.sparse_macs,
            "KB dense": (table.dense_bytes / 1024).round().astype(int),
            "KB compact": (table.compact_bytes / 1024).round().astype(int),
            "KB sparse": (table.sparse_bytes / 1024).round().astype(int),
        },
        index=table.level.rename("level"),
    )
    for batch in BATCH_SIZES:
        for form in FORMS:
            out[f"ms {form} b{batch}"] = table[f"{form}_ms_batch{batch}"].round(3)
        out[f"speedup b{batch}"] = table[f"speedup_batch{batch}"].round(2)
    return out


def inference_conclusions(table: pd.DataFrame) -> list[str]:
    """Sentences about what the tickets save at inference, every number read from `table`."""
    last = table.iloc[-1]
    at = f"{format_percent(last.percent_remaining)} of weights"
    sizes = {form: last[f"{form}_bytes"] for form in FORMS}
    smallest = min(sizes, key=sizes.get)
    sentences = [
        f"At {at} the ticket needs {last.sparse_macs:,} multiply-adds per example run sparse (CSR), against "
        f"{last.dense_macs:,} dense; compaction leaves a {last.compact_shape} network ({last.dead_inputs} dead input "
        f"pixels, {last.fc1_dead_in + last.fc1_dead_out} dead fc1 units, {last.fc2_dead_in + last.fc2_dead_out} dead "
        f"fc2 units) with {last.compact_macs:,}.",
        f"Its smallest form is {smallest}: {sizes[smallest] / 1024:,.0f} KB against "
        f"{sizes['dense'] / 1024:,.0f} KB dense."
        if smallest != "dense"
        else f"No form is smaller than the dense network ({sizes['dense'] / 1024:,.0f} KB) at {at}.",
    ]
    for batch in BATCH_SIZES:
        dense_ms, best = last[f"dense_ms_batch{batch}"], last[f"best_form_batch{batch}"]
        faster = table[table[f"speedup_batch{batch}"] > 1.05]
        if not len(faster):
            sentences.append(
                f"At batch {batch}, no form runs faster than the dense network ({dense_ms:.3f} ms at {at})."
            )
            continue
        first = faster.iloc[0]
        sentences.append(
            f"At batch {batch}, the ticket first runs faster than dense at "
            f"{format_percent(first.percent_remaining)} of weights "
            f"({first[f'speedup_batch{batch}']:.2f}x); at {at} the best form, {best}, takes "
            f"{last[f'{best}_ms_batch{batch}']:.3f} ms against {dense_ms:.3f} ms dense "
            f"({last[f'speedup_batch{batch}']:.2f}x)."
        )
    return sentences
