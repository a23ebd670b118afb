"""``byol bench``: its fields and values on a tiny config, and that what it times is training.

No timing assertions: the machine is shared. The ceiling measurements are shrunk to tiny
problem sizes so the whole file runs in seconds.
"""

import json
import os
import platform
import subprocess
import sys

import pytest
import torch
from torch import nn

from byol import bench
from byol.bench import BenchConfig, TrainStepRunner, ceiling, step_flops_per_image
from byol.bench.ablations import loop_lars
from byol.cli import main
from byol.errors import ConfigError
from byol.model import BYOL
from byol.optim import LARS, param_groups

TINY = ["--arch", "convnet", "--image-size", "16", "--batch-size", "8", "--hidden-dim", "32",
        "--projection-dim", "16", "--precision", "fp32"]  # fmt: skip


@pytest.fixture
def small_ceiling(monkeypatch):
    monkeypatch.setattr(ceiling, "CPU_MATMUL_SIZE", 64)
    monkeypatch.setattr(ceiling, "CPU_CONV_SHAPE", (2, 8, 8))
    monkeypatch.setattr(ceiling, "CEILING_SECONDS", 0.005)


def tiny_config(**changes) -> BenchConfig:
    values = dict(arch="convnet", image_size=16, batch_size=8, hidden_dim=32, projection_dim=16,
                  steps=2, warmup=1, windows=2, device="cpu", ceiling=False,
                  precision="fp32")  # fmt: skip
    values.update(changes)
    return BenchConfig(**values)


def test_cli_json_has_every_field_with_sane_values(small_ceiling, capsys):
    assert main(["bench", *TINY, "--device", "cpu", "--steps", "2", "--warmup", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)

    assert result["config"]["arch"] == "convnet"
    assert result["config"]["batch_size"] == 8
    assert result["machine"]["device"] == "cpu"
    assert result["machine"]["torch"] == torch.__version__
    windows = result["images_per_s_windows"]
    assert len(windows) == 3 and all(rate > 0 for rate in windows)
    assert result["images_per_s"] == sorted(windows)[1]
    # step_ms is the median window's time per step: batch / images_per_s.
    assert result["step_ms"] == pytest.approx(1000 * 8 / result["images_per_s"], rel=1e-6)
    assert result["loss"] is not None and 0.0 <= result["loss"] <= 8.0

    for key in ("user_ms_per_step", "system_ms_per_step", "page_faults_per_step"):
        assert result[key] >= 0
    assert result["keep_freed_memory"] is _glibc()

    stages = result["stages_ms"]
    assert list(stages) == list(bench.STAGES)
    assert all(ms >= 0 for ms in stages.values())
    assert stages["forward"] > 0 and stages["backward"] > 0
    assert result["stages_sum_ms"] >= max(stages.values())

    # Convnet at 16 px: conv FLOPs of stages 32-64-128-256 at 16, 8, 4, 2 px.
    conv_forward = 2 * 9 * (3 * 32 * 256 + 32 * 64 * 64 + 64 * 128 * 16 + 128 * 256 * 4)
    assert result["flops_per_image"] > 6 * conv_forward  # 2 views x (online fwd+bwd + target)
    assert result["flops_per_image"] < 10 * conv_forward + 10**6
    achieved = result["flops_per_image"] * result["images_per_s"] / 1e9
    assert result["achieved_gflops"] == pytest.approx(achieved)

    assert set(result["matmul_gflops"]) == {"fp32"}
    assert set(result["conv3x3_gflops"]) == {"channels_last", "contiguous"}
    rates = [result["matmul_gflops"]["fp32"], *result["conv3x3_gflops"].values()]
    assert all(rate > 0 for rate in rates)
    assert result["ceiling_gflops"] == max(rates)
    assert result["fraction_of_ceiling"] == pytest.approx(achieved / max(rates))
    assert result["step_conv_fwd_bwd_gflops"] > 0


def test_step_conv_rate_of_an_encoders_own_convolutions():
    encoder = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.Conv2d(8, 4, 1, stride=2),
    )
    before = [p.detach().clone() for p in encoder.parameters()]
    rate = ceiling.step_conv_rate(encoder, torch.rand(2, 3, 8, 8), min_seconds=0.001, windows=1)
    assert 0 < rate < 1e5  # GFLOP/s
    assert all(torch.equal(a, b) for a, b in zip(before, encoder.parameters()))
    assert ceiling.step_conv_rate(nn.Flatten(), torch.rand(2, 3, 8, 8)) == 0.0  # no conv


