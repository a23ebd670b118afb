"""Training configuration: one dataclass whose fields say everything about each key.

Every key of :class:`TrainConfig` carries, next to its default, its help text, its group
(data, model, optim, runtime, outputs), its choices or range, and whether it may change when a
run is resumed (:func:`key`). The command-line flags (``byol train``, ``byol bench``), the
checks, the resume rule and the docs are all derived from these fields, so a key is described
once.

Precedence, lowest first: dataclass defaults < ``preset`` < YAML file < explicit overrides.
Every key is checked: an unknown key or a bad value raises :class:`ConfigError` naming the key
and the valid choices or range.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .config_keys import check_values, coerce, key, key_info
from .errors import ConfigError
from .presets import PRESETS

__all__ = [
    "CHOICES",
    "PRESETS",
    "RANGES",
    "RESUMABLE_CHANGES",
    "TrainConfig",
    "check_values",
    "coerce",
    "key",
    "key_info",
    "load_config",
    "resolve",
    "set_options",
]


@dataclass
class TrainConfig:
    """Everything a ``byol train`` run depends on. Field names are the YAML keys and,
    with ``_`` → ``-``, the command-line flags."""

    # data
    data: str = key(
        "fashion-mnist",
        "dataset name (fashion-mnist, cifar10, cifar100, stl10, "
        "digits) or a path to an image folder or .npy/.npz file",
        "data",
    )
    data_root: str | None = key(None, "folder holding the dataset files", "data", resumable=True)
    download: bool = key(
        False, "let torchvision download CIFAR/STL-10 into --data-root", "data", resumable=True
    )
    folder_image_size: int | None = key(
        None,
        "read an image folder as square thumbnails of this side (in memory when they fit) "
        "instead of at full resolution (default: full resolution, streamed, training crops "
        "cut from the whole files)",
        "data",
        low=4,
    )
    holdout: int = key(
        0,
        "hold this many training images out of pre-training as k-NN monitor "
        "queries (for tuning without touching the test split)",
        "data",
        low=0,
    )
    strict: bool = key(
        False,
        "fail on the first unreadable image file instead of skipping it with a warning",
        "data",
        resumable=True,
    )
    # model
    arch: str = key(
        "convnet",
        "encoder architecture (byol.backbones.ARCHITECTURES, or timm:NAME for any timm model)",
        "model",
    )
    small_images: bool | None = key(
        None, "CIFAR-style ResNet stem (default: automatic for images <= 64 px)", "model"
    )
    image_size: int | None = key(
        None,
        "side of the augmented training views (default: the stored image size)",
        "model",
        low=4,
    )
    final_image_size: int | None = key(
        None,
        "side of the training views from --final-image-size-from of the schedule to its end "
        "(progressive resizing: most steps on small, cheap views, the last ones closer to the "
        "evaluation size; default: --image-size throughout)",
        "model",
        low=4,
    )
    final_image_size_from: float = key(
        0.8,
        "fraction of the schedule after which the views are --final-image-size",
        "model",
        low=0.0,
        high=1.0,
    )
    eval_image_size: int | None = key(
        None,
        "side the encoder sees when evaluated, monitored, "
        "embedded or exported: whole images resized to it "
        "(default: --image-size)",
        "model",
        low=4,
    )
    init_weights: str | None = key(
        None,
        "initialise the online encoder (and so the target) from this file before training: "
        ".safetensors, a torch state dict, a byol checkpoint or export (continued pre-training)",
        "model",
    )
    init_strict: bool = key(
        True,
        "refuse --init-weights files with missing, unexpected or mismatched keys (false: load "
        "what fits and warn)",
        "model",
    )
    hidden_dim: int = key(4096, "hidden width of the projector and predictor", "model", low=1)
    projection_dim: int = key(256, "output width of the projector and predictor", "model", low=1)
    augment: str = key(
        "auto",
        "augmentation preset (auto chooses by dataset and size)",
        "model",
        choices=("auto", "imagenet", "cifar", "fashion-mnist"),
    )
    augment_view1: dict[str, Any] = key(  # noqa: RUF009 (key() makes a default_factory)
        {},
        "overrides of view 1's augmentations, any field of byol.augment.ViewConfig (e.g. "
        "--set augment.view1.blur_prob=0.5, or a YAML block augment: {view1: {...}})",
        "model",
    )
    augment_view2: dict[str, Any] = key(  # noqa: RUF009
        {},
        "overrides of view 2's augmentations (e.g. --set augment.view2.solarize_prob=0.0)",
        "model",
    )
    crop_min_scale: float | None = key(
        None,
        "smallest area fraction of the random resized crop (preset: 0.08)",
        "model",
        low=1e-3,
        high=1.0,
    )
    crop_law: str | None = key(
        None,
        "law of the random resized crop's box: reference (one draw, clamped: the official "
        "code) or torchvision (ten-try rejection) (default: the augmentation preset's)",
        "model",
        choices=("reference", "torchvision"),
    )
    eval_crop_fraction: float | None = key(
        None,
        "evaluated images of full-resolution folders and shards: the centre square of this "
        "fraction of the shorter side, resized to --eval-image-size (default: 0.875, the "
        "reference's 224/256; other data is shown whole)",
        "model",
        low=0.05,
        high=1.0,
    )
    zero_init_residual: bool = key(
        True,
        "start each bottleneck ResNet block's last BatchNorm scale at zero, as the reference "
        "(ResNet-50 and larger; no effect on other encoders)",
        "model",
        # Only the initial weights depend on it: a resumed run loads its weights.
        resumable=True,
    )
    # optimisation
    epochs: float = key(100.0, "length of the schedules, in epochs", "optim", low=1e-9)
    batch_size: int = key(256, "global batch size per optimizer step", "optim", low=2)
    # Upper bounds far above any useful value keep the LARS update inside float32.
    base_lr: float = key(
        0.2,
        "learning rate for batch 256; scaled linearly by batch_size/256",
        "optim",
        low=0.0,
        high=1e4,
    )
    weight_decay: float = key(
        1.5e-6, "weight decay (LARS-adapted, not on biases and norms)", "optim", low=0.0, high=1e4
    )
    predictor_lr_scale: float = key(
        1.0,
        "the predictor's learning rate as a multiple of the rest of the network's (1: the "
        "paper; SimSiam and DirectPred train the predictor faster, e.g. 10)",
        "optim",
        low=1e-6,
        high=1e3,
    )
    warmup_epochs: float = key(10.0, "linear learning-rate warm-up, in epochs", "optim", low=0.0)
    momentum: float = key(0.9, "LARS momentum", "optim", low=0.0, high=0.999999)
    trust_coefficient: float = key(1e-3, "LARS trust coefficient", "optim", low=1e-12)
    target_decay: float = key(
        0.996, "tau_base of the target network's moving average", "optim", low=0.0, high=1.0
    )
    accumulate: int = key(
        1, "micro-batches per optimizer step (gradient accumulation)", "optim", low=1
    )
    max_steps: int | None = key(
        None,
        "stop after this optimizer step (schedules still span --epochs; resumable)",
        "optim",
        low=1,
        resumable=True,
    )
    time_limit: float | None = key(
        None, "stop (with a checkpoint) after this many minutes", "optim", low=1e-9, resumable=True
    )
    schedule_to_time_limit: bool = key(
        False,
        "fit the learning-rate and tau schedules to --time-limit: the run's length is "
        "re-estimated from its measured speed as it trains, so the cosine ends when the time "
        "does (--epochs is the first estimate; the limit counts the time of resumed runs too)",
        "optim",
    )
    # execution
    device: str = key("auto", "auto, cpu, cuda[:N] or mps", "runtime", resumable=True)
    precision: str = key(
        "auto",
        "fp32 | bf16 | fp16 (auto: bf16 where the hardware computes it natively: CPUs with "
        "AMX-BF16 or AVX512-BF16, CUDA GPUs with bf16; fp32 elsewhere)",
        "runtime",
        choices=("auto", "fp32", "bf16", "fp16"),
    )
    channels_last: bool = key(True, "channels-last memory format for the networks", "runtime")
    compile: bool = key(False, "torch.compile the training step", "runtime")
    # Kept so that configs of byol 0.1 still load: its two-thread step was removed in 0.2
    # (re-measured inside the noise; benchmarks/RESULTS.md).
    parallel_views: bool = key(
        False,
        "no effect since byol 0.2 (the two-thread CPU step was "
        "removed: its gain was inside the noise)",
        "runtime",
        resumable=True,
    )
    num_workers: int = key(
        2, "DataLoader workers for streamed datasets", "runtime", low=0, resumable=True
    )
    seed: int = key(0, "seed of the initial weights, data order and augmentations", "runtime")
    deterministic: bool = key(False, "torch deterministic algorithms (slower)", "runtime")
    # outputs
    out: str = key(
        "runs/byol", "run folder (re-running into it resumes the run)", "outputs", resumable=True
    )
    checkpoint_every: int = key(
        500,
        "write a checkpoint every N optimizer steps (and at the end)",
        "outputs",
        low=1,
        resumable=True,
    )
    keep_checkpoints: int = key(
        2, "numbered checkpoints kept besides last.pt", "outputs", low=1, resumable=True
    )
    log_every: int = key(
        10, "write a metrics record every N optimizer steps", "outputs", low=1, resumable=True
    )
    knn_every: int = key(
        1, "k-NN monitor every N epochs (0: off)", "outputs", low=0, resumable=True
    )
    knn_bank_size: int = key(
        10000, "labelled training images in the k-NN monitor's bank", "outputs", low=1
    )
    knn_k: int = key(200, "neighbours of the k-NN monitor", "outputs", low=1)
    knn_temperature: float = key(0.1, "temperature of the k-NN monitor's vote", "outputs", low=1e-9)
    tensorboard: bool = key(
        True, "also write TensorBoard events to RUN/tb", "outputs", resumable=True
    )
    skip_nonfinite: bool = key(
        False,
        "skip steps whose loss is NaN/inf instead of stopping (counted in metrics)",
        "outputs",
    )
    preset: str | None = key(None, "start from a named preset", "outputs", choices=tuple(PRESETS))
    config: str | None = key(
        None, "YAML file of config keys; flags override it", "outputs", resumable=True
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_INFO = key_info(TrainConfig)
#: Derived from the fields: the keys with a fixed set of values, and the numeric ranges.
CHOICES: dict[str, tuple[str, ...]] = {k: v["choices"] for k, v in _INFO.items() if v["choices"]}
RANGES: dict[str, tuple[float | None, float | None]] = {
    k: v["range"] for k, v in _INFO.items() if v["range"]
}
#: Keys that may change between a run and its resumption without changing its result.
RESUMABLE_CHANGES = frozenset(k for k, v in _INFO.items() if v["resumable"])


def _unknown_key(name: str, where: str, valid: Sequence[str]) -> ConfigError:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(
        f"unknown config key {name!r} in {where}{hint}; valid keys: {', '.join(sorted(valid))}"
    )


def _check(config: TrainConfig) -> None:
    from .backbones import check_arch

    check_values(config)
    check_arch(config.arch)
    if config.preset is not None and config.preset not in PRESETS:
        raise ConfigError(f"preset must be one of {', '.join(PRESETS)}; got {config.preset!r}")
    _check_view_overrides(config)
    if config.batch_size % config.accumulate:
        raise ConfigError(
            f"batch_size ({config.batch_size}) must be divisible by "
            f"accumulate ({config.accumulate})"
        )
    if config.schedule_to_time_limit and not config.time_limit:
        raise ConfigError(
            "schedule_to_time_limit (--schedule-to-time-limit) fits the schedules to "
            "time_limit; set --time-limit MINUTES as well"
        )
    if not config.device == "auto" and not config.device.startswith(("cpu", "cuda", "mps")):
        raise ConfigError(f"device must be auto, cpu, cuda[:N] or mps; got {config.device!r}")


def _check_view_overrides(config: TrainConfig) -> None:
    """Every override names a :class:`~byol.augment.ViewConfig` field and has a valid value."""
    from .augment.views import ViewConfig

    fields = [f.name for f in dataclasses.fields(ViewConfig)]
    for view in ("view1", "view2"):
        overrides = getattr(config, f"augment_{view}")
        for name in overrides:
            if name not in fields:
                close = difflib.get_close_matches(str(name), fields, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(
                    f"unknown augmentation setting augment.{view}.{name}{hint}; valid: "
                    f"{', '.join(fields)}"
                )
        try:
            dataclasses.replace(ViewConfig(), **overrides)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"augment.{view}: {error}") from None
        except ConfigError as error:
            raise ConfigError(f"augment.{view}: {error}") from None


def set_options(items: Sequence[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as overrides: values are read as YAML (``0.5``, ``true``,
    ``[0.2, 1.0]``), and ``augment.view1.NAME`` / ``augment.view2.NAME`` go into the views'
    override mappings."""
    overrides: dict[str, Any] = {}
    for item in items:
        name, equals, text = item.partition("=")
        if not equals or not name:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set base_lr=0.4")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        parts = name.replace("-", "_").split(".")
        if len(parts) == 3 and parts[0] == "augment" and parts[1] in ("view1", "view2"):
            overrides.setdefault(f"augment_{parts[1]}", {})[parts[2]] = value
        elif len(parts) == 1:
            overrides[parts[0]] = value
        else:
            raise ConfigError(
                f"--set {item!r}: dotted keys are augment.view1.NAME or augment.view2.NAME"
            )
    return overrides


