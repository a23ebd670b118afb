"""``byol bench``: argument parsing for :func:`byol.bench.run_bench` (registered by byol.cli).

Its flags are derived from :class:`byol.bench.BenchConfig`, whose model and runtime keys are
those of ``byol train``.
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["COMMANDS", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` command to the ``byol`` parser."""
    from .bench import BenchConfig
    from .cli import add_config_arguments

    parser = subparsers.add_parser(
        "bench",
        help="measure training-step throughput, its stages and the device's ceiling",
        description="Time the real training step (augment, online/target forwards, backward, "
        "LARS, EMA) on in-memory random images; report images/s (median of windows), "
        "per-stage times, FLOPs per image and the fraction of the measured matmul/conv rate.",
    )
    add_config_arguments(parser, BenchConfig)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``byol bench``: run it, print a table (progress on stderr) or JSON."""
    from .bench import BenchConfig, format_table, run_bench
    from .config_keys import key_info

    config = BenchConfig.from_options({name: getattr(args, name) for name in key_info(BenchConfig)})
    log = None if args.json else (lambda message: print(f"byol bench: {message}", file=sys.stderr))
    result = run_bench(config, log=log)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result))
    return 0


COMMANDS = [("bench", register)]
