"""Untrusted files never run code, and a run writes only inside its run folder.

The malicious files here carry a pickle whose ``__reduce__`` writes a marker file when it is
unpickled. Each test first shows the exploit is live (a plain ``torch.load`` /
``pickle.load`` does write the marker), then that byol refuses the file with exit code 2 or
a :class:`CheckpointError` / :class:`DataError`, and that the marker never appeared.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import shutil
import struct
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from byol import CheckpointError, DataError, load_checkpoint
from byol.checkpoint import MAGIC
from byol.cli import main
from byol.data import load_dataset
from fault_trials import train_argv


class Exploit:
    """Unpickling this runs ``exec``, which writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


def run_cli(argv: list[str]) -> tuple[int, str, list[str]]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with (
        warnings.catch_warnings(record=True) as caught,
        redirect_stdout(stdout),
        redirect_stderr(stderr),
    ):
        warnings.simplefilter("always")
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
    return code, stderr.getvalue(), [str(w.message) for w in caught]


def with_byol_header(payload: bytes) -> bytes:
    """``payload`` behind a valid BYOLCKPT header (right length, right SHA-256)."""
    return struct.pack("<8sQ32s", MAGIC, len(payload), hashlib.sha256(payload).digest()) + payload


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "CODE-RAN"


@pytest.fixture
def malicious(tmp_path, marker) -> dict[str, Path]:
    """A torch.save file holding the exploit, raw and behind a valid byol header."""
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(2)}, "step": 1, "evil": Exploit(marker)}, buffer)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(buffer.getvalue())
    wrapped = tmp_path / "wrapped.pt"
    wrapped.write_bytes(with_byol_header(buffer.getvalue()))
    # The exploit is live: an unrestricted load runs it.
    torch.load(raw, weights_only=False)
    assert marker.read_text() == "code ran"
    marker.unlink()
    return {"raw": raw, "wrapped": wrapped}


def test_load_checkpoint_refuses_malicious_pickles(malicious, marker):
    with pytest.raises(CheckpointError, match=r"no BYOLCKPT header.*refusing to unpickle") as e:
        load_checkpoint(malicious["raw"])
    assert str(malicious["raw"]) in str(e.value)
    with pytest.raises(CheckpointError, match="holds objects that are not plain weights") as e:
        load_checkpoint(malicious["wrapped"])
    assert str(malicious["wrapped"]) in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["raw", "wrapped"])
@pytest.mark.parametrize("command", ["eval", "embed"])
def test_cli_refuses_malicious_checkpoints(malicious, marker, tmp_path, kind, command):
    argv = [command, "--checkpoint", str(malicious[kind]), "--data", "digits"]
    if command == "embed":
        argv += ["--out", str(tmp_path / "features.npy")]
    code, err, _ = run_cli(argv)
    assert code == 2
    assert str(malicious[kind]) in err
    assert not marker.exists()
    assert not (tmp_path / "features.npy").exists()


def test_resume_refuses_a_malicious_last_checkpoint(malicious, marker, tmp_path):
    # A run folder whose last.pt was swapped for the exploit (with a valid header).
    template = tmp_path / "template"
    code, err, _ = run_cli(train_argv(template, steps=2, checkpoint_every=1))
    assert code == 0, err
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copy(template / "config.yaml", out / "config.yaml")
    shutil.copy(malicious["wrapped"], out / "checkpoints" / "last.pt")
    argv = train_argv(out, steps=3, checkpoint_every=1)

    code, err, _ = run_cli(argv)  # nothing else to resume from: an error, no fresh start
    assert code == 2
    assert f"no valid checkpoint in {out / 'checkpoints'}" in err
    assert "holds objects that are not plain weights" in err
    assert sorted(os.listdir(out / "checkpoints")) == ["last.pt"]

    # With an honest older checkpoint beside it, the run falls back to that one, warning.
    shutil.copy(template / "checkpoints" / "step-00000002.pt", out / "checkpoints")
    code, err, caught = run_cli(argv)
    assert code == 0, err
    assert "at step 2" in err
    assert any(str(out / "checkpoints" / "last.pt") in w and "not plain weights" in w
               for w in caught)  # fmt: skip
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 3
    assert not marker.exists()


