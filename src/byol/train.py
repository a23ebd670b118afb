"""The training loop: data → two augmented views → BYOL loss → LARS → target update.

:class:`Trainer` runs one ``byol train`` job: it builds everything from a
:class:`~byol.config.TrainConfig`, resumes from the run folder when it holds a checkpoint,
and writes ``config.yaml``, ``metrics.jsonl``, TensorBoard events (``tb/``),
``checkpoints/`` and ``summary.json`` there.

Exact resume: the data order of epoch e is a permutation seeded by (seed, e), the position
within it follows from the optimizer step, and the augmentation generator's state is saved in
every checkpoint, so an interrupted and resumed run performs the very same computations as an
uninterrupted one (bitwise on CPU).

The hot path holds no host synchronisation: loss and monitor values stay on the device and
are read every ``log_every`` steps; the learning rate and τ are Python floats.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import itertools
import json
import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from . import backbones
from .augment import PRESETS as AUGMENT_PRESETS
from .augment import BYOLAugment
from .checkpoint import CheckpointManager
from .config import TrainConfig
from .data import ImageData, default_pretrain_split, load_dataset
from .errors import ByolError, ConfigError, DataError
from .model import BYOL
from .optim import LARS, param_groups
from .schedules import target_decay, warmup_cosine_lr
from .view_parallel import ViewParallelStep, supports_parallel_views

__all__ = ["RunResult", "Trainer", "train"]

# Keys that may change between a run and its resumption without changing its result.
RESUMABLE_CHANGES = frozenset(
    {"max_steps", "time_limit", "num_workers", "log_every", "checkpoint_every", "config",
     "keep_checkpoints", "tensorboard", "out", "device", "knn_every", "download", "data_root",
     "strict", "parallel_views"}
)  # fmt: skip
COLLAPSE_WARNING = 0.05
# schedule_to_time_limit aims this fraction of the time limit short of it (the last checkpoint
# and k-NN pass need time too).
REPLAN_RESERVE = 0.01


@dataclass
class RunResult:
    """What a finished (or stopped) run produced."""

    out: Path
    step: int
    total_steps: int
    loss: float | None
    knn_top1: float | None
    checkpoint: Path | None
    stopped_early: str | None = None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available here")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    """fp32 on CPU (no native bf16/fp16 there), bf16 on GPUs that support it."""
    if name != "auto":
        return name
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


_FREED_MEMORY_KEPT: bool | None = None


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks for reuse instead of handing them back to the OS.

    A CPU training step allocates and frees the same large activation buffers every step.
    glibc serves blocks above its mmap threshold (at most 32 MiB, adaptive) with fresh ``mmap``
    calls, whose pages the kernel zero-fills on first touch: ~100k page faults per convnet
    step at batch 256, about 15% of the step spent in the kernel (``byol bench`` reports the
    system time and page faults). Raising the mmap and trim thresholds to 1 GiB lets freed
    blocks be reused. Process-wide and applied once (the first CPU :class:`Trainer` does it);
    the price is that the process keeps its peak heap. Set ``BYOL_KEEP_FREED_MEMORY=0`` to
    leave malloc alone. Returns whether the setting is in effect (False off glibc).
    """
    global _FREED_MEMORY_KEPT
    if _FREED_MEMORY_KEPT is None:
        _FREED_MEMORY_KEPT = False
        if os.environ.get("BYOL_KEEP_FREED_MEMORY", "1") != "0":
            _FREED_MEMORY_KEPT = set_malloc_thresholds(1 << 30, 1 << 30)
    return _FREED_MEMORY_KEPT


def set_malloc_thresholds(mmap_threshold: int, trim_threshold: int) -> bool:
    """Set glibc malloc's mmap and trim thresholds (bytes) through ``mallopt``, process-wide.

    Returns False where there is no such call (not Linux, or a C library without mallopt such
    as musl). Used by :func:`keep_freed_memory`; ``benchmarks/peers.py`` switches between
    settings with it.
    """
    if sys.platform != "linux":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return mallopt(m_mmap_threshold, mmap_threshold) == 1 and (
        mallopt(m_trim_threshold, trim_threshold) == 1
    )


