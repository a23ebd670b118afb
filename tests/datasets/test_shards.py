"""WebDataset-style tar shards (byol.datasets.shards): patterns, the index, labels, bad members,
and exact resume of a run on shards and on a streamed folder after SIGKILL."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from byol import load_checkpoint
from byol.augment import ViewConfig
from byol.augment.crops import CropSampler
from byol.cli import main
from byol.data import load_dataset
from byol.datasets.shards import expand_pattern, is_shard_pattern
from byol.errors import DataError
from photos import make_photo_folder, photo
from processes import sigkill_when

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "camera")


def jpeg_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def write_shards(root: Path, *, shards: int = 2, per_shard: int = 6) -> str:
    """``shards`` tar files of real photos (random crops of them) with .cls labels."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    number = 0
    for shard in range(shards):
        with tarfile.open(root / f"train-{shard:06d}.tar", "w") as tar:
            for _ in range(per_shard):
                name = PHOTOS[number % len(PHOTOS)]
                image = photo(name)
                top, left = rng.integers(0, 40, 2)
                add(tar, f"{name}/{number:05d}.jpg", jpeg_bytes(image[top:, left:]))
                add(tar, f"{name}/{number:05d}.cls", str(number % 3).encode())
                number += 1
    return str(root / f"train-{{000000..{shards - 1:06d}}}.tar")


def test_patterns_expand_ranges_choices_and_lists():
    assert expand_pattern("s/a-{008..011}.tar") == [f"s/a-{n:03d}.tar" for n in range(8, 12)]
    assert expand_pattern("{x,y}-{1..2}.tar") == ["x-1.tar", "x-2.tar", "y-1.tar", "y-2.tar"]
    assert expand_pattern("a.tar::b-{0..1}.tar") == ["a.tar", "b-0.tar", "b-1.tar"]
    assert is_shard_pattern("shards/train-{000000..000127}.tar") and not is_shard_pattern("x")


def test_shards_load_as_labelled_full_resolution_samples(tmp_path):
    pattern = write_shards(tmp_path / "shards")
    data = load_dataset(pattern)
    assert len(data) == 12 and data.full_resolution and data.channels == 3
    assert data.labels.tolist() == [n % 3 for n in range(12)]
    assert data.paths[0].endswith("train-000000.tar:astronaut/00000")
    whole = data.at_size(32, 0.875).get(torch.arange(12))
    assert whole.shape == (12, 3, 32, 32)
    sampler = CropSampler.from_views((ViewConfig(), ViewConfig()), seed=0)
    keyed = [(0, torch.tensor([11, 0, 5]))]
    inline = next(data.crop_batches(keyed, sampler, 24, num_workers=0))
    workers = next(data.crop_batches(keyed, sampler, 24, num_workers=2))
    assert inline.shape == (3, 2, 3, 24, 24) and torch.equal(inline, workers)


def test_held_out_shards_are_the_pattern_with_train_replaced(tmp_path):
    pattern = write_shards(tmp_path / "shards")
    with pytest.raises(DataError, match="no test split"):
        load_dataset(pattern, split="test")
    for shard in (tmp_path / "shards").glob("train-*.tar"):
        (shard.parent / shard.name.replace("train", "val")).write_bytes(shard.read_bytes())
    held_out = load_dataset(pattern, split="test")  # test falls back to val, as folders do
    assert len(held_out) == 12 and held_out.paths[0].split(":")[0].endswith("val-000000.tar")


def test_bad_shards_and_members_are_named(tmp_path):
    write_shards(tmp_path, shards=1, per_shard=1)  # train-000000.tar only
    with pytest.raises(DataError, match=r"train-000001\.tar does not exist"):
        load_dataset(str(tmp_path / "train-{000000..000001}.tar"))
    (tmp_path / "gz.tar").write_bytes(b"\x1f\x8b" + b"0" * 2000)
    with pytest.raises(DataError, match=r"gz\.tar"):
        load_dataset(str(tmp_path / "gz.tar"))
    with tarfile.open(tmp_path / "bad.tar", "w") as tar:
        add(tar, "a/0.jpg", jpeg_bytes(photo("astronaut")))
        add(tar, "a/1.jpg", b"")
        add(tar, "a/2.jpg", jpeg_bytes(photo("coffee"))[:5000])  # truncated
    with pytest.warns(UserWarning, match=r"bad.tar:a/1.jpg \(0 bytes\)"):
        data = load_dataset(str(tmp_path / "bad.tar"))
    assert len(data) == 2
    sampler = CropSampler.from_views((ViewConfig(), ViewConfig()), seed=0)
    with pytest.warns(UserWarning, match="bad.tar:a/2"):
        next(data.crop_batches([(0, torch.tensor([1]))], sampler, 16, num_workers=0))
    with pytest.raises(DataError, match=r"bad\.tar:a/1\.jpg"):
        load_dataset(str(tmp_path / "bad.tar"), strict=True)


RUN = ["--arch", "convnet", "--hidden-dim", "32", "--projection-dim", "16", "--image-size", "32",
       "--batch-size", "4", "--epochs", "20", "--warmup-epochs", "1", "--knn-every", "0",
       "--no-tensorboard", "--log-every", "1", "--seed", "2", "--device", "cpu",
       "--precision", "fp32", "--max-steps", "40", "--augment", "imagenet"]  # fmt: skip


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.mark.parametrize("source", ["folder", "shards"])
def test_resume_after_sigkill_is_exact_for_streamed_data(source, tmp_path):
    # Uninterrupted in this process without workers; killed and resumed in subprocesses with
    # two workers each: the crops are a function of (seed, epoch, index), so the weights match.
    if source == "folder":
        data = tmp_path / "photos"
        make_photo_folder(data, awkward=False)
        data = str(data)
    else:
        data = write_shards(tmp_path / "shards", shards=2, per_shard=4)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(["train", "--data", data, *RUN, "--num-workers", "0", "--out", str(whole)]) == 0
    argv = [sys.executable, "-m", "byol", "train", "--data", data, *RUN, "--num-workers", "2",
            "--checkpoint-every", "4", "--out", str(killed)]  # fmt: skip
    # last.pt is written (atomically) after the numbered file: the run can resume from it.
    sigkill_when(argv, _env(), killed / "checkpoints" / "last.pt", timeout=180)
    step = load_checkpoint(killed / "checkpoints" / "last.pt")["step"]
    assert 4 <= step < 40
    done = subprocess.run([*argv, "--resume"], env=_env(), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    expected = load_checkpoint(whole / "checkpoints" / "last.pt")["model"]
    resumed = load_checkpoint(killed / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)
