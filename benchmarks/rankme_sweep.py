"""Label-free selection over a sweep (issue 21): does RankMe pick the best run?

Trains the ``fashion-mnist`` preset with one setting changed per run (learning rate, τ, crop
scale), every run for the same number of epochs (equal budget in steps, so the machine's noise
does not change what each run computes), then scores each run's last checkpoint without labels
(RankMe of the representations and of the projections, ``byol.selection.checkpoint_rankme``)
and with them (linear top-1 on the test split, ``byol eval``'s probe). Reported: the Spearman
correlation between RankMe and linear top-1 over the runs, and the linear top-1 of the run
RankMe picks against the best run's. The test split is only reported, never used to choose.

    .venv/bin/python benchmarks/rankme_sweep.py --epochs 2 --out runs/sweep [--write]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from scipy.stats import spearmanr

from byol.cli import main as byol_main
from byol.evaluation_run import run_evaluation
from byol.selection import checkpoint_rankme
from results_file import publish, report_header

#: One change to the preset per run (name, extra ``byol train`` arguments).
SWEEP: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("preset", ()),
    ("base_lr 1.0", ("--base-lr", "1.0")),
    ("base_lr 0.25", ("--base-lr", "0.25")),
    ("base_lr 12", ("--base-lr", "12")),
    ("tau 0.9", ("--target-decay", "0.9")),
    ("tau 0.999", ("--target-decay", "0.999")),
    ("crop scale 0.08", ("--crop-min-scale", "0.08")),
    ("crop scale 0.6", ("--crop-min-scale", "0.6")),
)


def log(message: str) -> None:
    print(f"rankme_sweep: {message}", file=sys.stderr, flush=True)


def run_one(name: str, extra: tuple[str, ...], out: Path, epochs: float, seed: int) -> dict:
    folder = out / name.replace(" ", "_")
    started = time.perf_counter()
    if not (folder / "summary.json").exists():
        argv = [
            "train",
            "--preset",
            "fashion-mnist",
            "--epochs",
            str(epochs),
            "--seed",
            str(seed),
            "--knn-every",
            "0",
            "--no-tensorboard",
            "--out",
            str(folder),
            *extra,
        ]
        if byol_main(argv) != 0:
            raise SystemExit(f"training {name} failed")
    checkpoint = folder / "checkpoints" / "last.pt"
    score = checkpoint_rankme(checkpoint)
    linear = run_evaluation(checkpoint, protocol="linear", write_run_file=False, quiet=True)
    row = {"name": name, "args": " ".join(extra), "rankme": score["rankme"],
           "rankme_projection": score["rankme_projection"], "linear_top1": linear["top1"],
           "seconds": time.perf_counter() - started}  # fmt: skip
    log(json.dumps(row))
    return row


def report(rows: list[dict], epochs: float, seed: int) -> list[str]:
    lines = ["| run | change | RankMe (repr.) | RankMe (proj.) | linear top-1 (%) |",
             "|---|---|---:|---:|---:|"]  # fmt: skip
    lines += [f"| {r['name']} | `{r['args'] or '-'}` | {r['rankme']:.1f} | "
              f"{r['rankme_projection']:.1f} | {100 * r['linear_top1']:.2f} |"
              for r in rows]  # fmt: skip
    top1 = [r["linear_top1"] for r in rows]
    best = max(rows, key=lambda r: r["linear_top1"])
    lines += ["", f"{len(rows)} runs of the fashion-mnist preset, {epochs:g} epochs each, seed "
              f"{seed}; best run by linear top-1: {best['name']} "
              f"({100 * best['linear_top1']:.2f}%)."]  # fmt: skip
    for key, label in (("rankme", "representations"), ("rankme_projection", "projections")):
        rho = spearmanr([r[key] for r in rows], top1).statistic
        picked = max(rows, key=lambda r: r[key])
        gap = 100 * (best["linear_top1"] - picked["linear_top1"])
        lines.append(f"- RankMe of the {label}: Spearman {rho:.2f} with linear top-1; it picks "
                     f"{picked['name']} ({100 * picked['linear_top1']:.2f}%, {gap:.2f} points "
                     "below the best).")  # fmt: skip
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/rankme-sweep"))
    parser.add_argument("--write", action="store_true", help="put the table in RESULTS.md")
    args = parser.parse_args()
    rows = [run_one(name, extra, args.out, args.epochs, args.seed) for name, extra in SWEEP]
    command = "python benchmarks/rankme_sweep.py " + shlex.join(sys.argv[1:])
    header = report_header("Label-free selection over a sweep (`benchmarks/rankme_sweep.py`)",
                           f"{args.epochs:g} epochs per run", command)  # fmt: skip
    publish("rankme_sweep", "\n".join([*header, *report(rows, args.epochs, args.seed)]),
            args.write)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
