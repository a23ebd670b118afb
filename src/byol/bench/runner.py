"""Training-step benchmark: images/s of the real ``byol train`` step, its stages, and the ceiling.

:func:`run_bench` builds a :class:`~byol.train.Trainer` on an in-memory uint8 dataset of random
images and drives the trainer's own step (:meth:`Trainer.step`: two augmented views on the
device → online and target forwards → backward → LARS → target EMA), batches coming from
``ImageData.batches`` as in ``byol train``. So the numbers describe what training does, not a
re-implementation of it. It measures:

* **throughput**: images/s over ``windows`` timing windows of ``steps`` steps each (after
  ``warmup`` steps, which include any ``torch.compile`` time); the median is the headline.
  The step is free of host synchronisation, so each window synchronises once, at its end.
* **stages**: a separate instrumented pass over the same code synchronises at the end of each
  stage (data, augment, forward, backward, optimizer, ema) and reports per-stage medians. Such
  syncs cost a little on a GPU, so the stages need not add up exactly to the end-to-end step.
* **work**: FLOPs per image of a full BYOL step (online and target forwards of both views, and
  the backward), counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and
  convolutions; element-wise work is not counted).
* **ceiling**: the device's large matmul rate (fp32, and the benchmark's precision) and large
  3×3 convolution rate (both memory formats), in GFLOP/s (:mod:`byol.bench.ceiling`); the
  achieved FLOP/s of the step is reported as a fraction of the best of them.

For ablations, ``ema="loop"`` and ``lars="loop"`` swap the fused target update and optimizer
for per-parameter loops (:mod:`byol.bench.ablations`), and ``sync_every_step`` reads the loss
on the host after every step, as many training loops do.

:class:`BenchConfig` shares its model and runtime keys with :class:`~byol.config.TrainConfig`
(the same fields, help and checks: :data:`TRAIN_KEYS`), with the benchmark's own defaults.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

import torch

from ..config import TrainConfig
from ..config_keys import check_values, coerce, key, key_info
from ..runtime import AUTOCAST_DTYPES, keep_freed_memory
from . import ceiling
from .ablations import loop_lars, loop_update_target
from .ceiling import device_info, process_usage, step_flops_per_image, synchronize

__all__ = ["STAGES", "TRAIN_KEYS", "BenchConfig", "TrainStepRunner", "run_bench"]

#: Stages of one training step, in order, as reported by the instrumented pass.
STAGES = ("data", "augment", "forward", "backward", "optimizer", "ema")
#: The keys of :class:`~byol.config.TrainConfig` that ``byol bench`` takes as they are.
TRAIN_KEYS = ("arch", "image_size", "batch_size", "precision", "compile", "channels_last",
              "parallel_views", "device", "small_images", "hidden_dim", "projection_dim",
              "augment", "seed")  # fmt: skip
# The benchmark's defaults where they differ from training's: CIFAR-sized views.
_TRAIN_DEFAULTS = {"image_size": 32}


def _bench_fields() -> list[tuple[str, Any, Any]]:
    info = key_info(TrainConfig)
    shared = [
        (name, info[name]["type"], dataclasses.field(
            default=_TRAIN_DEFAULTS.get(name, info[name]["default"]),
            metadata={**dataclasses.fields(TrainConfig)[_index(name)].metadata,
                      "group": "model and runtime (as byol train)"}))
        for name in TRAIN_KEYS
    ]  # fmt: skip
    group = "benchmark"
    own = [
        ("steps", int, key(10, "timed steps per window", group, low=1)),
        ("warmup", int, key(3, "untimed steps first, incl. compile", group, low=0)),
        ("windows", int, key(3, "timing windows, median reported", group, low=1)),
        ("source_size", int | None, key(None, "side of the stored images (default: "
                                        "--image-size)", group, low=4)),
        ("dataset_batches", int, key(4, "batches of random images held in memory", group,
                                     low=1)),
        ("ema", str, key("foreach", "target update: foreach or per-parameter loop (ablation)",
                         group, choices=("foreach", "loop"))),
        ("lars", str, key("foreach", "LARS: fused foreach or per-parameter loop (ablation)",
                          group, choices=("foreach", "loop"))),
        ("sync_every_step", bool, key(False, "read the loss on the host after every step "
                                      "(ablation)", group)),
        ("stages", bool, key(True, "the instrumented per-stage pass", group)),
        ("flops", bool, key(True, "the FLOP count", group)),
        ("ceiling", bool, key(True, "the matmul/convolution rate measurements", group)),
        ("profile_steps", int, key(0, "also print a torch.profiler table of this many steps",
                                   group, low=0, flag="--profile")),
    ]  # fmt: skip
    return shared + own


def _index(name: str) -> int:
    return [f.name for f in dataclasses.fields(TrainConfig)].index(name)


def _check(self: Any) -> None:
    """Raise :class:`ConfigError` naming the flag of the first bad setting."""
    check_values(self, flags=True)


def _from_options(cls: type, values: dict[str, Any]) -> Any:
    """A checked config from command-line strings or Python values (None: the default)."""
    info = key_info(cls)
    given = {k: coerce("--" + k.replace("_", "-"), v, info[k]["type"])
             for k, v in values.items() if v is not None}  # fmt: skip
    config = cls(**given)
    config.check()
    return config


BenchConfig = dataclasses.make_dataclass(
    "BenchConfig", _bench_fields(),
    namespace={"check": _check, "from_options": classmethod(_from_options),
               "__doc__": "What to benchmark and how long: the model and runtime keys of "
               "byol train (TRAIN_KEYS) and the benchmark's own (steps, windows, warmup, "
               "ablations, which extra measurements). from_options(values) builds a checked "
               "one from command-line values.", "__module__": __name__},
)  # fmt: skip


class TrainStepRunner:
    """A ready-to-step :class:`~byol.train.Trainer` on in-memory uint8 images (``images``,
    (N, C, H, W), or ``config.dataset_batches`` batches of random ones).

    ``run_window(steps)`` returns the seconds that many real training steps take (one
    synchronisation, at the end); ``stage_times(steps)`` the per-stage seconds of each step
    from the instrumented pass; ``profile(steps)`` a torch.profiler table.
    """

    def __init__(self, config: BenchConfig, *, images: torch.Tensor | None = None) -> None:
        from ..config import resolve
        from ..datasets.base import ImageData
        from ..optim import param_groups
        from ..train import Trainer

        config.check()
        self.config = config
        train_config = resolve({
            **{name: getattr(config, name) for name in TRAIN_KEYS}, "data": "bench-synthetic",
            "epochs": 1000.0, "warmup_epochs": 1.0, "num_workers": 0, "knn_every": 0,
            "tensorboard": False,
        })  # fmt: skip
        self.trainer = Trainer(train_config, show_progress=False)
        self.device = self.trainer.device
        if images is None:
            side = config.source_size or config.image_size
            generator = torch.Generator().manual_seed(config.seed)
            count = config.batch_size * config.dataset_batches
            images = torch.randint(0, 256, (count, 3, side, side), dtype=torch.uint8,
                                   generator=generator)  # fmt: skip
        self.data = ImageData("bench-synthetic", images, None, None)
        torch_state = torch.get_rng_state()
        try:
            self.trainer.build(self.data)
        finally:  # build seeds the global generator; leave the caller's as it was
            torch.set_rng_state(torch_state)
        if config.ema == "loop":
            self.trainer.model.update_target = loop_update_target(self.trainer.model)
        if config.lars == "loop":
            train = self.trainer.config
            self.trainer.optimizer = loop_lars(
                param_groups(self.trainer.model, train.weight_decay,
                             predictor_lr_scale=train.predictor_lr_scale),
                lr=0.0, momentum=train.momentum, trust_coefficient=train.trust_coefficient,
            )  # fmt: skip
        self.trainer.model.train()
        self.step = 0
        self._batches = self._batch_stream()
        self.last_loss: float | None = None

    @property
    def model(self) -> torch.nn.Module:
        return self.trainer.model

    def _batch_stream(self) -> Iterator[torch.Tensor]:
        indices = self.trainer.batch_indices(0, 2**62)
        return self.data.batches(indices, num_workers=0, pin_memory=self.device.type == "cuda")

    def _train_step(self, mark: Callable[[str], None] | None = None) -> torch.Tensor:
        images = next(self._batches)
        if mark is not None:
            mark("data")
        # Schedules are evaluated at a step inside the run, whatever the benchmark's length.
        step = self.step % self.trainer.total_steps
        loss, _ = self.trainer.step(images, step, mark)
        self.step += 1
        return loss

    def run_window(self, steps: int) -> float:
        """Seconds taken by ``steps`` training steps, synchronised once at the end."""
        synchronize(self.device)
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=self.device)
        for _ in range(steps):
            loss = self._train_step()
            if self.config.sync_every_step:
                self.last_loss = float(loss)
            loss_sum += loss.detach()
        total = float(loss_sum)  # the window's only host synchronisation
        elapsed = time.perf_counter() - start
        self.last_loss = total / steps
        return elapsed

    def stage_times(self, steps: int) -> list[dict[str, float]]:
        """Per-step seconds of each stage, synchronising at every stage boundary."""
        records: list[dict[str, float]] = []
        for _ in range(steps):
            record = dict.fromkeys(STAGES, 0.0)
            synchronize(self.device)
            last = [time.perf_counter()]

            def mark(name: str, record: dict[str, float] = record, last: list = last) -> None:
                synchronize(self.device)
                now = time.perf_counter()
                record[name] = record.get(name, 0.0) + now - last[0]
                last[0] = now

            self._train_step(mark)
            records.append(record)
        return records

    def sample_views(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Two augmented views of ``batch`` dataset images, laid out as the step lays them out
        (a private generator, so the benchmark's random stream is untouched)."""
        trainer = self.trainer
        images = self.data.images[:batch].to(self.device)  # type: ignore[index]
        generator = torch.Generator(device=self.device).manual_seed(1)
        view1, view2 = trainer.augment(images, generator=generator)
        if self.config.channels_last:
            view1 = view1.contiguous(memory_format=torch.channels_last)
            view2 = view2.contiguous(memory_format=torch.channels_last)
        return view1, view2

    def profile(self, steps: int, row_limit: int = 30) -> str:
        """torch.profiler table (operators by self time) of ``steps`` training steps."""
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        if self.device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        with profile(activities=activities) as profiler:
            for _ in range(steps):
                self._train_step()
            synchronize(self.device)
        sort_by = "self_cuda_time_total" if self.device.type == "cuda" else "self_cpu_time_total"
        return profiler.key_averages().table(sort_by=sort_by, row_limit=row_limit)


