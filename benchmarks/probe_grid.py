"""The linear probe's learning-rate grid, and which encoder is probed, on tuning runs' holdouts.

    .venv/bin/python benchmarks/probe_grid.py RUN_DIR [RUN_DIR ...] \
        [--rates 0.4 0.3 0.2 0.1 0.05 0.03 0.02 0.01] [--encoder online target]

Each ``RUN_DIR`` is a run made by ``benchmarks/tune_preset.py`` (with ``holdout`` in its
config; the test split is never read). For each encoder asked for (``online``, the paper's
and the benchmark's; ``target``, the moving average, with its own BatchNorm statistics), the
frozen features at the run's evaluation size go through:

* ``paper``: the benchmark's probe, the rate chosen from the paper's grid on 10% of the
  training rows;
* ``grid``: the same probe with the rate chosen from ``--rates``, on the same 10%;
* ``by_rate``: one probe per rate of ``--rates`` on all the training rows, scored on the
  holdout (a diagnostic: which rate the holdout itself prefers, never used to choose).

One JSON line per run and encoder on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from byol.evaluate import PAPER_LEARNING_RATES, extract_features, linear_probe
from byol.handover.load import encoder_from_state
from byol.state import read_state
from mirror_probe import holdout_split

EXTENDED_RATES = (0.4, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01)


def probe_grid(run_dir: Path, rates: tuple[float, ...], encoders: list[str]) -> list[dict]:
    """One row per encoder: the paper-grid, extended-grid and per-rate holdout top-1."""
    config, data, held_out = holdout_split(run_dir)
    checkpoint = run_dir / "checkpoints" / "last.pt"
    state = read_state(checkpoint)
    encoder, info = encoder_from_state(state, checkpoint)
    rows = []
    for which in encoders:
        encoder.load_state_dict(state.encoder_state(which), strict=True)
        encoder.eval()

        def features(images: torch.Tensor) -> torch.Tensor:
            return extract_features(encoder, images, mean=info.mean, std=info.std,
                                    size=info.image_size)  # fmt: skip

        train, test = features(data.images), features(held_out.images)
        probe = partial(linear_probe, train, data.labels, test, held_out.labels,
                        seed=config.seed)  # fmt: skip
        paper, grid = probe(learning_rates=PAPER_LEARNING_RATES), probe(learning_rates=rates)
        rows.append({
            "run": str(run_dir), "encoder": which, "eval_size": info.image_size,
            "paper": {"top1": paper["top1"], "learning_rate": paper["learning_rate"]},
            "grid": {"top1": grid["top1"], "learning_rate": grid["learning_rate"],
                     "val_top1_by_lr": grid["val_top1_by_lr"]},
            "by_rate": {str(lr): probe(learning_rates=(lr,))["top1"] for lr in rates},
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", type=Path, nargs="+", help="tune_preset.py run folders")
    parser.add_argument("--rates", type=float, nargs="+", default=list(EXTENDED_RATES))
    parser.add_argument("--encoder", nargs="+", choices=("online", "target"),
                        default=["online"])  # fmt: skip
    args = parser.parse_args()
    for run_dir in args.run_dirs:
        probe_grid(run_dir, tuple(args.rates), args.encoder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
