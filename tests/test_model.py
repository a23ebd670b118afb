"""The BYOL maths against the paper (docs/method.md): loss, stop-gradient, EMA, BN per view."""

import copy
import math

import pytest
import torch
from torch import nn

import byol
from byol import BYOL, LARS, MLPHead, param_groups, regression_loss


def tiny_encoder(channels: int = 3) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, 2, 1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def tiny_byol(**kwargs) -> BYOL:
    torch.manual_seed(0)
    return BYOL(tiny_encoder(), hidden_dim=32, projection_dim=16, **kwargs)


def test_version_and_public_surface():
    assert isinstance(byol.__version__, str) and byol.__version__.count(".") == 2
    for name in ("BYOL", "MLPHead", "regression_loss", "LARS", "param_groups", "target_decay"):
        assert hasattr(byol, name)


def test_regression_loss_is_normalised_mse_and_two_minus_two_cos():
    torch.manual_seed(1)
    p, z = torch.randn(64, 16, dtype=torch.float64), torch.randn(64, 16, dtype=torch.float64)
    loss = regression_loss(p, z).double()
    p_bar, z_bar = p / p.norm(dim=1, keepdim=True), z / z.norm(dim=1, keepdim=True)
    torch.testing.assert_close(loss, ((p_bar - z_bar) ** 2).sum(1), atol=1e-6, rtol=1e-6)
    cos = (p * z).sum(1) / (p.norm(dim=1) * z.norm(dim=1))
    torch.testing.assert_close(loss, 2 - 2 * cos, atol=1e-6, rtol=1e-6)


def test_regression_loss_identical_direction_zero_opposite_four_zero_vector_safe():
    p = torch.randn(5, 8)
    torch.testing.assert_close(regression_loss(p, 3.0 * p), torch.zeros(5), atol=1e-6, rtol=0)
    torch.testing.assert_close(regression_loss(p, -p), torch.full((5,), 4.0), atol=1e-6, rtol=0)
    zero = torch.zeros(2, 8, requires_grad=True)
    value = regression_loss(zero, torch.randn(2, 8))
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(zero.grad).all()
    torch.testing.assert_close(value, torch.full((2,), 2.0))


def test_symmetric_loss_matches_sum_of_both_directions_and_lies_in_0_8():
    model = tiny_byol()
    v1, v2 = torch.randn(6, 3, 16, 16), torch.randn(6, 3, 16, 16)
    loss = model(v1, v2)
    # Recompute by hand on a copy (BN in train mode; same batches → same statistics).
    ref = copy.deepcopy(model)
    with torch.no_grad():
        p1 = ref.predictor(ref.online_projector(ref.online_encoder(v1)))
        p2 = ref.predictor(ref.online_projector(ref.online_encoder(v2)))
        z1 = ref.target_projector(ref.target_encoder(v1))
        z2 = ref.target_projector(ref.target_encoder(v2))
    per_sample = regression_loss(p1, z2) + regression_loss(p2, z1)
    torch.testing.assert_close(loss, per_sample.mean(), atol=1e-6, rtol=1e-6)
    assert ((per_sample >= 0) & (per_sample <= 8)).all()
    assert loss.ndim == 0


def test_target_built_eagerly_as_copy_without_grad():
    model = tiny_byol()
    online = [*model.online_encoder.parameters(), *model.online_projector.parameters()]
    target = list(model.target_parameters())
    assert len(online) == len(target) > 0
    for o, t in zip(online, target, strict=True):
        assert torch.equal(o, t) and o.data_ptr() != t.data_ptr()
        assert not t.requires_grad
    online_ids = {id(p) for p in model.online_parameters()}
    assert not online_ids & {id(p) for p in target}
    assert {id(p) for p in model.predictor.parameters()} <= online_ids


def test_stop_gradient_and_target_moves_only_on_update():
    model = tiny_byol()
    optimizer = torch.optim.SGD(model.online_parameters(), lr=0.5)
    before_online = [p.detach().clone() for p in model.online_parameters()]
    before_target = [p.detach().clone() for p in model.target_parameters()]
    loss = model(torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16))
    loss.backward()
    assert all(p.grad is None for p in model.target_parameters())
    assert all(p.grad is not None for p in model.online_parameters())
    optimizer.step()
    changed = [not torch.equal(a, b) for a, b in zip(before_online, model.online_parameters())]
    assert all(changed)
    for a, b in zip(before_target, model.target_parameters(), strict=True):
        assert torch.equal(a, b)
    model.update_target(0.9)
    moved = [not torch.equal(a, b) for a, b in zip(before_target, model.target_parameters())]
    assert any(moved)


