"""The ``byol`` command line: argument parsing only; every command calls a library function.

Exit codes: 0 success, 1 unexpected failure, 2 bad input (unknown flag or config key, bad
value, missing or unreadable data or checkpoint), with a one-line message naming the culprit.
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

from .config import TrainConfig

__all__ = ["BooleanFlag", "add_config_arguments", "build_parser", "main"]


class BooleanFlag(argparse.Action):
    """``--flag`` (true), ``--flag true|false`` and ``--no-flag`` (false) for a boolean key."""

    _VALUES = MappingProxyType({"1": True, "true": True, "yes": True, "on": True,
                                "0": False, "false": False, "no": False, "off": False})  # fmt: skip

    def __init__(self, option_strings, dest, default=None, help=None) -> None:
        negated = ["--no-" + s[2:] for s in option_strings if s.startswith("--")]
        super().__init__([*option_strings, *negated], dest, nargs="?", default=default,
                         help=help, metavar="true|false")  # fmt: skip

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if option_string and option_string.startswith("--no-"):
            if values is not None:
                parser.error(f"argument {option_string}: takes no value, got {values!r}")
            setattr(namespace, self.dest, False)
            return
        if values is None:
            setattr(namespace, self.dest, True)
            return
        if values.lower() not in self._VALUES:
            parser.error(f"argument {option_string}: expected true or false, got {values!r}")
        setattr(namespace, self.dest, self._VALUES[values.lower()])


def add_config_arguments(
    parser: argparse.ArgumentParser,
    config_class: type,
    *,
    names: Sequence[str] | None = None,
    with_defaults: bool = False,
) -> None:
    """One flag per field of ``config_class`` (or of ``names``), from the field's metadata
    (:func:`byol.config.key`): help, choices, flag name, and an argument group per group.

    Booleans get ``--flag [true|false]`` and ``--no-flag`` (:class:`BooleanFlag`). Without
    ``with_defaults`` every flag defaults to None, so only the flags given on the command line
    override the config.
    """
    from .config_keys import key_info

    groups: dict[str, Any] = {}
    for name, info in key_info(config_class).items():
        if names is not None and name not in names:
            continue
        group = info.get("group") or "options"
        if group not in groups:
            groups[group] = parser.add_argument_group(f"{group} options")
        flag = info.get("flag") or "--" + name.replace("_", "-")
        annotation = info["type"]
        is_bool = annotation is bool or (
            typing.get_origin(annotation) is not None and bool in typing.get_args(annotation)
        )
        help_text = info.get("help", "") + f" (default: {info['default']})"
        default = info["default"] if with_defaults else None
        if is_bool:
            groups[group].add_argument(flag, dest=name, default=default, help=help_text,
                                       action=BooleanFlag)  # fmt: skip
        else:
            groups[group].add_argument(
                flag, dest=name, default=default, help=help_text, metavar=name.upper(),
                choices=info.get("choices"),
            )  # fmt: skip


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, TrainConfig)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="set any config key, value read as YAML; augment.view1.NAME / augment.view2.NAME "
        "set one augmentation of one view (e.g. --set augment.view2.solarize_prob=0.0)",
    )  # fmt: skip
    parser.add_argument(
        "--resume", nargs="?", const="latest", default=None, metavar="PATH",
        help="continue the run folder (--out) from its newest valid checkpoint (exit 2 if it "
        "has none), or from the checkpoint file PATH; without --resume a run folder that holds "
        "a checkpoint resumes too",
    )  # fmt: skip
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
        if key not in ("command", "nproc", "config", "handler", "resume", "set")
        and value is not None
    }
    if args.nproc and args.nproc > 1:
        from .ddp import launch_local

        return launch_local(args.nproc, list(argv))
    config = load_config(args.config, overrides, sets=args.set)
    result = train(config, resume=args.resume)
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
        print(
            f"byol: k-NN top-1      {100 * result.knn_top1:.2f}% ({result.knn_of}; "
            "byol eval's k-NN uses the whole training split as its bank)"
        )
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
