"""The ``eval``, ``embed``, ``export`` and ``report`` commands: argument parsing only.

Each ``register`` adds a sub-parser whose handler calls one library function
(:mod:`byol.evaluation_run`, :mod:`byol.handover`, :mod:`byol.report`) and prints its result.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["COMMANDS"]

_CHECKPOINT_HELP = "a byol checkpoint (RUN/checkpoints/last.pt) or a run folder"
_DATA_HELP = (
    "dataset name or path (default: the dataset the checkpoint was trained on); see byol train"
)


def _add_run(parser: argparse.ArgumentParser) -> None:
    """The run to read: positional, or ``--checkpoint`` (its alias)."""
    parser.add_argument("run", nargs="?", default=None, metavar="RUN", help=_CHECKPOINT_HELP)
    parser.add_argument("--checkpoint", default=None, metavar="RUN",
                        help="the same as the positional RUN (kept for scripts)")  # fmt: skip


def _run_of(args: argparse.Namespace) -> str:
    """The run named by the positional argument or ``--checkpoint`` (exit 2 if neither or
    two different ones)."""
    from .errors import ConfigError

    if args.run and args.checkpoint and args.run != args.checkpoint:
        raise ConfigError(
            f"two runs given: {args.run} and --checkpoint {args.checkpoint}; name one"
        )
    run = args.run or args.checkpoint
    if not run:
        raise ConfigError(
            f"byol {args.command} needs a run: a run folder or a checkpoint file, e.g. "
            f"byol {args.command} runs/quickstart"
        )
    return run


def _add_checkpoint_and_data(parser: argparse.ArgumentParser) -> None:
    _add_run(parser)
    _add_data_options(parser)


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None, metavar="NAME", help=_DATA_HELP)
    parser.add_argument("--data-root", default=None, metavar="DIR",
                        help="folder holding the dataset files")  # fmt: skip
    parser.add_argument("--device", default=None, metavar="DEVICE",
                        help="cpu, cuda, cuda:1 ... (default: cuda when available)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help="images per encoder forward pass (default: 128 on a CPU, "
                        "512 on a GPU)")  # fmt: skip


# ------------------------------------------------------------------------------------ eval


def _run_eval(args: argparse.Namespace) -> int:
    from .evaluation_run import protocol_label as _protocol_label
    from .evaluation_run import results_table, run_evaluation

    result = run_evaluation(
        _run_of(args), data=args.data, data_root=args.data_root, protocol=args.protocol,
        baselines=args.baseline or (), augmented=args.augmented, epochs=args.epochs,
        seed=args.seed, device=args.device, batch_size=args.batch_size, quiet=args.json,
        label_fractions=args.label_fraction, head_init=args.head_init,
        precision=args.precision, learning_rates=args.learning_rates,
    )  # fmt: skip
    if args.json:
        print(json.dumps(result))
        return 0
    if result["protocol"] == "rankme":
        row = result["rows"][0]
        print(f"{result['dataset']}: checkpoint step {result['step']}; "
              f"{_protocol_label(row)}")  # fmt: skip
        if "written_to" in result:
            print(f"written to {result['written_to']}")
        return 0
    sizes = result["split_sizes"]
    held_out = f" ({sizes['val']} of them held out for the learning rate)" if sizes["val"] else ""
    print(f"{result['dataset']}: {sizes['train']} train{held_out} / {sizes['test']} test images; "
          f"checkpoint step {result['step']}; {result['seconds']:.1f}s\n")  # fmt: skip
    print(results_table(result), end="")
    if "written_to" in result:
        print(f"\nwritten to {result['written_to']}")
    return 0


def register_eval(commands: Any) -> None:
    parser = commands.add_parser(
        "eval", help="linear probe / k-NN of a checkpoint's frozen encoder, with baselines",
        description="Evaluate the frozen online encoder of a checkpoint on a labelled dataset: "
        "linear probe (learning rate chosen on a part held out from the training split) and/or "
        "weighted k-NN (k=200 and 20, T=0.1), optionally against baselines under the same "
        "protocol. Results also go to RUN/eval.json.",
    )  # fmt: skip
    _add_checkpoint_and_data(parser)
    parser.add_argument("--protocol", choices=("linear", "knn", "all", "rankme", "finetune"),
                        default="all",
                        help="evaluation protocol; rankme: the label-free effective rank of "
                        "the features; finetune: the whole encoder + a linear head trained on "
                        "--label-fraction of the labels (default: all)")  # fmt: skip
    parser.add_argument("--baseline", action="append",
                        choices=("random-init", "pixels", "scratch"),
                        metavar="{random-init,pixels,scratch}",
                        help="also evaluate this baseline (repeatable; scratch: the same "
                        "architecture trained from a random start, with finetune)")  # fmt: skip
    parser.add_argument("--label-fraction", type=float, nargs="+", default=[0.01, 0.1],
                        metavar="F", help="class-balanced fractions of the training labels "
                        "for --protocol finetune (default: 0.01 0.1)")  # fmt: skip
    parser.add_argument("--learning-rates", type=float, nargs="+", default=None, metavar="LR",
                        help="with --protocol finetune, the grid of learning rates chosen "
                        "from on held-out training images, for every method (default: "
                        "0.3 0.1 0.03 0.01 0.003 0.001)")  # fmt: skip
    parser.add_argument("--head-init", choices=("linear-probe", "random"),
                        default="linear-probe",
                        help="with --protocol finetune, how the encoder's linear head starts: "
                        "fitted on the frozen features first (LP-FT) or random; scratch is "
                        "always random (default: linear-probe)")  # fmt: skip
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                        help="with --protocol finetune, the autocast of its forward passes "
                        "(auto: bf16 where the hardware computes it natively, else fp32; "
                        "the frozen protocols run fp32) (default: auto)")  # fmt: skip
    parser.add_argument("--augmented", action="store_true",
                        help="linear probe on augmented images (crop + flip) every epoch "
                        "instead of pre-computed features (slow on CPU)")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=None,
                        help="linear-probe epochs (default: 100, augmented 80); with "
                        "finetune, the most fine-tuning epochs tried (default: 30)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the held-out split, batches and random-init "
                        "(default: 0)")  # fmt: skip
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object instead of a table")  # fmt: skip
    parser.set_defaults(handler=_run_eval)


# ------------------------------------------------------------------------------------ embed


def _run_embed(args: argparse.Namespace) -> int:
    from .handover import embed

    result = embed(
        _run_of(args), args.out, data=args.data, data_root=args.data_root, split=args.split,
        batch_size=args.batch_size, device=args.device,
    )  # fmt: skip
    print(f"byol: embeddings      {result.features} shape {result.shape[0]}x{result.shape[1]}")
    if result.labels is not None:
        print(f"byol: labels          {result.labels}")
    if result.paths is not None:
        print(f"byol: source paths    {result.paths}")
    return 0


def register_embed(commands: Any) -> None:
    parser = commands.add_parser(
        "embed", help="write encoder features of every image to a .npy file",
        description="Features of the frozen online encoder for every image of a dataset split, "
        "in the dataset's order, to OUT (.npy, float32, N x D), with OUT-stem.labels.npy "
        "(labels, -1 = unlabelled) and, for image folders, OUT-stem.paths.txt.",
    )  # fmt: skip
    _add_checkpoint_and_data(parser)
    parser.add_argument("--split", default="train",
                        help="train | test (STL-10 also unlabeled, train+unlabeled; "
                        "default: train)")  # fmt: skip
    parser.add_argument("--out", required=True, metavar="FILE.npy", help="feature file to write")
    parser.set_defaults(handler=_run_embed)


# ------------------------------------------------------------------------------------ export


def _run_export(args: argparse.Namespace) -> int:
    from .handover import export_encoder

    result = export_encoder(_run_of(args), args.out, layout=args.format)
    meta = result.metadata
    print(f"byol: weights         {result.weights} ({result.layout} layout, "
          f"{result.num_tensors} tensors, {result.num_parameters:,} parameters)")  # fmt: skip
    print(f"byol: metadata        {result.sidecar}")
    print(f"byol: load with       {meta['load']}")
    print(f"byol: encoder         {meta['arch']} small_images={meta['small_images']} "
          f"in_channels={meta['in_channels']} feature_dim={meta['feature_dim']} "
          f"image_size={meta['image_size']}")  # fmt: skip
    return 0


def register_export(commands: Any) -> None:
    parser = commands.add_parser(
        "export", help="export the online encoder to .safetensors (+ JSON metadata)",
        description="Write the online encoder's weights with safetensors. torchvision format "
        "(ResNets): the keys of the torchvision model without fc, for "
        "load_state_dict(strict=True) after fc = nn.Identity() and the same stem; timm format "
        "(timm:NAME): the keys timm.create_model(NAME, num_classes=0) loads; byol format: "
        "the state_dict of byol.backbones.build(arch, ...) (any architecture); auto: the "
        "first that applies. Metadata, with a line of Python that loads the file, goes in the "
        "file header and in a sidecar OUT-stem.json.",
    )  # fmt: skip
    _add_run(parser)
    parser.add_argument("--out", required=True, metavar="FILE.safetensors",
                        help="weights file to write")  # fmt: skip
    parser.add_argument("--format", choices=("auto", "torchvision", "timm", "byol"),
                        default="auto", help="key layout (default: auto)")  # fmt: skip
    parser.set_defaults(handler=_run_export)


# ------------------------------------------------------------------------------------ report


def _run_report(args: argparse.Namespace) -> int:
    from .report import make_report

    result = make_report(
        _run_of(args), out=args.out, data_root=args.data_root, device=args.device,
        tsne_points=args.tsne_points, bank_size=args.bank_size,
    )  # fmt: skip
    print(f"byol: report          {result.report}")
    for figure in result.figures:
        print(f"byol: figure          {figure}")
    for note in result.notes:
        print(f"byol: note            {note}")
    return 0


def register_report(commands: Any) -> None:
    parser = commands.add_parser(
        "report", help="Markdown report with plots of a run folder",
        description="Write RUN/report/report.md with PNG plots: loss, learning rate and tau "
        "over steps; k-NN accuracy and the collapse metric; a t-SNE map of test embeddings; a "
        "retrieval grid; the table of RUN/eval.json when present. RUN is a run folder or one "
        "of its checkpoint files (whose encoder the embedding figures then use).",
    )  # fmt: skip
    _add_run(parser)
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output folder (default: RUN/report)")  # fmt: skip
    parser.add_argument("--data-root", default=None, metavar="DIR",
                        help="folder holding the dataset files (default: the run's)")  # fmt: skip
    parser.add_argument("--device", default=None, metavar="DEVICE",
                        help="cpu, cuda ... (default: cuda when available)")  # fmt: skip
    parser.add_argument("--tsne-points", type=int, default=2000, metavar="N",
                        help="test embeddings in the t-SNE map (default: 2000)")  # fmt: skip
    parser.add_argument("--bank-size", type=int, default=10000, metavar="N",
                        help="training images searched for the retrieval grid "
                        "(default: 10000)")  # fmt: skip
    parser.set_defaults(handler=_run_report)


# ------------------------------------------------------------------------------------ select


def _run_select(args: argparse.Namespace) -> int:
    from .selection import select_checkpoints

    result = select_checkpoints(
        args.runs, metric=args.metric, data=args.data, data_root=args.data_root,
        samples=args.samples, seed=args.seed, batch_size=args.batch_size, device=args.device,
    )  # fmt: skip
    if args.json:
        print(json.dumps(result))
        return 0
    print("| rank | checkpoint | step | RankMe (representations) | RankMe (projections) |")
    print("|---:|---|---:|---:|---:|")
    for rank, row in enumerate(result["ranked"], 1):
        projection = row["rankme_projection"]
        print(f"| {rank} | {row['checkpoint']} | {row['step']} | {row['rankme']:.2f} | "
              + (f"{projection:.2f} |" if projection is not None else "— |"))  # fmt: skip
    print(f"\nbest by {result['metric']}: {result['best']['checkpoint']}")
    return 0


def register_select(commands: Any) -> None:
    parser = commands.add_parser(
        "select", help="rank checkpoints or runs without labels (RankMe) and name the best",
        description="Compute RankMe (the entropy-based effective rank of the online encoder's "
        "representations, Garrido et al. 2023) of every checkpoint of each RUN (a run folder: "
        "last.pt and the numbered checkpoints kept by --keep-checkpoints; or a checkpoint "
        "file) on the same fixed subset of training images, rank them and name the best. "
        "No labels are used.",
    )  # fmt: skip
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders or checkpoint files")
    parser.add_argument("--metric", choices=("rankme", "rankme_projection"), default="rankme",
                        help="rank by the representations' or the projections' RankMe "
                        "(default: rankme)")  # fmt: skip
    parser.add_argument("--samples", type=int, default=25_600, metavar="N",
                        help="training images RankMe is computed on (default: 25600, as the "
                        "paper)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the image subset")
    _add_data_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_run_select)


COMMANDS: list[tuple[str, Any]] = [
    ("eval", register_eval),
    ("embed", register_embed),
    ("export", register_export),
    ("report", register_report),
    ("select", register_select),
]