def _flatten_augment(loaded: dict[str, Any], where: str) -> dict[str, Any]:
    """A YAML ``augment:`` block (``{preset: NAME, view1: {...}, view2: {...}}``) as the flat
    keys ``augment``, ``augment_view1`` and ``augment_view2``."""
    block = loaded.get("augment")
    if not isinstance(block, dict):
        return loaded
    unknown = set(block) - {"preset", "view1", "view2"}
    if unknown:
        raise ConfigError(
            f"{where}: the augment block takes preset, view1 and view2; got {sorted(unknown)}"
        )
    flat = {k: v for k, v in loaded.items() if k != "augment"}
    if "preset" in block:
        flat["augment"] = block["preset"]
    for view in ("view1", "view2"):
        if view in block:
            flat[f"augment_{view}"] = {**flat.get(f"augment_{view}", {}), **(block[view] or {})}
    return flat


def resolve(values: dict[str, Any], where: str = "overrides") -> TrainConfig:
    """Build a checked :class:`TrainConfig` from a flat dict (preset applied first)."""
    for name in values:
        if name not in _INFO:
            raise _unknown_key(name, where, list(_INFO))
    merged: dict[str, Any] = {}
    preset = values.get("preset")
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"preset must be one of {', '.join(PRESETS)}; got {preset!r}")
        merged.update(PRESETS[preset])
    merged.update(values)
    coerced = {name: coerce(name, value, _INFO[name]["type"]) for name, value in merged.items()}
    config = TrainConfig(**coerced)
    _check(config)
    return config


#: A section of a run's ``config.yaml`` that is derived from the config and the data (the run
#: plan, :mod:`byol.plan`): written for the reader, recomputed by every run, never an input.
DERIVED_SECTION = "plan"


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    sets: Sequence[str] = (),
) -> TrainConfig:
    """Read a YAML file (flat mapping of keys), apply ``overrides`` on top of it, then the
    ``--set KEY=VALUE`` items ``sets`` (:func:`set_options`).

    A run folder's ``config.yaml`` works as input too: its derived ``plan`` section is ignored.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as error:
            raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys to values")
        loaded.pop(DERIVED_SECTION, None)
        loaded = _flatten_augment(loaded, str(path))
        for name in loaded:
            if name not in _INFO:
                raise _unknown_key(str(name), str(path), list(_INFO))
        values.update(loaded)
        values["config"] = str(path)
    for layer in (overrides or {}, set_options(sets)):
        for name, value in layer.items():
            # Mappings of overrides merge: --set augment.view2.x=... keeps the file's others.
            if isinstance(value, dict) and isinstance(values.get(name), dict):
                value = {**values[name], **value}
            values[name] = value
    return resolve(values, where=str(path) if path else "overrides")
