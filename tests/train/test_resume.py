"""``byol train --resume``: after a SIGKILL, from the folder or a checkpoint file, and refusals."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from byol import load_checkpoint
from byol.cli import main
from processes import sigkill_when

RUN = ["--data", "digits", "--arch", "convnet", "--hidden-dim", "64", "--projection-dim", "32",
       "--batch-size", "32", "--epochs", "1", "--warmup-epochs", "0.2", "--knn-every", "0",
       "--no-tensorboard", "--num-workers", "0", "--log-every", "1", "--seed", "3",
       "--device", "cpu", "--precision", "fp32", "--max-steps", "24"]  # fmt: skip


def _weights(out):
    return load_checkpoint(out / "checkpoints" / "last.pt")["model"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_resume_after_sigkill_ends_bitwise_equal_to_an_uninterrupted_run(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(["train", *RUN, "--out", str(whole)]) == 0
    argv = [sys.executable, "-m", "byol", "train", *RUN, "--checkpoint-every", "4"]
    # last.pt is written (atomically) after the numbered file: the run can resume from it.
    sigkill_when([*argv, "--out", str(killed)], _env(), killed / "checkpoints" / "last.pt",
                 timeout=120)  # fmt: skip
    step = load_checkpoint(killed / "checkpoints" / "last.pt")["step"]
    assert 4 <= step < 24  # killed mid-run
    done = subprocess.run([*argv, "--out", str(killed), "--resume"], env=_env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"at step {step}" in done.stderr
    expected, resumed = _weights(whole), _weights(killed)
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)


def test_resume_from_a_checkpoint_file_into_a_new_folder(tmp_path):
    whole, first, second = tmp_path / "whole", tmp_path / "first", tmp_path / "second"
    assert main(["train", *RUN, "--out", str(whole)]) == 0
    assert main(["train", *RUN[:-1], "10", "--out", str(first)]) == 0
    checkpoint = first / "checkpoints" / "last.pt"
    assert main(["train", *RUN, "--out", str(second), "--resume", str(checkpoint)]) == 0
    expected, resumed = _weights(whole), _weights(second)
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)


def test_resume_with_nothing_to_resume_exits_2(tmp_path, capsys):
    assert main(["train", *RUN, "--out", str(tmp_path / "empty"), "--resume"]) == 2
    error = capsys.readouterr().err
    assert "has no checkpoint to resume from" in error and str(tmp_path / "empty") in error
    assert not (tmp_path / "empty" / "checkpoints").exists()


def test_resume_from_a_checkpoint_of_another_config_exits_2(tmp_path, capsys):
    assert main(["train", *RUN[:-1], "2", "--out", str(tmp_path / "a")]) == 0
    checkpoint = tmp_path / "a" / "checkpoints" / "last.pt"
    code = main(["train", *RUN, "--base-lr", "0.7", "--out", str(tmp_path / "b"),
                 "--resume", str(checkpoint)])  # fmt: skip
    assert code == 2
    assert "different config (base_lr: 0.2 -> 0.7)" in capsys.readouterr().err
