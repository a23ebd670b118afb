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

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .baselines import random_init_encoder
from .data import ImageData
from .errors import ConfigError, DataError
from .evaluation_files import (
    KNN_TEMPERATURE,
    augmented_crop,
    eval_file_name,
    open_evaluation,
    protocol_label,
    record,
    results_table,
    say,
)
from .evaluation_label_scarce import (
    DEFAULT_HEAD_INIT,
    LABEL_FRACTIONS,
    finetune_evaluation,
    rankme_evaluation,
)
from .handover import (
    EncoderInfo,
    encode_dataset,
)

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
KNN_KS: tuple[int, ...] = (200, 20)


def _features_of(
    model: nn.Module | None,
    dataset: ImageData,
    info: EncoderInfo,
    *,
    batch_size: int | None,
    device: torch.device,
) -> torch.Tensor:
    """Frozen features of ``model``, or the normalised raw pixels when ``model`` is None."""
    from .evaluate import pixel_features

    if model is None:
        return pixel_features(dataset.images, mean=info.mean, std=info.std)
    return encode_dataset(model, dataset, info, batch_size=batch_size, device=device)


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
    batch_size: int | None = None,
    write_run_file: bool = True,
    quiet: bool = False,
    label_fractions: Sequence[float] = LABEL_FRACTIONS,
    head_init: str = DEFAULT_HEAD_INIT,
    precision: str = "auto",
    learning_rates: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Evaluate the online encoder of ``checkpoint`` (and ``baselines``) with ``protocol``.

    Args:
        checkpoint: a ``byol train`` checkpoint, or a run folder (its ``checkpoints/last.pt``).
        data, data_root: the labelled dataset; default: the one the checkpoint was trained on.
        protocol: ``linear``, ``knn``, ``all``, ``rankme`` (label-free) or ``finetune`` (the
            whole encoder + a linear head on ``label_fractions`` of the training labels).
        baselines: any of ``random-init`` and ``pixels``; with ``finetune``, ``scratch``.
        augmented: linear probe on augmented images instead of pre-computed features: random
            crop + horizontal flip (pad-4 crop for images of <= 64 px, random resized crop
            above).
        epochs: linear-probe epochs (default: 100 on pre-computed features, 80 augmented).
        seed: seeds the held-out split, minibatch order, augmentations and the random-init
            encoder.
        write_run_file: also write ``RUN/eval.json`` when the checkpoint is in a run folder.
        quiet: no progress lines on stderr.
        label_fractions: with ``finetune``, the class-balanced fractions of the labels.
        head_init: with ``finetune``, how the encoder's head starts: ``linear-probe`` (fitted
            on the frozen features first, LP-FT) or ``random``.
        precision: with ``finetune``, the autocast of its forward passes, as ``byol train
            --precision`` (``auto``: bf16 where the hardware computes it natively, else fp32).
            The frozen protocols compute their features in fp32.
        learning_rates: with ``finetune``, the grid of rates chosen from on the held-out
            images (default: ``byol.evaluate.finetune.FINETUNE_LEARNING_RATES``).

    Returns:
        ``{"checkpoint", "step", "arch", "dataset", "protocol", "augmented", "split_sizes":
        {"train", "val", "test"}, "top1", "top5", "learning_rate", "seconds", "rows": [...]}``
        where the top-level scores are those of the first row (the checkpoint's encoder under
        the first protocol) and each row is ``{"name", "protocol", "top1", "top5",
        "learning_rate", "seconds", ...}`` (k-NN rows add ``k`` and ``temperature``).
    """
    _check_arguments(protocol, baselines, epochs)
    if protocol == "finetune":
        return finetune_evaluation(
            checkpoint, data=data, data_root=data_root, baselines=baselines,
            label_fractions=label_fractions, epochs=epochs, seed=seed, device=device,
            write_run_file=write_run_file, quiet=quiet, head_init=head_init,
            precision=precision, learning_rates=learning_rates,
        )  # fmt: skip
    if protocol == "rankme":
        return rankme_evaluation(checkpoint, data=data, data_root=data_root, seed=seed,
                                  device=device, batch_size=batch_size,
                                  write_run_file=write_run_file)  # fmt: skip
    return _frozen_evaluation(
        checkpoint, data=data, data_root=data_root, protocol=protocol, baselines=baselines,
        augmented=augmented, epochs=epochs, seed=seed, device=device, batch_size=batch_size,
        write_run_file=write_run_file, quiet=quiet,
    )  # fmt: skip


def _frozen_evaluation(
    checkpoint, *, data, data_root, protocol, baselines, augmented, epochs, seed, device,
    batch_size, write_run_file, quiet,
) -> dict[str, Any]:  # fmt: skip
    """``linear`` / ``knn`` / ``all``: the frozen encoder (and baselines) probed on features."""
    started = time.perf_counter()
    run = open_evaluation(checkpoint, data=data, data_root=data_root, device=device)
    checkpoint, encoder, info, name = run.checkpoint, run.encoder, run.info, run.dataset
    train_set, test_set, run_device = run.train, run.test, run.device
    if augmented and (train_set.images is None or test_set.images is None):
        raise DataError(
            f"--augmented needs the dataset in memory; {name!r} is streamed from disk "
            "(use the default pre-computed protocol)"
        )
    num_classes = int(max(train_set.labels.max(), test_set.labels.max())) + 1
    say(f"{name}: {len(train_set)} train / {len(test_set)} test images, {num_classes} classes, "
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
    return record(result, checkpoint, name, info.data, write_run_file)


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
    batch_size: int | None,
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
        say(f"{row_name}: features {tuple(train_features.shape)} in "
             f"{time.perf_counter() - tick:.1f}s", quiet)  # fmt: skip
    if protocol in ("linear", "all"):
        if augmented:
            result = linear_probe_augmented(
                model if model is not None else nn.Flatten(1), train_set.images, train_y,
                test_set.images, test_y, mean=info.mean, std=info.std, size=info.image_size,
                crop=augmented_crop(info), encode_batch_size=batch_size, **probe_options,
            )  # fmt: skip
        else:
            result = linear_probe(train_features, train_y, test_features, test_y,
                                  **probe_options)  # fmt: skip
        rows.append(_linear_row(row_name, result, augmented))
        say(f"{row_name}: linear top-1 {100 * result['top1']:.2f}% "
             f"(lr {result['learning_rate']:g}, {result['seconds']:.1f}s)", quiet)  # fmt: skip
    if protocol in ("knn", "all"):
        knn = _knn_rows(row_name, train_features.to(device), train_y.to(device),
                        test_features.to(device), test_y.to(device))  # fmt: skip
        rows.extend(knn)
        say(f"{row_name}: k-NN top-1 " + ", ".join(
            f"k={r['k']}: {100 * r['top1']:.2f}%" for r in knn), quiet)  # fmt: skip
    return rows
