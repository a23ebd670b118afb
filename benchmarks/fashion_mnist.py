"""The Fashion-MNIST result: BYOL pre-training within a wall-clock budget, then the linear
probe and k-NN against a random-initialised encoder, raw pixels and a supervised reference.

    .venv/bin/python benchmarks/fashion_mnist.py --budget-minutes 30 --seeds 0 1 2 \
        --set schedule_to_time_limit=true --finetune-epochs 10 --write-results

Per seed: pre-train on the 60,000 training images without labels (the schedule's length is
set from a short throughput calibration so that it fits the budget), then evaluate the online
encoder's features on the test split: linear probe (learning rate chosen on a held-out 10% of
the training split) and weighted k-NN (k = 200, T = 0.1). The baselines are evaluated under the
same protocols in the same run; the supervised reference trains the same encoder with labels
for the same budget (first seed only, it costs another budget). The semi-supervised rows
(``byol eval --protocol finetune --baseline scratch``, first seed only unless
``--finetune-seeds`` names more) fine-tune the pre-trained encoder on class-balanced 1% and
10% of the training labels against the same encoder trained from scratch on the same images
(rate and epochs chosen on a held-out 10% of the training split). Results go to stdout and,
with --write-results, to the fashion_mnist section of benchmarks/RESULTS.md.

``--set KEY=VALUE`` overrides the preset, e.g. ``--set schedule_to_time_limit=true`` fits each
seed's schedule to the budget as it trains instead of fixing it from the calibration (not used
for the committed table).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from byol import backbones
from byol.baselines import random_init_encoder, train_supervised
from byol.config import resolve
from byol.data import load_dataset
from byol.evaluate import extract_features, knn_accuracy, linear_probe, pixel_features
from byol.evaluation_run import run_evaluation
from byol.handover import load_encoder
from byol.train import Trainer
from results_file import machine, write_section


def calibrate(values: dict, out: Path, steps: int) -> float:
    """Images per second of this recipe on this machine (median over logged windows)."""
    shutil.rmtree(out, ignore_errors=True)
    config = resolve({**values, "out": str(out), "max_steps": steps, "log_every": 5,
                      "knn_every": 0, "tensorboard": False})  # fmt: skip
    Trainer(config, show_progress=False).fit()
    rate = median_rate(out)
    shutil.rmtree(out, ignore_errors=True)
    if rate is None:
        raise RuntimeError(f"the {steps}-step calibration run in {out} logged no speed")
    return rate


def median_rate(run_dir: Path) -> float | None:
    """Median images/s over a run's logged windows, the first (warm-up) dropped unless it is the
    only one; None when the run logged none."""
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["images_per_s"] for r in records if "images_per_s" in r]
    return statistics.median(rates[1:] or rates) if rates else None


def run_speed(run_dir: Path, steps: int, batch_size: int, seconds: float) -> float:
    """A finished run's images/s: its logged median, else its steps over its wall-clock."""
    return median_rate(run_dir) or steps * batch_size / seconds


