"""Benchmark: what a level costs as it trains more conditions (conditions.py), on this machine.

    python benchmarks/conditions.py                  # 2, 10 and 20 conditions, one trial: about 2 minutes on a CPU
    python benchmarks/conditions.py --conditions 2,20 --iterations 300

For each count, one pruned level of the `seed` preset (its widths, batch size and learning rate; `--iterations` steps
instead of its 4,295, evaluations every half) with the ticket and the first controls of CONTROLS: the time to make the
level's masks (every mask rule of those controls, SNIP's and SynFlow's scores included) and the time to train the
level's networks in one stack, per network. A level's cost should grow with its number of networks, not faster.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lth_helpers import data_dir, full_masks, init_params, layer_shapes, load_mnist, make_config  # noqa: E402
from lth_helpers.conditions import mask_rules  # noqa: E402
from lth_helpers.experiment import _train_level, level_networks, next_masks  # noqa: E402

CONTROLS = (  # in the order they join: every start rule and the costliest mask rules early
    "reinit",
    "snip",
    "synflow",
    "ticket:signed_constant",
    "ticket:fine_tune",
    "grasp",
    "random_prune",
    "one_shot",
    "shuffle",
    "large_init",
    "magnitude_increase",
    "movement",
    "large_final_same_sign",
    "ticket:reshuffle",
    "snip_inverted",
    "snip_shuffled",
    "snip:reinit",
    "large_final_same_sign:signed_constant",
    "synflow_inverted",
    "grasp_inverted",
)


def level_cost(n_conditions: int, iterations: int, data) -> tuple[float, float]:
    """(seconds to make the masks, seconds to train) of one pruned level with `n_conditions` conditions."""
    cfg = make_config(
        "seed", trials=1, controls=CONTROLS[: n_conditions - 1], iterations=iterations, eval_every=iterations // 2
    )
    theta_0 = init_params([0], cfg.fc1_width, cfg.fc2_width, cfg.init)
    dense_masks = full_masks(1, layer_shapes(cfg.fc1_width, cfg.fc2_width))
    level_0 = dict.fromkeys(mask_rules(cfg.controls), dense_masks)
    trained = {"ticket": theta_0, "dense": theta_0}  # the weights' values do not change the cost
    start = time.perf_counter()
    masks = next_masks(cfg, 1, level_0, theta_0, theta_0, theta_0, data)
    made = time.perf_counter() - start
    networks = level_networks(cfg, 1, theta_0, masks, trained)
    start = time.perf_counter()
    _train_level(cfg, 1, networks, data, progress=False)
    return made, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="folder holding MNIST/raw (default: $LTH_DATA_DIR, else ./data)")
    parser.add_argument("--conditions", default="2,10,20", help="counts of conditions, comma-separated (2 to 21)")
    parser.add_argument("--iterations", type=int, default=600, help="training steps of the level")
    args = parser.parse_args()
    counts = [int(n) for n in args.conditions.split(",")]
    if not all(2 <= n <= len(CONTROLS) + 1 for n in counts):
        parser.error(f"--conditions: each count from 2 to {len(CONTROLS) + 1}")
    data = load_mnist(data_dir(args.data_dir), 5_000, torch.device("cpu"))
    level_cost(2, 50, data)  # warm-up: first calls of every kernel
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.iterations} iterations a level")
    print(f"{'conditions':>10} {'masks s':>8} {'train s':>8} {'train s per network':>20}")
    for n in counts:
        made, trained = level_cost(n, args.iterations, data)
        print(f"{n:>10} {made:>8.2f} {trained:>8.2f} {trained / n:>20.3f}", flush=True)


if __name__ == "__main__":
    main()