def test_cli_table_output(small_ceiling, capsys):
    assert main(["bench", *TINY, "--steps", "1", "--warmup", "0", "--windows", "1",
                 "--no-stages", "--no-flops", "--no-channels-last"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert "images/s" in captured.out
    assert "channels_last off" in captured.out
    assert "ceiling" in captured.out
    assert "window 1/1" in captured.err


@pytest.mark.parametrize(
    ("flag", "value", "named"),
    [("--batch-size", "1", "--batch-size"), ("--steps", "0", "--steps"),
     ("--arch", "no-such-net", "no-such-net"), ("--source-size", "2", "--source-size")],
)  # fmt: skip
def test_cli_bad_value_exits_2_naming_it(flag, value, named, capsys):
    assert main(["bench", *TINY, flag, value, "--json"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("byol bench: error:") and named in error


def test_cli_unknown_choice_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *TINY, "--ema", "fused"])
    assert exit_info.value.code == 2
    assert "--ema" in capsys.readouterr().err


def test_bad_setting_names_the_flag():
    with pytest.raises(ConfigError, match="--windows"):
        tiny_config(windows=0).check()
    with pytest.raises(ConfigError, match="--lars"):
        tiny_config(lars="fused").check()


def test_flop_count_matches_the_analytic_count_of_a_linear_byol():
    d_in, features, hidden, out = 12, 10, 16, 6
    torch.manual_seed(0)
    model = BYOL(nn.Sequential(nn.Flatten(), nn.Linear(d_in, features)), feature_dim=features,
                 hidden_dim=hidden, projection_dim=out)  # fmt: skip
    view1, view2 = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    online = 2 * (d_in * features + features * hidden + hidden * out + out * hidden + hidden * out)
    target = 2 * (d_in * features + features * hidden + hidden * out)
    # Backward: weight and input gradients of each online layer, but no gradient for the input.
    backward = 2 * online - 2 * d_in * features
    assert step_flops_per_image(model, view1, view2) == 2 * (online + target + backward)
    # The count ran on a copy: no gradients or statistics left on the model.
    assert all(p.grad is None for p in model.parameters())
    assert int(model.online_projector[1].num_batches_tracked) == 0


def test_instrumented_pass_runs_the_same_computation():
    plain, marked = TrainStepRunner(tiny_config()), TrainStepRunner(tiny_config())
    plain.run_window(2)
    records = marked.stage_times(2)
    assert len(records) == 2
    assert all(set(r) == set(bench.STAGES) and min(r.values()) > 0 for r in records)
    for a, b in zip(plain.model.state_dict().values(), marked.model.state_dict().values()):
        assert torch.equal(a, b)
    assert plain.step == marked.step == 2


def test_bf16_bench_measures_the_ceiling_too(small_ceiling, capsys):
    # The step-convolution ceiling records the encoder's shapes with one forward; with bf16
    # views that forward once failed on the fp32 weights (found on an AMX CPU, where auto is
    # bf16).
    argv = ["bench", *TINY, "--precision", "bf16", "--steps", "1", "--warmup", "1",
            "--windows", "1", "--no-stages", "--no-flops", "--json"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["config"]["precision"] == "bf16"
    assert "bf16" in result["matmul_gflops"]


def test_loop_baselines_compute_what_the_fused_versions_compute():
    fused, looped = (
        TrainStepRunner(tiny_config()),
        TrainStepRunner(tiny_config(ema="loop", lars="loop")),
    )
    assert isinstance(fused.trainer.optimizer, LARS)
    assert type(looped.trainer.optimizer) is not LARS
    fused.run_window(3)
    looped.run_window(3)
    for a, b in zip(fused.model.state_dict().values(), looped.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_loop_lars_step_equals_lars_step():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    twin = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    twin.load_state_dict(net.state_dict())
    options = dict(lr=0.5, momentum=0.9, trust_coefficient=1e-3)
    fused = LARS(param_groups(net, 1e-4), **options)
    looped = loop_lars(param_groups(twin, 1e-4), **options)
    x = torch.randn(8, 5)
    for _ in range(3):
        for model, optimizer in ((net, fused), (twin, looped)):
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
    for a, b in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def _glibc() -> bool:
    return sys.platform == "linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.parametrize(("setting", "expected"), [("1", True), ("0", False)])
def test_keep_freed_memory_is_on_by_default_and_can_be_turned_off(setting, expected):
    code = "from byol.runtime import keep_freed_memory as k; print(k(), k())"
    env = {**os.environ, "BYOL_KEEP_FREED_MEMORY": setting}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip
    on = expected and _glibc()
    assert done.stdout.split() == [str(on), str(on)]
