"""What surrounds the step loop: the logging window, divergence checks, the progress bar and
the SIGTERM handler."""

from __future__ import annotations

import contextlib
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator

import torch

from ..checkpoint import CheckpointManager
from ..errors import ByolError
from ..model import COLLAPSE_WARNING

__all__ = ["LogWindow", "progress_bar", "raise_if_weights_nonfinite", "stop_on_sigterm"]


def _last_good(checkpoints: CheckpointManager) -> str:
    last = checkpoints.last if checkpoints.exists() else None
    return f"; the last good checkpoint is {last}" if last else ""


class LogWindow:
    """Loss and collapse metric summed on the device over the steps since the last record,
    the first step whose loss was not finite, and the window's clock."""

    def __init__(self, device: torch.device, *, skip_nonfinite: bool) -> None:
        self.skip_nonfinite = skip_nonfinite
        self.loss_sum = torch.zeros((), device=device)
        self.collapse_sum = torch.zeros((), device=device)
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.skipped = 0
        self.steps = 0
        self.start = time.perf_counter()

    def add(self, loss: torch.Tensor, collapse: torch.Tensor, step: int) -> None:
        finite = torch.isfinite(loss)
        if self.skip_nonfinite and not bool(finite):
            self.skipped += 1
            warnings.warn(f"non-finite loss at step {step + 1}; skipped it", stacklevel=3)
        # Recorded on the device (no host sync); checked when the window closes.
        self.first_bad_step = torch.where(
            (~finite) & (self.first_bad_step < 0) & (not self.skip_nonfinite),
            torch.full_like(self.first_bad_step, step), self.first_bad_step,
        )  # fmt: skip
        self.loss_sum += loss.detach()
        self.collapse_sum += collapse
        self.steps += 1

    def raise_if_nonfinite(self, dist, checkpoints: CheckpointManager) -> None:
        bad = int(dist.max(self.first_bad_step).item())
        if bad >= 0:
            raise ByolError(
                f"training diverged: the loss became non-finite at step {bad + 1}"
                f"{_last_good(checkpoints)}. Lower --base-lr, check the data, or pass "
                "--skip-nonfinite to skip such steps"
            )

    def close(self, dist, batch_size: int) -> tuple[float, float, float]:
        """(mean loss, mean collapse metric, images/s) of the window, averaged over ranks;
        starts the next window."""
        elapsed = time.perf_counter() - self.start
        images_per_s = self.steps * batch_size / max(elapsed, 1e-9)
        loss = dist.mean(self.loss_sum).item() / self.steps
        collapse = dist.mean(self.collapse_sum).item() / self.steps
        self.loss_sum.zero_()
        self.collapse_sum.zero_()
        self.steps = 0
        self.restart_clock()
        return loss, collapse, images_per_s

    def restart_clock(self) -> None:
        """Leave what happened since the last step (a k-NN pass) out of the next images/s."""
        self.start = time.perf_counter()

    @staticmethod
    def warn_if_collapsing(done: int, collapse: float) -> None:
        if collapse < COLLAPSE_WARNING:
            warnings.warn(
                f"step {done}: representations are collapsing (std of normalised "
                f"projections x sqrt(d) = {collapse:.3f}, healthy is ~1)",
                stacklevel=3,
            )


def raise_if_weights_nonfinite(
    model: torch.nn.Module, done: int, checkpoints: CheckpointManager
) -> None:
    """Refuse to checkpoint NaN/inf weights, which would pass for a good checkpoint.

    A finite loss can still be followed by an update that overflows. Every rank holds the
    same weights, so every rank raises together (no rank is left waiting in a barrier).
    """
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    if bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
        return
    raise ByolError(
        f"training diverged: the model weights became non-finite by step {done}"
        f"{_last_good(checkpoints)}. Lower --base-lr or check the data"
    )


def progress_bar(enabled: bool, start: int, end: int, forced: bool | None):
    """A tqdm bar over optimizer steps, or None."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    # disable=None: quiet when stderr is not a terminal, unless progress was forced on.
    return tqdm(total=end, initial=start, unit="step", dynamic_ncols=True,
                disable=None if forced is None else not forced)  # fmt: skip


@contextlib.contextmanager
def stop_on_sigterm(request_stop: Callable[[str], None]) -> Iterator[None]:
    """While inside, SIGTERM asks the loop to stop after the current step (with a checkpoint)."""
    previous = None
    if sys.platform != "win32":
        try:
            previous = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, lambda *_: request_stop("SIGTERM received"))
        except ValueError:  # not in the main thread
            previous = None
    try:
        yield
    finally:
        if previous is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, previous)
