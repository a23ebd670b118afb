"""Any timm backbone: ``--arch timm:NAME`` builds, trains, excludes the right parameters from
LARS, and exports weights that timm loads strictly."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import load_file

from byol import ConfigError, backbones, load_checkpoint
from byol.cli import main
from byol.model import BYOL
from byol.optim import param_groups

VIT = "timm:vit_tiny_patch16_224"
CONVNET = "timm:resnet10t"
RUN = ["--data", "digits", "--image-size", "32", "--hidden-dim", "64", "--projection-dim", "32",
       "--batch-size", "8", "--max-steps", "2", "--knn-every", "0", "--no-tensorboard",
       "--num-workers", "0"]  # fmt: skip


def test_vit_is_sized_to_the_views_and_its_feature_dim_is_found():
    encoder, dim = backbones.build(VIT, in_channels=1, image_size=32)
    assert dim == 192 and encoder.patch_embed.img_size == (32, 32)
    assert encoder(torch.zeros(2, 1, 32, 32)).shape == (2, 192)
    assert encoder.eval()(torch.zeros(2, 1, 48, 48)).shape == (2, 192)  # other eval sizes work
    convnet, dim = backbones.build(CONVNET, in_channels=3)
    assert dim == 512 and convnet(torch.zeros(2, 3, 32, 32)).shape == (2, 512)


def test_unknown_timm_model_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"timm has no model 'vit_tiny_patch16_22'.*did you mean"):
        backbones.build("timm:vit_tiny_patch16_22")


def test_lars_excludes_norms_biases_and_vit_tokens():
    encoder, dim = backbones.build(VIT, in_channels=3, image_size=32)
    model = BYOL(encoder, feature_dim=dim, hidden_dim=32, projection_dim=16)
    regular, excluded = param_groups(model, 1e-6)
    assert regular["lars"] and not excluded["lars"] and excluded["weight_decay"] == 0.0
    excluded_ids = {id(p) for p in excluded["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    for name in ("online_encoder.pos_embed", "online_encoder.cls_token"):
        assert id(dict(model.named_parameters())[name]) in excluded_ids, name
    for parameter in excluded["params"]:
        name = names[id(parameter)]
        assert parameter.ndim <= 1 or name.endswith(("pos_embed", "cls_token")), name
    for parameter in regular["params"]:
        assert parameter.ndim >= 2 and not names[id(parameter)].endswith("norm.weight")
    assert len(regular["params"]) + len(excluded["params"]) == len(list(model.online_parameters()))


@pytest.mark.parametrize("arch", [VIT, CONVNET])
def test_tiny_timm_models_train_and_export_for_timm(arch, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *RUN, "--arch", arch, "--out", str(out)]) == 0
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["step"] == 2 and state["config"]["arch"] == arch
    weights = tmp_path / "encoder.safetensors"
    assert main(["export", str(out), "--out", str(weights)]) == 0  # --format auto
    sidecar = json.loads(weights.with_suffix(".json").read_text())
    assert sidecar["layout"] == "timm" and sidecar["load"].startswith("timm.create_model(")
    name = arch.removeprefix("timm:")
    options = backbones.timm_kwargs(
        backbones.build(arch, in_channels=1, image_size=32)[0], in_channels=1, image_size=32
    )
    fresh = timm.create_model(name, **options)
    fresh.load_state_dict(load_file(str(weights)), strict=True)
    trained = {k[len("online_encoder.") :]: v for k, v in state["model"].items()
               if k.startswith("online_encoder.")}  # fmt: skip
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in trained.items())
    assert f'timm.create_model("{name}"' in capsys.readouterr().out
