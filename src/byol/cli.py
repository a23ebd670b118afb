"""The ``byol`` command line: argument parsing only; every command calls a library function.

Exit codes: 0 success, 1 unexpected failure, 2 bad input (unknown flag or config key, bad
value, missing or unreadable data or checkpoint), with a one-line message naming the culprit.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from collections.abc import Sequence
from typing import Any

from .config import CHOICES, PRESETS, TrainConfig

__all__ = ["main"]

_HELP = {
    "data": "dataset name (fashion-mnist, cifar10, cifar100, stl10, digits) or a path to an "
    "image folder or .npy/.npz file",
    "data_root": "folder holding the dataset files",
    "download": "let torchvision download CIFAR/STL-10 into --data-root",
    "folder_image_size": "side of the square images made from an image folder",
    "crop_min_scale": "smallest area fraction of the random resized crop (preset: 0.08)",
    "strict": "fail on the first unreadable image file instead of skipping it with a warning",
    "holdout": "hold this many training images out of pre-training as k-NN monitor queries "
    "(for tuning without touching the test split)",
    "arch": "encoder architecture (see byol.backbones.ARCHITECTURES)",
    "small_images": "CIFAR-style ResNet stem (default: automatic for images <= 64 px)",
    "image_size": "side of the augmented training views (default: the stored image size)",
    "eval_image_size": "side the encoder sees when evaluated, monitored, embedded or exported: "
    "whole images resized to it (default: --image-size)",
    "augment": "augmentation preset (auto chooses by dataset and size)",
    "epochs": "length of the schedules, in epochs",
    "batch_size": "global batch size per optimizer step",
    "base_lr": "learning rate for batch 256; scaled linearly by batch_size/256",
    "target_decay": "tau_base of the target network's moving average",
    "accumulate": "micro-batches per optimizer step (gradient accumulation)",
    "max_steps": "stop after this optimizer step (schedules still span --epochs; resumable)",
    "time_limit": "stop (with a checkpoint) after this many minutes",
    "schedule_to_time_limit": "fit the learning-rate and tau schedules to --time-limit: the run's "
    "length is re-estimated from its measured speed as it trains, so the cosine ends when the "
    "time does (--epochs is the first estimate; the limit counts the time of resumed runs too)",
    "precision": "fp32 | bf16 | fp16 (auto: fp32 on CPU, bf16 on GPU)",
    "compile": "torch.compile the training step",
    "parallel_views": "on CPU (fp32, no DDP/compile), run the two halves of the loss on two "
    "threads at once (byol.view_parallel)",
    "checkpoint_every": "write a checkpoint every N optimizer steps (and at the end)",
    "knn_every": "k-NN monitor every N epochs (0: off)",
    "skip_nonfinite": "skip steps whose loss is NaN/inf instead of stopping (counted in metrics)",
    "preset": "start from a named preset: " + ", ".join(PRESETS),
    "config": "YAML file of config keys; flags override it",
    "out": "run folder (re-running into it resumes the run)",
}


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        if field.name == "extra":
            continue
        flag = "--" + field.name.replace("_", "-")
        annotation = hints[field.name]
        is_bool = annotation is bool or (
            typing.get_origin(annotation) is not None and bool in typing.get_args(annotation)
        )
        default = field.default if field.default is not dataclasses.MISSING else None
        help_text = _HELP.get(field.name, "") + f" (default: {default})"
        if is_bool:
            parser.add_argument(flag, dest=field.name, default=None,
                                action=argparse.BooleanOptionalAction, help=help_text)  # fmt: skip
        else:
            parser.add_argument(flag, dest=field.name, default=None, metavar=field.name.upper(),
                                choices=CHOICES.get(field.name), help=help_text)  # fmt: skip
    parser.add_argument("--nproc", type=int, default=None,
                        help="launch this many local processes with torchrun (DDP)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="byol", description="BYOL self-supervised training, evaluation and hand-over."
    )
    parser.add_argument("--version", action="version", version=f"byol {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser("train", help="pre-train an encoder with BYOL")
    _add_train_arguments(train)
    for _name, register in _EXTRA_COMMANDS:
        register(commands)
    return parser


def _run_train(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .config import load_config
    from .train import train

    overrides = {
        key: value
        for key, value in vars(args).items()
        if key not in ("command", "nproc", "config", "handler") and value is not None
    }
    if args.nproc and args.nproc > 1:
        from .ddp import launch_local

        return launch_local(args.nproc, list(argv))
    config = load_config(args.config, overrides)
    result = train(config)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(f"byol: run folder      {result.out}")
    print(f"byol: checkpoint      {result.checkpoint}")
    tensorboard = f" (TensorBoard: {result.out / 'tb'})" if config.tensorboard else ""
    print(f"byol: metrics         {result.out / 'metrics.jsonl'}{tensorboard}")
    print(f"byol: config          {result.out / 'config.yaml'}")
    print(f"byol: steps           {result.step}/{result.total_steps}"
          + (f" (stopped: {result.stopped_early})" if result.stopped_early else ""))  # fmt: skip
    if result.loss is not None:
        print(f"byol: final loss      {result.loss:.4f}")
    if result.knn_top1 is not None:
        print(f"byol: k-NN top-1      {100 * result.knn_top1:.2f}%")
    return 0


# Other commands register themselves here: (name, function(subparsers) -> None); each sets
# ``handler`` on its parser via set_defaults.
_EXTRA_COMMANDS: list[tuple[str, Any]] = []


def _register_extra_commands() -> None:
    import importlib

    for module_name in ("byol.commands", "byol.bench_command"):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        _EXTRA_COMMANDS.extend(module.COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``byol`` console script."""
    from .errors import ByolError

    if not _EXTRA_COMMANDS:
        _register_extra_commands()
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            return _run_train(args, argv)
        return int(args.handler(args) or 0)
    except ByolError as error:
        print(f"byol {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"byol {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
