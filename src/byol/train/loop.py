"""The job around :meth:`Trainer.step <byol.train.trainer.Trainer.step>`: restore, the step
loop with its logging window, k-NN monitor, checkpoints and stop conditions, the summary.

:class:`RunLoop` is mixed into :class:`~byol.train.trainer.Trainer`; it uses the trainer's
``build``, ``step``, ``batch_indices``, ``_restore_latest`` and ``_checkpoint``.
"""

from __future__ import annotations

import itertools
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import CheckpointManager
from ..data import ImageData
from ..run_folder import MetricsWriter
from ..runtime import describe_precision
from ..schedules import target_decay
from .monitor import KnnMonitor, load_training_data
from .session import LogWindow, progress_bar, stop_on_sigterm

__all__ = ["REPLAN_RESERVE", "RunLoop", "RunResult"]

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
    # What knn_top1 is of: k, temperature, the bank and the queries (see KnnMonitor.describe).
    knn_of: str | None = None


class RunLoop:
    """``fit()``: one ``byol train`` job as a sequence of named parts."""

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
        if self.is_main:
            precision = describe_precision(config.precision, self.precision, self.device)
            print(f"byol: device {self.device}, precision {precision}", file=sys.stderr)
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
        knn_of = monitor.describe() if monitor is not None and knn_top1 is not None else None
        return self._finish(max(step, start_step), loss, knn_top1, knn_of)

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
        batches = self.training_batches(data, start_step, 2**62 if replan else self.end_step)
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
        if self.config.final_image_size is not None:
            record["view_size"] = self.view_size_at(step)
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

    def _run_monitor(
        self, monitor: KnnMonitor, step: int, writer: MetricsWriter | None
    ) -> float | None:
        """The monitors at ``step``: one metrics record; returns the k-NN top-1 (None
        without labels)."""
        plan = self.plan
        scores = monitor.score(self.model, mean=plan.mean, std=plan.std, size=plan.image_size,
                               device=self.device,
                               crop_fraction=plan.eval_crop_fraction)  # fmt: skip
        if writer:
            record = {"step": step, "epoch": step / plan.steps_per_epoch, **scores,
                      "knn_bank": len(monitor.bank)}  # fmt: skip
            if monitor.queries is not None:
                record["knn_queries"] = len(monitor.queries)
            writer.write(record)
        return scores.get("knn_top1")

    def _stop_requested(self, done: int) -> bool:
        """Whether any rank wants to stop after step ``done`` (signal or time limit)."""
        config = self.config
        used = (self.train_seconds() if config.schedule_to_time_limit
                else time.perf_counter() - self._run_start)  # fmt: skip
        if config.time_limit and used > config.time_limit * 60 and done < self.end_step:
            self.stop_reason = f"time limit of {config.time_limit} min reached"
        return self.dist.any(self.stop_reason is not None)

    def _finish(
        self, step: int, loss: float | None, knn_top1: float | None, knn_of: str | None
    ) -> RunResult:
        result = RunResult(
            out=self.out, step=step, total_steps=self.total_steps, loss=loss, knn_top1=knn_top1,
            checkpoint=self.last_checkpoint, stopped_early=self.stop_reason, knn_of=knn_of,
        )  # fmt: skip
        if self.is_main:
            self.folder.write_summary({
                "step": result.step, "total_steps": result.total_steps, "loss": result.loss,
                "knn_top1": result.knn_top1, "knn_of": result.knn_of,
                "stopped_early": result.stopped_early,
                "checkpoint": str(result.checkpoint) if result.checkpoint else None,
                "seconds": time.perf_counter() - self._run_start,
            })  # fmt: skip
        # Ranks leave together: one that exits (and tears down its process group) while rank 0
        # still writes has been seen to abort at exit under gloo (SIGABRT in CI).
        self.dist.barrier()
        return result

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