# ---------------------------------------------------------------------------- the benchmark


def run_bench(config: BenchConfig, *, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmark described by ``config``; return a JSON-ready dict of the results.

    Keys: ``config``, ``machine``, ``images_per_s`` (median), ``images_per_s_windows``,
    ``step_ms`` (median), ``warmup_s``, ``stages_ms`` (per-stage medians, with
    ``stages_sum_ms``), ``flops_per_image``, ``achieved_gflops``, ``matmul_gflops`` (per
    precision), ``conv3x3_gflops`` (per memory format), ``ceiling_gflops`` and
    ``fraction_of_ceiling`` (None where not measured), ``user_ms_per_step``,
    ``system_ms_per_step`` and ``page_faults_per_step`` (this process, over the timed windows),
    ``keep_freed_memory``, ``loss`` (the last window's mean loss, a sanity check) and
    ``profile`` (table text, when asked).
    """
    say = log or (lambda message: None)
    config.check()
    runner = TrainStepRunner(config)
    device = runner.device
    result: dict[str, Any] = {
        "config": asdict(config),
        "machine": device_info(device),
        "precision": runner.trainer.precision,
    }

    result.update(_throughput(runner, config, say))
    # Whether malloc keeps freed blocks (see byol.runtime.keep_freed_memory; CPU runs only).
    result["keep_freed_memory"] = keep_freed_memory() if device.type == "cpu" else None
    result.update(_stages(runner, config, say))
    result.update(_flops(runner, config, result["images_per_s"], say))
    result.update(_ceiling(runner, config, result["achieved_gflops"], say))
    if config.profile_steps:
        say(f"profiling {config.profile_steps} steps")
        result["profile"] = runner.profile(config.profile_steps)
    return result


def _throughput(runner: TrainStepRunner, config: Any, say: Callable[[str], None]) -> dict:
    """Warm-up, then the timed windows: images/s, step time, loss, host costs per step."""
    say(f"warm-up: {config.warmup} steps" + (" (includes torch.compile)" if config.compile else ""))
    start = time.perf_counter()
    if config.warmup:
        runner.run_window(config.warmup)
    result: dict[str, Any] = {"warmup_s": time.perf_counter() - start}
    seconds = []
    usage_before = process_usage()
    for window in range(config.windows):
        seconds.append(runner.run_window(config.steps))
        say(f"window {window + 1}/{config.windows}: "
            f"{config.steps * config.batch_size / seconds[-1]:.1f} images/s")  # fmt: skip
    usage_after = process_usage()
    rates = [config.steps * config.batch_size / s for s in seconds]
    result["images_per_s"] = statistics.median(rates)
    result["images_per_s_windows"] = rates
    result["step_ms"] = 1000 * statistics.median(seconds) / config.steps
    result["loss"] = runner.last_loss
    # Host-side costs of the timed windows, per step: CPU time in user and kernel mode and
    # page faults (fresh memory being zero-filled). None where the OS does not report them.
    timed_steps = config.windows * config.steps
    for name in ("user_ms", "system_ms", "page_faults"):
        result[f"{name}_per_step"] = (
            (usage_after[name] - usage_before[name]) / timed_steps
            if usage_before and usage_after
            else None
        )
    return result


def _stages(runner: TrainStepRunner, config: Any, say: Callable[[str], None]) -> dict:
    if not config.stages:
        return {"stages_ms": None, "stages_sum_ms": None}
    say(f"instrumented pass: {config.steps} steps")
    records = runner.stage_times(config.steps)
    return {
        "stages_ms": {s: 1000 * statistics.median(r[s] for r in records) for s in STAGES},
        "stages_sum_ms": 1000 * statistics.median(sum(r.values()) for r in records),
    }


def _flops(
    runner: TrainStepRunner, config: Any, images_per_s: float, say: Callable[[str], None]
) -> dict:
    if not config.flops:
        return {"flops_per_image": None, "achieved_gflops": None}
    say("counting FLOPs")
    view1, view2 = runner.sample_views(min(config.batch_size, 16))
    flops = step_flops_per_image(runner.model, view1, view2)
    return {"flops_per_image": flops, "achieved_gflops": flops * images_per_s / 1e9}


def _ceiling(
    runner: TrainStepRunner, config: Any, achieved: float | None, say: Callable[[str], None]
) -> dict:
    """The device's matmul (fp32 and the step's precision) and 3x3 convolution rates, and the
    forward + backward rate of the step's own convolutions (``step_conv_fwd_bwd_gflops``)."""
    result: dict[str, Any] = dict.fromkeys(
        ("matmul_gflops", "conv3x3_gflops", "ceiling_gflops", "fraction_of_ceiling",
         "step_conv_fwd_bwd_gflops")
    )  # fmt: skip
    if not config.ceiling:
        return result
    say("measuring the device's matmul and convolution rates")
    device, precision = runner.device, runner.trainer.precision
    dtype = AUTOCAST_DTYPES.get(precision, torch.float32)
    matmul = {"fp32": ceiling.matmul_rate(device, torch.float32)}
    if precision != "fp32":
        matmul[precision] = ceiling.matmul_rate(device, dtype)
    conv = {
        "channels_last": ceiling.conv3x3_rate(device, dtype, channels_last=True),
        "contiguous": ceiling.conv3x3_rate(device, dtype, channels_last=False),
    }
    view, _ = runner.sample_views(config.batch_size)
    # What the step's own convolutions reach, forward + backward, at the step's precision.
    step_conv = ceiling.step_conv_rate(runner.model.online_encoder, view.to(dtype), dtype,
                                       channels_last=config.channels_last)  # fmt: skip
    result["step_conv_fwd_bwd_gflops"] = step_conv or None
    best = max(matmul[precision], *conv.values())
    result.update(matmul_gflops=matmul, conv3x3_gflops=conv, ceiling_gflops=best)
    if achieved is not None:
        result["fraction_of_ceiling"] = achieved / best
    return result
