"""Few labels and no labels, on the checkpoints of one run (issue 21).

1. **Label-free selection**: for every checkpoint the run kept (``--keep-checkpoints``), RankMe
   of the representations and projections (``byol.selection.checkpoint_rankme``, no labels)
   and the linear top-1 (``byol eval``'s linear probe); the Spearman correlation between them,
   and the linear top-1 of the RankMe-picked checkpoint against the best one.
2. **Semi-supervised**: the last checkpoint fine-tuned on class-balanced fractions of the
   training labels against the same encoder trained from scratch on the same images
   (``byol eval --protocol finetune --baseline scratch``).

Usage (the run first, e.g. 10 minutes of the fashion-mnist preset with kept checkpoints)::

    byol train --preset fashion-mnist --time-limit 10 --schedule-to-time-limit \\
        --checkpoint-every 400 --keep-checkpoints 30 --out runs/fm10
    .venv/bin/python benchmarks/label_scarce.py runs/fm10 [--write]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

from scipy.stats import spearmanr

from byol.evaluation_run import run_evaluation
from byol.selection import checkpoint_rankme, checkpoints_of
from results_file import publish, report_header


def log(message: str) -> None:
    print(f"label_scarce: {message}", file=sys.stderr, flush=True)


def selection_rows(run: str, samples: int, probe_epochs: int) -> list[dict]:
    rows = []
    for path in checkpoints_of(run):
        started = time.perf_counter()
        score = checkpoint_rankme(path, samples=samples)
        linear = run_evaluation(path, protocol="linear", epochs=probe_epochs,
                                write_run_file=False, quiet=True)  # fmt: skip
        rows.append({**score, "linear_top1": linear["top1"]})
        log(f"step {score['step']}: RankMe {score['rankme']:.1f} / "
            f"{score['rankme_projection']:.1f}, linear {100 * linear['top1']:.2f}% "
            f"({time.perf_counter() - started:.0f}s)")  # fmt: skip
    return rows


def selection_report(rows: list[dict]) -> list[str]:
    lines = ["| step | RankMe (representations) | RankMe (projections) | linear top-1 (%) |",
             "|---:|---:|---:|---:|"]  # fmt: skip
    lines += [f"| {r['step']} | {r['rankme']:.1f} | {r['rankme_projection']:.1f} | "
              f"{100 * r['linear_top1']:.2f} |" for r in rows]  # fmt: skip
    top1 = [r["linear_top1"] for r in rows]
    best = max(rows, key=lambda r: r["linear_top1"])
    lines.append("")
    for key, label in (("rankme", "representations"), ("rankme_projection", "projections")):
        rho = spearmanr([r[key] for r in rows], top1).statistic if len(rows) > 2 else float("nan")
        picked = max(rows, key=lambda r: r[key])
        lines.append(
            f"- RankMe of the {label}: Spearman ρ with linear top-1 = {rho:.2f} over "
            f"{len(rows)} checkpoints; its pick (step {picked['step']}) scores "
            f"{100 * picked['linear_top1']:.2f}% against the best checkpoint's "
            f"{100 * best['linear_top1']:.2f}% (step {best['step']}): a gap of "
            f"{100 * (best['linear_top1'] - picked['linear_top1']):.2f} points."
        )
    return lines


def finetune_report(run: str, fractions: list[float], epochs: int) -> list[str]:
    result = run_evaluation(run, protocol="finetune", baselines=["scratch"],
                            label_fractions=fractions, epochs=epochs, write_run_file=False,
                            quiet=False)  # fmt: skip
    by = {(r["name"], r["label_fraction"]): r for r in result["rows"]}
    lines = ["| labels | images | BYOL fine-tuned top-1 / top-5 (%) | from scratch top-1 / top-5 "
             "(%) | BYOL − scratch (points) |", "|---:|---:|---:|---:|---:|"]  # fmt: skip
    for fraction in fractions:
        ours, scratch = by[("byol", fraction)], by[("scratch", fraction)]
        lines.append(
            f"| {100 * fraction:g}% | {ours['n_train']} | {100 * ours['top1']:.2f} / "
            f"{100 * ours['top5']:.2f} (lr {ours['learning_rate']:g}, {ours['epochs']} ep) | "
            f"{100 * scratch['top1']:.2f} / {100 * scratch['top5']:.2f} (lr "
            f"{scratch['learning_rate']:g}, {scratch['epochs']} ep) | "
            f"{100 * (ours['top1'] - scratch['top1']):+.2f} |"
        )
    sizes = result["split_sizes"]
    lines += ["", f"Rate and epochs chosen on {sizes['val']} held-out training images; "
              f"scored on the {sizes['test']} test images."]  # fmt: skip
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a byol run folder with kept checkpoints")
    parser.add_argument("--samples", type=int, default=25_600)
    parser.add_argument("--probe-epochs", type=int, default=100)
    parser.add_argument("--label-fractions", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--finetune-epochs", type=int, default=30)
    parser.add_argument("--write", action="store_true", help="put the tables in RESULTS.md")
    args = parser.parse_args()
    command = ".venv/bin/python benchmarks/label_scarce.py " + shlex.join(sys.argv[1:])
    rows = selection_rows(args.run, args.samples, args.probe_epochs)
    report = report_header("Few labels and no labels (`benchmarks/label_scarce.py`)",
                           f"run {args.run}", command)  # fmt: skip
    report += ["### Label-free selection over the run's checkpoints", "",
               *selection_report(rows), "", "### Semi-supervised fine-tuning", "",
               *finetune_report(args.run, args.label_fractions, args.finetune_epochs)]  # fmt: skip
    publish("label_scarce", "\n".join(report), args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
