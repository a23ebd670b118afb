"""What ``byol eval`` shares across its protocols: progress lines, the labelled splits, the
crop of augmented protocols, and ``RUN/eval.json`` with its Markdown table."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import backbones
from .data import ImageData
from .errors import DataError
from .handover import EncoderInfo, run_folder_of

__all__ = [
    "EVAL_FILE",
    "KNN_TEMPERATURE",
    "augmented_crop",
    "eval_file_name",
    "labelled",
    "open_evaluation",
    "protocol_label",
    "record",
    "results_table",
    "say",
]

EVAL_FILE = "eval.json"
KNN_TEMPERATURE = 0.1


def say(message: str, quiet: bool) -> None:
    if not quiet:
        print(f"byol eval: {message}", file=sys.stderr, flush=True)


def labelled(dataset: ImageData, name: str, split: str) -> ImageData:
    labels = dataset.labels
    if labels is None:
        raise DataError(f"dataset {name!r} split {split!r} has no labels; eval needs labels")
    keep = labels >= 0
    if not bool(keep.all()):
        dataset = dataset.subset(torch.nonzero(keep).flatten())
    if len(dataset) == 0:
        raise DataError(f"dataset {name!r} split {split!r} has no labelled images")
    return dataset


def augmented_crop(info: EncoderInfo) -> str:
    """Small images (<= 64 px) get the CIFAR-style pad-4 random crop, larger ones the paper's
    random resized crop: at 8-32 px a crop of 8 % of the area leaves almost nothing to see."""
    return "pad" if backbones.default_small_images(info.image_size) else "resized"


def eval_file_name(dataset: str, trained_on: str | None) -> str:
    """``eval.json`` for the dataset the run trained on (the one ``byol report`` shows);
    ``eval-NAME.json`` for evaluations on other datasets, so they do not replace it."""
    if trained_on is None or dataset == trained_on:
        return EVAL_FILE
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(dataset).name or dataset).strip("._") or "data"
    return f"eval-{stem}.json"


def _row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return row.get("name"), row.get("protocol"), row.get("k"), row.get("label_fraction")


def _write_run_file(path: Path, result: dict[str, Any]) -> Path:
    """Write ``result`` to ``path``, keeping rows of an earlier evaluation of the same
    checkpoint step and dataset that this one did not redo."""
    rows = list(result["rows"])
    try:
        previous = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        previous = None
    if (
        isinstance(previous, dict)
        and previous.get("step") == result["step"]
        and previous.get("dataset") == result["dataset"]
    ):
        redone = {_row_key(row) for row in rows}
        rows += [row for row in previous.get("rows", []) if _row_key(row) not in redone]
    # The held-out size belongs to the linear rows, which may come from an earlier run.
    sizes = {**result["split_sizes"],
             "val": max([int(row.get("n_val") or 0) for row in rows] + [0])}  # fmt: skip
    try:
        path.write_text(json.dumps({**result, "split_sizes": sizes, "rows": rows}, indent=2) + "\n")
    except OSError as error:
        raise DataError(f"cannot write {path}: {error.strerror}") from None
    return path


def protocol_label(row: dict[str, Any]) -> str:
    if row.get("protocol") == "finetune":
        return (
            f"fine-tuned, {100 * row.get('label_fraction', 0):g}% labels "
            f"({row.get('n_train')} images, {row.get('epochs')} epochs)"
        )
    if row.get("protocol") == "rankme":
        projection = row.get("rankme_projection")
        return f"RankMe {row.get('rankme', 0):.1f} on {row.get('samples')} images (label-free" + (
            f"; projections {projection:.1f})" if projection is not None else ")"
        )
    if row.get("protocol") == "knn":
        return f"k-NN (k={row.get('k')}, T={row.get('temperature', KNN_TEMPERATURE):g})"
    if row.get("protocol") == "linear-augmented":
        return "linear (augmented)"
    return str(row.get("protocol", ""))


def results_table(result: dict[str, Any]) -> str:
    """The Markdown table of an evaluation result (rows sorted by protocol, then name)."""
    from .evaluate import format_results_table

    order = {"linear": 0, "linear-augmented": 1, "knn": 2, "finetune": 3, "rankme": 4}
    names = {"byol": 0, "scratch": 1, "random-init": 2, "pixels": 3}
    rows = sorted(
        result.get("rows", []),
        key=lambda r: (order.get(r.get("protocol"), 9), -(r.get("k") or 0),
                       r.get("label_fraction") or 0, names.get(r.get("name"), 9)),
    )  # fmt: skip
    return format_results_table([{**row, "protocol": protocol_label(row)} for row in rows])


@dataclass
class OpenedEvaluation:
    """A checkpoint ready to evaluate: its encoder on the device, and the labelled splits."""

    checkpoint: Path
    encoder: torch.nn.Module
    info: EncoderInfo
    dataset: str
    train: ImageData
    test: ImageData
    device: torch.device


def open_evaluation(checkpoint, *, data, data_root, device) -> OpenedEvaluation:
    """Load the checkpoint's encoder and the labelled train and test splits of ``data``
    (default: the dataset it was trained on)."""
    from .handover import load_data_for, load_encoder, resolve_checkpoint
    from .runtime import resolve_device

    run_device = resolve_device(device)
    checkpoint = resolve_checkpoint(checkpoint)
    encoder, info = load_encoder(checkpoint, device=run_device)
    name = str(data if data is not None else info.data)
    train_set, test_set = (
        labelled(load_data_for(info, data, data_root=data_root, split=split), name, split)
        for split in ("train", "test")
    )
    return OpenedEvaluation(checkpoint, encoder, info, name, train_set, test_set, run_device)


def record(result: dict[str, Any], checkpoint: Path, dataset: str, trained_on: str | None,
           write_run_file: bool) -> dict[str, Any]:  # fmt: skip
    """Write ``result`` to the run folder's eval file when the checkpoint is in one (adding
    ``written_to``); returns ``result``."""
    run_folder = run_folder_of(checkpoint)
    if write_run_file and run_folder is not None:
        target = run_folder / eval_file_name(dataset, trained_on)
        result["written_to"] = str(_write_run_file(target, result))
    return result