def pretrain(values: dict, seed: int, run_dir: Path, budget_s: float, n_train: int, *,
             reuse: bool) -> dict:  # fmt: skip
    """Pre-train one seed within the budget (or, with ``reuse``, take the finished run already
    in ``run_dir``); the BYOL row's training facts."""
    summary_path = run_dir / "summary.json"
    if reuse and summary_path.exists():
        summary = json.loads(summary_path.read_text())
        batch_size = resolve({**values, "seed": seed}).batch_size
        print(f"seed {seed}: reusing the finished run in {run_dir}", flush=True)
        return {"name": "BYOL", "seed": seed, "steps": summary["step"],
                "total_steps": summary["total_steps"], "train_seconds": summary["seconds"],
                "epochs": summary["total_steps"] / (n_train // batch_size),
                "batch_size": batch_size, "train_images": n_train,
                "images_per_s": run_speed(run_dir, summary["step"], batch_size,
                                          summary["seconds"]), "reused": True}  # fmt: skip
    images_per_s = calibrate({**values, "seed": seed}, run_dir.parent / "calibration", steps=30)
    # 3% margin for the checkpoint writes and the logging the calibration did not see.
    epochs = 0.97 * budget_s * images_per_s / n_train
    shutil.rmtree(run_dir, ignore_errors=True)
    config = resolve({**values, "seed": seed, "epochs": epochs, "out": str(run_dir),
                      "knn_every": 0, "checkpoint_every": 10**9})  # fmt: skip
    replanned = " (a first plan: the schedule is re-fitted to the time as it trains)"
    print(f"seed {seed}: {images_per_s:.0f} images/s -> {epochs:.2f} epochs"
          f"{replanned if config.schedule_to_time_limit else ''}", flush=True)  # fmt: skip
    start = time.perf_counter()
    trainer = Trainer(config, show_progress=False)
    result = trainer.fit()
    seconds = time.perf_counter() - start
    per_epoch = n_train // config.batch_size
    # The schedule's length as it ended (schedule_to_time_limit re-plans it from the measured
    # speed, so the calibration's plan is kept apart) and the speed the run itself logged.
    return {"name": "BYOL", "seed": seed, "epochs": result.total_steps / per_epoch,
            "planned_epochs": epochs, "precision": trainer.precision, "train_seconds": seconds,
            "steps": result.step, "total_steps": result.total_steps,
            "batch_size": config.batch_size, "train_images": n_train,
            "images_per_s": run_speed(run_dir, result.step, config.batch_size, seconds),
            "calibration_images_per_s": images_per_s}  # fmt: skip


def evaluate(encoder, train, test, mean, std, size, seed) -> dict:
    start = time.perf_counter()
    f_train = extract_features(encoder, train.images, mean=mean, std=std, size=size)
    f_test = extract_features(encoder, test.images, mean=mean, std=std, size=size)
    probe = linear_probe(f_train, train.labels, f_test, test.labels, seed=seed)
    knn = knn_accuracy(f_train, train.labels, f_test, test.labels, k=200, temperature=0.1)
    return {"linear_top1": probe["top1"], "linear_top5": probe["top5"],
            "linear_lr": probe["learning_rate"], "knn_top1": knn["top1"],
            "dim": f_train.shape[1], "eval_seconds": time.perf_counter() - start}  # fmt: skip


def semi_supervised_rows(run_dir: Path, fractions: list[float], epochs: int, seed: int) -> list:
    """The run's encoder fine-tuned on few labels, against the same encoder from scratch."""
    result = run_evaluation(run_dir, protocol="finetune", baselines=["scratch"],
                            label_fractions=fractions, epochs=epochs, seed=seed,
                            write_run_file=False)  # fmt: skip
    names = {"byol": "BYOL fine-tuned", "scratch": "same encoder from scratch"}
    return [{"name": f"{names[r['name']]}, {100 * r['label_fraction']:g}% labels", "seed": seed,
             "semi_supervised": True, "linear_top1": r["top1"], "linear_top5": r["top5"],
             "label_fraction": r["label_fraction"], "n_train": r["n_train"],
             "learning_rate": r["learning_rate"], "finetune_epochs": r["epochs"],
             "head_init": r["head_init"], "precision": r.get("precision"),
             "learning_rates": r.get("learning_rates"), "grid_edge": r.get("grid_edge"),
             "train_seconds_finetune": r["seconds"]}
            for r in result["rows"]]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-minutes", type=float, default=30.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--preset", default="fashion-mnist")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra config overrides for the BYOL run")  # fmt: skip
    parser.add_argument("--out", default="runs/fashion-mnist-bench")
    parser.add_argument("--supervised", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--label-fractions", type=float, nargs="*", default=[0.01, 0.1],
                        help="semi-supervised rows (none: skip them)")  # fmt: skip
    parser.add_argument("--finetune-seeds", type=int, nargs="+", default=None, metavar="SEED",
                        help="the seeds whose encoders get the semi-supervised rows, each "
                        "drawing its own labelled subset (default: the first seed)")  # fmt: skip
    parser.add_argument("--finetune-epochs", type=int, default=15,
                        help="the most fine-tuning epochs tried per learning rate")  # fmt: skip
    parser.add_argument("--reuse-runs", action="store_true",
                        help="evaluate a seed's finished run already in --out instead of "
                        "training it again (an interrupted benchmark)")  # fmt: skip
    parser.add_argument("--write-results", action="store_true")
    parser.add_argument("--from-results", type=Path, metavar="RESULTS_JSON",
                        help="train nothing: print (and with --write-results write) the "
                        "table of an earlier run's results.json (and its other flags)")  # fmt: skip
    args = parser.parse_args()
    args.finetune_seeds = list(dict.fromkeys(args.finetune_seeds or args.seeds[:1]))
    if not set(args.finetune_seeds) <= set(args.seeds):
        parser.error(f"--finetune-seeds {args.finetune_seeds} must be among --seeds {args.seeds}")

    out = Path(args.out)
    # Every run of the benchmark, the calibration included, is bounded by the budget.
    values = {"preset": args.preset, "num_workers": 0, "time_limit": args.budget_minutes}
    for item in args.set:
        key, _, value = item.partition("=")
        values[key.replace("-", "_")] = value
    if args.from_results:
        table = format_table(json.loads(args.from_results.read_text()), args, values)
        print(table)
        if args.write_results:
            write_section("fashion_mnist", table)
        return 0
    train = load_dataset("fashion-mnist", split="train")
    test = load_dataset("fashion-mnist", split="test")
    mean, std = train.mean_std()
    budget_s = args.budget_minutes * 60
    rows = []
    for seed in args.seeds:
        run_dir = out / f"seed{seed}"
        byol_row = pretrain(values, seed, run_dir, budget_s, len(train), reuse=args.reuse_runs)
        encoder, info = load_encoder(run_dir / "checkpoints" / "last.pt")
        size, small = info.image_size, info.small_images
        byol_row.update(evaluate(encoder, train, test, mean, std, size, seed))
        rows.append(byol_row)
        random_encoder = random_init_encoder(info.arch, small_images=small,
                                             in_channels=train.channels, seed=seed)  # fmt: skip
        rows.append({"name": "random-init encoder", "seed": seed,
                     **evaluate(random_encoder, train, test, mean, std, size, seed)})  # fmt: skip
        if seed == args.seeds[0]:
            p_train = pixel_features(train.images, mean=mean, std=std)
            p_test = pixel_features(test.images, mean=mean, std=std)
            probe = linear_probe(p_train, train.labels, p_test, test.labels, seed=seed)
            knn = knn_accuracy(p_train, train.labels, p_test, test.labels)
            rows.append({"name": "raw pixels", "seed": seed, "linear_top1": probe["top1"],
                         "linear_top5": probe["top5"], "linear_lr": probe["learning_rate"],
                         "knn_top1": knn["top1"], "dim": p_train.shape[1]})  # fmt: skip
            if args.supervised:
                encoder, dim = backbones.build(info.arch, small_images=small,
                                               in_channels=train.channels)  # fmt: skip
                torch.manual_seed(seed)
                sup = train_supervised(encoder, dim, train.images, train.labels, test.images,
                                       test.labels, mean=mean, std=std, seconds=budget_s,
                                       seed=seed,
                                       precision=byol_row.get("precision", "auto"))  # fmt: skip
                rows.append({"name": "supervised (same encoder, labels, same budget)",
                             "seed": seed, "linear_top1": sup["top1"],
                             "linear_top5": sup["top5"], "epochs": sup["epochs"],
                             "train_seconds": sup["seconds"],
                             "precision": sup["precision"]})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
        # Written after every seed, so an interrupted benchmark keeps what it measured.
        (out / "results.json").write_text(json.dumps(rows, indent=2))
    # The semi-supervised rows last (they are not timed against the budget), one seed's
    # encoder and one fraction at a time.
    for seed in args.finetune_seeds:
        for fraction in args.label_fractions:
            rows += semi_supervised_rows(out / f"seed{seed}", [fraction],
                                         args.finetune_epochs, seed)  # fmt: skip
            print(json.dumps(rows[-2:]), flush=True)
            (out / "results.json").write_text(json.dumps(rows, indent=2))
    table = format_table(rows, args, values)
    print(table)
    if args.write_results:
        write_section("fashion_mnist", table)
    return 0


