"""``byol eval``: evaluate a checkpoint's frozen encoder, with baselines, in one table.

:func:`run_evaluation` loads the labelled train and test splits, computes the features of the
checkpoint's online encoder (and of each baseline) once, and runs the requested protocols from
:mod:`byol.evaluate`:

* ``linear`` - linear probe on pre-computed features (learning rate chosen on a part held out
  from the training split, never the test split), or with ``augmented=True`` on freshly
  augmented training images every epoch (random crop + flip; much slower);
* ``knn`` - weighted cosine k-NN, k = 200 and k = 20, temperature 0.1, training split as the
  memory bank and test split as queries.

Baselines under the same protocols: ``random-init`` (same architecture and stem, initialised
from ``seed``, never trained) and ``pixels`` (the normalised raw pixels as features).

The result is a JSON-serialisable dict; when the checkpoint lies in a run folder it is also
written to ``RUN/eval.json`` (rows of earlier evaluations of the same checkpoint and dataset
that this one did not redo are kept), which ``byol report`` turns into its table. An
evaluation on another dataset than the run's goes to ``RUN/eval-NAME.json`` instead.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import backbones
from .baselines import random_init_encoder
from .data import ImageData
from .errors import ConfigError, DataError
from .handover import (
    EncoderInfo,
    encode_dataset,
    load_data_for,
    load_encoder,
    resolve_checkpoint,
    run_folder_of,
)
from .runtime import resolve_device

__all__ = [
    "BASELINES",
    "KNN_KS",
    "PROTOCOLS",
    "eval_file_name",
    "protocol_label",
    "results_table",
    "run_evaluation",
]

PROTOCOLS: tuple[str, ...] = ("linear", "knn", "all", "rankme", "finetune")
BASELINES: tuple[str, ...] = ("random-init", "pixels", "scratch")
#: The label fractions of ``--protocol finetune`` (the paper's 1% and 10%).
LABEL_FRACTIONS: tuple[float, ...] = (0.01, 0.1)
# The held-out part of the training split on which fine-tuning chooses rate and epochs.
FINETUNE_VAL_FRACTION = 0.1
KNN_KS: tuple[int, ...] = (200, 20)
KNN_TEMPERATURE = 0.1
EVAL_FILE = "eval.json"


def _say(message: str, quiet: bool) -> None:
    if not quiet:
        print(f"byol eval: {message}", file=sys.stderr, flush=True)


def _labelled(dataset: ImageData, name: str, split: str) -> ImageData:
    labels = dataset.labels
    if labels is None:
        raise DataError(f"dataset {name!r} split {split!r} has no labels; eval needs labels")
    keep = labels >= 0
    if not bool(keep.all()):
        dataset = dataset.subset(torch.nonzero(keep).flatten())
    if len(dataset) == 0:
        raise DataError(f"dataset {name!r} split {split!r} has no labelled images")
    return dataset


def _features_of(
    model: nn.Module | None,
    dataset: ImageData,
    info: EncoderInfo,
    *,
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """Frozen features of ``model``, or the normalised raw pixels when ``model`` is None."""
    from .evaluate import pixel_features

    if model is None:
        return pixel_features(dataset.images, mean=info.mean, std=info.std)
    return encode_dataset(model, dataset, info, batch_size=batch_size, device=device)


def _augmented_crop(info: EncoderInfo) -> str:
    """Small images (<= 64 px) get the CIFAR-style pad-4 random crop, larger ones the paper's
    random resized crop: at 8-32 px a crop of 8 % of the area leaves almost nothing to see."""
    return "pad" if backbones.default_small_images(info.image_size) else "resized"


def _knn_rows(
    name: str, train: torch.Tensor, train_y: torch.Tensor, test: torch.Tensor,
    test_y: torch.Tensor,
) -> list[dict[str, Any]]:  # fmt: skip
    from .evaluate import knn_accuracy

    rows = []
    for k in KNN_KS:
        started = time.perf_counter()
        result = knn_accuracy(train, train_y, test, test_y, k=k, temperature=KNN_TEMPERATURE)
        rows.append({
            "name": name, "protocol": "knn", "k": result["k"],
            "temperature": KNN_TEMPERATURE, "top1": result["top1"], "top5": result["top5"],
            "learning_rate": None, "seconds": time.perf_counter() - started,
        })  # fmt: skip
    return rows


def _linear_row(name: str, result: dict[str, Any], augmented: bool) -> dict[str, Any]:
    extra = {"crop": result["crop"]} if "crop" in result else {}
    return {
        "name": name,
        "protocol": "linear-augmented" if augmented else "linear",
        "top1": result["top1"],
        "top5": result["top5"],
        "learning_rate": result["learning_rate"],
        "val_top1_by_lr": {str(k): v for k, v in result["val_top1_by_lr"].items()},
        "epochs": result["epochs"],
        "n_val": result["n_val"],
        "seconds": result["seconds"],
        **extra,
    }


def run_evaluation(
    checkpoint: str | Path,
    *,
    data: str | None = None,
    data_root: str | Path | None = None,
    protocol: str = "all",
    baselines: Sequence[str] = (),
    augmented: bool = False,
    epochs: int | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    batch_size: int = 512,
    write_run_file: bool = True,
    quiet: bool = False,
    label_fractions: Sequence[float] = LABEL_FRACTIONS,
) -> dict[str, Any]:
    """Evaluate the online encoder of ``checkpoint`` (and ``baselines``) with ``protocol``.

    Args:
        checkpoint: a ``byol train`` checkpoint, or a run folder (its ``checkpoints/last.pt``).
        data, data_root: the labelled dataset; default: the one the checkpoint was trained on.
        protocol: ``linear``, ``knn`` or ``all``.
        baselines: any of ``random-init`` and ``pixels``.
        augmented: linear probe on augmented images instead of pre-computed features: random
            crop + horizontal flip (pad-4 crop for images of <= 64 px, random resized crop
            above).
        epochs: linear-probe epochs (default: 100 on pre-computed features, 80 augmented).
        seed: seeds the held-out split, minibatch order, augmentations and the random-init
            encoder.
        write_run_file: also write ``RUN/eval.json`` when the checkpoint is in a run folder.
        quiet: no progress lines on stderr.

    Returns:
        ``{"checkpoint", "step", "arch", "dataset", "protocol", "augmented", "split_sizes":
        {"train", "val", "test"}, "top1", "top5", "learning_rate", "seconds", "rows": [...]}``
        where the top-level scores are those of the first row (the checkpoint's encoder under
        the first protocol) and each row is ``{"name", "protocol", "top1", "top5",
        "learning_rate", "seconds", ...}`` (k-NN rows add ``k`` and ``temperature``).
    """
    _check_arguments(protocol, baselines, epochs)
    if protocol == "finetune":
        return _finetune_evaluation(
            checkpoint, data=data, data_root=data_root, baselines=baselines,
            label_fractions=label_fractions, epochs=epochs, seed=seed, device=device,
            write_run_file=write_run_file, quiet=quiet,
        )  # fmt: skip
    if protocol == "rankme":
        return _rankme_evaluation(checkpoint, data=data, data_root=data_root, seed=seed,
                                  device=device, batch_size=batch_size,
                                  write_run_file=write_run_file)  # fmt: skip
    started = time.perf_counter()
    run_device = resolve_device(device)
    checkpoint = resolve_checkpoint(checkpoint)
    encoder, info = load_encoder(checkpoint, device=run_device)
    name = str(data if data is not None else info.data)
    train_set, test_set = (
        _labelled(load_data_for(info, data, data_root=data_root, split=split), name, split)
        for split in ("train", "test")
    )
    if augmented and (train_set.images is None or test_set.images is None):
        raise DataError(
            f"--augmented needs the dataset in memory; {name!r} is streamed from disk "
            "(use the default pre-computed protocol)"
        )
    num_classes = int(max(train_set.labels.max(), test_set.labels.max())) + 1
    _say(f"{name}: {len(train_set)} train / {len(test_set)} test images, {num_classes} classes, "
         f"encoder {info.arch} from {checkpoint} (step {info.step})", quiet)  # fmt: skip
    probe_options: dict[str, Any] = {"seed": seed, "num_classes": num_classes,
                                     "device": run_device}  # fmt: skip
    if epochs is not None:
        probe_options["epochs"] = epochs
    encoders: list[tuple[str, nn.Module | None]] = [("byol", encoder)]
    if "random-init" in baselines:
        baseline = random_init_encoder(info.arch, small_images=info.small_images,
                                       in_channels=info.in_channels, seed=seed,
                                       image_size=info.view_size)  # fmt: skip
        encoders.append(("random-init", baseline.to(run_device).eval()))
    if "pixels" in baselines:
        encoders.append(("pixels", None))
    rows: list[dict[str, Any]] = []
    for row_name, model in encoders:
        rows += _evaluate_encoder(
            row_name, model, train_set, test_set, info, protocol=protocol, augmented=augmented,
            probe_options=probe_options, batch_size=batch_size, device=run_device, quiet=quiet,
        )  # fmt: skip
    first = rows[0]
    n_val = max([int(row.get("n_val") or 0) for row in rows] + [0])
    result = {
        "checkpoint": str(checkpoint), "step": info.step, "arch": info.arch, "dataset": name,
        "protocol": protocol, "augmented": augmented, "seed": seed,
        "split_sizes": {"train": len(train_set), "val": n_val, "test": len(test_set)},
        "num_classes": num_classes, "top1": first["top1"], "top5": first["top5"],
        "learning_rate": first["learning_rate"], "seconds": time.perf_counter() - started,
        "rows": rows,
    }  # fmt: skip
    run_folder = run_folder_of(checkpoint)
    if write_run_file and run_folder is not None:
        target = run_folder / eval_file_name(name, info.data)
        result["written_to"] = str(_write_run_file(target, result))
    return result


def _finetune_evaluation(
    checkpoint, *, data, data_root, baselines, label_fractions, epochs, seed, device,
    write_run_file, quiet,
) -> dict[str, Any]:  # fmt: skip
    """``--protocol finetune``: the encoder (and ``scratch``, the same architecture from a
    random start) fine-tuned on each class-balanced fraction of the training labels."""
    from .evaluate.finetune import class_balanced_subset, finetune

    started = time.perf_counter()
    run_device = resolve_device(device)
    checkpoint = resolve_checkpoint(checkpoint)
    encoder, info = load_encoder(checkpoint, device=run_device)
    name = str(data if data is not None else info.data)
    train_set, test_set = (
        _labelled(load_data_for(info, data, data_root=data_root, split=split), name, split)
        for split in ("train", "test")
    )
    if train_set.images is None or test_set.images is None:
        raise DataError(f"--protocol finetune needs {name!r} in memory; it is streamed")
    # Held out first, then the labelled subsets from the rest: never the test split.
    val_index = class_balanced_subset(train_set.labels, FINETUNE_VAL_FRACTION, seed=seed + 1)
    encoders = [("byol", encoder)]
    if "scratch" in baselines:
        scratch = random_init_encoder(info.arch, small_images=info.small_images,
                                      in_channels=info.in_channels, seed=seed,
                                      image_size=info.view_size)  # fmt: skip
        encoders.append(("scratch", scratch.to(run_device)))
    rows = []
    for fraction in label_fractions:
        labelled = class_balanced_subset(train_set.labels, fraction, seed=seed, exclude=val_index)
        parts = {"train": labelled, "val": val_index}
        images = {k: train_set.images[v] for k, v in parts.items()} | {"test": test_set.images}
        labels = {k: train_set.labels[v] for k, v in parts.items()} | {"test": test_set.labels}
        for row_name, model in encoders:
            result = finetune(model, info.feature_dim, images, labels, mean=info.mean,
                              std=info.std, size=info.image_size, crop=_augmented_crop(info),
                              seed=seed, device=run_device,
                              **({"epochs": epochs} if epochs else {}))  # fmt: skip
            rows.append({"name": row_name, "protocol": "finetune", "label_fraction": fraction,
                         **{k: v for k, v in result.items() if k != "val_top1"},
                         "val_top1_by_lr": result["val_top1"]})  # fmt: skip
            _say(f"{row_name}: fine-tuned on {len(labelled)} labels ({100 * fraction:g}%): "
                 f"top-1 {100 * result['top1']:.2f}% (lr {result['learning_rate']:g}, "
                 f"{result['epochs']} epochs, {result['seconds']:.0f}s)", quiet)  # fmt: skip
    first = rows[0]
    result = {
        "checkpoint": str(checkpoint), "step": info.step, "arch": info.arch, "dataset": name,
        "protocol": "finetune", "augmented": True, "seed": seed,
        "split_sizes": {"train": len(train_set), "val": len(val_index), "test": len(test_set)},
        "top1": first["top1"], "top5": first["top5"], "learning_rate": first["learning_rate"],
        "seconds": time.perf_counter() - started, "rows": rows,
    }  # fmt: skip
    run_folder = run_folder_of(checkpoint)
    if write_run_file and run_folder is not None:
        target = run_folder / eval_file_name(name, info.data)
        result["written_to"] = str(_write_run_file(target, result))
    return result


def _rankme_evaluation(checkpoint, *, data, data_root, seed, device, batch_size,
                       write_run_file) -> dict[str, Any]:  # fmt: skip
    """``--protocol rankme``: the label-free score of the checkpoint (no labels needed)."""
    from .selection import checkpoint_rankme

    started = time.perf_counter()
    checkpoint = resolve_checkpoint(checkpoint)
    score = checkpoint_rankme(checkpoint, data=data, data_root=data_root, seed=seed,
                              device=device, batch_size=batch_size)  # fmt: skip
    _, info = load_encoder(checkpoint)
    name = str(data if data is not None else info.data)
    row = {"name": "byol", "protocol": "rankme", "top1": None, "top5": None,
           "learning_rate": None, "rankme": score["rankme"],
           "rankme_projection": score["rankme_projection"], "samples": score["samples"],
           "seconds": time.perf_counter() - started}  # fmt: skip
    result = {
        "checkpoint": str(checkpoint), "step": info.step, "arch": info.arch, "dataset": name,
        "protocol": "rankme", "augmented": False, "seed": seed,
        "split_sizes": {"train": score["samples"], "val": 0, "test": 0}, "top1": None,
        "top5": None, "learning_rate": None, "rankme": score["rankme"],
        "seconds": row["seconds"], "rows": [row],
    }  # fmt: skip
    run_folder = run_folder_of(checkpoint)
    if write_run_file and run_folder is not None:
        target = run_folder / eval_file_name(name, info.data)
        result["written_to"] = str(_write_run_file(target, result))
    return result


def _check_arguments(protocol: str, baselines: Sequence[str], epochs: int | None) -> None:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ConfigError(f"unknown --baseline {unknown[0]!r}; choose from {', '.join(BASELINES)}")
    if protocol == "finetune" and set(baselines) - {"scratch"}:
        raise ConfigError("--protocol finetune compares with --baseline scratch only")
    if protocol != "finetune" and "scratch" in baselines:
        raise ConfigError("--baseline scratch goes with --protocol finetune")
    if epochs is not None and epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {epochs}")


def _evaluate_encoder(
    row_name: str,
    model: nn.Module | None,
    train_set: ImageData,
    test_set: ImageData,
    info: EncoderInfo,
    *,
    protocol: str,
    augmented: bool,
    probe_options: dict[str, Any],
    batch_size: int,
    device: torch.device,
    quiet: bool,
) -> list[dict[str, Any]]:
    """The rows of one encoder (``None``: the raw pixels) under ``protocol``."""
    from .evaluate import linear_probe, linear_probe_augmented

    if model is None and (train_set.images is None or test_set.images is None):
        raise DataError(f"the pixels baseline needs {train_set.name!r} in memory; it is streamed")
    train_y, test_y = train_set.labels, test_set.labels
    rows: list[dict[str, Any]] = []
    if protocol in ("knn", "all") or not augmented:
        tick = time.perf_counter()
        train_features, test_features = (
            _features_of(model, dataset, info, batch_size=batch_size, device=device)
            for dataset in (train_set, test_set)
        )
        _say(f"{row_name}: features {tuple(train_features.shape)} in "
             f"{time.perf_counter() - tick:.1f}s", quiet)  # fmt: skip
    if protocol in ("linear", "all"):
        if augmented:
            result = linear_probe_augmented(
                model if model is not None else nn.Flatten(1), train_set.images, train_y,
                test_set.images, test_y, mean=info.mean, std=info.std, size=info.image_size,
                crop=_augmented_crop(info), encode_batch_size=batch_size, **probe_options,
            )  # fmt: skip
        else:
            result = linear_probe(train_features, train_y, test_features, test_y,
                                  **probe_options)  # fmt: skip
        rows.append(_linear_row(row_name, result, augmented))
        _say(f"{row_name}: linear top-1 {100 * result['top1']:.2f}% "
             f"(lr {result['learning_rate']:g}, {result['seconds']:.1f}s)", quiet)  # fmt: skip
    if protocol in ("knn", "all"):
        knn = _knn_rows(row_name, train_features.to(device), train_y.to(device),
                        test_features.to(device), test_y.to(device))  # fmt: skip
        rows.extend(knn)
        _say(f"{row_name}: k-NN top-1 " + ", ".join(
            f"k={r['k']}: {100 * r['top1']:.2f}%" for r in knn), quiet)  # fmt: skip
    return rows


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
