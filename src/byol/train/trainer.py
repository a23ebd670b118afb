"""One ``byol train`` job: build from the plan, restore, step, log, checkpoint, stop.

:meth:`Trainer.step` is the method's update, read top to bottom: learning rate → two augmented
views → loss and gradients → LARS → τ → target EMA. :meth:`Trainer.fit` is the job around it:
load the data, build the networks from the :class:`~byol.plan.RunPlan`, restore the newest
checkpoint of the run folder, then the step loop with its logging window, k-NN monitor,
checkpoints and stop conditions.

Exact resume: the data order is a function of (seed, step) (:mod:`byol.train.batches`) and the
augmentation generator's state is in every checkpoint, so an interrupted and resumed run
performs the very same computations as an uninterrupted one (bitwise on CPU).

The hot path holds no host synchronisation: loss and monitor values stay on the device and
are read every ``log_every`` steps; the learning rate and τ are Python floats.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from .. import backbones
from ..augment import BYOLAugment
from ..augment.crops import CropSampler
from ..checkpoint import CheckpointManager
from ..config import TrainConfig
from ..data import ImageData
from ..errors import ConfigError
from ..model import BYOL
from ..optim import LARS, param_groups
from ..plan import make_plan
from ..run_folder import RunFolder, config_changes
from ..runtime import (
    AUTOCAST_DTYPES,
    keep_freed_memory,
    precision_warning,
    resolve_device,
    resolve_precision,
)
from ..schedules import target_decay, view_size, warmup_cosine_lr
from ..state import TrainState, read_state
from ..warm_start import load_init_weights
from .batches import index_batches
from .loop import RunLoop, RunResult
from .session import LogWindow, raise_if_weights_nonfinite

__all__ = ["RunResult", "Trainer", "train"]


class Trainer(RunLoop):
    """One BYOL pre-training run, single process or one rank of a distributed job.

    ``fit()`` runs the job (:class:`~byol.train.loop.RunLoop`). For other drivers
    (``byol bench``, tests), ``build(data)`` makes the networks, optimizer and augmentation for
    a dataset, ``batch_indices(start, end)`` gives the data order and ``step(images, step)``
    performs one optimizer step.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        show_progress: bool | None = None,
        resume: str | Path | None = None,
    ) -> None:
        from .. import distributed

        self.config = config
        # None: resume the run folder when it holds a checkpoint, else start. "latest": the
        # folder's newest valid checkpoint, which must exist. A path: that checkpoint file.
        self.resume = resume
        self.dist = distributed.current(config.device)
        self.is_main = self.dist.rank == 0
        self.out = Path(config.out)
        self.folder = RunFolder(self.out)
        self.show_progress = show_progress
        self.device = self.dist.device if self.dist.enabled else resolve_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)
        warning = precision_warning(self.precision, self.device)
        if warning and self.is_main:
            warnings.warn(warning, stacklevel=2)
        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        if self.device.type == "cpu":
            keep_freed_memory()
        self.stop_reason: str | None = None
        # Training time of this run: before this invocation (from a checkpoint), and the
        # perf_counter value at which this invocation's loop started.
        self._seconds_before = 0.0
        self._run_start: float | None = None

    # ------------------------------------------------------------------ building blocks
    def build(self, data: ImageData) -> None:
        """Plan the run on ``data`` and build the networks, optimizer and augmentation."""
        config = self.config
        self.num_items = len(data)
        mean, std = data.mean_std()
        self.plan = make_plan(
            config, image_hw=data.image_size, channels=data.channels, mean=mean, std=std,
            num_items=len(data), world_size=self.dist.world_size,
            typical_side=data.typical_side(),
        )  # fmt: skip
        plan = self.plan
        # Same seed, same initial weights on every rank (and in a resumed run's first build).
        torch.manual_seed(config.seed)
        encoder, feature_dim = backbones.build(
            config.arch, small_images=plan.small_images, in_channels=plan.channels,
            image_size=plan.view_size, zero_init_residual=config.zero_init_residual,
        )  # fmt: skip
        if config.init_weights:  # before BYOL copies the encoder into the target
            load_init_weights(encoder, config.init_weights, strict=config.init_strict)
        self.model = BYOL(
            encoder, feature_dim=feature_dim, hidden_dim=config.hidden_dim,
            projection_dim=config.projection_dim,
        ).to(self.device)  # fmt: skip
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.augment = BYOLAugment(plan.views(), plan.view_size, mean=plan.mean, std=plan.std)
        # Full-resolution files are cropped by the loader's workers, from (seed, epoch, index).
        self.crop_sampler = (CropSampler.from_views(plan.views(), config.seed)
                             if plan.full_resolution else None)  # fmt: skip
        self.optimizer = LARS(
            param_groups(self.model, config.weight_decay,
                         predictor_lr_scale=config.predictor_lr_scale),
            lr=0.0, momentum=config.momentum, trust_coefficient=config.trust_coefficient,
        )  # fmt: skip
        self.forward = self.dist.wrap(self.model) if self.dist.enabled else self.model
        if config.compile:
            self.forward = torch.compile(self.forward)
        self._set_precision(self.precision)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(config.seed * 7919 + 17 + self.dist.rank)
        self.set_total_steps(plan.total_steps)

    def _set_precision(self, precision: str) -> None:
        self.precision = precision
        self.plan = dataclasses.replace(self.plan, precision=precision)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        self.autocast_dtype = AUTOCAST_DTYPES.get(precision)

    def set_total_steps(self, total_steps: int) -> None:
        """The schedules' length, and the step this invocation stops at (``max_steps`` may cut)."""
        self.total_steps = total_steps
        self.end_step = min(total_steps, self.config.max_steps or total_steps)

    def view_size_at(self, step: int) -> int:
        """The side of the training views at ``step`` (``final_image_size`` from
        ``final_image_size_from`` of the schedule on)."""
        config = self.config
        return view_size(step, self.total_steps, self.plan.view_size, config.final_image_size,
                         config.final_image_size_from)  # fmt: skip

    def batch_indices(self, start: int, end: int) -> Iterator[torch.Tensor]:
        """Index batches for optimizer steps start..end-1 (this rank's share of each)."""
        return (indices for _, indices in self._keyed_batches(start, end))

    def _keyed_batches(self, start: int, end: int) -> Iterator[tuple[int, torch.Tensor]]:
        return index_batches(
            start, end, num_items=self.num_items, batch_size=self.config.batch_size,
            steps_per_epoch=self.plan.steps_per_epoch, seed=self.config.seed,
            shard=self.dist.shard, with_epoch=True,
        )  # fmt: skip

    def training_batches(self, data: ImageData, start: int, end: int) -> Iterator[torch.Tensor]:
        """The uint8 batches of steps start..end-1: images ``(B, C, H, W)`` that the step
        crops on the device, or, for full-resolution files, crop pairs ``(B, 2, C, S, S)`` cut
        by the loader's workers."""
        options = {"num_workers": self.config.num_workers,
                   "pin_memory": self.device.type == "cuda"}  # fmt: skip
        if self.crop_sampler is not None:
            return data.crop_batches(self._keyed_batches(start, end), self.crop_sampler,
                                     self.plan.view_size, **options)  # fmt: skip
        return data.batches(self.batch_indices(start, end), **options)

    # ------------------------------------------------------------------ the update
    def step(
        self, images: torch.Tensor, step: int, mark: Callable[[str], None] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimizer step (``accumulate`` micro-batches), then the target update.

        ``mark``, when given, is called with a stage name (augment, forward, backward,
        optimizer, ema) as each stage ends: ``byol bench`` times the stages of this very code
        with it (synchronising there). Training passes None.
        """
        config, plan = self.config, self.plan
        lr = warmup_cosine_lr(step, self.total_steps, plan.peak_lr, plan.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        images = images.to(self.device, non_blocking=True)
        self.augment.size = (self.view_size_at(step),) * 2
        micro_batches = images.chunk(config.accumulate)
        total_loss = torch.zeros((), device=self.device)
        stats: dict[str, torch.Tensor] = {}
        for index, micro in enumerate(micro_batches):
            loss, stats = self._loss_and_gradients(
                micro, len(micro_batches), last=index == len(micro_batches) - 1, mark=mark
            )
            total_loss += loss / len(micro_batches)
        if config.skip_nonfinite and not bool(torch.isfinite(total_loss)):
            self.optimizer.zero_grad(set_to_none=True)
            return total_loss, stats
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        _mark(mark, "optimizer")
        self.model.update_target(target_decay(step, self.total_steps, config.target_decay))
        _mark(mark, "ema")
        return total_loss, stats

    def _loss_and_gradients(
        self, images: torch.Tensor, parts: int, *, last: bool, mark: Callable[[str], None] | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Two views of ``images``, the loss, and its gradient (scaled by 1/``parts``) added to
        the online parameters' ``.grad``. DDP averages gradients on the last part only.
        A 5-D batch holds crop pairs made by the loader: only the photometric steps remain."""
        if images.dim() == 5:
            view1, view2 = self.augment.from_crops(images, generator=self.generator)
        else:
            view1, view2 = self.augment(images, generator=self.generator)
        if self.config.channels_last:
            view1 = view1.contiguous(memory_format=torch.channels_last)
            view2 = view2.contiguous(memory_format=torch.channels_last)
        _mark(mark, "augment")
        sync = contextlib.nullcontext() if last else self.dist.no_sync(self.forward)
        with sync, torch.autocast(
            self.device.type, dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        ):  # fmt: skip
            loss, stats = self.forward(view1, view2, return_stats=True)
            _mark(mark, "forward")
            self.scaler.scale(loss / parts).backward()
        _mark(mark, "backward")
        return loss.detach(), stats

    # ------------------------------------------------------------------ checkpoints
    def state(self, step: int, augment_states: list[torch.Tensor]) -> TrainState:
        """The checkpoint of this run after ``step`` optimizer steps."""
        from .. import __version__

        return TrainState(
            model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict(), step=step, total_steps=self.total_steps,
            train_seconds=self.train_seconds(),
            rng={"augment": augment_states, "torch": torch.get_rng_state()},
            config=self.config.to_dict(),
            plan=dataclasses.replace(self.plan, total_steps=self.total_steps),
            byol_version=__version__,
        )  # fmt: skip

    def restore(self, state: TrainState) -> int:
        """Continue from ``state``; returns its step. Under ``--precision auto`` the run keeps
        the precision it started with, whatever this machine would choose."""
        started_in = state.plan.precision
        if self.config.precision == "auto" and started_in and started_in != self.precision:
            warning = precision_warning(started_in, self.device)
            if self.is_main:
                print(f"byol: the run started in {started_in}; continuing in {started_in}"
                      + (f" ({warning})" if warning else ""), file=sys.stderr)  # fmt: skip
            self._set_precision(started_in)
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        if state.scaler:
            self.scaler.load_state_dict(state.scaler)
        states = state.rng["augment"]
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
        # A checkpoint read with map_location=cuda brings this CPU state to the GPU too.
        torch.set_rng_state(state.rng["torch"].to(torch.uint8).cpu())
        self._seconds_before = state.train_seconds
        return state.step

    def _restore_latest(self, checkpoints: CheckpointManager) -> int:
        """Resume as ``resume`` asks (see ``__init__``); returns the step (0: a fresh start)."""
        start_step = 0
        state, path = self._state_to_resume(checkpoints)
        if state is not None:
            if self.config.schedule_to_time_limit and state.total_steps:
                # The plan so far, not --epochs' first estimate, continues the schedules.
                self.set_total_steps(state.total_steps)
            elif state.total_steps not in (0, self.total_steps):
                raise ConfigError(
                    f"checkpoint {path} was made for {state.total_steps} steps but this "
                    f"config gives {self.total_steps}; use another --out"
                )
            start_step = self.restore(state)
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
        return start_step

    def _state_to_resume(
        self, checkpoints: CheckpointManager
    ) -> tuple[TrainState | None, Path | None]:
        if self.resume not in (None, "latest"):
            path = Path(self.resume).expanduser()
            if path.is_dir():
                raise ConfigError(
                    f"--resume {path} is a folder; give a checkpoint file, or --resume alone "
                    "to continue the run folder (--out)"
                )
            state = read_state(path, map_location=self.device)
            detail = config_changes(state.config, self.config)
            if detail:
                raise ConfigError(
                    f"--resume {path} was trained with a different config ({detail}); resume it "
                    "with the settings it was made with"
                )
            return state, path
        if not checkpoints.exists():
            if self.resume == "latest":
                raise ConfigError(
                    f"--resume: the run folder {self.out} has no checkpoint to resume from; run "
                    "without --resume to start a new run there"
                )
            return None, None
        payload, path, problems = checkpoints.load_latest(map_location=self.device)
        for problem in problems:
            warnings.warn(f"{problem}; falling back to an older checkpoint", stacklevel=3)
        return TrainState.from_payload(payload, path), path

    def _checkpoint(self, done: int, checkpoints: CheckpointManager, window: LogWindow) -> None:
        window.raise_if_nonfinite(self.dist, checkpoints)
        raise_if_weights_nonfinite(self.model, done, checkpoints)
        # A collective: under DDP every rank gathers, rank 0 writes.
        states = self.dist.gather_generator_states(self.generator.get_state())
        if self.is_main:
            self.last_checkpoint = checkpoints.save(self.state(done, states).to_payload(), done)
        self.dist.barrier()

    # ------------------------------------------------------------------ time
    def train_seconds(self) -> float:
        """Seconds spent training this run so far, resumed invocations included."""
        here = 0.0 if self._run_start is None else time.perf_counter() - self._run_start
        return self._seconds_before + here

    def request_stop(self, reason: str) -> None:
        """Finish the current step, write a checkpoint and return (used for SIGTERM/SIGINT)."""
        self.stop_reason = reason


def _mark(mark: Callable[[str], None] | None, stage: str) -> None:
    if mark is not None:
        mark(stage)


def train(
    config: TrainConfig, *, show_progress: bool | None = None, resume: str | Path | None = None
) -> RunResult:
    """Run (or resume) the training described by ``config``.

    ``resume``: None resumes the run folder when it holds a checkpoint (else starts it);
    ``"latest"`` requires that checkpoint; a path resumes from that checkpoint file.
    """
    return Trainer(config, show_progress=show_progress, resume=resume).fit()
