"""One tuning run of a preset within a wall-clock budget, scored on a holdout of the training
split (the test split is never used for a choice), or the table of earlier runs.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tune_preset.py NAME '{"base_lr": 8.0}' \
        --minutes 20 --seed 0
    .venv/bin/python benchmarks/tune_preset.py --table

A run pre-trains the preset plus the JSON overrides for ``--minutes`` with its schedules fitted
to that time (``schedule_to_time_limit``) on the training split less ``--holdout`` images
(the same images whatever the seed: ``byol train --holdout``), then scores the online encoder
at its evaluation size on the held-out images: a linear probe trained on the features of all
the pre-training images (learning rate chosen on 10% of them, as in the benchmark) and k-NN
(k = 200, T = 0.1) with the same images as the memory bank. Each run appends one JSON line to
``OUT/results.jsonl``; ``--table`` prints them as the Markdown table of docs/presets.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from byol.config import resolve
from byol.handover import load_encoder
from byol.train import Trainer
from byol.train.monitor import load_training_data
from fashion_mnist import evaluate, median_rate


def tuning_run(name: str, overrides: dict, *, preset: str, minutes: float, seed: int,
               holdout: int, out: Path) -> dict:  # fmt: skip
    """Pre-train one configuration and score it on the holdout; the result's JSON row."""
    run_dir = out / name
    shutil.rmtree(run_dir, ignore_errors=True)
    config = resolve({"preset": preset, "holdout": holdout, "seed": seed, "out": str(run_dir),
                      "time_limit": minutes, "schedule_to_time_limit": True, "knn_every": 0,
                      "tensorboard": False, "log_every": 50, "checkpoint_every": 10**9,
                      "num_workers": 0, **overrides})  # fmt: skip
    start = time.perf_counter()
    result = Trainer(config, show_progress=False).fit()
    train_seconds = time.perf_counter() - start
    data, monitor = load_training_data(config)
    encoder, info = load_encoder(run_dir / "checkpoints" / "last.pt")
    # The benchmark's scoring, with the holdout in the test split's place.
    scores = evaluate(encoder, data, monitor.queries, info.mean, info.std, info.image_size, seed)
    steps_per_epoch = len(data) // config.batch_size
    return {"name": name, "overrides": overrides, "seed": seed, "minutes": minutes,
            "steps": result.step, "epochs": round(result.step / steps_per_epoch, 2),
            "train_seconds": round(train_seconds, 1),
            "images_per_s": _rounded(median_rate(run_dir)), "eval_size": info.image_size,
            "linear_top1": scores["linear_top1"], "linear_lr": scores["linear_lr"],
            "knn_top1": scores["knn_top1"], "final_loss": result.loss}  # fmt: skip


def _rounded(rate: float | None) -> float | None:
    return None if rate is None else round(rate, 1)


def table(rows: list[dict]) -> str:
    """The runs as a Markdown table, in the order they were made."""
    lines = ["| run | change from the preset | seed | minutes | epochs | images/s | "
             "linear top-1 (holdout) | k-NN top-1 (holdout) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        change = ", ".join(f"`{k}` {v}" for k, v in r["overrides"].items()) or "—"
        linear, knn = 100 * r["linear_top1"], 100 * r["knn_top1"]
        lines.append(f"| {r['name']} | {change} | {r['seed']} | {r['minutes']:g} | "
                     f"{r['epochs']:.1f} | {r['images_per_s']:.0f} | {linear:.2f}% | "
                     f"{knn:.2f}% |")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", help="the run's name (its folder under --out)")
    parser.add_argument("overrides", nargs="?", default="{}",
                        help="JSON object of config keys changed from the preset")  # fmt: skip
    parser.add_argument("--preset", default="fashion-mnist")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--holdout", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=Path("runs/tune"))
    parser.add_argument("--table", action="store_true", help="print the table of the runs")
    args = parser.parse_args()
    results = args.out / "results.jsonl"
    if args.table:
        print(table([json.loads(x) for x in results.read_text().splitlines() if x.strip()]))
        return 0
    if not args.name:
        parser.error("give a run NAME (or --table)")
    try:
        overrides = json.loads(args.overrides)
    except json.JSONDecodeError as error:
        parser.error(f"overrides {args.overrides!r} are not JSON: {error}")
    if not isinstance(overrides, dict):
        parser.error(f"overrides {args.overrides!r} must be a JSON object")
    row = tuning_run(args.name, overrides, preset=args.preset, minutes=args.minutes,
                     seed=args.seed, holdout=args.holdout, out=args.out)  # fmt: skip
    print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with results.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