def _finetune_seeds_flag(args) -> str:
    """``--finetune-seeds``, as the command line gave it (nothing for the default)."""
    seeds = getattr(args, "finetune_seeds", None)
    if not seeds or seeds == args.seeds[:1]:
        return ""
    return f" --finetune-seeds {' '.join(map(str, seeds))}"


def recipe_summary(values: dict) -> str:
    """The encoder and image sizes the recipe resolves to, for the table's header."""
    config = resolve(dict(values))
    view = config.image_size or 28
    return (f"encoder `{config.arch}`; batch {config.batch_size}, base lr {config.base_lr:g}; "
            f"views {view} px, evaluation at {config.eval_image_size or view} px")  # fmt: skip


def format_table(rows, args, values) -> str:
    def pct(value):
        return "—" if value is None else f"{100 * value:.2f}"

    lines = [
        "## Fashion-MNIST: BYOL features against baselines",
        "",
        f"Machine: {machine()}. Date: {time.strftime('%Y-%m-%d')}.",
        f"Command: `.venv/bin/python benchmarks/fashion_mnist.py --budget-minutes "
        f"{args.budget_minutes:g} --seeds {' '.join(map(str, args.seeds))}"
        + (f" --set {' '.join(args.set)}" if args.set else "")
        + ("" if args.supervised else " --no-supervised")
        + (
            f" --label-fractions {' '.join(f'{f:g}' for f in args.label_fractions)}"
            f" --finetune-epochs {args.finetune_epochs}{_finetune_seeds_flag(args)}"
            if args.label_fractions
            else " --label-fractions"
        )
        + " --write-results`",
        f"Recipe: preset `{values['preset']}`"
        + (f" with {', '.join(args.set)}" if args.set else "")
        + f"; pre-training budget {args.budget_minutes:g} min of wall-clock per seed; "
        f"{recipe_summary(values)}.",
        "Linear probe: frozen encoder, features pre-computed, SGD + Nesterov, lr chosen on 10% "
        "held out of the training split; k-NN: k = 200, T = 0.1, train split as memory bank. "
        "Both scored on the 10,000 test images.",
        "",
        "| features | seed | linear top-1 (%) | linear top-5 (%) | k-NN top-1 (%) | pre-training |",
        "|---|---|---|---|---|---|",
    ]
    for row in (r for r in rows if not r.get("semi_supervised")):
        training = ""
        if row.get("steps") and row.get("train_seconds"):
            # Epochs actually trained; the schedule spans the planned length, and a run the
            # wall-clock budget stopped early says how far through it got.
            per_epoch = (row.get("train_images") or 60000) // (row.get("batch_size") or 128)
            total = row.get("total_steps") or math.ceil(row["epochs"] * per_epoch)
            training = f"{row['steps'] / per_epoch:.2f} epochs, {row['train_seconds'] / 60:.1f} min"
            if row["steps"] < total:
                training += f" (budget stopped the schedule at step {row['steps']} of {total})"
        elif "epochs" in row and row.get("train_seconds"):
            training = f"{row['epochs']:.2f} epochs, {row['train_seconds'] / 60:.1f} min"
        if training and row.get("precision"):
            training += f", {row['precision']}"
        lines.append(f"| {row['name']} | {row['seed']} | {pct(row.get('linear_top1'))} | "
                     f"{pct(row.get('linear_top5'))} | {pct(row.get('knn_top1'))} | "
                     f"{training} |")  # fmt: skip
    lines += seed_means(rows)
    lines += semi_supervised_table(rows)
    return "\n".join(lines)


