"""Faults during training: kills, damaged checkpoints, full disks, divergence, bad data and input.

Every run here is the tiny digits run of :mod:`fault_trials` (8x8 images, a small convnet,
one thread), driven through the ``byol`` command line in this process unless a real process
is the point (the kill trials). ``reference`` is one uninterrupted run that keeps a checkpoint
of every step, so a faulted-and-resumed run can be compared with it bit for bit.

The long kill trials are ``@pytest.mark.slow``:
``.venv/bin/python -m pytest -m slow tests/test_faults.py -s`` (summary in docs/reliability.md).
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import byol.checkpoint
from byol import CheckpointError, load_checkpoint
from byol.checkpoint import CheckpointManager, save_checkpoint
from byol.cli import main
from byol.data import load_dataset
from byol.train import Trainer
from fault_trials import FaultTrials, format_summary, train_argv

STEPS = 8  # length of the reference run (22 steps per epoch at batch 64)


def run_cli(argv: list[str]) -> tuple[int, str, list[str]]:
    """``byol ARGV`` in this process: exit code, stderr, and the warnings it raised."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with (
        warnings.catch_warnings(record=True) as caught,
        redirect_stdout(stdout),
        redirect_stderr(stderr),
    ):
        warnings.simplefilter("always")
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse errors
            code = exit_.code
    return code, stderr.getvalue(), [str(w.message) for w in caught]


def tiny_run(out: Path, steps: int = STEPS, every: int = 1) -> list[str]:
    return train_argv(out, steps, every)


def models_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def all_finite(state: dict) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point())


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run of STEPS steps with a checkpoint of every step kept."""
    out = tmp_path_factory.mktemp("reference") / "run"
    code, err, _ = run_cli([*tiny_run(out), "--keep-checkpoints", "100"])
    assert code == 0, err
    return out


def reference_model(reference: Path, step: int) -> dict:
    return load_checkpoint(reference / "checkpoints" / f"step-{step:08d}.pt")["model"]


def interrupted_copy(reference: Path, out: Path, steps: list[int]) -> Path:
    """A run folder as an interrupted run leaves it: config and these steps' checkpoints."""
    (out / "checkpoints").mkdir(parents=True)
    shutil.copy(reference / "config.yaml", out / "config.yaml")
    for step in steps:
        shutil.copy(reference / "checkpoints" / f"step-{step:08d}.pt", out / "checkpoints")
    newest = out / "checkpoints" / f"step-{max(steps):08d}.pt"
    os.link(newest, out / "checkpoints" / "last.pt")
    return out


# ------------------------------------------------------------------------------ kill trials


def test_sigkill_trials_short(reference, tmp_path):
    # Two SIGKILLs of a real `byol train` process: one while a checkpoint is being written,
    # one at a random moment of training; the resumed run must equal the reference bitwise.
    harness = FaultTrials(
        tmp_path, trials=2, steps=STEPS, kills_per_round=2, seed=1,
        modes=("checkpoint-write", "training"), in_process_ends=True,
    )  # fmt: skip
    summary = harness.run(reference_out=reference)
    assert summary.ok, format_summary(summary)
    assert summary.trials == summary.survived == 2
    assert summary.mismatches == summary.loss_mismatches == 0
    assert summary.lost_steps_max <= 1
    assert [t.resumed_step for t in harness.results] == [t.checkpoint_step for t in harness.results]


@pytest.mark.slow
def test_sigkill_trials_long(tmp_path):
    harness = FaultTrials(tmp_path, trials=24, steps=30, kills_per_round=8, seed=0)
    summary = harness.run()
    print("\n" + format_summary(summary))
    assert summary.ok, format_summary(summary)
    assert summary.trials >= 20 and summary.survived == summary.trials
    assert summary.killed_mid_write >= 1
    assert set(summary.modes) == {"checkpoint-write", "training", "startup"}


# ------------------------------------------------------------------------ checkpoint damage


