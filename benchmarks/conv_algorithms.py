"""Other ways to compute the step's convolutions, timed against the oneDNN kernels the step uses.

The convolutions' forward and backward are most of a CPU BYOL step (``layer_rates.py``). This
script asks whether something other than PyTorch's default (oneDNN) kernels computes the same
numbers faster at the step's own shapes (convnet 32 px batch 256 and small-stem ResNet-18 32 px
batch 64, fp32, channels_last, every distinct convolution of the online encoder):

- forward, input gradient and weight gradient with oneDNN (``aten.convolution_backward`` with
  one output mask at a time, as autograd calls it);
- the same with PyTorch's native kernels (``torch.backends.mkldnn.enabled = False``: im2col +
  matmul, except that the forward of a stride-1 convolution goes to NNPACK when available);
- the forward with NNPACK (Winograd / FFT; stride 1, NCHW, the layout conversion left out of
  the timing);
- the input gradient as a *forward* convolution: with the kernel flipped and its channels
  swapped (stride 1), or as ``conv_transpose2d`` (stride 2);
- the weight gradient as ``unfold`` (im2col) followed by one matmul.

Every alternative is checked against oneDNN's result (largest difference relative to the
largest value) before it is timed. Medians of repeated calls, freed memory kept as in
``byol train``, on all intra-op threads and on one (the step runs each half of the loss on its
own thread with one intra-op thread), each thread count in a process of its own.

    .venv/bin/python benchmarks/conv_algorithms.py [--write]

``--write`` puts the table in the ``conv_algorithms`` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from byol.bench import BenchConfig, TrainStepRunner
from byol.train import keep_freed_memory
from layer_rates import SETUPS, median_ms, record_shapes
from results_file import command_line, publish, report_header

ALGORITHMS = ("oneDNN", "native", "NNPACK", "as forward conv", "unfold + matmul")


def conv_shapes(arch: str) -> list[tuple[tuple[int, ...], nn.Conv2d, int]]:
    """(input shape, convolution, uses per view) for every distinct convolution of ``arch``."""
    image_size, batch = SETUPS[arch]
    config = BenchConfig(arch=arch, image_size=image_size, batch_size=batch, warmup=0)
    runner = TrainStepRunner(config)
    view, _ = runner.sample_views(batch)
    view = view.contiguous(memory_format=torch.channels_last)
    distinct: dict[tuple, list] = {}
    for part, _, module, shape in record_shapes(runner.model, view):
        if part != "encoder" or not isinstance(module, nn.Conv2d):
            continue
        key = (tuple(shape), module.out_channels, module.kernel_size, module.stride,
               module.padding)  # fmt: skip
        distinct.setdefault(key, [tuple(shape), module, 0])[2] += 1
    return [tuple(entry) for entry in distinct.values()]


def relative_error(result: torch.Tensor, reference: torch.Tensor) -> float:
    return ((result - reference).abs().max() / reference.abs().max()).item()


def time_shape(shape: tuple[int, ...], conv: nn.Conv2d, first: bool, repeats: int) -> dict:
    """Milliseconds of forward, input gradient and weight gradient per algorithm (None where an
    algorithm does not apply) and the largest relative error of each alternative."""
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    weight = conv.weight.detach().clone().contiguous(memory_format=torch.channels_last)
    stride, padding = list(conv.stride), list(conv.padding)
    out = F.conv2d(x, weight, stride=stride, padding=padding)
    grad = torch.randn_like(out)

    def backward(mask: list[bool]) -> tuple[torch.Tensor, ...]:
        return torch.ops.aten.convolution_backward(
            grad, x, weight, None, stride, padding, [1, 1], False, [0, 0], 1, [*mask, False]
        )

    def forward() -> torch.Tensor:
        return F.conv2d(x, weight, stride=stride, padding=padding)

    def input_grad() -> torch.Tensor:
        return backward([True, False])[0]

    def weight_grad() -> torch.Tensor:
        return backward([False, True])[1]

    reference = {"forward": forward(), "input": None if first else input_grad(),
                 "weight": weight_grad()}  # fmt: skip
    times: dict[str, dict[str, float | None]] = {name: {} for name in ALGORITHMS}
    errors: dict[str, float] = {}

    def measure(algorithm: str, kind: str, fn: Callable[[], torch.Tensor] | None) -> None:
        if fn is None or (kind == "input" and first):
            times[algorithm][kind] = None
            return
        if algorithm != "oneDNN":
            error = relative_error(fn(), reference[kind])
            errors[f"{algorithm} {kind}"] = error
            if error > 1e-4:
                raise AssertionError(f"{algorithm} {kind} differs from oneDNN: {error:.2e}")
        times[algorithm][kind] = median_ms(fn, repeats)

    for kind, fn in (("forward", forward), ("input", input_grad), ("weight", weight_grad)):
        measure("oneDNN", kind, fn)
    torch.backends.mkldnn.enabled = False
    try:
        for kind, fn in (("forward", forward), ("input", input_grad), ("weight", weight_grad)):
            measure("native", kind, fn)
    finally:
        torch.backends.mkldnn.enabled = True

    # NNPACK (Winograd / FFT, forward only, NCHW); its input is converted outside the timing,
    # which favours it: in a channels_last step the conversions would cost extra passes.
    nnpack = None
    if conv.stride == (1, 1) and torch._nnpack_available():
        x_nchw, weight_nchw = x.contiguous(), weight.contiguous()

        def nnpack() -> torch.Tensor:
            return torch._nnpack_spatial_convolution(x_nchw, weight_nchw, None, padding)

    measure("NNPACK", "forward", nnpack)
    measure("NNPACK", "input", None)
    measure("NNPACK", "weight", None)

    as_forward = None
    square3 = conv.kernel_size == (3, 3) and conv.padding == (1, 1)
    if square3 and conv.stride == (1, 1):
        flipped = weight.flip(2, 3).transpose(0, 1).contiguous(memory_format=torch.channels_last)

        def as_forward() -> torch.Tensor:
            return F.conv2d(grad, flipped, padding=1)
    elif square3 and conv.stride == (2, 2):
        # conv_transpose2d's output side is (out - 1) * 2 - 1 + output_padding; make it the input's.
        extra = [shape[2] - (out.shape[2] - 1) * 2 - 1, shape[3] - (out.shape[3] - 1) * 2 - 1]

        def as_forward() -> torch.Tensor:
            return F.conv_transpose2d(grad, weight, stride=2, padding=1, output_padding=extra)

    measure("as forward conv", "forward", None)
    measure("as forward conv", "input", as_forward)
    measure("as forward conv", "weight", None)

    def unfold_matmul() -> torch.Tensor:
        columns = F.unfold(x, conv.kernel_size, padding=conv.padding, stride=conv.stride)
        grad_rows = grad.reshape(grad.shape[0], grad.shape[1], -1)
        return torch.einsum("nol,nkl->ok", grad_rows, columns).reshape(weight.shape)

    measure("unfold + matmul", "forward", None)
    measure("unfold + matmul", "input", None)
    measure("unfold + matmul", "weight", unfold_matmul)
    flops = 2.0 * out.numel() * weight[0].numel()
    return {"times": times, "errors": errors, "flops": flops}


def halves_at_once(repeats: int) -> dict:
    """The ResNet-18 16×16 stride-1 forward run by two threads at once, one intra-op thread
    each (as ``byol.view_parallel`` runs the loss's halves), with oneDNN and with NNPACK:
    milliseconds per pair and for one alone, or the error the call raised."""
    keep_freed_memory()
    torch.set_num_threads(2)
    inputs = [torch.randn(64, 128, 16, 16) for _ in range(2)]
    weight = torch.randn(128, 128, 3, 3)
    calls = {
        "oneDNN": (
            [x.contiguous(memory_format=torch.channels_last) for x in inputs],
            lambda x: F.conv2d(x, weight.contiguous(memory_format=torch.channels_last), padding=1),
        ),
        "NNPACK": (inputs, lambda x: torch._nnpack_spatial_convolution(x, weight, None, [1, 1])),
    }
    results = {}
    with ThreadPoolExecutor(2) as pool:
        for name, (xs, conv) in calls.items():

            def half(x: torch.Tensor, conv=conv) -> None:
                torch.set_num_threads(1)
                try:
                    for _ in range(repeats):
                        conv(x)
                finally:
                    torch.set_num_threads(2)

            try:
                list(pool.map(half, xs))
                start = time.perf_counter()
                list(pool.map(half, xs))
                pair = (time.perf_counter() - start) / repeats
                start = time.perf_counter()
                pool.submit(half, xs[0]).result()
                alone = (time.perf_counter() - start) / repeats
                results[name] = {"pair_ms": 1000 * pair, "alone_ms": 1000 * alone}
            except RuntimeError as error:
                results[name] = {"error": str(error).splitlines()[0]}
    return results


def cell(ms: float | None, reference: float | None, flops: float) -> str:
    if ms is None:
        return "—"
    text = f"{ms:.1f} ({flops / ms / 1e6:.0f})"
    if reference is not None and reference > 0:
        text += f", {ms / reference:.2f}×"
    return text


def format_report(rows: list[dict], halves: dict, command: str) -> str:
    lines = report_header(
        "Other convolution algorithms at the step's shapes (`benchmarks/conv_algorithms.py`)",
        "fp32, channels_last, freed memory kept",
        command,
    )
    lines += [
        "Every distinct convolution of the online encoder (uses per view in brackets). Each cell: "
        "milliseconds (GFLOP/s), and time relative to oneDNN, which the step uses; — where the "
        "algorithm does not apply (the first layer needs no input gradient). Every alternative "
        "was checked against oneDNN's result first (largest relative difference in the "
        "last column).",
    ]
    for threads in sorted({row["threads"] for row in rows}, reverse=True):
        lines += [
            "",
            f"**{threads} intra-op thread{'s' if threads > 1 else ''}**",
            "",
            "| backbone | input | out, stride | forward: oneDNN | native | NNPACK "
            "| input grad: oneDNN "
            "| native | as forward conv | weight grad: oneDNN | native | unfold + matmul "
            "| largest difference |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in (r for r in rows if r["threads"] == threads):
            t, f = row["times"], row["flops"]
            shape = "×".join(str(s) for s in row["shape"])
            worst = max(row["errors"].values()) if row["errors"] else 0.0
            lines.append(
                f"| {row['arch']} | {shape} ({row['uses']}) | {row['out']}, {row['stride']} | "
                f"{cell(t['oneDNN']['forward'], None, f)} | "
                f"{cell(t['native']['forward'], t['oneDNN']['forward'], f)} | "
                f"{cell(t['NNPACK']['forward'], t['oneDNN']['forward'], f)} | "
                f"{cell(t['oneDNN']['input'], None, f)} | "
                f"{cell(t['native']['input'], t['oneDNN']['input'], f)} | "
                f"{cell(t['as forward conv']['input'], t['oneDNN']['input'], f)} | "
                f"{cell(t['oneDNN']['weight'], None, f)} | "
                f"{cell(t['native']['weight'], t['oneDNN']['weight'], f)} | "
                f"{cell(t['unfold + matmul']['weight'], t['oneDNN']['weight'], f)} | "
                f"{worst:.1e} |"
            )
    lines += [
        "",
        "Two halves at once (ResNet-18's 16×16 stride-1 forward, batch 64, two threads "
        "with one intra-op thread each, as `byol.view_parallel` runs the loss's halves):",
        "",
    ]
    for name, result in halves.items():
        if "error" in result:
            lines.append(f"- {name}: fails: `{result['error']}`")
        else:
            lines.append(f"- {name}: {result['pair_ms']:.1f} ms for the pair, "
                         f"{result['alone_ms']:.1f} ms for one alone")  # fmt: skip
    return "\n".join(lines)


def measure_rows(archs: list[str], threads: int, repeats: int) -> list[dict]:
    keep_freed_memory()
    torch.set_num_threads(threads)
    rows = []
    for arch in archs:
        for index, (shape, conv, uses) in enumerate(conv_shapes(arch)):
            print(f"{arch} {threads} thread(s): {shape} -> {conv.out_channels}", flush=True)
            result = time_shape(shape, conv, first=index == 0, repeats=repeats)
            rows.append({"arch": arch, "threads": threads, "shape": list(shape), "uses": uses,
                         "out": conv.out_channels, "stride": conv.stride[0], **result})  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--threads", nargs="+", type=int, default=[torch.get_num_threads(), 1])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--rows-json", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--halves-json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.halves_json:
        args.halves_json.write_text(json.dumps(halves_at_once(args.repeats)))
        return 0
    if len(args.threads) > 1:
        # One process per thread count: once the native kernels have run on two threads,
        # lowering torch's thread count does not stop them using two (CPU time shows it).
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for threads in args.threads:
                out = Path(tmp) / f"{threads}.json"
                subprocess.run([sys.executable, __file__, "--arch", *args.arch, "--threads",
                                str(threads), "--repeats", str(args.repeats),
                                "--rows-json", str(out)], check=True)  # fmt: skip
                rows += json.loads(out.read_text())
    else:
        rows = measure_rows(args.arch, args.threads[0], args.repeats)
        if args.rows_json:
            args.rows_json.write_text(json.dumps(rows))
            return 0
    # In a process of its own too: a failed NNPACK call may leave its thread pool unusable.
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "halves.json"
        subprocess.run([sys.executable, __file__, "--halves-json", str(out)], check=True)
        halves = json.loads(out.read_text())
    report = format_report(rows, halves, command_line("conv_algorithms.py", args.write))
    publish("conv_algorithms", report, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