def test_yaml_config_cannot_construct_objects(tmp_path, marker):
    path = tmp_path / "evil.yaml"
    path.write_text(f"arch: !!python/object/apply:builtins.exec [\"open({str(marker)!r}, 'w')\"]\n")
    code, err, _ = run_cli(["train", "--config", str(path), "--out", str(tmp_path / "run")])
    assert code == 2 and f"config file {path} is not valid YAML" in err
    assert not marker.exists() and not (tmp_path / "run").exists()
    # An existing run folder's config.yaml is read as safely.
    out = tmp_path / "run2"
    out.mkdir()
    shutil.copy(path, out / "config.yaml")
    code, err, _ = run_cli(train_argv(out, steps=1, checkpoint_every=1))
    assert code == 2 and "is not a byol run config" in err
    assert not marker.exists()


def test_numpy_files_with_pickled_objects_are_refused(tmp_path, marker):
    path = tmp_path / "images.npy"
    np.save(path, np.array([Exploit(marker)], dtype=object), allow_pickle=True)
    archive = tmp_path / "images.npz"
    np.savez(archive, images=np.array([Exploit(marker)], dtype=object))
    for source in (path, archive):
        with pytest.raises(DataError, match=re.escape(str(source))):
            load_dataset(str(source))
    assert not marker.exists()
    np.load(path, allow_pickle=True)  # the exploit is live
    assert marker.exists()


def test_cifar_pickles_are_checksummed_before_they_are_unpickled(tmp_path, marker):
    # torchvision reads CIFAR batches with pickle; it checks their MD5 sums first.
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]
    for name in names:
        (folder / name).write_bytes(pickle.dumps(Exploit(marker)))
    with pytest.raises(DataError, match="incomplete or corrupt"):
        load_dataset("cifar10", root=tmp_path)
    assert not marker.exists()


# ----------------------------------------------------------------------------- output paths


def test_training_writes_only_inside_its_run_folder(tmp_path, monkeypatch):
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    parent = tmp_path / "runs"
    parent.mkdir()
    out = parent / "run"
    monkeypatch.chdir(workdir)
    argv = [*train_argv(out, steps=2, checkpoint_every=1), "--tensorboard"]
    code, err, _ = run_cli(argv)
    assert code == 0, err
    code, err, _ = run_cli([*argv, "--max-steps", "3"])  # and a resume
    assert code == 0, err
    assert os.listdir(workdir) == []
    assert os.listdir(parent) == ["run"]
    assert sorted(os.listdir(out)) == [
        "checkpoints", "config.yaml", "metrics.jsonl", "summary.json", "tb"
    ]  # fmt: skip
    assert sorted(os.listdir(out / "checkpoints")) == [
        "last.pt", "step-00000002.pt", "step-00000003.pt"
    ]  # fmt: skip


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_existing_run_with_another_config_is_left_untouched(tmp_path):
    out = tmp_path / "run"
    code, err, _ = run_cli(train_argv(out, steps=2, checkpoint_every=1))
    assert code == 0, err
    before = _snapshot(out)
    code, err, _ = run_cli([*train_argv(out, steps=2, checkpoint_every=1), "--base-lr", "0.1",
                            "--hidden-dim", "32"])  # fmt: skip
    assert code == 2
    assert f"run folder {out} already holds a run with a different config" in err
    assert "base_lr: 0.5 -> 0.1" in err and "hidden_dim: 64 -> 32" in err
    assert _snapshot(out) == before


def test_folder_with_a_foreign_config_yaml_is_not_overwritten(tmp_path):
    out = tmp_path / "project"
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump({"name": "my project", "version": 3}))
    (out / "notes.md").write_text("mine")
    before = _snapshot(out)
    code, err, _ = run_cli(train_argv(out, steps=1, checkpoint_every=1))
    assert code == 2 and "already holds a run with a different config" in err
    assert _snapshot(out) == before
