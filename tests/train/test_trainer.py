"""`byol train` end to end on small real data, exact resume, config errors."""

import json
import subprocess
import sys

import pytest
import torch
import yaml

from byol import ConfigError, load_checkpoint
from byol.cli import main
from byol.config import load_config, resolve
from byol.train import train

TINY = {
    "data": "digits", "arch": "convnet", "hidden_dim": 64, "projection_dim": 32,
    "batch_size": 32, "epochs": 1, "warmup_epochs": 0.2, "knn_every": 0, "tensorboard": False,
    "log_every": 2, "num_workers": 0, "base_lr": 0.5,
}  # fmt: skip


def run(tmp_path, name, **overrides):
    config = resolve({**TINY, "out": str(tmp_path / name), **overrides})
    return train(config, show_progress=False)


def test_cli_train_end_to_end(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "byol", "train", "--data", "digits", "--arch", "convnet",
               "--hidden-dim", "64", "--batch-size", "64", "--max-steps", "6",
               "--checkpoint-every", "3", "--log-every", "2", "--out", str(out)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "k-NN" not in result.stdout  # stopped at max-steps: no final monitor
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "checkpoints/last.pt"):
        assert (out / name).is_file(), name
    assert list((out / "tb").glob("events.out.tfevents.*"))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 3 and all(0 <= value <= 8 for value in losses)
    assert {"lr", "tau", "collapse_std", "images_per_s"} <= set(records[0])
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["batch_size"] == 64 and config["data"] == "digits"
    checkpoint = load_checkpoint(out / "checkpoints" / "last.pt")
    assert checkpoint["step"] == 6 and checkpoint["config"]["arch"] == "convnet"
    assert {"model", "optimizer", "rng", "epoch", "batch_in_epoch"} <= set(checkpoint)
    # Online weights changed from their initialisation, the target differs from the online copy.
    state = checkpoint["model"]
    assert not torch.equal(state["online_encoder.0.weight"], state["target_encoder.0.weight"])
    assert "step 6" not in result.stderr
    assert f"checkpoint      {out / 'checkpoints' / 'last.pt'}" in result.stdout


def test_training_runs_epoch_and_reports_knn(tmp_path):
    result = run(tmp_path, "knn", knn_every=1, knn_bank_size=2000)
    assert result.step == result.total_steps == 1437 // 32
    assert result.knn_top1 is not None and 0.3 < result.knn_top1 <= 1.0
    records = [json.loads(x) for x in (tmp_path / "knn" / "metrics.jsonl").read_text().splitlines()]
    assert sum("knn_top1" in r for r in records) == 1
    # The printed k-NN says what it is of: digits has 1437 training and 360 test images.
    assert result.knn_of == (
        "k=200, T=0.1; bank: 1437 of the pre-training images; queries: the 360 images of the "
        "test split"
    )
    summary = json.loads((tmp_path / "knn" / "summary.json").read_text())
    assert summary["knn_of"] == result.knn_of


def test_interrupt_and_resume_is_exact(tmp_path):
    straight = run(tmp_path, "straight", max_steps=12, checkpoint_every=100)
    assert straight.step == 12
    first = run(tmp_path, "resumed", max_steps=6, checkpoint_every=100)
    assert first.step == 6
    # Records a killed run wrote after its last checkpoint are dropped on resume.
    metrics = tmp_path / "resumed" / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + json.dumps({"step": 8, "loss": -1.0}) + "\n")
    second = run(tmp_path, "resumed", max_steps=12, checkpoint_every=100)
    assert second.step == 12
    steps = [json.loads(x)["step"] for x in metrics.read_text().splitlines()]
    assert steps == [2, 4, 6, 8, 10, 12]
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key, state in a["optimizer"]["state"].items():
        assert torch.equal(
            state["momentum_buffer"], b["optimizer"]["state"][key]["momentum_buffer"]
        )
    assert torch.equal(a["rng"]["augment"][0], b["rng"]["augment"][0])


