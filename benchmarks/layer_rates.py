"""Where the training step's time goes, kernel by kernel: each layer of the BYOL step timed alone.

For each backbone (default: the issue-7 pair, convnet 32 px batch 256 and small-stem ResNet-18
32 px batch 64, fp32, channels_last) it records the input shape of every convolution, linear
and BatchNorm layer of the online network during one forward of a view, then times each of
those layers in isolation at that shape: forward, and forward + backward (input gradient
included, except for the first layer, whose input needs none). A BYOL step runs every online
layer forward and backward on both views and the target's encoder and projector forward on both
views, so the sum of the isolated times is what PyTorch's own kernels cost for one step with
no overhead at all: no augmentation, no optimizer, no EMA, no Python, no activation functions,
no residual additions. The layers are timed on all intra-op threads and on one (the step
runs each half of the loss on its own thread with one intra-op thread, so for its layout the
floor is one half's one-thread kernels). The script prints those sums beside the measured
step (``byol bench``'s own runner, in the same process), the achieved GFLOP/s of every
convolution and matmul forward and backward, and the machine's large-convolution and matmul
rates, forward and backward.

    .venv/bin/python benchmarks/layer_rates.py [--write]

``--write`` puts the tables in the ``layer_rates`` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from byol.bench import CPU_CONV_SHAPE, BenchConfig, TrainStepRunner, conv3x3_rate, matmul_rate
from byol.train import keep_freed_memory
from results_file import command_line, publish, report_header

TIMED = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d)
SETUPS = {"convnet": (32, 256), "resnet18": (32, 64)}


def median_ms(fn, repeats: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def record_shapes(
    model: nn.Module, view: torch.Tensor
) -> list[tuple[str, str, nn.Module, torch.Size]]:
    """(part, name, module, input shape) of every timed layer, in forward order, for one view."""
    records = []
    hooks = []
    parts = {"online_encoder": "encoder", "online_projector": "projector", "predictor": "predictor"}
    for part_name, part in parts.items():
        for name, module in getattr(model, part_name).named_modules():
            if isinstance(module, TIMED):
                hooks.append(module.register_forward_hook(
                    lambda mod, inputs, output, part=part, name=name:
                    records.append((part, name, mod, inputs[0].shape))
                ))  # fmt: skip
    with torch.no_grad():
        model.predictor(model.online_projector(model.online_encoder(view)))
    for hook in hooks:
        hook.remove()
    return records


def time_layer(module: nn.Module, shape: torch.Size, first: bool, repeats: int) -> dict:
    """Forward and backward milliseconds and FLOPs (matmuls and convolutions, counted by
    FlopCounterMode as ``byol bench`` counts the whole step) of ``module`` at input ``shape``."""
    module = module.train()
    x = torch.randn(shape)
    if x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = module(x)
    grad = torch.randn_like(out)
    x_grad = x.clone().requires_grad_(not first)

    def forward():
        with torch.no_grad():
            module(x)

    def forward_backward():
        module(x_grad).backward(grad)
        for p in module.parameters():
            p.grad = None

    with FlopCounterMode(display=False) as counter:
        forward()
    flops = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        forward_backward()
    fwd = median_ms(forward, repeats)
    both = median_ms(forward_backward, repeats)
    return {"forward_ms": fwd, "backward_ms": max(both - fwd, 0.0), "flops": flops,
            "backward_flops": counter.get_total_flops() - flops}  # fmt: skip


def analyse(arch: str, image_size: int, batch: int, repeats: int) -> dict:
    config = BenchConfig(arch=arch, image_size=image_size, batch_size=batch, windows=5,
                         steps=4 if arch == "convnet" else 2, warmup=2)  # fmt: skip
    runner = TrainStepRunner(config)
    runner.run_window(config.warmup)
    step_ms = []
    for _ in range(config.windows):
        step_ms.append(1000 * runner.run_window(config.steps) / config.steps)
    measured = statistics.median(step_ms)

    view, _ = runner.sample_views(batch)
    view = view.contiguous(memory_format=torch.channels_last)
    layers = []
    threads = torch.get_num_threads()
    for index, (part, name, module, shape) in enumerate(record_shapes(runner.model, view)):
        times = time_layer(module, shape, first=index == 0, repeats=repeats)
        # The step runs each half of the loss on its own thread with one intra-op thread
        # (byol.view_parallel), so the floor for that layout is the one-thread kernels.
        torch.set_num_threads(1)
        try:
            one = time_layer(module, shape, first=index == 0, repeats=repeats)
        finally:
            torch.set_num_threads(threads)
        layers.append({"part": part, "name": name, "type": type(module).__name__,
                       "shape": list(shape), **times,
                       "forward_ms_1thread": one["forward_ms"],
                       "backward_ms_1thread": one["backward_ms"]})  # fmt: skip
    # Per BYOL step: online layers forward + backward on two views; target encoder and
    # projector forward on two views (the target is a copy of the same layers).
    kernel_ms = 0.0
    half_kernel_ms_1thread = 0.0
    step_flops = 0.0
    by_kind = {"conv/linear forward": [0.0, 0.0], "conv/linear backward": [0.0, 0.0],
               "BatchNorm forward + backward": [0.0, 0.0]}  # fmt: skip
    for layer in layers:
        target = layer["part"] != "predictor"
        forwards = 2 + (2 if target else 0)
        kernel_ms += forwards * layer["forward_ms"] + 2 * layer["backward_ms"]
        # One half of the loss: online forward + backward and target forward of one view.
        half_kernel_ms_1thread += (
            forwards / 2 * layer["forward_ms_1thread"] + layer["backward_ms_1thread"]
        )
        step_flops += forwards * layer["flops"] + 2 * layer["backward_flops"]
        if layer["flops"]:
            by_kind["conv/linear forward"][0] += forwards * layer["forward_ms"]
            by_kind["conv/linear forward"][1] += forwards * layer["flops"]
            by_kind["conv/linear backward"][0] += 2 * layer["backward_ms"]
            by_kind["conv/linear backward"][1] += 2 * layer["backward_flops"]
        else:
            by_kind["BatchNorm forward + backward"][0] += (
                forwards * layer["forward_ms"] + 2 * layer["backward_ms"]
            )
    return {"arch": arch, "image_size": image_size, "batch": batch, "measured_step_ms": measured,
            "step_ms_windows": step_ms, "kernel_ms": kernel_ms,
            "half_kernel_ms_1thread": half_kernel_ms_1thread, "step_flops": step_flops,
            "by_kind": by_kind, "layers": layers}  # fmt: skip


def ceiling_backward(repeats: int) -> dict:
    """Forward and backward GFLOP/s of ``byol bench``'s ceiling convolution (3×3, channels_last)
    and its ceiling matmul rate."""
    batch, channels, side = CPU_CONV_SHAPE
    x = torch.randn(batch, channels, side, side).contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, channels, 3, 3).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    w.requires_grad_()
    flops = 2.0 * batch * channels * channels * 9 * side * side
    out = F.conv2d(x, w, padding=1)
    grad = torch.randn_like(out)

    def conv_backward():
        torch.autograd.grad(F.conv2d(x, w, padding=1), (x, w), grad)

    with torch.no_grad():
        conv_fwd = median_ms(lambda: F.conv2d(x, w, padding=1), repeats)
    conv_bwd = median_ms(conv_backward, repeats) - conv_fwd
    return {
        "conv3x3_forward_gflops": flops / conv_fwd / 1e6,
        "conv3x3_backward_gflops": 2 * flops / conv_bwd / 1e6,
        "conv3x3_forward_gflops_bench": conv3x3_rate("cpu"),
        "matmul_gflops": matmul_rate("cpu"),
    }


def format_report(results: list[dict], ceiling: dict, command: str) -> str:
    batch, channels, side = CPU_CONV_SHAPE
    lines = report_header(
        "Kernel by kernel: what the step's layers cost alone (`benchmarks/layer_rates.py`)",
        f"{torch.get_num_threads()} threads, fp32, channels_last",
        command,
    )
    lines += [
        "Every convolution, linear and BatchNorm layer of the online network, timed alone at the "
        "input shape it sees in the step (median of repeated calls, freed memory kept as in "
        "`byol train`); summed as a BYOL step uses them (online: forward + backward on both "
        "views; target encoder and projector: forward on both views). ReLU, residual additions, "
        "pooling, the loss, augmentation, LARS and the EMA are left out, so the sum is a floor "
        "for any implementation that calls PyTorch's kernels, ours and the peers' alike.",
        "",
        f"Machine rates, large 3×3 convolution ({batch}×{channels}×{side}², channels_last): "
        "forward "
        f"{ceiling['conv3x3_forward_gflops']:.0f} GFLOP/s "
        f"(`byol bench`'s ceiling measurement: {ceiling['conv3x3_forward_gflops_bench']:.0f}), "
        f"backward (input + weight gradients) {ceiling['conv3x3_backward_gflops']:.0f} GFLOP/s; "
        f"matmul 2048² {ceiling['matmul_gflops']:.0f} GFLOP/s.",
        "",
        "Two floors. *All threads*: every kernel of the step one after another, each on all "
        f"{torch.get_num_threads()} intra-op threads (how the peers run). *One thread per half*: "
        "what the step's own layout needs (`byol.view_parallel` runs each half of the loss on "
        "its own thread with one intra-op thread, both halves at once): the one-thread kernels "
        "of one half (online forward + backward and target forward of one view), which the two "
        "cores run side by side; it assumes the halves do not slow each other down (they share "
        "caches and memory bandwidth), so it is optimistic.",
        "",
        "| backbone | batch | measured step (ms) | kernels, all threads (ms) | step / that "
        "| kernels, one thread per half (ms) | step / that "
        "| conv+linear forward | conv+linear backward | BatchNorm f+b (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        fwd_ms, fwd_flops = r["by_kind"]["conv/linear forward"]
        bwd_ms, bwd_flops = r["by_kind"]["conv/linear backward"]
        bn_ms = r["by_kind"]["BatchNorm forward + backward"][0]
        lines.append(
            f"| {r['arch']} {r['image_size']} px | {r['batch']} | {r['measured_step_ms']:.0f} | "
            f"{r['kernel_ms']:.0f} | {r['measured_step_ms'] / r['kernel_ms']:.2f} | "
            f"{r['half_kernel_ms_1thread']:.0f} | "
            f"{r['measured_step_ms'] / r['half_kernel_ms_1thread']:.2f} | "
            f"{fwd_ms:.0f} ms, {fwd_flops / fwd_ms / 1e6:.0f} GFLOP/s | "
            f"{bwd_ms:.0f} ms, {bwd_flops / bwd_ms / 1e6:.0f} GFLOP/s | {bn_ms:.0f} |"
        )
    for r in results:
        lines += [
            "",
            f"<details><summary>{r['arch']}: every layer (one view, batch {r['batch']})</summary>",
            "",
            "| part | layer | input shape | forward ms | forward GFLOP/s | backward ms "
            "| backward GFLOP/s | forward ms, 1 thread | backward ms, 1 thread |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for layer in r["layers"]:
            rate_f = rate_b = ""
            if layer["flops"]:
                rate_f = f"{layer['flops'] / layer['forward_ms'] / 1e6:.0f}"
                if layer["backward_ms"] > 0:
                    rate_b = f"{layer['backward_flops'] / layer['backward_ms'] / 1e6:.0f}"
            shape = "×".join(str(s) for s in layer["shape"])
            lines.append(
                f"| {layer['part']} | {layer['name']} ({layer['type']}) | {shape} | "
                f"{layer['forward_ms']:.2f} | {rate_f} | {layer['backward_ms']:.2f} | {rate_b} | "
                f"{layer['forward_ms_1thread']:.2f} | {layer['backward_ms_1thread']:.2f} |"
            )
        lines += ["", "</details>"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    keep_freed_memory()
    results = []
    for arch in args.arch:
        image_size, batch = SETUPS[arch]
        print(f"{arch}: measuring", flush=True)
        results.append(analyse(arch, image_size, batch, args.repeats))
    ceiling = ceiling_backward(args.repeats)
    report = format_report(results, ceiling, command_line("layer_rates.py", args.write))
    publish("layer_rates", report, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
