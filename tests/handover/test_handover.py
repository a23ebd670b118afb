"""Hand-over: rebuilding the encoder from a checkpoint, ``byol embed`` and ``byol export``.

Tiny real runs are made through the ``byol train`` command line (in-process) once per module.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

import byol
from byol import backbones
from byol.checkpoint import load_checkpoint
from byol.cli import main
from byol.data import load_dataset
from byol.errors import CheckpointError
from byol.evaluate import extract_features
from byol.handover import load_encoder, load_exported

TINY_RUN = ["--data", "digits", "--hidden-dim", "64", "--batch-size", "64", "--knn-every", "0",
            "--no-tensorboard"]  # fmt: skip


def _train(out, *flags: str):
    assert main(["train", *TINY_RUN, "--out", str(out), *flags]) == 0
    return out / "checkpoints" / "last.pt"


@pytest.fixture(scope="module")
def convnet_checkpoint(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("convnet") / "run", "--arch", "convnet",
                  "--max-steps", "5")  # fmt: skip


@pytest.fixture(scope="module")
def resnet_checkpoint(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("resnet") / "run", "--arch", "resnet18",
                  "--image-size", "8", "--max-steps", "2")  # fmt: skip


@pytest.fixture(scope="module")
def digits_test():
    return load_dataset("digits", split="test")


def _features(encoder, images, info) -> torch.Tensor:
    return extract_features(encoder, images, mean=info.mean, std=info.std, size=info.image_size)


def test_load_encoder_rebuilds_the_online_encoder(convnet_checkpoint):
    encoder, info = load_encoder(convnet_checkpoint)
    model_state = load_checkpoint(convnet_checkpoint)["model"]
    state = encoder.state_dict()
    assert len(state) == 24
    for key, value in state.items():
        assert torch.equal(value, model_state[f"online_encoder.{key}"]), key
    # After 5 steps the target encoder has drifted from the online one: we took the online one.
    assert any(
        not torch.equal(model_state[f"online_encoder.{k}"], model_state[f"target_encoder.{k}"])
        for k in state if k.endswith("weight")
    )  # fmt: skip
    assert not encoder.training
    mean, std = load_dataset("digits", split="train").mean_std()
    assert (info.arch, info.small_images, info.in_channels) == ("convnet", True, 1)
    assert (info.feature_dim, info.image_size, info.step, info.data) == (256, 8, 5, "digits")
    assert info.mean == pytest.approx(mean) and info.std == pytest.approx(std)
    assert info.byol_version == byol.__version__
    # A run folder is accepted in place of its checkpoint.
    _, same = load_encoder(convnet_checkpoint.parent.parent)
    assert same.source == str(convnet_checkpoint)


def test_torchvision_export_loads_into_a_fresh_torchvision_resnet18(
    resnet_checkpoint, digits_test, tmp_path, capsys
):
    out = tmp_path / "encoder.safetensors"
    assert main(["export", "--checkpoint", str(resnet_checkpoint), "--out", str(out)]) == 0
    assert "torchvision layout" in capsys.readouterr().out
    sidecar = json.loads((tmp_path / "encoder.json").read_text())
    assert sidecar["arch"] == "resnet18" and sidecar["layout"] == "torchvision"
    assert (sidecar["small_images"], sidecar["in_channels"]) == (True, 1)
    assert (sidecar["feature_dim"], sidecar["image_size"]) == (512, 8)
    assert sidecar["byol_version"] == byol.__version__
    with safe_open(str(out), framework="pt") as handle:
        header = handle.metadata()
    assert header["arch"] == "resnet18" and header["small_images"] == "true"
    assert json.loads(header["mean"]) == pytest.approx(sidecar["mean"])

    # The documented recipe, written out independently of byol.
    state = load_file(str(out))
    model = torchvision.models.resnet18(num_classes=10)
    model.fc = nn.Identity()
    model.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    model.load_state_dict(state, strict=True)
    reference = set(torchvision.models.resnet18().state_dict()) - {"fc.weight", "fc.bias"}
    assert set(state) == reference

    encoder, info = load_encoder(resnet_checkpoint)
    images = digits_test.images[:48]
    expected = _features(encoder, images, info)
    assert expected.shape == (48, 512) and expected.std() > 0
    torch.testing.assert_close(_features(model, images, info), expected, atol=1e-5, rtol=1e-5)
    reloaded, reloaded_info = load_exported(out)
    assert isinstance(reloaded, torchvision.models.ResNet)
    assert reloaded_info.mean == info.mean and reloaded_info.image_size == 8
    torch.testing.assert_close(_features(reloaded, images, info), expected, atol=1e-5, rtol=1e-5)


def test_byol_format_export_round_trips_a_convnet(convnet_checkpoint, digits_test, tmp_path):
    out = tmp_path / "convnet.safetensors"
    assert main(["export", "--checkpoint", str(convnet_checkpoint), "--out", str(out),
                 "--format", "byol"]) == 0  # fmt: skip
    fresh, _ = backbones.build("convnet", small_images=True, in_channels=1)
    assert set(load_file(str(out))) == set(fresh.state_dict())
    encoder, info = load_encoder(convnet_checkpoint)
    reloaded, reloaded_info = load_exported(out)
    assert reloaded_info.arch == "convnet" and reloaded_info.extra["layout"] == "byol"
    images = digits_test.images
    torch.testing.assert_close(
        _features(reloaded, images, reloaded_info), _features(encoder, images, info),
        atol=1e-5, rtol=1e-5,
    )  # fmt: skip


def test_torchvision_format_refuses_a_convnet(convnet_checkpoint, tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    argv = ["export", str(convnet_checkpoint), "--out", str(out), "--format", "torchvision"]
    assert main(argv) == 2
    assert "--format auto or byol" in capsys.readouterr().err
    assert not out.exists()


def test_export_defaults_work_for_the_default_preset(tmp_path, capsys):
    """The default preset's encoder (convnet-512) exports with every default, and loads back."""
    run = tmp_path / "run"
    assert main(["train", "--preset", "fashion-mnist", "--data", "digits", "--image-size", "8",
                 "--eval-image-size", "8", "--max-steps", "1", "--batch-size", "32",
                 "--knn-every", "0", "--no-tensorboard", "--out", str(run)]) == 0  # fmt: skip
    out = tmp_path / "encoder.safetensors"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert "byol layout" in capsys.readouterr().out
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["arch"] == "convnet-512" and sidecar["layout"] == "byol"
    assert sidecar["load"] == 'byol.handover.load_exported("encoder.safetensors")'
    reloaded, info = load_exported(out)  # strict
    assert info.arch == "convnet-512" and info.image_size == 8
    encoder, _ = load_encoder(run)
    assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in encoder.state_dict().items())


