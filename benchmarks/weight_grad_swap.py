"""Does PyTorch's native weight gradient speed up the real training step? (An experiment.)

``conv_algorithms.py`` finds that at one intra-op thread PyTorch's native (im2col + matmul)
weight gradient beats oneDNN's on ResNet-18's 4×4 stage in isolation. This script routes the
weight gradients of the convolutions whose input is at most ``--max-side`` pixels wide through
``aten._slow_conv2d_backward`` (input gradient and forward stay with oneDNN) and times the real
step (``byol bench``'s runner, parallel halves as in ``byol train``) with and without the swap
in interleaved windows. Not a feature: the measured gain was nil (benchmarks/RESULTS.md,
conv_algorithms section), so the step keeps oneDNN.

    .venv/bin/python benchmarks/weight_grad_swap.py --arch resnet18 --batch-size 64 \\
        --steps 2 --windows 8 --max-side 4
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
import torch.nn.functional as F
from torch import nn

from byol.bench import BenchConfig, TrainStepRunner

SWAP = {"on": False, "max_side": 4}


class _NativeWeightGradConv(torch.autograd.Function):
    """A bias-free, ungrouped, undilated convolution whose weight gradient is PyTorch's native."""

    @staticmethod
    def forward(ctx, x, weight, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = list(stride), list(padding)
        return F.conv2d(x, weight, None, stride, padding)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_input = None
        if ctx.needs_input_grad[0]:
            grad_input = torch.ops.aten.convolution_backward(
                grad, x, weight, None, ctx.stride, ctx.padding, [1, 1], False, [0, 0], 1,
                [True, False, False],
            )[0]  # fmt: skip
        grad_weight = torch.ops.aten._slow_conv2d_backward(
            grad, x, weight, list(weight.shape[2:]), ctx.stride, ctx.padding, [False, True, False]
        )[1]
        return grad_input, grad_weight, None, None


_original = nn.Conv2d._conv_forward


def _conv_forward(self, input, weight, bias):
    swappable = (
        SWAP["on"] and torch.is_grad_enabled() and weight.requires_grad and bias is None
        and self.groups == 1 and self.dilation == (1, 1) and self.padding_mode == "zeros"
        and input.shape[-1] <= SWAP["max_side"]
    )  # fmt: skip
    if swappable:
        return _NativeWeightGradConv.apply(input, weight, self.stride, self.padding)
    return _original(self, input, weight, bias)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2, help="steps per window")
    parser.add_argument("--windows", type=int, default=8, help="windows per variant")
    parser.add_argument("--max-side", type=int, default=4,
                        help="swap convolutions whose input is at most this wide")  # fmt: skip
    args = parser.parse_args()
    SWAP["max_side"] = args.max_side
    nn.Conv2d._conv_forward = _conv_forward
    runner = TrainStepRunner(BenchConfig(arch=args.arch, image_size=args.image_size,
                                         batch_size=args.batch_size, warmup=1))  # fmt: skip
    for on in (False, True):
        SWAP["on"] = on
        runner.run_window(1)
    rates: dict[bool, list[float]] = {False: [], True: []}
    for window in range(args.windows):
        for on in (False, True) if window % 2 == 0 else (True, False):
            SWAP["on"] = on
            seconds = runner.run_window(args.steps)
            rates[on].append(args.batch_size * args.steps / seconds)
    for on, name in ((False, "oneDNN"), (True, "native weight gradient")):
        windows = ", ".join(f"{rate:.1f}" for rate in rates[on])
        print(f"{name}: {statistics.median(rates[on]):.1f} images/s (windows: {windows})")
    print(f"swap / oneDNN: {statistics.median(rates[True]) / statistics.median(rates[False]):.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