def epoch_order(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    """The data order of one epoch: a permutation that depends only on (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_items, generator=generator)


class Trainer:
    """One BYOL pre-training run, single process or one rank of a distributed job."""

    def __init__(self, config: TrainConfig, *, show_progress: bool | None = None) -> None:
        from . import distributed

        self.config = config
        self.dist = distributed.current(config.device)
        self.is_main = self.dist.rank == 0
        self.out = Path(config.out)
        self.show_progress = show_progress
        self.device = resolve_device(config.device) if not self.dist.enabled else self.dist.device
        self.precision = resolve_precision(config.precision, self.device)
        if self.precision in ("bf16", "fp16") and self.device.type == "cpu" and self.is_main:
            warnings.warn(
                f"precision {self.precision} on CPU runs in emulation here (often ~100x slower "
                "than fp32); use --precision fp32 on CPU",
                stacklevel=2,
            )
        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        if self.device.type == "cpu":
            keep_freed_memory()
        self._stop_reason: str | None = None
        # Training time of this run: before this invocation (from a checkpoint), and the
        # perf_counter value at which this invocation's loop started.
        self._seconds_before = 0.0
        self._run_start: float | None = None

    # ------------------------------------------------------------------ building blocks
    def _load_data(self) -> tuple[ImageData, ImageData | None, ImageData | None]:
        """Pre-training data, and the labeled k-NN memory bank and queries (or None)."""
        config = self.config
        split = default_pretrain_split(config.data)
        data = load_dataset(
            config.data, root=config.data_root, split=split, download=config.download,
            image_size=config.folder_image_size, strict=config.strict,
        )  # fmt: skip
        if len(data) == 0:
            raise DataError(f"dataset {config.data!r} has no images")
        bank = queries = None
        labeled = data.labels is not None and bool((data.labels >= 0).any())
        if config.holdout:
            if config.holdout >= len(data):
                raise ConfigError(
                    f"holdout ({config.holdout}) must be smaller than the dataset ({len(data)})"
                )
            order = epoch_order(len(data), 12345, 0)
            queries = data.subset(order[-config.holdout :]) if labeled else None
            data = data.subset(order[: -config.holdout])
        elif labeled:
            with contextlib.suppress(DataError, ConfigError):
                queries = load_dataset(
                    config.data, root=config.data_root, split="test",
                    image_size=config.folder_image_size, strict=config.strict,
                )  # fmt: skip
        if queries is not None and labeled:
            keep = data.labels >= 0
            candidates = torch.nonzero(keep).flatten()
            pick = candidates[epoch_order(len(candidates), 54321, 0)[: config.knn_bank_size]]
            bank = data.subset(pick.sort().values)
        return data, bank, queries

    def _build(self, data: ImageData) -> None:
        config = self.config
        height, width = data.image_size
        # Views may be smaller than the images the encoder is evaluated on: a fully
        # convolutional encoder trains several times faster on low-resolution crops and, as
        # FixRes (Touvron et al. 2019) found, a random-resized-crop model sees objects larger
        # at test time, which a higher test resolution matches (docs/presets.md measures it).
        self.view_size = config.image_size or min(height, width)
        self.image_size = config.eval_image_size or self.view_size
        small = config.small_images
        # Same seed, same initial weights on every rank (and in a resumed run's first build).
        torch.manual_seed(config.seed)
        if small is None:
            small = backbones.default_small_images(self.image_size)
        encoder, feature_dim = backbones.build(
            config.arch, small_images=small, in_channels=data.channels
        )
        self.model = BYOL(
            encoder, feature_dim=feature_dim, hidden_dim=config.hidden_dim,
            projection_dim=config.projection_dim,
        ).to(self.device)  # fmt: skip
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.mean, std = data.mean_std()
        # A channel that never varies (blank scans, a solid background) has std 0; one grey
        # level keeps its normalisation finite instead of refusing the data.
        self.std = tuple(max(value, 1 / 255) for value in std)
        preset = config.augment
        if preset == "auto":
            name = str(config.data).lower()
            preset = (
                "fashion-mnist"
                if name == "fashion-mnist"
                else ("cifar" if self.view_size <= 64 else "imagenet")
            )
        self.augment_preset = preset
        views: Any = preset
        if config.crop_min_scale is not None:
            views = tuple(
                dataclasses.replace(view, crop_scale=(config.crop_min_scale, view.crop_scale[1]))
                for view in AUGMENT_PRESETS[preset]
            )
        self.augment = BYOLAugment(views, self.view_size, mean=self.mean, std=self.std)
        self.optimizer = LARS(
            param_groups(self.model, config.weight_decay), lr=0.0, momentum=config.momentum,
            trust_coefficient=config.trust_coefficient,
        )  # fmt: skip
        self.forward = self.model
        if self.dist.enabled:
            self.forward = self.dist.wrap(self.model)
        if config.compile:
            self.forward = torch.compile(self.forward)
        # Two halves of the loss on two threads: a CPU-only gain (see byol.view_parallel);
        # DDP's gradient hooks and compiled graphs need the plain module call.
        self.view_parallel = None
        if (
            config.parallel_views and self.device.type == "cpu" and self.precision == "fp32"
            and not self.dist.enabled and not config.compile and torch.get_num_threads() >= 2
            and supports_parallel_views(self.model)
        ):  # fmt: skip
            self.view_parallel = ViewParallelStep(self.model)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(config.seed * 7919 + 17 + self.dist.rank)

    def _schedule(self, num_items: int) -> None:
        config = self.config
        self.steps_per_epoch = num_items // config.batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"batch_size ({config.batch_size}) is larger than the dataset ({num_items} "
                "images); use --batch-size <= the number of images"
            )
        self.warmup_steps = round(config.warmup_epochs * self.steps_per_epoch)
        self.peak_lr = config.base_lr * config.batch_size / 256
        self._set_total_steps(max(1, math.ceil(config.epochs * self.steps_per_epoch)))

    def _set_total_steps(self, total_steps: int) -> None:
        """The schedules' length, and the step this invocation stops at (``max_steps`` may cut)."""
        self.total_steps = total_steps
        self.end_step = min(total_steps, self.config.max_steps or total_steps)

    def _index_batches(self, start: int, end: int, num_items: int) -> Iterator[torch.Tensor]:
        """Index batches for optimizer steps start..end-1 (this rank's share of each)."""
        batch = self.config.batch_size
        order = None
        for step in range(start, end):
            epoch, position = divmod(step, self.steps_per_epoch)
            if order is None or position == 0:
                order = epoch_order(num_items, self.config.seed, epoch)
            indices = order[position * batch : (position + 1) * batch]
            yield self.dist.shard(indices)

    # ------------------------------------------------------------------ checkpoints
    def _payload(
        self, step: int, augment_states: list[torch.Tensor] | None = None
    ) -> dict[str, Any]:
        if augment_states is None:  # a collective: under DDP every rank must gather
            augment_states = self.dist.gather_generator_states(self.generator.get_state())
        return {
            "format": 1,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": step,
            "epoch": step // self.steps_per_epoch,
            "batch_in_epoch": step % self.steps_per_epoch,
            "total_steps": self.total_steps,
            "train_seconds": self._train_seconds(),
            "rng": {
                "augment": augment_states,
                "torch": torch.get_rng_state(),
            },
            "config": self.config.to_dict(),
            "data": {"mean": list(self.mean), "std": list(self.std),
                     "image_size": self.image_size, "view_size": self.view_size,
                     "channels": self.channels,
                     "augment": self.augment_preset},
            "byol_version": _version(),
        }  # fmt: skip

    def _restore(self, payload: dict[str, Any]) -> int:
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        if payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
        states = payload["rng"]["augment"]
        states = states if isinstance(states, list) else [states]
        if len(states) == self.dist.world_size:
            self.generator.set_state(states[self.dist.rank].to(torch.uint8).cpu())
        elif self.is_main:
            warnings.warn(
                f"the checkpoint was written by {len(states)} process(es), this run has "
                f"{self.dist.world_size}: the augmentation random streams restart from the "
                "seed, so the run continues, but not bit-exactly as it would have",
                stacklevel=2,
            )
        torch.set_rng_state(payload["rng"]["torch"])
        self._seconds_before = float(payload.get("train_seconds") or 0.0)
        return int(payload["step"])

    def _train_seconds(self) -> float:
        """Seconds spent training this run so far, resumed invocations included."""
        here = 0.0 if self._run_start is None else time.perf_counter() - self._run_start
        return self._seconds_before + here

    def _replan(self, done: int, start_step: int) -> None:
        """Set the schedules' length so that, at the speed measured so far, they end at the limit.

        The speed is the mean over this invocation (checkpoints and k-NN passes included, as
        they spend the same budget), so the estimate steadies as the run goes; every rank takes
        the smallest estimate, so all agree.
        """
        elapsed = time.perf_counter() - self._run_start
        if done <= start_step or elapsed <= 0:
            return
        remaining = self.config.time_limit * 60 * (1 - REPLAN_RESERVE) - self._train_seconds()
        planned = done + max(0, int((done - start_step) / elapsed * remaining))
        if self.dist.enabled:
            planned = -int(self.dist.max(torch.tensor(-planned, device=self.device)).item())
        self._set_total_steps(planned)

    def _check_run_folder(self) -> None:
        """Refuse to mix a different config into an existing run folder."""
        saved = self.out / "config.yaml"
        if not saved.exists():
            return
        try:
            previous = yaml.safe_load(saved.read_text()) or {}
        except (OSError, yaml.YAMLError):
            previous = None
        if not isinstance(previous, dict):
            # Not a config byol wrote (its writes are atomic): the folder belongs to something
            # else, whose files must not be overwritten.
            raise ConfigError(f"{saved} exists but is not a byol run config; choose another --out")
        current = self.config.to_dict()
        changed = sorted(
            key for key in set(previous) | set(current)
            if key not in RESUMABLE_CHANGES and previous.get(key) != current.get(key)
        )  # fmt: skip
        if changed:
            detail = ", ".join(f"{k}: {previous.get(k)!r} -> {current.get(k)!r}" for k in changed)
            raise ConfigError(
                f"run folder {self.out} already holds a run with a different config ({detail}); "
                "choose another --out, or rerun with the same settings to resume it"
            )

    # ------------------------------------------------------------------ the run
    def fit(self) -> RunResult:
        config = self.config
        data, bank, queries = self._load_data()
        self.channels = data.channels
        self._build(data)
        self._schedule(len(data) // self.dist.world_size * self.dist.world_size)
        checkpoints = CheckpointManager(self.out / "checkpoints", keep=config.keep_checkpoints)

        start_step = 0
        self._seconds_before, self._run_start = 0.0, None
        # Every rank checks (the folder is shared), so a refusal cannot leave ranks waiting.
        self._check_run_folder()
        self.dist.barrier()
        if checkpoints.exists():
            payload, path, problems = checkpoints.load_latest(map_location=self.device)
            for problem in problems:
                warnings.warn(f"{problem}; falling back to an older checkpoint", stacklevel=2)
            if config.schedule_to_time_limit and payload.get("total_steps"):
                # The plan so far, not --epochs' first estimate, continues the schedules.
                self._set_total_steps(int(payload["total_steps"]))
            elif payload.get("total_steps") not in (None, self.total_steps):
                raise ConfigError(
                    f"checkpoint {path} was made for {payload['total_steps']} steps but this "
                    f"config gives {self.total_steps}; use another --out"
                )
            start_step = self._restore(payload)
            if self.is_main:
                print(
                    f"byol: resuming {self.out} from {path} at step {start_step}", file=sys.stderr
                )
        if self.dist.enabled and self.dist.any(
            int(self.dist.max(torch.tensor(start_step)).item()) != start_step
        ):
            raise ConfigError(
                f"the processes resumed {self.out} from different steps (this one from step "
                f"{start_step}); every node must see the same run folder (a shared file system)"
            )

        writer = None
        if self.is_main:
            try:
                self.out.mkdir(parents=True, exist_ok=True)
                # Atomic, so a kill mid-write cannot leave a config that refuses the resume.
                temporary = self.out / ".config.yaml.tmp"
                temporary.write_text(yaml.safe_dump(config.to_dict(), sort_keys=True))
                temporary.replace(self.out / "config.yaml")
                writer = _MetricsWriter(self.out, config.tensorboard, resume_step=start_step)
            except OSError as error:
                raise ConfigError(
                    f"cannot write to the run folder {self.out}: {error.strerror or error}; "
                    "choose another --out"
                ) from None

        last_loss: float | None = None
        knn_top1: float | None = None
        knn_step = -1
        last_checkpoint: Path | None = checkpoints.last if checkpoints.exists() else None
        progress = _progress(self.is_main and self.show_progress is not False, start_step,
                             self.end_step, self.show_progress)  # fmt: skip
        previous_handler = _install_stop_handler(self)
        loss_sum = torch.zeros((), device=self.device)
        collapse_sum = torch.zeros((), device=self.device)
        first_bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        window_start, window_steps = time.perf_counter(), 0
        run_start = self._run_start = time.perf_counter()
        skipped = 0
        step = start_step
        replan = config.schedule_to_time_limit
        # A re-planned run's length is open until it ends: index batches without an end.
        steps = itertools.count(start_step) if replan else range(start_step, self.end_step)
        batches = data.batches(
            self._index_batches(start_step, 2**62 if replan else self.end_step, len(data)),
            num_workers=config.num_workers, pin_memory=self.device.type == "cuda",
        )  # fmt: skip
        self.model.train()
        try:
            for step, images in zip(steps, batches):
                if step >= self.end_step:  # only a re-planned run gets here
                    break
                loss, stats = self._step(images, step)
                finite = torch.isfinite(loss)
                if config.skip_nonfinite and not bool(finite):
                    skipped += 1
                    warnings.warn(f"non-finite loss at step {step + 1}; skipped it", stacklevel=2)
                first_bad_step = torch.where(
                    (~finite) & (first_bad_step < 0) & (not config.skip_nonfinite),
                    torch.full_like(first_bad_step, step), first_bad_step,
                )  # fmt: skip
                loss_sum += loss.detach()
                collapse_sum += stats["collapse_std"]
                window_steps += 1
                done = step + 1
                # After every step: one slow stretch must not leave the plan far off (on a
                # small budget, even ten slow steps are a large part of it).
                if replan and done < self.end_step:
                    self._replan(done, start_step)
                    if progress is not None:
                        progress.total = self.end_step
                epoch_end = done % self.steps_per_epoch == 0
                should_log = done % config.log_every == 0 or done == self.end_step or epoch_end
                if should_log:
                    self._raise_if_nonfinite(first_bad_step, checkpoints)
                    elapsed = time.perf_counter() - window_start
                    images_per_s = window_steps * config.batch_size / max(elapsed, 1e-9)
                    last_loss = self.dist.mean(loss_sum).item() / window_steps
                    collapse = self.dist.mean(collapse_sum).item() / window_steps
                    record = {
                        "step": done, "epoch": done / self.steps_per_epoch, "loss": last_loss,
                        "lr": self.optimizer.param_groups[0]["lr"],
                        "tau": target_decay(step, self.total_steps, config.target_decay),
                        "collapse_std": collapse, "images_per_s": images_per_s,
                        "seconds": time.perf_counter() - run_start,
                    }  # fmt: skip
                    if replan:
                        record["total_steps"] = self.total_steps
                    if skipped:
                        record["skipped_steps"] = skipped
                    if writer:
                        writer.write(record)
                    if progress is not None:
                        progress.set_postfix(
                            loss=f"{last_loss:.4f}", lr=f"{record['lr']:.3g}",
                            tau=f"{record['tau']:.4f}", img_s=f"{images_per_s:.0f}",
                        )  # fmt: skip
                    if collapse < COLLAPSE_WARNING and self.is_main:
                        warnings.warn(
                            f"step {done}: representations are collapsing (std of normalised "
                            f"projections x sqrt(d) = {collapse:.3f}, healthy is ~1)",
                            stacklevel=2,
                        )
                    loss_sum.zero_()
                    collapse_sum.zero_()
                    window_start, window_steps = time.perf_counter(), 0
                if progress is not None:
                    progress.update(1)
                if (
                    epoch_end and config.knn_every and bank is not None
                    and (done // self.steps_per_epoch) % config.knn_every == 0
                ):  # fmt: skip
                    knn_top1 = self._knn_monitor(bank, queries, done, writer)
                    knn_step = done
                    window_start = time.perf_counter()
                used = self._train_seconds() if replan else time.perf_counter() - run_start
                if config.time_limit and used > config.time_limit * 60 and done < self.end_step:
                    self._stop_reason = f"time limit of {config.time_limit} min reached"
                stop_now = self.dist.any(self._stop_reason is not None)
                if done % config.checkpoint_every == 0 or done == self.end_step or stop_now:
                    self._raise_if_nonfinite(first_bad_step, checkpoints)
                    self._raise_if_weights_nonfinite(done, checkpoints)
                    states = self.dist.gather_generator_states(self.generator.get_state())
                    if self.is_main:
                        last_checkpoint = checkpoints.save(self._payload(done, states), done)
                    self.dist.barrier()
                if stop_now:
                    if self._stop_reason is None:
                        self._stop_reason = "another rank asked to stop"
                    step = done
                    break
            else:
                step = self.end_step
            finished = step >= self.total_steps
            if finished and bank is not None and knn_step != self.total_steps:
                knn_top1 = self._knn_monitor(bank, queries, self.total_steps, writer)
        finally:
            _restore_stop_handler(previous_handler)
            if progress is not None:
                progress.close()
            if writer:
                writer.close()
            if self.view_parallel is not None:
                self.view_parallel.close()

        result = RunResult(
            out=self.out, step=max(step, start_step), total_steps=self.total_steps,
            loss=last_loss, knn_top1=knn_top1, checkpoint=last_checkpoint,
            stopped_early=self._stop_reason,
        )  # fmt: skip
        if self.is_main:
            summary = {
                "step": result.step, "total_steps": result.total_steps, "loss": result.loss,
                "knn_top1": result.knn_top1, "stopped_early": result.stopped_early,
                "checkpoint": str(result.checkpoint) if result.checkpoint else None,
                "seconds": time.perf_counter() - run_start,
            }  # fmt: skip
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return result

    def _step(
        self, images: torch.Tensor, step: int, mark: Callable[[str], None] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimizer step (``accumulate`` micro-batches), then the target update.

        ``mark``, when given, is called with a stage name (augment, forward, backward,
        optimizer, ema) as each stage ends: ``byol bench`` times the stages of this very code
        with it (synchronising there). Training passes None.
        """
        config = self.config
        lr = warmup_cosine_lr(step, self.total_steps, self.peak_lr, self.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        images = images.to(self.device, non_blocking=True)
        micro_batches = images.chunk(config.accumulate)
        total_loss = torch.zeros((), device=self.device)
        stats: dict[str, torch.Tensor] = {}
        for index, micro in enumerate(micro_batches):
            view1, view2 = self.augment(micro, generator=self.generator)
            if config.channels_last:
                view1 = view1.contiguous(memory_format=torch.channels_last)
                view2 = view2.contiguous(memory_format=torch.channels_last)
            if mark is not None:
                mark("augment")
            if self.view_parallel is not None:
                loss, stats = self.view_parallel.step(view1, view2, 1.0 / len(micro_batches))
                if mark is not None:  # forward and backward interleave: one stage
                    mark("forward")
                    mark("backward")
                total_loss += loss / len(micro_batches)
                continue
            sync = self.dist.no_sync(self.forward) if index < len(micro_batches) - 1 else None
            with sync or contextlib.nullcontext(), torch.autocast(
                self.device.type, dtype=self.autocast_dtype or torch.float32,
                enabled=self.autocast_dtype is not None,
            ):  # fmt: skip
                loss, stats = self.forward(view1, view2, return_stats=True)
                if mark is not None:
                    mark("forward")
                self.scaler.scale(loss / len(micro_batches)).backward()
            if mark is not None:
                mark("backward")
            total_loss += loss.detach() / len(micro_batches)
        if config.skip_nonfinite and not bool(torch.isfinite(total_loss)):
            self.optimizer.zero_grad(set_to_none=True)
            return total_loss, stats
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if mark is not None:
            mark("optimizer")
        self.model.update_target(target_decay(step, self.total_steps, config.target_decay))
        if mark is not None:
            mark("ema")
        return total_loss, stats

    def _raise_if_nonfinite(self, first_bad_step: torch.Tensor, checkpoints) -> None:
        bad = int(self.dist.max(first_bad_step).item())
        if bad >= 0:
            last = checkpoints.last if checkpoints.exists() else None
            where = f"; the last good checkpoint is {last}" if last else ""
            raise ByolError(
                f"training diverged: the loss became non-finite at step {bad + 1}{where}. "
                "Lower --base-lr, check the data, or pass --skip-nonfinite to skip such steps"
            )

    def _raise_if_weights_nonfinite(self, done: int, checkpoints) -> None:
        """Refuse to checkpoint NaN/inf weights, which would pass for a good checkpoint.

        A finite loss can still be followed by an update that overflows. Every rank holds the
        same weights, so every rank raises together (no rank is left waiting in a barrier).
        """
        tensors = [t for t in self.model.state_dict().values() if t.is_floating_point()]
        if bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
            return
        last = checkpoints.last if checkpoints.exists() else None
        where = f"; the last good checkpoint is {last}" if last else ""
        raise ByolError(
            f"training diverged: the model weights became non-finite by step {done}{where}. "
            "Lower --base-lr or check the data"
        )

    def _knn_monitor(self, bank, queries, step, writer) -> float:
        from .evaluate import extract_features, knn_accuracy

        encoder = self.model.online_encoder
        bank_features = extract_features(
            encoder, bank.images, mean=self.mean, std=self.std, size=self.image_size,
            device=self.device,
        )  # fmt: skip
        query_features = extract_features(
            encoder, queries.images, mean=self.mean, std=self.std, size=self.image_size,
            device=self.device,
        )  # fmt: skip
        result = knn_accuracy(
            bank_features, bank.labels, query_features, queries.labels,
            k=self.config.knn_k, temperature=self.config.knn_temperature,
        )  # fmt: skip
        if writer:
            writer.write({"step": step, "epoch": step / self.steps_per_epoch,
                          "knn_top1": result["top1"], "knn_bank": len(bank),
                          "knn_queries": len(queries)})  # fmt: skip
        return float(result["top1"])

    def request_stop(self, reason: str) -> None:
        """Finish the current step, write a checkpoint and return (used for SIGTERM/SIGINT)."""
        self._stop_reason = reason


def _version() -> str:
    from . import __version__

    return __version__


def _progress(enabled: bool, start: int, end: int, forced: bool | None):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    # disable=None: quiet when stderr is not a terminal, unless progress was forced on.
    return tqdm(total=end, initial=start, unit="step", dynamic_ncols=True,
                disable=None if forced is None else not forced)  # fmt: skip


def _install_stop_handler(trainer: Trainer):
    if sys.platform == "win32":
        return None
    try:
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, lambda *_: trainer.request_stop("SIGTERM received"))
        return previous
    except ValueError:  # not in the main thread
        return None


def _restore_stop_handler(previous) -> None:
    if previous is not None:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, previous)


def _truncate_metrics(path: Path, resume_step: int) -> None:
    """Drop records past the checkpoint being resumed: the resumed run writes them again."""
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        if isinstance(record, dict) and record.get("step", 0) <= resume_step:
            kept.append(line)
    temporary = path.with_name(".metrics.jsonl.tmp")
    temporary.write_text("".join(line + "\n" for line in kept))
    temporary.replace(path)


class _MetricsWriter:
    """metrics.jsonl (one JSON object per line, flushed) and TensorBoard scalars."""

    def __init__(self, out: Path, tensorboard: bool, resume_step: int = 0) -> None:
        out.mkdir(parents=True, exist_ok=True)
        path = out / "metrics.jsonl"
        if path.exists():
            _truncate_metrics(path, resume_step)
        self.file = open(path, "a", buffering=1)  # noqa: SIM115
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tb"))
            except ImportError:
                warnings.warn(
                    "tensorboard is not installed; writing metrics.jsonl only", stacklevel=2
                )

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float):
                    self.tb.add_scalar(f"train/{key}", value, record["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def train(config: TrainConfig, *, show_progress: bool | None = None) -> RunResult:
    """Run (or resume) the training described by ``config``."""
    return Trainer(config, show_progress=show_progress).fit()
