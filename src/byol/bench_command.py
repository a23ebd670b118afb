"""``byol bench``: argument parsing for :func:`byol.bench.run_bench` (registered by byol.cli)."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["COMMANDS", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` command to the ``byol`` parser."""
    from .bench import BenchConfig

    defaults = BenchConfig()
    parser = subparsers.add_parser(
        "bench",
        help="measure training-step throughput, its stages and the device's ceiling",
        description="Time the real training step (augment, online/target forwards, backward, "
        "LARS, EMA) on in-memory random images; report images/s (median of windows), "
        "per-stage times, FLOPs per image and the fraction of the measured matmul/conv rate.",
    )
    parser.add_argument("--arch", default=defaults.arch, help="encoder (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=defaults.image_size,
                        help="crop size in pixels (default: %(default)s)")  # fmt: skip
    parser.add_argument("--source-size", type=int, default=None,
                        help="side of the stored images (default: --image-size)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size,
                        help="images per step (default: %(default)s)")  # fmt: skip
    parser.add_argument("--precision", default=defaults.precision, choices=("fp32", "bf16", "fp16"),
                        help="autocast precision (default: %(default)s)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=defaults.steps,
                        help="timed steps per window (default: %(default)s)")  # fmt: skip
    parser.add_argument("--windows", type=int, default=defaults.windows,
                        help="timing windows, median reported (default: %(default)s)")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=defaults.warmup,
                        help="untimed steps, incl. compile (default: %(default)s)")  # fmt: skip
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction,
                        default=defaults.compile, help="torch.compile the model")  # fmt: skip
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction,
                        default=defaults.channels_last,
                        help="channels_last memory format (default: on)")  # fmt: skip
    parser.add_argument("--parallel-views", action=argparse.BooleanOptionalAction,
                        default=defaults.parallel_views,
                        help="CPU fp32: the loss's two halves on two threads at once, as "
                        "byol train does (default: on)")  # fmt: skip
    parser.add_argument("--device", default=defaults.device,
                        help="auto, cpu, cuda or cuda:N (default: %(default)s)")  # fmt: skip
    parser.add_argument("--small-images", action=argparse.BooleanOptionalAction, default=None,
                        help="ResNet small-image stem (default: on for <= 64 px)")  # fmt: skip
    parser.add_argument("--hidden-dim", type=int, default=defaults.hidden_dim,
                        help="projector/predictor hidden width (default: %(default)s)")  # fmt: skip
    parser.add_argument("--projection-dim", type=int, default=defaults.projection_dim,
                        help="projection width (default: %(default)s)")  # fmt: skip
    parser.add_argument("--ema", default=defaults.ema, choices=("foreach", "loop"),
                        help="target update: foreach or per-parameter loop (ablation)")  # fmt: skip
    parser.add_argument("--lars", default=defaults.lars, choices=("foreach", "loop"),
                        help="LARS: fused foreach or per-parameter loop (ablation)")  # fmt: skip
    parser.add_argument("--sync-every-step", action="store_true",
                        help="read the loss on the host after every step (ablation)")  # fmt: skip
    parser.add_argument("--no-stages", dest="stages", action="store_false",
                        help="skip the instrumented per-stage pass")  # fmt: skip
    parser.add_argument("--no-ceiling", dest="ceiling", action="store_false",
                        help="skip the matmul/convolution rate measurements")  # fmt: skip
    parser.add_argument("--no-flops", dest="flops", action="store_false",
                        help="skip the FLOP count")  # fmt: skip
    parser.add_argument("--profile", dest="profile_steps", type=int, default=0, metavar="STEPS",
                        help="also print a torch.profiler table of STEPS steps")  # fmt: skip
    parser.add_argument("--seed", type=int, default=defaults.seed, help="(default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``byol bench``: run it, print a table (progress on stderr) or JSON."""
    from .bench import BenchConfig, format_table, run_bench

    config = BenchConfig(
        arch=args.arch, image_size=args.image_size, batch_size=args.batch_size,
        precision=args.precision, steps=args.steps, warmup=args.warmup, windows=args.windows,
        compile=args.compile, channels_last=args.channels_last,
        parallel_views=args.parallel_views, device=args.device,
        small_images=args.small_images, hidden_dim=args.hidden_dim,
        projection_dim=args.projection_dim, source_size=args.source_size, ema=args.ema,
        lars=args.lars, sync_every_step=args.sync_every_step, stages=args.stages,
        flops=args.flops, ceiling=args.ceiling, profile_steps=args.profile_steps, seed=args.seed,
    )  # fmt: skip
    log = None if args.json else (lambda message: print(f"byol bench: {message}", file=sys.stderr))
    result = run_bench(config, log=log)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result))
    return 0


COMMANDS = [("bench", register)]
