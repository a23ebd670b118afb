"""Score one tuning run's encoder at several evaluation sizes, on its holdout only.

    .venv/bin/python benchmarks/eval_size.py RUN_DIR --sizes 20 24 28 32 36

``RUN_DIR`` is a run made by ``benchmarks/tune_preset.py`` (so with ``holdout`` in its config:
the held-out training images stand in for the test split, which is never read here). Each
size resizes the whole images (bilinear, antialiased) before the frozen encoder, then runs the
benchmark's scoring: a linear probe (learning rate chosen on 10% of the pre-training
features) and k-NN (k = 200, T = 0.1). One JSON line per size goes to stdout and is appended
to ``RUN_DIR/eval_sizes.jsonl``.

Why: the preset trains on 16 px views of 28 px images and evaluates on the whole image at
28 px. A random-resized crop magnifies the object on average, so the size at which the
encoder saw objects during training is not obviously the native one ("FixRes", Touvron et al.
2019); this measures where the evaluation size is best instead of assuming it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from byol.config import load_config
from byol.handover import load_encoder
from byol.train.monitor import load_training_data
from fashion_mnist import evaluate


def score_sizes(run_dir: Path, sizes: list[int], checkpoint: str = "last.pt") -> list[dict]:
    """The run's encoder scored on its holdout at each size; one row per size."""
    config = load_config(run_dir / "config.yaml")
    if not config.holdout:
        raise SystemExit(f"{run_dir / 'config.yaml'} has no holdout; this script never scores "
                         "on the test split")  # fmt: skip
    data, monitor = load_training_data(config)
    encoder, info = load_encoder(run_dir / "checkpoints" / checkpoint)
    rows = []
    for size in sizes:
        scores = evaluate(encoder, data, monitor.queries, info.mean, info.std, size, config.seed)
        rows.append({"run": str(run_dir), "checkpoint": checkpoint, "eval_size": size,
                     "n_pretrain": len(data), "n_scored": len(monitor.queries),
                     **scores})  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a tune_preset.py run folder")
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 24, 28, 32, 36])
    parser.add_argument("--checkpoint", default="last.pt")
    args = parser.parse_args()
    with (args.run_dir / "eval_sizes.jsonl").open("a") as out:
        for row in score_sizes(args.run_dir, args.sizes, args.checkpoint):
            print(json.dumps(row), flush=True)
            out.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
