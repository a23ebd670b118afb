"""The device's ceiling: sustained matmul and 3x3-convolution rates, and the FLOPs of a step.

``byol bench`` reports the step's achieved FLOP/s as a fraction of the best of these rates.
"""

from __future__ import annotations

import copy
import math
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "conv3x3_rate",
    "device_info",
    "matmul_rate",
    "process_usage",
    "step_conv_rate",
    "step_flops_per_image",
    "synchronize",
]

# Problem sizes of the ceiling measurements: large enough to reach the device's sustained rate.
CPU_MATMUL_SIZE = 2048
GPU_MATMUL_SIZE = 8192
CPU_CONV_SHAPE = (64, 128, 32)  # batch, channels, side
GPU_CONV_SHAPE = (256, 256, 56)
CEILING_SECONDS = 0.3  # per timing window


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_info(device: torch.device) -> dict[str, Any]:
    """Name of the device, CPU model and cores, torch version and intra-op threads."""
    info: dict[str, Any] = {
        "device": str(device),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def process_usage() -> dict[str, float] | None:
    try:
        import resource
    except ImportError:  # not a Unix
        return None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"user_ms": 1000 * usage.ru_utime, "system_ms": 1000 * usage.ru_stime,
            "page_faults": float(usage.ru_minflt + usage.ru_majflt)}  # fmt: skip


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _timed_rate(
    run: Callable[[], object],
    flops: float,
    device: torch.device,
    *,
    min_seconds: float | None,
    windows: int,
) -> float:
    """GFLOP/s of ``run`` (``flops`` per call): the best of ``windows`` windows of about
    ``min_seconds`` each. The best, not the median: a busy machine only ever lowers a rate,
    and a ceiling should not be."""
    if min_seconds is None:
        min_seconds = CEILING_SECONDS
    run()  # warm-up: allocations, kernel selection
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    once = max(time.perf_counter() - start, 1e-9)
    repeats = max(1, math.ceil(min_seconds / once))
    rates = []
    for _ in range(windows):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            run()
        synchronize(device)
        rates.append(flops * repeats / (time.perf_counter() - start) / 1e9)
    return max(rates)


def matmul_rate(
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    *,
    size: int | None = None,
    min_seconds: float | None = None,
    windows: int = 5,
) -> float:
    """GFLOP/s of a large square matmul (2·n³ FLOPs): n = 8192 on a GPU, 2048 on a CPU (1024
    for reduced precision there, which CPUs without native support emulate slowly)."""
    device = torch.device(device)
    if size is None:
        size = GPU_MATMUL_SIZE
        if device.type != "cuda":
            size = CPU_MATMUL_SIZE if dtype == torch.float32 else CPU_MATMUL_SIZE // 2
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, generator=generator).to(dtype)
    b = torch.randn(size, size, device=device, generator=generator).to(dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    return _timed_rate(lambda: torch.mm(a, b, out=out), 2.0 * size**3, device,
                       min_seconds=min_seconds, windows=windows)  # fmt: skip


def conv3x3_rate(
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    *,
    channels_last: bool = True,
    shape: tuple[int, int, int] | None = None,
    min_seconds: float | None = None,
    windows: int = 5,
) -> float:
    """GFLOP/s of a large 3×3 stride-1 convolution, forward only (2·N·C²·9·H·W FLOPs).

    ``shape`` is (batch, channels, side): (256, 256, 56) on a GPU, (64, 128, 32) on a CPU.
    """
    device = torch.device(device)
    if shape is None:
        shape = GPU_CONV_SHAPE if device.type == "cuda" else CPU_CONV_SHAPE
    batch, channels, side = shape
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, channels, side, side, device=device, generator=generator).to(dtype)
    w = torch.randn(channels, channels, 3, 3, device=device, generator=generator).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        w = w.contiguous(memory_format=torch.channels_last)
    flops = 2.0 * batch * channels * channels * 9 * side * side
    with torch.no_grad():
        return _timed_rate(lambda: F.conv2d(x, w, padding=1), flops, device,
                           min_seconds=min_seconds, windows=windows)  # fmt: skip


def step_conv_rate(
    encoder: torch.nn.Module,
    images: torch.Tensor,
    dtype: torch.dtype = torch.float32,
    *,
    channels_last: bool = True,
    min_seconds: float | None = None,
    windows: int = 3,
) -> float:
    """GFLOP/s of the forward + backward of the convolutions the encoder runs on ``images``,
    at their own shapes: each distinct convolution (input shape, weight, stride, padding,
    groups) is timed alone, forward and both backward products (3x the forward FLOPs), and the
    rate is their total FLOPs over their total time - what the step's convolutions could reach
    if nothing else cost anything."""
    counts: dict[tuple, int] = {}

    def record(module: torch.nn.Conv2d, inputs: tuple[torch.Tensor, ...], _output) -> None:
        key = (tuple(inputs[0].shape), tuple(module.weight.shape), module.stride,
               module.padding, module.dilation, module.groups)  # fmt: skip
        counts[key] = counts.get(key, 0) + 1

    hooks = [m.register_forward_hook(record) for m in encoder.modules()
             if isinstance(m, torch.nn.Conv2d)]  # fmt: skip
    try:
        with torch.no_grad():
            copy.deepcopy(encoder).eval()(images.float())  # shapes only: any dtype will do
    finally:
        for hook in hooks:
            hook.remove()
    device = images.device
    total_flops = total_seconds = 0.0
    for (x_shape, w_shape, stride, padding, dilation, groups), count in counts.items():
        generator = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(x_shape, device=device, generator=generator).to(dtype)
        w = torch.randn(w_shape, device=device, generator=generator).to(dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
            w = w.contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        w.requires_grad_(True)
        out_shape = F.conv2d(x.detach(), w.detach(), None, stride, padding, dilation, groups).shape
        grad = torch.ones(out_shape, device=device, dtype=dtype)
        if channels_last:
            grad = grad.contiguous(memory_format=torch.channels_last)
        flops = 3 * 2.0 * math.prod(out_shape) * math.prod(w_shape[1:])

        def forward_backward(x=x, w=w, grad=grad, stride=stride, padding=padding,
                             dilation=dilation, groups=groups) -> None:  # fmt: skip
            torch.autograd.grad(F.conv2d(x, w, None, stride, padding, dilation, groups),
                                (x, w), grad)  # fmt: skip

        rate = _timed_rate(forward_backward, flops, device, min_seconds=min_seconds,
                           windows=windows)  # fmt: skip
        total_flops += flops * count
        total_seconds += flops * count / (rate * 1e9)
    return total_flops / total_seconds / 1e9 if total_seconds else 0.0


def step_flops_per_image(model: torch.nn.Module, view1: torch.Tensor, view2: torch.Tensor) -> float:
    """Matmul/conv FLOPs per image of one BYOL step on ``model`` (a :class:`byol.BYOL`):
    online and target forwards of both views plus the backward. Runs on a deep copy, so the
    model's weights, BatchNorm statistics and gradients are untouched."""
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(model)
    model.train()
    with FlopCounterMode(display=False) as counter:
        loss = model(view1, view2)
        loss.backward()
    return counter.get_total_flops() / view1.shape[0]