def test_embed_writes_features_and_labels_in_dataset_order(
    convnet_checkpoint, digits_test, tmp_path, capsys
):
    out = tmp_path / "emb.npy"
    # On the CPU, as the reference below (a GPU's TF32 convolutions differ by ~1e-3).
    code = main(["embed", "--checkpoint", str(convnet_checkpoint), "--split", "test",
                 "--device", "cpu", "--out", str(out)])  # fmt: skip
    assert code == 0
    assert "shape 360x256" in capsys.readouterr().out
    features = np.load(out)
    labels = np.load(tmp_path / "emb.labels.npy")
    assert features.shape == (360, 256) and features.dtype == np.float32
    np.testing.assert_array_equal(labels, digits_test.labels.numpy())
    assert not (tmp_path / "emb.paths.txt").exists()
    encoder, info = load_encoder(convnet_checkpoint)
    rows = [0, 7, 359]
    expected = _features(encoder, digits_test.images[rows], info).numpy()
    np.testing.assert_allclose(features[rows], expected, atol=1e-5)


def test_embed_of_an_image_folder_writes_source_paths(convnet_checkpoint, tmp_path):
    folder = tmp_path / "shapes"
    rng = np.random.default_rng(0)
    for label in ("circle", "square"):
        (folder / label).mkdir(parents=True)
        for index in range(3):
            pixels = rng.integers(0, 256, size=(12, 12), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / label / f"{index}.png")
    out = tmp_path / "folder-emb.npy"
    assert main(["embed", "--checkpoint", str(convnet_checkpoint), "--data", str(folder),
                 "--out", str(out)]) == 0  # fmt: skip
    assert np.load(out).shape == (6, 256)
    paths = (tmp_path / "folder-emb.paths.txt").read_text().splitlines()
    assert [p.split("/")[-2:] for p in paths] == [
        [label, f"{i}.png"] for label in ("circle", "square") for i in range(3)
    ]
    np.testing.assert_array_equal(np.load(tmp_path / "folder-emb.labels.npy"), [0, 0, 0, 1, 1, 1])


@pytest.mark.parametrize("command", ["eval", "embed", "export"])
def test_missing_checkpoint_exits_2_naming_the_path(command, tmp_path, capsys):
    missing = tmp_path / "nowhere" / "last.pt"
    out = ["--out", str(tmp_path / ("o.npy" if command == "embed" else "o.safetensors"))]
    argv = [command, "--checkpoint", str(missing), *(out if command != "eval" else [])]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert str(missing) in error and error.startswith(f"byol {command}: error:")


def test_corrupt_checkpoint_exits_2_naming_the_path(tmp_path, capsys):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"not a checkpoint at all")
    assert main(["eval", "--checkpoint", str(bad), "--protocol", "knn"]) == 2
    assert str(bad) in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="not a byol checkpoint"):
        load_encoder(bad)


@pytest.mark.parametrize("command", ["eval", "embed", "export", "report"])
def test_every_command_takes_the_run_positionally_or_as_checkpoint(
    command, convnet_checkpoint, tmp_path, capsys
):
    run = convnet_checkpoint.parent.parent
    extra = {
        "eval": ["--protocol", "knn"],
        "embed": ["--out", str(tmp_path / "e.npy")],
        "export": ["--out", str(tmp_path / "w.safetensors"), "--format", "byol"],
        "report": ["--out", str(tmp_path / "report"), "--tsne-points", "20"],
    }[command]
    assert main([command, str(run), *extra]) == 0, capsys.readouterr().err
    assert main([command, "--checkpoint", str(convnet_checkpoint), *extra]) == 0
    assert main([command, *extra]) == 2
    assert f"byol {command} needs a run" in capsys.readouterr().err
