"""LARS, its exclusions and the schedules, against the reference page in float64."""

import io
import math
import random

import pytest
import torch
from torch import nn

from byol import BYOL, LARS, param_groups, target_decay, warmup_cosine_lr


def reference_lars_step(params, grads, buffers, *, lr, momentum, wd, eta, adapt):
    """The reference page's LARS update for one parameter, in float64, written from the text."""
    new_params, new_buffers = [], []
    for w, g, mu in zip(params, grads, buffers, strict=True):
        g = g + wd * w
        if adapt:
            w_norm, g_norm = w.norm(), g.norm()
            ratio = eta * w_norm / g_norm if (w_norm > 0 and g_norm > 0) else 1.0
            g = g * ratio
        mu = momentum * mu + g
        new_params.append(w - lr * mu)
        new_buffers.append(mu)
    return new_params, new_buffers


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)
        self.ln = nn.LayerNorm(3)
        self.zero = nn.Linear(3, 2, bias=False)
        nn.init.zeros_(self.zero.weight)  # zero-norm weight → trust ratio 1

    def forward(self, x):
        x = self.bn(self.conv(x)).relu().mean((2, 3))
        return self.zero(self.ln(self.fc(x)))


def test_param_groups_exclude_biases_and_norms():
    net = Net()
    groups = param_groups(net, weight_decay=1e-4)
    regular, excluded = groups
    assert regular["lars"] and regular["weight_decay"] == 1e-4
    assert not excluded["lars"] and excluded["weight_decay"] == 0.0
    regular_ids = {id(p) for p in regular["params"]}
    assert regular_ids == {id(net.conv.weight), id(net.fc.weight), id(net.zero.weight)}
    assert {id(p) for p in excluded["params"]} == {
        id(net.conv.bias),
        id(net.bn.weight),
        id(net.bn.bias),
        id(net.fc.bias),
        id(net.ln.weight),
        id(net.ln.bias),
    }


def test_param_groups_of_byol_hold_only_online_parameters():
    encoder = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    model = BYOL(encoder, hidden_dim=8, projection_dim=4)
    grouped = [p for g in param_groups(model, 1e-6) for p in g["params"]]
    assert {id(p) for p in grouped} == {id(p) for p in model.online_parameters()}
    assert len(grouped) == len(list(model.online_parameters()))


def test_predictor_lr_scale_gives_the_predictor_its_own_groups():
    encoder = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    model = BYOL(encoder, hidden_dim=8, projection_dim=4)
    plain = param_groups(model, 1e-6)
    assert [g["lr_scale"] for g in plain] == [1.0, 1.0]
    groups = param_groups(model, 1e-6, predictor_lr_scale=10.0)
    predictor = {id(p) for p in model.predictor.parameters()}
    # The scheduled rate stays in group 0; the predictor's weights and its exclusions follow.
    assert [(g["lars"], g["lr_scale"]) for g in groups] == [
        (True, 1.0),
        (False, 1.0),
        (True, 10.0),
        (False, 10.0),
    ]
    for group in groups:
        ids = {id(p) for p in group["params"]}
        assert (ids <= predictor) == (group["lr_scale"] == 10.0)
        assert ids <= predictor or not ids & predictor
    grouped = [p for g in groups for p in g["params"]]
    assert {id(p) for p in grouped} == {id(p) for p in model.online_parameters()}
    assert len(grouped) == len(list(model.online_parameters()))


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_lars_matches_float64_reference(weight_decay):
    torch.manual_seed(0)
    net = Net().double()
    groups = param_groups(net, weight_decay)
    optimizer = LARS(groups, lr=0.3, momentum=0.9, trust_coefficient=1e-3)
    shadow = {id(p): (p.detach().clone(), torch.zeros_like(p)) for g in groups for p in g["params"]}
    for step in range(4):
        x = torch.randn(5, 3, 6, 6, dtype=torch.float64)
        optimizer.zero_grad()
        net(x).square().sum().backward()
        if step == 2:
            net.fc.bias.grad.zero_()  # zero-norm gradient → ratio 1 (excluded anyway)
            net.conv.weight.grad.zero_()  # zero-norm gradient on a LARS parameter
        for group in groups:
            ps = [shadow[id(p)][0] for p in group["params"]]
            bs = [shadow[id(p)][1] for p in group["params"]]
            gs = [p.grad.clone() for p in group["params"]]
            new_p, new_b = reference_lars_step(
                ps,
                gs,
                bs,
                lr=0.3,
                momentum=0.9,
                wd=group["weight_decay"],
                eta=1e-3,
                adapt=group["lars"],
            )
            for p, np_, nb in zip(group["params"], new_p, new_b, strict=True):
                shadow[id(p)] = (np_, nb)
        optimizer.step()
        for group in groups:
            for p in group["params"]:
                torch.testing.assert_close(p.detach(), shadow[id(p)][0], atol=1e-12, rtol=1e-10)
                torch.testing.assert_close(
                    optimizer.state[p]["momentum_buffer"], shadow[id(p)][1], atol=1e-12, rtol=1e-10
                )
    # The zero weight stayed finite and moved with ratio 1.
    assert torch.isfinite(net.zero.weight).all()


