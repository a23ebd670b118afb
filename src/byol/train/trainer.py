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
import itertools
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import backbones
from ..augment import BYOLAugment
from ..checkpoint import CheckpointManager
from ..config import TrainConfig
from ..data import ImageData
from ..errors import ConfigError
from ..model import BYOL
from ..optim import LARS, param_groups
from ..plan import RunPlan, make_plan
from ..run_folder import MetricsWriter, RunFolder
from ..runtime import (
    AUTOCAST_DTYPES,
    keep_freed_memory,
    precision_warning,
    resolve_device,
    resolve_precision,
)
from ..schedules import target_decay, warmup_cosine_lr
from ..state import TrainState
from .batches import index_batches
from .monitor import KnnMonitor, load_training_data
from .session import LogWindow, progress_bar, raise_if_weights_nonfinite, stop_on_sigterm

__all__ = ["RunResult", "Trainer", "train"]

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


class Trainer:
    """One BYOL pre-training run, single process or one rank of a distributed job.

    ``fit()`` runs the job. For other drivers (``byol bench``, tests), ``build(data)`` makes
    the networks, optimizer and augmentation for a dataset, ``batch_indices(start, end)``
    gives the data order and ``step(images, step)`` performs one optimizer step.
    """

    def __init__(self, config: TrainConfig, *, show_progress: bool | None = None) -> None:
        from .. import distributed

        self.config = config
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
        self.plan = make_plan(
            config, image_hw=data.image_size, channels=data.channels, mean=data.mean_std()[0],
            std=data.mean_std()[1], num_items=len(data), world_size=self.dist.world_size,
        )  # fmt: skip
        plan = self.plan
        # Same seed, same initial weights on every rank (and in a resumed run's first build).
        torch.manual_seed(config.seed)
        encoder, feature_dim = backbones.build(
            config.arch, small_images=plan.small_images, in_channels=plan.channels
        )
        self.model = BYOL(
            encoder, feature_dim=feature_dim, hidden_dim=config.hidden_dim,
            projection_dim=config.projection_dim,
        ).to(self.device)  # fmt: skip
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.augment = BYOLAugment(
            plan.views(config.crop_min_scale), plan.view_size, mean=plan.mean, std=plan.std
        )
        self.optimizer = LARS(
            param_groups(self.model, config.weight_decay), lr=0.0, momentum=config.momentum,
            trust_coefficient=config.trust_coefficient,
        )  # fmt: skip
        self.forward = self.dist.wrap(self.model) if self.dist.enabled else self.model
        if config.compile:
            self.forward = torch.compile(self.forward)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.autocast_dtype = AUTOCAST_DTYPES.get(self.precision)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(config.seed * 7919 + 17 + self.dist.rank)
        self.set_total_steps(plan.total_steps)

    def set_total_steps(self, total_steps: int) -> None:
        """The schedules' length, and the step this invocation stops at (``max_steps`` may cut)."""
        self.total_steps = total_steps
        self.end_step = min(total_steps, self.config.max_steps or total_steps)

    def batch_indices(self, start: int, end: int) -> Iterator[torch.Tensor]:
        """Index batches for optimizer steps start..end-1 (this rank's share of each)."""
        return index_batches(
            start, end, num_items=self.num_items, batch_size=self.config.batch_size,
            steps_per_epoch=self.plan.steps_per_epoch, seed=self.config.seed,
            shard=self.dist.shard,
        )  # fmt: skip

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
            group["lr"] = lr
        images = images.to(self.device, non_blocking=True)
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
        the online parameters' ``.grad``. DDP averages gradients on the last part only."""
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

        plan = {**self.plan.to_dict(), "total_steps": self.total_steps}
        return TrainState(
            model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict(), step=step, total_steps=self.total_steps,
            train_seconds=self.train_seconds(),
            rng={"augment": augment_states, "torch": torch.get_rng_state()},
            config=self.config.to_dict(), plan=RunPlan.from_dict(plan), byol_version=__version__,
        )  # fmt: skip

    def restore(self, state: TrainState) -> int:
        """Continue from ``state``; returns its step."""
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
        torch.set_rng_state(state.rng["torch"])
        self._seconds_before = state.train_seconds
        return state.step

    def _restore_latest(self, checkpoints: CheckpointManager) -> int:
        """Resume from the run folder's newest valid checkpoint; returns the step (0: none)."""
        start_step = 0
        if checkpoints.exists():
            payload, path, problems = checkpoints.load_latest(map_location=self.device)
            for problem in problems:
                warnings.warn(f"{problem}; falling back to an older checkpoint", stacklevel=2)
            state = TrainState.from_payload(payload, path)
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

    def _replan(self, done: int, start_step: int) -> None:
        """Set the schedules' length so that, at the speed measured so far, they end at the limit.

        The speed is the mean over this invocation (checkpoints and k-NN passes included, as
        they spend the same budget), so the estimate steadies as the run goes; every rank takes
        the smallest estimate, so all agree.
        """
        elapsed = time.perf_counter() - self._run_start
        if done <= start_step or elapsed <= 0:
            return
        remaining = self.config.time_limit * 60 * (1 - REPLAN_RESERVE) - self.train_seconds()
        planned = done + max(0, int((done - start_step) / elapsed * remaining))
        if self.dist.enabled:
            planned = -int(self.dist.max(torch.tensor(-planned, device=self.device)).item())
        self.set_total_steps(planned)

    def request_stop(self, reason: str) -> None:
        """Finish the current step, write a checkpoint and return (used for SIGTERM/SIGINT)."""
        self.stop_reason = reason

    # ------------------------------------------------------------------ the run
    def fit(self) -> RunResult:
        """Run (or resume) the training: build, restore, the step loop, the summary."""
        config = self.config
        data, monitor = load_training_data(config)
        self.build(data)
        checkpoints = CheckpointManager(self.folder.checkpoints, keep=config.keep_checkpoints)
        # Every rank checks (the folder is shared), so a refusal cannot leave ranks waiting.
        self.folder.check_config(config)
        self.dist.barrier()
        self._seconds_before, self._run_start = 0.0, None
        start_step = self._restore_latest(checkpoints)
        writer = None
        if self.is_main:
            self.folder.write_config(config, self.plan.to_dict())
            writer = self.folder.open_metrics(config.tensorboard, resume_step=start_step)
        self.last_checkpoint = checkpoints.last if checkpoints.exists() else None
        progress = progress_bar(self.is_main and self.show_progress is not False, start_step,
                                self.end_step, self.show_progress)  # fmt: skip
        try:
            with stop_on_sigterm(self.request_stop):
                step, loss, knn_top1 = self._loop(data, start_step, checkpoints, monitor,
                                                  writer, progress)  # fmt: skip
        finally:
            if progress is not None:
                progress.close()
            if writer:
                writer.close()
        return self._finish(max(step, start_step), loss, knn_top1)

    def _loop(
        self,
        data: ImageData,
        start_step: int,
        checkpoints: CheckpointManager,
        monitor: KnnMonitor | None,
        writer: MetricsWriter | None,
        progress,
    ) -> tuple[int, float | None, float | None]:
        """The step loop; returns (last step, last logged loss, last k-NN top-1)."""
        config = self.config
        replan = config.schedule_to_time_limit
        window = LogWindow(self.device, skip_nonfinite=config.skip_nonfinite)
        self._run_start = time.perf_counter()
        last_loss = knn_top1 = None
        knn_step = -1
        # A re-planned run's length is open until it ends: index batches without an end.
        steps = itertools.count(start_step) if replan else range(start_step, self.end_step)
        batches = data.batches(
            self.batch_indices(start_step, 2**62 if replan else self.end_step),
            num_workers=config.num_workers, pin_memory=self.device.type == "cuda",
        )  # fmt: skip
        step = start_step
        self.model.train()
        for step, images in zip(steps, batches):
            if step >= self.end_step:  # only a re-planned run gets here
                break
            loss, stats = self.step(images, step)
            window.add(loss, stats["collapse_std"], step)
            done = step + 1
            # After every step: one slow stretch must not leave the plan far off (on a small
            # budget, even ten slow steps are a large part of it).
            if replan and done < self.end_step:
                self._replan(done, start_step)
                if progress is not None:
                    progress.total = self.end_step
            epoch_end = done % self.plan.steps_per_epoch == 0
            if done % config.log_every == 0 or done == self.end_step or epoch_end:
                window.raise_if_nonfinite(self.dist, checkpoints)
                last_loss = self._log(window, done, step, writer, progress)
            if progress is not None:
                progress.update(1)
            if self._monitor_due(monitor, done, epoch_end):
                knn_top1, knn_step = self._run_monitor(monitor, done, writer), done
                window.restart_clock()
            stop_now = self._stop_requested(done)
            if done % config.checkpoint_every == 0 or done == self.end_step or stop_now:
                self._checkpoint(done, checkpoints, window)
            if stop_now:
                self.stop_reason = self.stop_reason or "another rank asked to stop"
                step = done
                break
        else:
            step = self.end_step
        if step >= self.total_steps and monitor is not None and knn_step != self.total_steps:
            knn_top1 = self._run_monitor(monitor, self.total_steps, writer)
        return step, last_loss, knn_top1

    def _log(self, window: LogWindow, done: int, step: int, writer, progress) -> float:
        """Close the logging window: one metrics record, the progress bar, the collapse warning."""
        loss, collapse, images_per_s = window.close(self.dist, self.config.batch_size)
        record = {
            "step": done, "epoch": done / self.plan.steps_per_epoch, "loss": loss,
            "lr": self.optimizer.param_groups[0]["lr"],
            "tau": target_decay(step, self.total_steps, self.config.target_decay),
            "collapse_std": collapse, "images_per_s": images_per_s,
            "seconds": time.perf_counter() - self._run_start,
        }  # fmt: skip
        if self.config.schedule_to_time_limit:
            record["total_steps"] = self.total_steps
        if window.skipped:
            record["skipped_steps"] = window.skipped
        if writer:
            writer.write(record)
        if progress is not None:
            progress.set_postfix(
                loss=f"{loss:.4f}", lr=f"{record['lr']:.3g}", tau=f"{record['tau']:.4f}",
                img_s=f"{images_per_s:.0f}",
            )  # fmt: skip
        if self.is_main:
            window.warn_if_collapsing(done, collapse)
        return loss

    def _monitor_due(self, monitor: KnnMonitor | None, done: int, epoch_end: bool) -> bool:
        every = self.config.knn_every
        return bool(
            epoch_end and every and monitor is not None
            and (done // self.plan.steps_per_epoch) % every == 0
        )  # fmt: skip

    def _run_monitor(self, monitor: KnnMonitor, step: int, writer: MetricsWriter | None) -> float:
        plan = self.plan
        top1 = monitor.score(self.model.online_encoder, mean=plan.mean, std=plan.std,
                             size=plan.image_size, device=self.device)  # fmt: skip
        if writer:
            writer.write({"step": step, "epoch": step / plan.steps_per_epoch, "knn_top1": top1,
                          "knn_bank": len(monitor.bank),
                          "knn_queries": len(monitor.queries)})  # fmt: skip
        return top1

    def _stop_requested(self, done: int) -> bool:
        """Whether any rank wants to stop after step ``done`` (signal or time limit)."""
        config = self.config
        used = (self.train_seconds() if config.schedule_to_time_limit
                else time.perf_counter() - self._run_start)  # fmt: skip
        if config.time_limit and used > config.time_limit * 60 and done < self.end_step:
            self.stop_reason = f"time limit of {config.time_limit} min reached"
        return self.dist.any(self.stop_reason is not None)

    def _finish(self, step: int, loss: float | None, knn_top1: float | None) -> RunResult:
        result = RunResult(
            out=self.out, step=step, total_steps=self.total_steps, loss=loss, knn_top1=knn_top1,
            checkpoint=self.last_checkpoint, stopped_early=self.stop_reason,
        )  # fmt: skip
        if self.is_main:
            self.folder.write_summary({
                "step": result.step, "total_steps": result.total_steps, "loss": result.loss,
                "knn_top1": result.knn_top1, "stopped_early": result.stopped_early,
                "checkpoint": str(result.checkpoint) if result.checkpoint else None,
                "seconds": time.perf_counter() - self._run_start,
            })  # fmt: skip
        return result


def _mark(mark: Callable[[str], None] | None, stage: str) -> None:
    if mark is not None:
        mark(stage)


def train(config: TrainConfig, *, show_progress: bool | None = None) -> RunResult:
    """Run (or resume) the training described by ``config``."""
    return Trainer(config, show_progress=show_progress).fit()
