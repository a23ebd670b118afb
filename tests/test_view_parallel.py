"""The two halves of the loss on two threads compute what the sequential step computes."""

import copy

import pytest
import torch
from torch import nn

from byol import BYOL, backbones, load_checkpoint
from byol.config import resolve
from byol.train import Trainer, train
from byol.view_parallel import ViewParallelStep, supports_parallel_views

TINY = {
    "data": "digits", "arch": "convnet", "hidden_dim": 64, "projection_dim": 32,
    "batch_size": 32, "epochs": 1, "warmup_epochs": 0.2, "knn_every": 0, "tensorboard": False,
    "log_every": 2, "num_workers": 0, "base_lr": 0.5,
}  # fmt: skip


@pytest.fixture
def two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def _pair(momentum=0.1):
    torch.manual_seed(0)
    encoder, feature_dim = backbones.build("convnet", small_images=True, in_channels=3)
    for module in encoder.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = momentum
    model = BYOL(encoder, feature_dim=feature_dim, hidden_dim=48, projection_dim=16).double()
    return model, copy.deepcopy(model)


def test_gradients_loss_and_running_statistics_match_the_sequential_step(two_threads):
    sequential, parallel = _pair()
    # Non-trivial running statistics first, so the merge rule is exercised from any start.
    with torch.no_grad():
        for a, b in zip(sequential.buffers(), parallel.buffers(), strict=True):
            if a.is_floating_point():
                a.uniform_(0.5, 1.5)
                b.copy_(a)
    step = ViewParallelStep(parallel)
    generator = torch.Generator().manual_seed(1)
    for scale in (1.0, 0.5):  # two calls: gradients accumulate like loss.backward()
        view1 = torch.randn(12, 3, 16, 16, generator=generator, dtype=torch.float64)
        view2 = torch.randn(12, 3, 16, 16, generator=generator, dtype=torch.float64)
        loss, stats = sequential(view1, view2, return_stats=True)
        (loss * scale).backward()
        parallel_loss, parallel_stats = step.step(view1, view2, loss_scale=scale)
        assert parallel_loss.item() == pytest.approx(loss.item(), rel=1e-6)
        assert parallel_stats["collapse_std"].item() == pytest.approx(
            stats["collapse_std"].item(), rel=1e-6
        )
    for (name, a), b in zip(sequential.named_parameters(), parallel.parameters(), strict=True):
        if a.requires_grad:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-12, msg=name)
        else:  # stop-gradient: the target gets none on either path
            assert a.grad is None and b.grad is None, name
    for (name, a), b in zip(sequential.named_buffers(), parallel.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)
    assert sequential.online_encoder[1].num_batches_tracked.item() == 4
    step.close()


def test_thread_count_is_restored(two_threads):
    _, model = _pair()
    step = ViewParallelStep(model)
    view = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    step.step(view, view.flip(-1))
    assert torch.get_num_threads() == 2
    step.close()


def test_models_whose_buffers_cannot_be_merged_are_refused():
    _, model = _pair(momentum=None)  # cumulative average: no fixed-momentum merge rule
    assert not supports_parallel_views(model)
    with pytest.raises(ValueError, match="BatchNorm"):
        ViewParallelStep(model)
    _, model = _pair()
    assert supports_parallel_views(model)
    model.online_encoder.register_buffer("counter", torch.zeros(1))
    assert not supports_parallel_views(model)
    _, model = _pair()
    model.concat_views = True  # one BatchNorm batch of both views: the halves can't split it
    assert not supports_parallel_views(model)
    with pytest.raises(ValueError, match="concat_views"):
        ViewParallelStep(model)


def test_trainer_uses_it_only_where_it_applies(tmp_path, two_threads):
    def trainer(**overrides):
        config = resolve({**TINY, "out": str(tmp_path / "t"), **overrides})
        t = Trainer(config, show_progress=False)
        data, _, _ = t._load_data()
        t.channels = data.channels
        t._build(data)
        return t

    assert trainer().view_parallel is not None
    assert trainer(parallel_views=False).view_parallel is None
    torch.set_num_threads(1)
    assert trainer().view_parallel is None


def test_exact_resume_with_parallel_views(tmp_path, two_threads):
    def run(name, max_steps):
        config = resolve({**TINY, "out": str(tmp_path / name), "max_steps": max_steps,
                          "checkpoint_every": 100, "accumulate": 2})  # fmt: skip
        return train(config, show_progress=False)

    run("straight", 8)
    run("resumed", 4)
    run("resumed", 8)
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