def test_lars_trust_ratio_applies_only_to_regular_group():
    w = nn.Parameter(torch.full((4, 4), 2.0))
    b = nn.Parameter(torch.full((4,), 2.0))
    optimizer = LARS([{"params": [w]}, {"params": [b], "lars": False}], lr=1.0, momentum=0.0)
    w.grad = torch.full((4, 4), 1.0)
    b.grad = torch.full((4,), 1.0)
    optimizer.step()
    # ‖w‖ = 8, ‖g‖ = 4 → ratio 1e-3·2; bias gets the plain gradient.
    torch.testing.assert_close(w.detach(), torch.full((4, 4), 2.0 - 2e-3))
    torch.testing.assert_close(b.detach(), torch.full((4,), 1.0))


def test_lars_state_dict_round_trip():
    torch.manual_seed(0)
    net_a = Net()
    net_b = Net()
    net_b.load_state_dict(net_a.state_dict())
    opt_a = LARS(param_groups(net_a, 1e-4), lr=0.1)
    x = torch.randn(5, 3, 6, 6)
    for _ in range(2):
        opt_a.zero_grad()
        net_a(x).square().sum().backward()
        opt_a.step()
    net_b.load_state_dict(net_a.state_dict())
    opt_b = LARS(param_groups(net_b, 1e-4), lr=0.1)
    buffer = io.BytesIO()  # through bytes, as a checkpoint would (no shared tensors)
    torch.save(opt_a.state_dict(), buffer)
    buffer.seek(0)
    opt_b.load_state_dict(torch.load(buffer, weights_only=True))
    for opt, net in ((opt_a, net_a), (opt_b, net_b)):
        opt.zero_grad()
        net(x).square().sum().backward()
        opt.step()
    for pa, pb in zip(net_a.parameters(), net_b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert opt_b.state_dict()["param_groups"][0]["lars"] is True


def test_lars_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="learning rate"):
        LARS([nn.Parameter(torch.ones(1))], lr=-1.0)
    with pytest.raises(ValueError, match="momentum"):
        LARS([nn.Parameter(torch.ones(1))], lr=0.1, momentum=1.0)


def test_target_decay_schedule():
    total, base = 1000, 0.99
    assert target_decay(0, total, base) == pytest.approx(base, abs=1e-15)
    assert target_decay(total, total, base) == pytest.approx(1.0, abs=1e-15)
    assert target_decay(5 * total, total, base) == pytest.approx(1.0, abs=1e-15)  # clamped
    values = [target_decay(k, total, base) for k in range(total + 1)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    rng = random.Random(0)
    for _ in range(20):
        k = rng.randrange(total + 1)
        expected = 1 - (1 - base) * (math.cos(math.pi * k / total) + 1) / 2
        assert target_decay(k, total, base) == pytest.approx(expected, rel=1e-12)
    assert target_decay(total // 2, total, base) == pytest.approx((1 + base) / 2)
    assert target_decay(0, 10) == pytest.approx(0.996)


def test_warmup_cosine_schedule():
    total, warmup, base = 1000, 100, 0.8
    assert warmup_cosine_lr(0, total, base, warmup) == 0.0
    assert warmup_cosine_lr(50, total, base, warmup) == pytest.approx(0.4)
    assert warmup_cosine_lr(warmup, total, base, warmup) == pytest.approx(base)
    assert warmup_cosine_lr(total, total, base, warmup) == pytest.approx(0.0, abs=1e-15)
    assert warmup_cosine_lr(2 * total, total, base, warmup) == pytest.approx(0.0, abs=1e-15)
    warm = [warmup_cosine_lr(k, total, base, warmup) for k in range(warmup + 1)]
    assert all(b > a for a, b in zip(warm, warm[1:]))
    decay = [warmup_cosine_lr(k, total, base, warmup) for k in range(warmup, total + 1)]
    assert all(b <= a for a, b in zip(decay, decay[1:]))
    k = 550
    expected = base * 0.5 * (1 + math.cos(math.pi * (k - warmup) / (total - warmup)))
    assert warmup_cosine_lr(k, total, base, warmup) == pytest.approx(expected, rel=1e-12)
    assert warmup_cosine_lr(10, total, base, 0) == pytest.approx(
        base * 0.5 * (1 + math.cos(math.pi * 10 / total))
    )


def test_view_size_schedule_switches_once_at_the_fraction():
    from byol.schedules import view_size

    total = 1000
    sizes = [view_size(k, total, 16, 24, 0.8) for k in range(total + 1)]
    assert sizes[:800] == [16] * 800 and sizes[800:] == [24] * 201
    assert view_size(5 * total, total, 16, 24, 0.8) == 24  # past the end: still the last size
    assert {view_size(k, total, 16) for k in range(total + 1)} == {16}  # no final size
    assert view_size(0, total, 16, 24, 0.0) == 24  # from the start
    assert view_size(total - 1, total, 16, 24, 1.0) == 16  # "from 1.0": only k = K
    assert view_size(3, 0, 16, 24) == 16  # an empty schedule keeps the first size