def test_resume_across_epoch_boundary_with_accumulation(tmp_path):
    # 1437 // 32 = 44 steps per epoch: stop inside epoch 1, resume into epoch 2.
    straight = run(tmp_path, "a", epochs=2, max_steps=50, accumulate=2, checkpoint_every=100)
    run(tmp_path, "b", epochs=2, max_steps=30, accumulate=2, checkpoint_every=100)
    resumed = run(tmp_path, "b", epochs=2, max_steps=50, accumulate=2, checkpoint_every=100)
    assert straight.step == resumed.step == 50
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_different_config_into_existing_run_folder_is_refused(tmp_path):
    run(tmp_path, "run", max_steps=2)
    with pytest.raises(ConfigError, match=r"different config.*base_lr"):
        run(tmp_path, "run", max_steps=2, base_lr=0.1)


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("arch: resnet18\nbatch_size: 128\ntarget_decay: 0.99\n")
    config = load_config(path, {"batch_size": "64"})
    assert config.arch == "resnet18" and config.batch_size == 64 and config.target_decay == 0.99
    preset = resolve({"preset": "imagenet-300"})
    assert (preset.base_lr, preset.weight_decay, preset.target_decay) == (0.3, 1e-6, 0.99)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch-sise", "3"], "unrecognized arguments"),
        (["--target-decay", "1.5"], "target_decay must lie in [0.0, 1.0]"),
        (["--base-lr", "-1"], "base_lr must lie in"),
        (["--batch-size", "abc"], "batch_size must be an integer"),
        (["--precision", "fp8"], "invalid choice: 'fp8'"),
        (["--arch", "resnet9000"], "unknown architecture 'resnet9000'; choose one of"),
        (["--data", "/nonexistent/folder"], "unknown dataset"),
        (["--data", "digits", "--batch-size", "5000"], "larger than the dataset"),
    ],
)
def test_bad_arguments_exit_2_with_message(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        code = main(["train", "--out", str(tmp_path / "x"), "--tensorboard", *argv])
        raise SystemExit(code)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_config_key_in_file_names_key_and_file(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("bach_size: 32\n")
    code = main(["train", "--config", str(path), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "bach_size" in err and str(path) in err and "batch_size" in err


def test_views_smaller_than_the_evaluation_size(tmp_path):
    """`image_size` sets the augmented views, `eval_image_size` what evaluation and hand-over
    see; the checkpoint records both so that `load_encoder` rebuilds the evaluation input."""
    from byol.handover import load_encoder
    from byol.train import Trainer

    config = resolve({**TINY, "out": str(tmp_path / "small-views"), "image_size": 6,
                      "eval_image_size": 12, "max_steps": 3, "knn_every": 1})  # fmt: skip
    trainer = Trainer(config, show_progress=False)
    result = trainer.fit()
    assert result.step == 3
    assert trainer.augment.size == (6, 6) and trainer.plan.image_size == 12
    generator = torch.Generator().manual_seed(0)
    view1, view2 = trainer.augment(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), generator=generator)
    assert view1.shape[-2:] == view2.shape[-2:] == (6, 6)
    data = load_checkpoint(tmp_path / "small-views" / "checkpoints" / "last.pt")["plan"]
    assert data["image_size"] == 12 and data["view_size"] == 6
    encoder, info = load_encoder(tmp_path / "small-views")
    assert info.image_size == 12
    assert encoder(torch.zeros(3, 1, 12, 12)).shape == (3, info.feature_dim)


def test_predictor_lr_scale_reaches_the_optimizer(tmp_path):
    from byol.train import Trainer

    config = resolve({**TINY, "out": str(tmp_path / "fast-predictor"), "max_steps": 2,
                      "predictor_lr_scale": 10.0})  # fmt: skip
    trainer = Trainer(config, show_progress=False)
    trainer.fit()
    rates = {group["lr_scale"]: group["lr"] for group in trainer.optimizer.param_groups}
    assert set(rates) == {1.0, 10.0} and rates[1.0] > 0
    assert rates[10.0] == pytest.approx(10 * rates[1.0])
    assert trainer.optimizer.param_groups[0]["lr"] == rates[1.0]  # what metrics.jsonl logs


def test_eval_image_size_defaults_to_the_view_size(tmp_path):
    run(tmp_path, "same", image_size=6, max_steps=1)
    data = load_checkpoint(tmp_path / "same" / "checkpoints" / "last.pt")["plan"]
    assert data["image_size"] == data["view_size"] == 6


def _records(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("epochs", [1000.0, 0.25])
def test_schedule_fits_the_time_limit(tmp_path, epochs):
    # Whether --epochs overshoots (1000 epochs) or undershoots (a quarter epoch) what the time
    # allows, the re-planned schedule ends, annealed, when the time does.
    limit_s = 3.0
    # A short warm-up leaves most steps to the cosine even when a loaded machine runs few.
    result = run(tmp_path, "fit", epochs=epochs, time_limit=limit_s / 60, warmup_epochs=0.05,
                 schedule_to_time_limit=True, checkpoint_every=10**6)  # fmt: skip
    first_plan = max(1, round(epochs * (1437 // 32)))
    assert result.stopped_early is None and result.step == result.total_steps
    assert result.total_steps != first_plan
    summary = json.loads((tmp_path / "fit" / "summary.json").read_text())
    assert 0.5 * limit_s < summary["seconds"] < 3 * limit_s
    records = [r for r in _records(tmp_path / "fit") if "lr" in r]
    peak = TINY["base_lr"] * TINY["batch_size"] / 256
    assert records[-1]["lr"] < 0.05 * peak and records[-1]["tau"] > 0.999
    assert records[-1]["total_steps"] == result.total_steps
    checkpoint = load_checkpoint(tmp_path / "fit" / "checkpoints" / "last.pt")
    assert checkpoint["total_steps"] == result.total_steps
    assert 0.5 * limit_s < checkpoint["train_seconds"] < 3 * limit_s


def test_fitted_schedule_resumes_with_the_time_already_spent(tmp_path):
    limit_s = 4.0
    options = {"epochs": 1000.0, "time_limit": limit_s / 60, "schedule_to_time_limit": True,
               "checkpoint_every": 10**6}  # fmt: skip
    first = run(tmp_path, "fit", max_steps=12, **options)
    assert first.step == 12 and first.step < first.total_steps
    spent = load_checkpoint(tmp_path / "fit" / "checkpoints" / "last.pt")["train_seconds"]
    assert 0 < spent < limit_s
    resumed = run(tmp_path, "fit", **options)
    assert resumed.stopped_early is None and resumed.step == resumed.total_steps > 12
    final = load_checkpoint(tmp_path / "fit" / "checkpoints" / "last.pt")
    # The budget counts both invocations: the second one only gets what the first left.
    assert final["train_seconds"] < 3 * limit_s
    assert (
        json.loads((tmp_path / "fit" / "summary.json").read_text())["seconds"]
        < final["train_seconds"]
    )


def test_schedule_to_time_limit_needs_a_time_limit():
    with pytest.raises(ConfigError, match="--time-limit"):
        resolve({**TINY, "schedule_to_time_limit": True})


def test_final_image_size_switches_the_views_and_resumes_exactly(tmp_path):
    """Progressive resizing: 6 px views for the first half of an 11-step schedule, 8 px after;
    the size is a function of the step, so a run resumed across the switch is the same run."""
    from byol.train import Trainer

    sizes = {"image_size": 6, "eval_image_size": 8, "final_image_size": 8,
             "final_image_size_from": 0.5, "epochs": 0.25, "log_every": 1}  # fmt: skip
    config = resolve({**TINY, **sizes, "out": str(tmp_path / "straight")})
    trainer = Trainer(config, show_progress=False)
    assert trainer.fit().step == 11
    records = [r for r in _records(tmp_path / "straight") if "loss" in r]
    # Step s (1-based) ran at step index s - 1: 6 px while s - 1 < 5.5.
    assert [r["view_size"] for r in records] == [6] * 6 + [8] * 5
    assert trainer.augment.size == (8, 8)
    # The handed-over encoder keeps the first view size as its build size.
    assert load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["plan"][
        "view_size"] == 6  # fmt: skip
    run(tmp_path, "resumed", **sizes, max_steps=4, checkpoint_every=100)
    run(tmp_path, "resumed", **sizes, checkpoint_every=100)
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_final_image_size_is_refused_for_full_resolution_files():
    from types import SimpleNamespace

    from byol.train.monitor import check_view_size

    config = resolve({**TINY, "data": "/photos", "final_image_size": 24})
    full_resolution = SimpleNamespace(image_size=None, typical_side=lambda: 500)
    with pytest.raises(ConfigError, match="--final-image-size 24 needs images held at a fixed"):
        check_view_size(config, full_resolution)