def _damage(path: Path, how: str) -> None:
    raw = bytearray(path.read_bytes())
    if how == "truncate":
        raw = raw[: len(raw) // 2]
    elif how == "flip-payload":
        raw[len(raw) // 2] ^= 0x01
    elif how == "flip-digest":
        raw[20] ^= 0x80
    elif how == "pad":
        raw += b"\0" * 7
    elif how == "empty":
        raw = bytearray()
    elif how == "magic":
        raw[:8] = b"PYTORCH!"
    with open(path, "r+b") as file:  # in place, as a failing disk would
        file.write(raw)
        file.truncate(len(raw))


@pytest.mark.parametrize(
    "how, message",
    [
        ("truncate", "truncated or padded"),
        ("pad", "truncated or padded"),
        ("flip-payload", "corrupted: its SHA-256 does not match"),
        ("flip-digest", "corrupted: its SHA-256 does not match"),
        ("empty", "not a byol checkpoint"),
        ("magic", "not a byol checkpoint"),
    ],
)
def test_damaged_checkpoint_is_detected_with_its_path(tmp_path, how, message):
    path = save_checkpoint({"model": {"w": torch.arange(1000.0)}, "step": 3}, tmp_path / "c.pt")
    assert load_checkpoint(path)["step"] == 3
    _damage(path, how)
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)


def test_resume_falls_back_past_damaged_checkpoints(reference, tmp_path):
    # Interrupted at step 5 with checkpoints 3, 4, 5 (last.pt is a hard link to step 5): a bit
    # flips in step 5 (so in last.pt too) and step 4 is truncated. The run must warn about
    # each bad file by name, resume from step 3 and still end exactly where the reference does.
    out = interrupted_copy(reference, tmp_path / "run", [3, 4, 5])
    folder = out / "checkpoints"
    _damage(folder / "step-00000005.pt", "flip-payload")
    _damage(folder / "step-00000004.pt", "truncate")
    code, err, caught = run_cli(tiny_run(out))
    assert code == 0, err
    assert f"from {folder / 'step-00000003.pt'} at step 3" in err
    bad = [w for w in caught if "falling back to an older checkpoint" in w]
    assert len(bad) == 3
    assert str(folder / "last.pt") in bad[0] and "SHA-256 does not match" in bad[0]
    assert str(folder / "step-00000005.pt") in bad[1]
    assert str(folder / "step-00000004.pt") in bad[2] and "truncated" in bad[2]
    final = load_checkpoint(folder / "last.pt")
    assert final["step"] == STEPS
    assert models_equal(final["model"], reference_model(reference, STEPS))


def test_no_valid_checkpoint_is_an_error_not_a_fresh_start(reference, tmp_path):
    out = interrupted_copy(reference, tmp_path / "run", [4])
    _damage(out / "checkpoints" / "last.pt", "truncate")  # step-4 is the same file
    before = sorted(p.name for p in out.rglob("*"))
    code, err, _ = run_cli(tiny_run(out))
    assert code == 2
    assert f"no valid checkpoint in {out / 'checkpoints'}" in err
    assert str(out / "checkpoints" / "last.pt") in err and "truncated" in err
    assert sorted(p.name for p in out.rglob("*")) == before  # nothing started over


# ---------------------------------------------------------------- disk full, unwritable folders


class _DiskFullFile:
    """A file whose first write lands partly and then fails, as on a full disk."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "wb")  # noqa: SIM115

    def write(self, data) -> int:
        self._file.write(bytes(memoryview(data)[:4096]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self) -> _DiskFullFile:
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()


@pytest.mark.parametrize("fault", ["disk-full", "permission", "read-only-rename"])
def test_failed_checkpoint_write_is_a_clear_error_and_keeps_the_previous(
    reference, tmp_path, monkeypatch, fault
):
    out = tmp_path / "run"
    failing = "step-00000004.pt"  # the second checkpoint (every 2 steps); step 2 lands

    def fake_open(path, mode="r", *args, **kwargs):
        if failing in str(path) and "w" in mode:
            if fault == "permission":
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return _DiskFullFile(path)
        return open(path, mode, *args, **kwargs)

    real_replace = os.replace

    def fake_replace(source, target, *args, **kwargs):
        if failing in str(source):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(target))
        return real_replace(source, target, *args, **kwargs)

    if fault == "read-only-rename":
        monkeypatch.setattr(byol.checkpoint.os, "replace", fake_replace)
    else:
        monkeypatch.setattr(byol.checkpoint, "open", fake_open, raising=False)
    code, err, _ = run_cli(tiny_run(out, steps=4, every=2))
    reason = {"disk-full": "No space left on device", "permission": "Permission denied",
              "read-only-rename": "Read-only file system"}[fault]  # fmt: skip
    assert code == 2
    assert f"could not write checkpoint {out / 'checkpoints' / failing}: {reason}" in err
    assert "existing checkpoints are untouched" in err
    # The previous checkpoint is intact and nothing half-written is left.
    assert sorted(os.listdir(out / "checkpoints")) == ["last.pt", "step-00000002.pt"]
    previous = load_checkpoint(out / "checkpoints" / "last.pt")
    assert previous["step"] == 2
    assert models_equal(previous["model"], reference_model(reference, 2))

    if fault == "disk-full":  # space freed: the run resumes and ends exactly as the reference
        monkeypatch.undo()
        code, err, _ = run_cli(tiny_run(out, steps=4, every=2))
        assert code == 0 and "at step 2" in err
        final = load_checkpoint(out / "checkpoints" / "last.pt")
        assert models_equal(final["model"], reference_model(reference, 4))


@pytest.mark.parametrize("where", ["parent-is-a-file", "out-is-a-file"])
def test_unwritable_run_folder_is_a_clear_error(tmp_path, where):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "run" if where == "parent-is-a-file" else blocker
    code, err, _ = run_cli(tiny_run(out, steps=2))
    assert code == 2
    assert f"cannot write to the run folder {out}" in err and "choose another --out" in err
    assert sorted(os.listdir(tmp_path)) == ["a-file"] and blocker.read_text() == "not a folder"


def test_last_pt_is_a_copy_where_hard_links_fail(tmp_path, monkeypatch):
    def no_links(*args, **kwargs):
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(byol.checkpoint.os, "link", no_links)
    manager = CheckpointManager(tmp_path, keep=2)
    for step in (1, 2, 3):
        manager.save({"model": {"w": torch.full((3,), float(step))}, "step": step}, step)
    assert sorted(os.listdir(tmp_path)) == ["last.pt", "step-00000002.pt", "step-00000003.pt"]
    assert os.stat(tmp_path / "last.pt").st_nlink == 1
    payload, path, problems = manager.load_latest()
    assert (payload["step"], path, problems) == (3, tmp_path / "last.pt", [])


def test_temporaries_of_killed_writers_are_removed(tmp_path):
    stale = [".step-00000007.pt.99999999.tmp", ".last.pt.99999999.lnk", ".last.pt.4242.tmp"]
    for name in stale:
        (tmp_path / name).write_bytes(b"half a checkpoint")
    (tmp_path / "notes.txt").write_text("not ours")
    manager = CheckpointManager(tmp_path)
    manager.save({"model": {"w": torch.zeros(2)}, "step": 8}, 8)
    assert sorted(os.listdir(tmp_path)) == ["last.pt", "notes.txt", "step-00000008.pt"]


# ----------------------------------------------------------------------- non-finite values


def _poison(monkeypatch, kind: str, at_step: int) -> None:
    """Make the loss of step ``at_step`` (0-based) NaN, or its update leave an inf weight."""
    original = Trainer.step

    def step(self, images, step, *args, **kwargs):
        if kind == "loss" and step == at_step:
            forward = self.forward

            def nan_loss(*a, **k):
                loss, stats = forward(*a, **k)
                return loss * float("nan"), stats

            self.forward = nan_loss
            try:
                return original(self, images, step, *args, **kwargs)
            finally:
                self.forward = forward
        result = original(self, images, step, *args, **kwargs)
        if kind == "weights" and step == at_step:
            with torch.no_grad():
                next(self.model.online_encoder.parameters()).view(-1)[0] = float("inf")
        return result

    monkeypatch.setattr(Trainer, "step", step)


@pytest.mark.parametrize("kind", ["loss", "weights"])
def test_nonfinite_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    reference, tmp_path, monkeypatch, kind
):
    _poison(monkeypatch, kind, at_step=2)
    out = tmp_path / "run"
    code, err, _ = run_cli(tiny_run(out, steps=5))
    assert code == 2
    what = "the loss became non-finite at step 3" if kind == "loss" else (
        "the model weights became non-finite by step 3")  # fmt: skip
    assert f"training diverged: {what}" in err
    assert f"the last good checkpoint is {out / 'checkpoints' / 'last.pt'}" in err
    last = load_checkpoint(out / "checkpoints" / "last.pt")
    assert last["step"] == 2 and all_finite(last["model"])
    assert models_equal(last["model"], reference_model(reference, 2))


def test_skip_nonfinite_skips_the_bad_step_with_a_counter(tmp_path, monkeypatch):
    _poison(monkeypatch, "loss", at_step=2)
    out = tmp_path / "run"
    code, err, caught = run_cli([*tiny_run(out, steps=5), "--skip-nonfinite"])
    assert code == 0, err
    assert [w for w in caught if "non-finite" in w] == ["non-finite loss at step 3; skipped it"]
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("skipped_steps", 0) for r in records] == [0, 0, 1, 1, 1]
    final = load_checkpoint(out / "checkpoints" / "last.pt")
    assert final["step"] == 5 and all_finite(final["model"])


# ------------------------------------------------------------------------------- bad data

FOLDER_RUN = [
    "train", "--arch", "convnet", "--hidden-dim", "16", "--projection-dim", "8",
    "--batch-size", "4", "--epochs", "1", "--knn-every", "0", "--no-tensorboard",
    "--num-workers", "0", "--folder-image-size", "12", "--device", "cpu",
]  # fmt: skip


def _pixels(rng, height, width, channels=3):
    shape = (height, width, channels) if channels > 1 else (height, width)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def make_messy_folder(folder: Path) -> list[str]:
    """Ten good images of every mode and size (some far smaller than the crop), four broken
    image files and two other files; returns the broken files' paths, sorted."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(_pixels(rng, 20, 30)).save(folder / "rgb.png")
    Image.fromarray(_pixels(rng, 9, 7, 1)).save(folder / "gray.png")
    Image.fromarray(_pixels(rng, 3, 3, 4), "RGBA").save(folder / "tiny-rgba.png")
    Image.fromarray(_pixels(rng, 1, 1)).save(folder / "one-pixel.bmp")
    Image.fromarray(_pixels(rng, 50, 10)).convert("P").save(folder / "palette.gif")
    Image.fromarray(_pixels(rng, 40, 40)).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 65535, (12, 12)).astype(np.uint16)).save(folder / "16bit.png")
    Image.fromarray(_pixels(rng, 16, 16, 1)).convert("LA").save(folder / "la.png")
    Image.fromarray(_pixels(rng, 64, 48)).save(folder / "big.jpg")
    Image.fromarray(_pixels(rng, 33, 33)).save(folder / "photo.webp")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_text("not an image")
    encoded = io.BytesIO()
    Image.fromarray(_pixels(rng, 32, 32)).save(encoded, "PNG")
    (folder / "truncated.png").write_bytes(encoded.getvalue()[: len(encoded.getvalue()) // 2])
    encoded = io.BytesIO()
    Image.fromarray(_pixels(rng, 32, 32)).save(encoded, "JPEG")
    (folder / "truncated.jpg").write_bytes(encoded.getvalue()[:200])
    (folder / "notes.txt").write_text("not an image file name: ignored")
    (folder / ".DS_Store").write_bytes(b"\0\1")
    return sorted(str(folder / n) for n in ("empty.jpg", "text.png", "truncated.jpg",
                                            "truncated.png"))  # fmt: skip


def test_messy_folder_trains_on_the_good_images_with_one_warning(tmp_path):
    broken = make_messy_folder(tmp_path / "images")
    out = tmp_path / "run"
    code, err, caught = run_cli([*FOLDER_RUN, "--data", str(tmp_path / "images"),
                                 "--image-size", "10", "--eval-image-size", "16",
                                 "--out", str(out)])  # fmt: skip
    assert code == 0, err
    skipped = [w for w in caught if "unreadable image file" in w]
    assert len(skipped) == 1
    assert skipped[0].startswith(f"skipped 4 unreadable image file(s) in {tmp_path / 'images'}")
    assert all(path in skipped[0] for path in broken) and "--strict" in skipped[0]
    # 10 good images at batch 4: 2 steps, on 3 channels (any colour image makes the set RGB),
    # evaluated at 16 px, larger than the 12-pixel stored images (views larger than the
    # thumbnails are refused: tests/datasets/test_full_resolution.py).
    checkpoint = load_checkpoint(out / "checkpoints" / "last.pt")
    assert checkpoint["step"] == checkpoint["total_steps"] == 2
    assert checkpoint["plan"]["channels"] == 3 and checkpoint["plan"]["image_size"] == 16
    assert all_finite(checkpoint["model"])
    with warnings.catch_warnings(record=True):
        assert len(load_dataset(str(tmp_path / "images"), image_size=12)) == 10


def test_strict_rejects_the_first_broken_file(tmp_path):
    broken = make_messy_folder(tmp_path / "images")
    code, err, _ = run_cli([*FOLDER_RUN, "--data", str(tmp_path / "images"), "--strict",
                            "--out", str(tmp_path / "run")])  # fmt: skip
    assert code == 2
    assert f"unreadable image file {broken[0]}" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("layout", ["empty", "no-images", "only-broken", "one-image"])
def test_unusable_folders_exit_2_with_a_message(tmp_path, layout):
    folder = tmp_path / "data"
    folder.mkdir()
    expected = {
        "empty": f"no image files (.jpg, .jpeg, .png, .webp, .bmp, .gif, .tif, .tiff, .ppm, "
        f".pgm) found in folder {folder}",
        "no-images": f"no image files (.jpg, .jpeg, .png, .webp, .bmp, .gif, .tif, .tiff, .ppm, "
        f".pgm) found in folder {folder}",
        "only-broken": f"none of the 2 image files in {folder} can be read",
        "one-image": "batch_size (4) is larger than the dataset (1 images)",
    }[layout]
    if layout == "no-images":
        (folder / "readme.txt").write_text("hello")
        (folder / "table.csv").write_text("1,2\n")
    elif layout == "only-broken":
        (folder / "a.png").write_text("x")
        (folder / "b.jpg").write_bytes(b"")
    elif layout == "one-image":
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "only.png")
    code, err, _ = run_cli([*FOLDER_RUN, "--data", str(folder), "--out", str(tmp_path / "run")])
    assert code == 2
    assert err.startswith("byol train: error: ") and expected in err
    assert "Traceback" not in err


def test_blank_images_train(tmp_path):
    # Every pixel the same: the channel's std is 0, normalisation must not divide by it.
    folder = tmp_path / "blank"
    folder.mkdir()
    for index in range(8):
        Image.fromarray(np.full((10, 10), 255, np.uint8)).save(folder / f"page-{index}.png")
    out = tmp_path / "run"
    code, err, _ = run_cli([*FOLDER_RUN, "--data", str(folder), "--out", str(out)])
    assert code == 0, err
    checkpoint = load_checkpoint(out / "checkpoints" / "last.pt")
    assert checkpoint["step"] == 2 and all_finite(checkpoint["model"])
    assert checkpoint["plan"]["mean"] == [1.0] and checkpoint["plan"]["std"] == [1 / 255]


@pytest.mark.parametrize(
    "array, expected",
    [
        (np.zeros((8, 3, 3), np.uint8), None),  # 3x3 images, cropped to 16: upsampled, trains
        (np.zeros((8, 8, 8), np.float32), "images must be uint8, got float32"),
        (np.zeros((8, 2, 5, 5), np.uint8), "images must have shape (N, H, W), (N, C, H, W)"),
        (np.zeros((0, 8, 8), np.uint8), "with N > 0"),
    ],
)
def test_numpy_files_train_or_fail_cleanly(tmp_path, array, expected):
    path = tmp_path / "images.npy"
    np.save(path, array)
    code, err, _ = run_cli([*FOLDER_RUN, "--data", str(path), "--image-size", "16",
                            "--max-steps", "1", "--out", str(tmp_path / "run")])  # fmt: skip
    if expected is None:
        assert code == 0, err
        assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 1
    else:
        assert code == 2 and str(path) in err and expected in err


def test_garbage_numpy_file_is_a_data_error(tmp_path):
    path = tmp_path / "images.npy"
    path.write_bytes(b"this is not numpy")
    code, err, _ = run_cli([*FOLDER_RUN, "--data", str(path), "--out", str(tmp_path / "run")])
    assert code == 2 and f"cannot read numpy file {path}" in err


# -------------------------------------------------------------------- bad arguments, configs


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--target-decay", "-0.1"], "target_decay must lie in [0.0, 1.0], got -0.1"),
        (["--base-lr", "nan"], "base_lr must lie in [0.0, 10000.0], got nan"),
        (["--base-lr", "1e30"], "base_lr must lie in [0.0, 10000.0], got 1e+30"),
        (["--epochs", "inf"], "epochs must lie in [1e-09, inf), got inf"),
        (["--epochs", "0"], "epochs must lie in [1e-09, inf), got 0.0"),
        (["--batch-size", "1"], "batch_size must lie in [2, inf), got 1"),
        (["--batch-size", "2.5"], "batch_size must be an integer, got '2.5'"),
        (["--momentum", "1.5"], "momentum must lie in [0.0, 0.999999], got 1.5"),
        (["--weight-decay", "-1"], "weight_decay must lie in [0.0, 10000.0], got -1.0"),
        (["--max-steps", "0"], "max_steps must lie in [1, inf), got 0"),
        (["--checkpoint-every", "0"], "checkpoint_every must lie in [1, inf), got 0"),
        (["--folder-image-size", "0"], "folder_image_size must lie in [4, inf), got 0"),
        (["--accumulate", "3"], "batch_size (64) must be divisible by accumulate (3)"),
        (["--device", "tpu"], "device must be auto, cpu, cuda[:N] or mps; got 'tpu'"),
        (["--preset", "imagenet-5"], "argument --preset: invalid choice: 'imagenet-5' (choose"),
        (["--augment", "sepia"], "argument --augment: invalid choice: 'sepia' (choose from"),
        (["--holdout", "5000"], "holdout (5000) must be smaller than the dataset (1437)"),
        (["--tensorboard", "maybe"], "argument --tensorboard: expected true or false, got 'maybe'"),
        (["--config", "/nonexistent/run.yaml"], "cannot read config file /nonexistent/run.yaml"),
    ],
)
def test_bad_values_exit_2_naming_the_key_and_its_range(tmp_path, argv, message):
    code, err, _ = run_cli([*tiny_run(tmp_path / "run", steps=1), *argv])
    assert code == 2
    assert message in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("batch_size: [32, 64]\n", "batch_size must be an integer, got [32, 64]"),
        ("channels_last: maybe\n", "channels_last must be true or false, got 'maybe'"),
        ("epochs: ten\n", "epochs must be a number, got 'ten'"),
        ("arch: {name: resnet18}\n", "arch must be a string, got {'name': 'resnet18'}"),
        ("- arch\n- resnet18\n", "must hold a mapping of keys to values"),
        ("arch: [unclosed\n", "is not valid YAML"),
        ("learning_rate: 0.1\n", "unknown config key 'learning_rate'"),
    ],
)
def test_bad_config_files_exit_2_naming_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, err, _ = run_cli(["train", "--config", str(path), "--out", str(tmp_path / "run")])
    assert code == 2
    assert message in err and (str(path) in err or "must be" in err), err


def test_missing_dataset_exits_2_saying_where_it_looked(tmp_path):
    code, err, _ = run_cli([*FOLDER_RUN, "--data", "cifar10", "--data-root", str(tmp_path),
                            "--out", str(tmp_path / "run")])  # fmt: skip
    assert code == 2
    assert f"cifar10 not found: expected the folder {tmp_path / 'cifar-10-batches-py'}" in err
    assert "--download" in err