@pytest.mark.parametrize("tau", [0.0, 0.3, 0.99, 1.0])
def test_update_target_matches_formula(tau):
    model = tiny_byol()
    with torch.no_grad():
        for p in model.online_parameters():
            p.add_(torch.randn_like(p))
    online = [
        p.detach().clone()
        for p in [*model.online_encoder.parameters(), *model.online_projector.parameters()]
    ]
    target = [p.detach().clone() for p in model.target_parameters()]
    model.update_target(tau)
    for xi, theta, new in zip(target, online, model.target_parameters(), strict=True):
        expected = tau * xi.double() + (1 - tau) * theta.double()
        torch.testing.assert_close(new.double(), expected, atol=1e-6, rtol=1e-6)
        if tau == 0.0:
            assert torch.equal(new, theta)
        if tau == 1.0:
            assert torch.equal(new, xi)


def test_update_target_leaves_batchnorm_running_stats_alone():
    model = tiny_byol()
    model(torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16) * 5 + 3)
    online_bn = model.online_encoder[1].running_mean.clone()
    target_bn = model.target_encoder[1].running_mean.clone()
    model.update_target(0.0)
    assert torch.equal(model.target_encoder[1].running_mean, target_bn)
    assert torch.equal(model.online_encoder[1].running_mean, online_bn)


def test_update_target_rejects_tau_out_of_range():
    with pytest.raises(ValueError, match="tau"):
        tiny_byol().update_target(1.5)


def test_batchnorm_statistics_are_per_view():
    """Views with very different statistics: per-view BN differs from concatenated BN."""
    torch.manual_seed(3)
    v1 = torch.randn(8, 3, 16, 16)
    v2 = torch.randn(8, 3, 16, 16) * 4 + 2
    per_view = tiny_byol()
    concatenated = tiny_byol(concat_views=True)
    concatenated.load_state_dict(per_view.state_dict())
    loss_per_view = per_view(v1, v2)

    # Reference: each view alone through fresh copies, BN in train mode on that view only.
    ref = copy.deepcopy(concatenated)
    with torch.no_grad():
        p1 = ref.predictor(ref.online_projector(ref.online_encoder(v1)))
        p2 = ref.predictor(ref.online_projector(ref.online_encoder(v2)))
        z1 = ref.target_projector(ref.target_encoder(v1))
        z2 = ref.target_projector(ref.target_encoder(v2))
    expected = (regression_loss(p1, z2) + regression_loss(p2, z1)).mean()
    torch.testing.assert_close(loss_per_view, expected, atol=1e-6, rtol=1e-6)
    assert abs(concatenated(v1, v2).item() - expected.item()) > 1e-4
    # The first BN layer saw the mean of view 2 last, not the mixture.
    bn = per_view.online_encoder[1]
    assert bn.num_batches_tracked.item() == 2


def test_mlp_head_layout():
    head = MLPHead(512, 4096, 256)
    kinds = [type(m) for m in head]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert head[0].bias is not None and head[3].bias is None
    assert head[1].momentum == 0.1 and head[1].eps == 1e-5
    assert head(torch.randn(4, 512)).shape == (4, 256)


def test_defaults_and_feature_dim_inferred():
    model = BYOL(tiny_encoder())
    assert model.feature_dim == 8
    assert model.online_projector.hidden_dim == 4096 and model.online_projector.out_dim == 256
    assert model.predictor.in_dim == 256 and model.predictor.out_dim == 256


def test_byol_with_torchvision_resnet_and_embed():
    encoder, dim = byol.backbones.build("resnet18", small_images=True)
    model = BYOL(encoder, hidden_dim=64, projection_dim=32)
    assert model.feature_dim == dim == 512
    x1, x2 = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    loss = model(x1, x2)
    loss.backward()
    assert torch.isfinite(loss) and 0 <= loss.item() <= 8
    model.train()
    features = model.embed(x1)
    assert features.shape == (4, 512) and model.online_encoder.training
    # embed uses eval mode: a sample's features don't depend on the rest of the batch.
    torch.testing.assert_close(model.embed(x1[:1]), features[:1], atol=1e-5, rtol=1e-4)


def test_collapse_metric():
    healthy = byol.collapse_std(torch.randn(4096, 64))
    collapsed = byol.collapse_std(torch.ones(4096, 64) + 1e-4 * torch.randn(4096, 64))
    assert abs(healthy.item() - 1.0) < 0.05
    assert collapsed.item() < 0.01


def test_training_reduces_loss_with_lars():
    torch.manual_seed(0)
    model = tiny_byol()
    optimizer = LARS(param_groups(model, 1e-6), lr=0.5)
    x = torch.rand(32, 3, 16, 16)
    losses = []
    for step in range(30):
        noise1, noise2 = 0.1 * torch.randn_like(x), 0.1 * torch.randn_like(x)
        loss = model(x + noise1, x + noise2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.update_target(byol.target_decay(step, 30, 0.9))
        losses.append(loss.item())
    assert math.isfinite(losses[-1]) and losses[-1] < 0.5 * losses[0]