def seed_means(rows: list[dict]) -> list[str]:
    """The mean over seeds of every feature kind evaluated on more than one seed."""
    kinds = [r["name"] for r in rows if not r.get("semi_supervised")]
    lines = []
    for name in dict.fromkeys(kinds):
        scored = [r for r in rows if r["name"] == name and r.get("linear_top1") is not None]
        if len(scored) > 1:
            linear = statistics.mean(r["linear_top1"] for r in scored)
            knn = [r["knn_top1"] for r in scored if r.get("knn_top1") is not None]
            knn_text = f", k-NN {100 * statistics.mean(knn):.2f}%" if knn else ""
            lines.append(f"- {name}, mean of {len(scored)} seeds: linear top-1 "
                         f"{100 * linear:.2f}%{knn_text}")  # fmt: skip
    return ["", *lines] if lines else []


def semi_supervised_table(rows: list[dict]) -> list[str]:
    """Fine-tuned on few labels: BYOL's encoder against the same encoder from scratch."""
    semi = [r for r in rows if r.get("semi_supervised")]
    if not semi:
        return []
    lines = ["", "Semi-supervised (`byol eval --protocol finetune --baseline scratch`): the whole "
             "encoder + a linear head fine-tuned on a class-balanced subset of the training "
             "labels (random crop + flip, SGD + Nesterov, cosine); rate and epochs chosen on "
             "10% held out of the training split, scored on the 10,000 test images. The BYOL "
             "encoder's head starts fitted on its frozen features (LP-FT); scratch is trained "
             "the standard way.", "",
             "| labels | images | seed | BYOL fine-tuned top-1 / top-5 (%) | from scratch "
             "top-1 / top-5 (%) | BYOL − scratch (points) |",
             "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    gaps: dict[float, list[float]] = {}
    for fraction in sorted({r["label_fraction"] for r in semi}):
        for seed in sorted({r["seed"] for r in semi}):
            pair = [r for r in semi if r["label_fraction"] == fraction and r["seed"] == seed]
            ours = next((r for r in pair if r["name"].startswith("BYOL")), None)
            scratch = next((r for r in pair if not r["name"].startswith("BYOL")), None)
            if ours is None or scratch is None:  # an interrupted benchmark's unfinished pair
                continue

            def cell(r):
                lr = f"{r['learning_rate']:g}" + ("†" if r.get("grid_edge") else "")
                return (f"{100 * r['linear_top1']:.2f} / {100 * r['linear_top5']:.2f} "
                        f"(lr {lr}, {r['finetune_epochs']} ep)")  # fmt: skip

            gap = 100 * (ours["linear_top1"] - scratch["linear_top1"])
            gaps.setdefault(fraction, []).append(gap)
            lines.append(f"| {100 * fraction:g}% | {ours['n_train']} | {seed} | {cell(ours)} | "
                         f"{cell(scratch)} | {gap:+.2f} |")  # fmt: skip
    means = [f"- {100 * fraction:g}% labels, mean of {len(seed_gaps)} seeds: BYOL − scratch "
             f"{statistics.mean(seed_gaps):+.2f} points"
             for fraction, seed_gaps in gaps.items() if len(seed_gaps) > 1]  # fmt: skip
    edge_note = "- † the largest or smallest rate of the grid: the best may lie beyond it"
    notes = means + ([edge_note] if any(r.get("grid_edge") for r in semi) else [])
    return lines + (["", *notes] if notes else [])


if __name__ == "__main__":
    sys.exit(main())
