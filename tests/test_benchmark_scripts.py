"""The hand-run benchmark scripts still run against the library they measure.

They are not part of the package, so nothing else would notice when a change to the library
breaks one (the redesign once left ``benchmarks/fashion_mnist.py`` reading a Trainer attribute
that no longer existed, found only half an hour into a benchmark). These tests run their
pieces on tiny data; the measurements themselves stay in ``benchmarks/``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from byol.data import load_dataset
from byol.handover import load_encoder

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    """``benchmarks/<name>.py`` as a module (benchmarks/ must be on sys.path for its imports)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fashion_mnist_script():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield load_script("fashion_mnist")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_median_rate_drops_the_warm_up_window_unless_it_is_the_only_one(
    fashion_mnist_script, tmp_path
):
    # A short run on a busy machine can log a single window (seen under a parallel benchmark):
    # its rate is all there is, and a run that logged none has no rate rather than an error.
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"images_per_s": 10.0}\n{"images_per_s": 30.0}\n{"images_per_s": 50.0}\n')
    assert fashion_mnist_script.median_rate(tmp_path) == 40.0
    metrics.write_text('{"images_per_s": 10.0}\n{"step": 1, "knn_top1": 0.5}\n')
    assert fashion_mnist_script.median_rate(tmp_path) == 10.0
    metrics.write_text('{"step": 1, "knn_top1": 0.5}\n')
    assert fashion_mnist_script.median_rate(tmp_path) is None


