"""``--precision auto`` in a run: chosen from the hardware, said at the start, recorded, and
kept when the run resumes on another kind of machine."""

from __future__ import annotations

import yaml

from byol import load_checkpoint, runtime
from byol.cli import main

RUN = ["train", "--data", "digits", "--arch", "convnet", "--hidden-dim", "32",
       "--projection-dim", "16", "--batch-size", "32", "--knn-every", "0", "--no-tensorboard",
       "--num-workers", "0", "--device", "cpu"]  # fmt: skip


def _flags(monkeypatch, flags):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset(flags))


def test_auto_is_fp32_without_native_bf16_and_says_so(tmp_path, monkeypatch, capsys):
    _flags(monkeypatch, {"avx2"})
    assert main([*RUN, "--max-steps", "1", "--out", str(tmp_path / "run")]) == 0
    assert "precision fp32 (auto: no native bf16 on this cpu)" in capsys.readouterr().err
    plan = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["plan"]
    assert plan["precision"] == "fp32"
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["plan"]["precision"] == (
        "fp32"
    )


def test_auto_is_bf16_with_amx_and_resume_keeps_it(tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "run")
    _flags(monkeypatch, {"amx_tile", "amx_bf16"})
    assert main([*RUN, "--max-steps", "1", "--out", out]) == 0
    assert "precision bf16 (auto: native bf16 on this cpu)" in capsys.readouterr().err
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert checkpoint["plan"]["precision"] == "bf16"
    # The same run continued on a CPU without bf16: it stays in bf16, and says so.
    _flags(monkeypatch, {"avx2"})
    assert main([*RUN, "--max-steps", "2", "--out", out]) == 0
    err = capsys.readouterr().err
    assert "the run started in bf16; continuing in bf16" in err and "emulation" in err
    assert "precision bf16 (auto, kept from the run's start)" in err
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert checkpoint["step"] == 2 and checkpoint["plan"]["precision"] == "bf16"