def test_fashion_mnist_benchmark_pretrains_reuses_and_tabulates(fashion_mnist_script, tmp_path):
    fm = fashion_mnist_script
    n_train = len(load_dataset("digits", split="train"))
    values = {"data": "digits", "arch": "convnet", "hidden_dim": 32, "batch_size": 64,
              "num_workers": 0, "time_limit": 0.2, "tensorboard": False}  # fmt: skip
    run = tmp_path / "seed0"
    row = fm.pretrain(values, 0, run, budget_s=2.0, n_train=n_train, reuse=False)
    assert row["steps"] >= 1 and row["train_seconds"] > 0 and row["images_per_s"] > 0
    # epochs: the schedule as it ended, not the calibration's first plan, which is kept apart.
    assert row["epochs"] == row["total_steps"] / (n_train // 64)
    assert row["planned_epochs"] > 0 and row["calibration_images_per_s"] > 0
    _, info = load_encoder(run / "checkpoints" / "last.pt")
    assert info.arch == "convnet" and info.feature_dim > 0
    again = fm.pretrain(values, 0, run, budget_s=2.0, n_train=n_train, reuse=True)
    assert again["reused"] and again["steps"] == row["steps"]
    assert again["total_steps"] == row["total_steps"]

    semi = [{"name": name, "seed": 0, "semi_supervised": True, "linear_top1": top1,
             "linear_top5": 0.99, "label_fraction": 0.01, "n_train": 600,
             "learning_rate": 0.003, "finetune_epochs": 10}
            for name, top1 in (("BYOL fine-tuned, 1% labels", 0.80),
                               ("same encoder from scratch, 1% labels", 0.70))]  # fmt: skip
    args = argparse.Namespace(budget_minutes=30.0, seeds=[0], set=[], supervised=False,
                              label_fractions=[0.01], finetune_epochs=10)  # fmt: skip
    scored = {**row, "linear_top1": 0.9, "linear_top5": 0.99, "knn_top1": 0.8}
    table = fm.format_table([scored, *semi], args, {"preset": "fashion-mnist"})
    assert "| BYOL | 0 | 90.00 | 99.00 | 80.00 |" in table
    assert "| 1% | 600 | 0 | 80.00 / 99.00 (lr 0.003, 10 ep) | 70.00 / 99.00" in table
    assert table.rstrip().endswith("| +10.00 |")
    assert "--no-supervised --label-fractions 0.01 --finetune-epochs 10" in table
    # Semi-supervised rows of two seeds: one row each, the mean gap, the flag in the command.
    semi_seed1 = [{**r, "seed": 1, "linear_top1": r["linear_top1"] - (0.04 if i else 0.0)}
                  for i, r in enumerate(semi)]  # fmt: skip
    args.seeds, args.finetune_seeds = [0, 1], [0, 1]
    table = fm.format_table([scored, *semi, *semi_seed1], args, {"preset": "fashion-mnist"})
    assert "--finetune-epochs 10 --finetune-seeds 0 1 --write-results" in table
    assert "| 1% | 600 | 1 | 80.00 / 99.00 (lr 0.003, 10 ep) | 66.00 / 99.00" in table
    assert table.rstrip().endswith("- 1% labels, mean of 2 seeds: BYOL − scratch +12.00 points")
    # An interrupted benchmark's last pair (BYOL's row written, scratch's not) is left out.
    table = fm.format_table([scored, *semi, *semi_seed1[:1]], args, {"preset": "fashion-mnist"})
    assert "| 1% | 600 | 1 |" not in table and table.rstrip().endswith("| +10.00 |")
    # A rate at the end of its grid is marked, and the mark explained.
    semi[1] = {**semi[1], "learning_rate": 0.1, "grid_edge": "largest"}
    table = fm.format_table([scored, *semi], args, {"preset": "fashion-mnist"})
    assert "70.00 / 99.00 (lr 0.1†, 10 ep)" in table and "(lr 0.003, 10 ep)" in table
    assert table.rstrip().endswith("- † the largest or smallest rate of the grid: the best may "
                                   "lie beyond it")  # fmt: skip
    two_seeds = [{"name": "BYOL", "seed": s, "linear_top1": t, "knn_top1": t - 0.1}
                 for s, t in ((0, 0.9), (1, 0.8))]  # fmt: skip
    assert fm.seed_means(two_seeds) == ["", "- BYOL, mean of 2 seeds: linear top-1 85.00%, "
                                            "k-NN 75.00%"]  # fmt: skip


def test_tuning_run_scores_on_the_holdout_and_tabulates(fashion_mnist_script, tmp_path):
    # fashion_mnist_script puts benchmarks/ on sys.path, which tune_preset imports from.
    tune = load_script("tune_preset")
    overrides = {"data": "digits", "arch": "convnet", "hidden_dim": 32, "batch_size": 64,
                 "image_size": 8, "eval_image_size": 8}  # fmt: skip
    row = tune.tuning_run("tiny", overrides, preset="fashion-mnist", minutes=0.05, seed=0,
                          holdout=300, out=tmp_path)  # fmt: skip
    assert row["steps"] >= 1 and row["eval_size"] == 8 and 0 < row["linear_top1"] <= 1
    # Epochs count the pre-training images: the training split less the holdout.
    n_train = len(load_dataset("digits", split="train"))
    assert row["epochs"] == round(row["steps"] / ((n_train - 300) // 64), 2)
    table = tune.table([row, {**row, "name": "lr8", "overrides": {"base_lr": 8.0}}])
    assert "| tiny | `data` digits, `arch` convnet" in table
    assert "| lr8 | `base_lr` 8.0 | 0 | 0.05 |" in table
    assert f"{100 * row['linear_top1']:.2f}% |" in table


def test_eval_size_scores_a_tuning_run_on_its_holdout_at_each_size(fashion_mnist_script, tmp_path):
    tune, eval_size = load_script("tune_preset"), load_script("eval_size")
    overrides = {"data": "digits", "arch": "convnet", "hidden_dim": 32, "batch_size": 64,
                 "image_size": 8, "eval_image_size": 8}  # fmt: skip
    tuned = tune.tuning_run("tiny", overrides, preset="fashion-mnist", minutes=0.05, seed=0,
                            holdout=300, out=tmp_path)  # fmt: skip
    rows = eval_size.score_sizes(tmp_path / "tiny", [8, 12])
    assert [r["eval_size"] for r in rows] == [8, 12]
    # Scored on the 300 held-out training images, never on the test split.
    n_train = len(load_dataset("digits", split="train"))
    assert all(r["n_scored"] == 300 and r["n_pretrain"] == n_train - 300 for r in rows)
    # At the run's own evaluation size the scores are the tuning run's.
    assert rows[0]["linear_top1"] == tuned["linear_top1"]
    assert rows[0]["knn_top1"] == tuned["knn_top1"]


def test_probe_grid_scores_online_and_target_encoders_on_the_holdout(fashion_mnist_script,
                                                                     tmp_path):  # fmt: skip
    tune, probe_grid = load_script("tune_preset"), load_script("probe_grid")
    overrides = {"data": "digits", "arch": "convnet", "hidden_dim": 32, "batch_size": 64,
                 "image_size": 8, "eval_image_size": 8}  # fmt: skip
    tuned = tune.tuning_run("tiny", overrides, preset="fashion-mnist", minutes=0.05, seed=0,
                            holdout=300, out=tmp_path)  # fmt: skip
    rows = probe_grid.probe_grid(tmp_path / "tiny", (0.1, 0.05, 0.01), ["online", "target"])
    assert [r["encoder"] for r in rows] == ["online", "target"]
    # The online encoder with the paper's grid is the tuning run's own score.
    assert rows[0]["paper"]["top1"] == tuned["linear_top1"]
    for row in rows:
        assert row["grid"]["learning_rate"] in (0.1, 0.05, 0.01)
        assert set(row["by_rate"]) == {"0.1", "0.05", "0.01"}
        assert all(0 < top1 <= 1 for top1 in row["by_rate"].values())
    state = probe_grid.read_state(tmp_path / "tiny" / "checkpoints" / "last.pt")
    online, target = state.encoder_state("online"), state.encoder_state("target")
    assert online.keys() == target.keys() and online
    assert any(not torch.equal(online[k], target[k]) for k in online)


def test_inference_batches_times_every_batch_and_layout_and_a_finetuning_epoch(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    script = load_script("inference_batches")
    encoder, feature_dim = script.backbones.build("convnet", small_images=True, in_channels=1,
                                                  image_size=8)  # fmt: skip
    images = torch.randint(0, 256, (20, 1, 8, 8), dtype=torch.uint8)
    rates = script.encode_rates(encoder, images, [4, 16], repeats=1)
    layouts = ("contiguous", "channels_last")
    assert set(rates) == {(layout, batch) for layout in layouts for batch in (4, 16)}
    assert all(rate > 0 for rate in rates.values())
    # The encoder is handed back in the layout it came in.
    assert all(p.is_contiguous() for p in encoder.parameters())
    epoch = script.finetune_epoch(encoder, feature_dim, 1, 8, repeats=1, n_train=8, n_val=12)
    assert epoch["train"] > 0 and epoch["score"] > 0
    args = argparse.Namespace(arch="convnet", image_size=8, channels=1, images=20,
                              batch_sizes=[4, 16], threads=1, repeats=1, write=False)  # fmt: skip
    table = script.report(args, rates, epoch)
    assert "| 4 | " in table and "| 16 | " in table and "held-out" in table
