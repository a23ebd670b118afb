"""Training-step benchmark: images/s of the real ``byol train`` step, its stages, and the ceiling.

:func:`run_bench` builds a :class:`~byol.train.Trainer` on an in-memory uint8 dataset of random
images and drives the trainer's own step (``Trainer._step``: two augmented views on the
device → online and target forwards → backward → LARS → target EMA), batches coming from
``ImageData.batches`` as in ``byol train``. So the numbers describe what training does, not a
re-implementation of it. It measures:

* **throughput**: images/s over ``windows`` timing windows of ``steps`` steps each (after
  ``warmup`` steps, which include any ``torch.compile`` time); the median is the headline.
  The step is free of host synchronisation, so each window synchronises once, at its end.
* **stages**: a separate instrumented pass over the same code synchronises at the end of each
  stage (data, augment, forward, backward, optimizer, ema) and reports per-stage medians. Such
  syncs cost a little on a GPU, so the stages need not add up exactly to the end-to-end step.
  With parallel views (the CPU default, :mod:`byol.view_parallel`) forward and backward run
  interleaved on two threads: their joint time is reported as forward, backward as 0.
* **work**: FLOPs per image of a full BYOL step (online and target forwards of both views, and
  the backward), counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and
  convolutions; element-wise work is not counted).
* **ceiling**: the device's large matmul rate (fp32, and the benchmark's precision) and large
  3×3 convolution rate (both memory formats), in GFLOP/s; the achieved FLOP/s of the step is
  reported as a fraction of the best of them.

For ablations, ``ema="loop"`` and ``lars="loop"`` swap the fused (``torch._foreach_*``) target
update and optimizer for per-parameter Python loops computing the same thing, and
``sync_every_step`` reads the loss on the host after every step, as many training loops do.
"""

from __future__ import annotations

import copy
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .errors import ConfigError

__all__ = [
    "STAGES",
    "BenchConfig",
    "TrainStepRunner",
    "conv3x3_rate",
    "device_info",
    "format_table",
    "matmul_rate",
    "run_bench",
    "step_flops_per_image",
]

#: Stages of one training step, in order, as reported by the instrumented pass.
STAGES = ("data", "augment", "forward", "backward", "optimizer", "ema")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_IMPLEMENTATIONS = ("foreach", "loop")
# Problem sizes of the ceiling measurements: large enough to reach the device's sustained rate.
CPU_MATMUL_SIZE = 2048
GPU_MATMUL_SIZE = 8192
CPU_CONV_SHAPE = (64, 128, 32)  # batch, channels, side
GPU_CONV_SHAPE = (256, 256, 56)
CEILING_SECONDS = 0.3  # per timing window


@dataclass
class BenchConfig:
    """What to benchmark and how long.

    ``steps`` timed steps per window, ``windows`` windows (median reported), after ``warmup``
    untimed steps. ``dataset_batches`` batches of random uint8 images (``source_size`` pixels
    square, default ``image_size``) are held in memory. ``stages``, ``flops`` and ``ceiling``
    switch the extra measurements on or off; ``profile_steps`` > 0 also returns a
    ``torch.profiler`` table of that many steps.
    """

    arch: str = "convnet"
    image_size: int = 32
    batch_size: int = 256
    precision: str = "fp32"
    steps: int = 10
    warmup: int = 3
    windows: int = 3
    compile: bool = False
    channels_last: bool = True
    parallel_views: bool = True
    device: str = "auto"
    small_images: bool | None = None
    hidden_dim: int = 4096
    projection_dim: int = 256
    augment: str = "auto"
    source_size: int | None = None
    dataset_batches: int = 4
    ema: str = "foreach"
    lars: str = "foreach"
    sync_every_step: bool = False
    stages: bool = True
    flops: bool = True
    ceiling: bool = True
    profile_steps: int = 0
    seed: int = 0

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first bad setting."""
        positive = {"image_size": 4, "batch_size": 2, "steps": 1, "windows": 1,
                    "dataset_batches": 1, "hidden_dim": 1, "projection_dim": 1}  # fmt: skip
        for name, low in positive.items():
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be an integer >= {low}, got {value!r}")
        for name, flag in (("warmup", "--warmup"), ("profile_steps", "--profile")):
            if getattr(self, name) < 0:
                raise ConfigError(f"{flag} must be >= 0, got {getattr(self, name)!r}")
        if self.source_size is not None and self.source_size < 4:
            raise ConfigError(f"--source-size must be >= 4, got {self.source_size!r}")
        if self.precision not in _DTYPES:
            raise ConfigError(
                f"--precision must be one of {', '.join(_DTYPES)}, got {self.precision!r}"
            )
        for name in ("ema", "lars"):
            if getattr(self, name) not in _IMPLEMENTATIONS:
                raise ConfigError(
                    f"--{name} must be one of {', '.join(_IMPLEMENTATIONS)}, "
                    f"got {getattr(self, name)!r}"
                )


# ---------------------------------------------------------------------------- helpers


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_info(device: torch.device) -> dict[str, Any]:
    """Name of the device, CPU model and cores, torch version and intra-op threads."""
    info: dict[str, Any] = {
        "device": str(device),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def _process_usage() -> dict[str, float] | None:
    try:
        import resource
    except ImportError:  # not a Unix
        return None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"user_ms": 1000 * usage.ru_utime, "system_ms": 1000 * usage.ru_stime,
            "page_faults": float(usage.ru_minflt + usage.ru_majflt)}  # fmt: skip


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _timed_rate(
    run: Callable[[], object],
    flops: float,
    device: torch.device,
    *,
    min_seconds: float | None,
    windows: int,
) -> float:
    """GFLOP/s of ``run`` (``flops`` per call): the best of ``windows`` windows of about
    ``min_seconds`` each. The best, not the median: a busy machine only ever lowers a rate,
    and a ceiling should not be."""
    if min_seconds is None:
        min_seconds = CEILING_SECONDS
    run()  # warm-up: allocations, kernel selection
    _synchronize(device)
    start = time.perf_counter()
    run()
    _synchronize(device)
    once = max(time.perf_counter() - start, 1e-9)
    repeats = max(1, math.ceil(min_seconds / once))
    rates = []
    for _ in range(windows):
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            run()
        _synchronize(device)
        rates.append(flops * repeats / (time.perf_counter() - start) / 1e9)
    return max(rates)


def matmul_rate(
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    *,
    size: int | None = None,
    min_seconds: float | None = None,
    windows: int = 5,
) -> float:
    """GFLOP/s of a large square matmul (2·n³ FLOPs): n = 8192 on a GPU, 2048 on a CPU (1024
    for reduced precision there, which CPUs without native support emulate slowly)."""
    device = torch.device(device)
    if size is None:
        size = GPU_MATMUL_SIZE
        if device.type != "cuda":
            size = CPU_MATMUL_SIZE if dtype == torch.float32 else CPU_MATMUL_SIZE // 2
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, generator=generator).to(dtype)
    b = torch.randn(size, size, device=device, generator=generator).to(dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    return _timed_rate(lambda: torch.mm(a, b, out=out), 2.0 * size**3, device,
                       min_seconds=min_seconds, windows=windows)  # fmt: skip


def conv3x3_rate(
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    *,
    channels_last: bool = True,
    shape: tuple[int, int, int] | None = None,
    min_seconds: float | None = None,
    windows: int = 5,
) -> float:
    """GFLOP/s of a large 3×3 stride-1 convolution, forward only (2·N·C²·9·H·W FLOPs).

    ``shape`` is (batch, channels, side): (256, 256, 56) on a GPU, (64, 128, 32) on a CPU.
    """
    device = torch.device(device)
    if shape is None:
        shape = GPU_CONV_SHAPE if device.type == "cuda" else CPU_CONV_SHAPE
    batch, channels, side = shape
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, channels, side, side, device=device, generator=generator).to(dtype)
    w = torch.randn(channels, channels, 3, 3, device=device, generator=generator).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        w = w.contiguous(memory_format=torch.channels_last)
    flops = 2.0 * batch * channels * channels * 9 * side * side
    with torch.no_grad():
        return _timed_rate(lambda: F.conv2d(x, w, padding=1), flops, device,
                           min_seconds=min_seconds, windows=windows)  # fmt: skip


def step_flops_per_image(model: torch.nn.Module, view1: torch.Tensor, view2: torch.Tensor) -> float:
    """Matmul/conv FLOPs per image of one BYOL step on ``model`` (a :class:`byol.BYOL`):
    online and target forwards of both views plus the backward. Runs on a deep copy, so the
    model's weights, BatchNorm statistics and gradients are untouched."""
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(model)
    model.train()
    with FlopCounterMode(display=False) as counter:
        loss = model(view1, view2)
        loss.backward()
    return counter.get_total_flops() / view1.shape[0]


# ---------------------------------------------------------------------------- ablation baselines


def _loop_update_target(model: torch.nn.Module) -> Callable[[float], None]:
    """The target EMA as a per-parameter Python loop (the usual implementation)."""
    online = [*model.online_encoder.parameters(), *model.online_projector.parameters()]
    target = list(model.target_parameters())

    @torch.no_grad()
    def update_target(tau: float) -> None:
        for target_parameter, online_parameter in zip(target, online):
            target_parameter.mul_(tau).add_(online_parameter, alpha=1.0 - tau)

    return update_target


def _loop_lars(params: Any, **options: Any) -> torch.optim.Optimizer:
    from .optim import LARS

    class LoopLARS(LARS):
        """:class:`byol.optim.LARS`'s update, one parameter at a time (no foreach)."""

        @torch.no_grad()
        def step(self, closure=None):  # type: ignore[override]
            for group in self.param_groups:
                for parameter in group["params"]:
                    if parameter.grad is None:
                        continue
                    grad = parameter.grad
                    if group["weight_decay"] != 0.0:
                        grad = grad.add(parameter, alpha=group["weight_decay"])
                    if group["lars"]:
                        weight_norm = torch.linalg.vector_norm(parameter)
                        grad_norm = torch.linalg.vector_norm(grad)
                        ratio = torch.where(
                            (weight_norm > 0) & (grad_norm > 0),
                            group["trust_coefficient"] * weight_norm / grad_norm,
                            torch.ones_like(weight_norm),
                        )
                        grad = grad * ratio
                    state = self.state[parameter]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(parameter)
                    buffer = state["momentum_buffer"]
                    buffer.mul_(group["momentum"]).add_(grad)
                    parameter.add_(buffer, alpha=-group["lr"])

    return LoopLARS(params, **options)


# ---------------------------------------------------------------------------- the runner


class TrainStepRunner:
    """A ready-to-step :class:`~byol.train.Trainer` on in-memory uint8 images (``images``,
    (N, C, H, W), or ``config.dataset_batches`` batches of random ones).

    ``run_window(steps)`` returns the seconds that many real training steps take (one
    synchronisation, at the end); ``stage_times(steps)`` the per-stage seconds of each step
    from the instrumented pass; ``profile(steps)`` a torch.profiler table.
    """

    def __init__(self, config: BenchConfig, *, images: torch.Tensor | None = None) -> None:
        from .config import resolve
        from .datasets.base import ImageData
        from .optim import param_groups
        from .train import Trainer

        config.check()
        self.config = config
        train_config = resolve({
            "data": "bench-synthetic", "arch": config.arch, "image_size": config.image_size,
            "small_images": config.small_images, "batch_size": config.batch_size,
            "hidden_dim": config.hidden_dim, "projection_dim": config.projection_dim,
            "augment": config.augment, "precision": config.precision,
            "compile": config.compile, "channels_last": config.channels_last,
            "parallel_views": config.parallel_views, "device": config.device,
            "seed": config.seed, "epochs": 1000.0,
            "warmup_epochs": 1.0, "num_workers": 0, "knn_every": 0, "tensorboard": False,
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
        self.trainer.channels = self.data.channels
        torch_state = torch.get_rng_state()
        try:
            self.trainer._build(self.data)
        finally:  # _build seeds the global generator; leave the caller's as it was
            torch.set_rng_state(torch_state)
        self.trainer._schedule(len(self.data))
        if config.ema == "loop":
            self.trainer.model.update_target = _loop_update_target(self.trainer.model)
        if config.lars == "loop":
            train = self.trainer.config
            self.trainer.optimizer = _loop_lars(
                param_groups(self.trainer.model, train.weight_decay), lr=0.0,
                momentum=train.momentum, trust_coefficient=train.trust_coefficient,
            )  # fmt: skip
        self.trainer.model.train()
        self.step = 0
        self._batches = self._batch_stream()
        self.last_loss: float | None = None

    @property
    def model(self) -> torch.nn.Module:
        return self.trainer.model

    def _batch_stream(self) -> Iterator[torch.Tensor]:
        trainer = self.trainer
        indices = trainer._index_batches(0, 2**62, len(self.data))
        return self.data.batches(indices, num_workers=0, pin_memory=self.device.type == "cuda")

    def _train_step(self, mark: Callable[[str], None] | None = None) -> torch.Tensor:
        images = next(self._batches)
        if mark is not None:
            mark("data")
        # Schedules are evaluated at a step inside the run, whatever the benchmark's length.
        step = self.step % self.trainer.total_steps
        loss, _ = self.trainer._step(images, step, mark)
        self.step += 1
        return loss

    def run_window(self, steps: int) -> float:
        """Seconds taken by ``steps`` training steps, synchronised once at the end."""
        _synchronize(self.device)
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
            _synchronize(self.device)
            last = [time.perf_counter()]

            def mark(name: str, record: dict[str, float] = record, last: list = last) -> None:
                _synchronize(self.device)
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
            _synchronize(self.device)
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
    from .train import keep_freed_memory

    say = log or (lambda message: None)
    config.check()
    runner = TrainStepRunner(config)
    device = runner.device
    result: dict[str, Any] = {
        "config": asdict(config),
        "machine": device_info(device),
        "precision_dtype": str(_DTYPES[config.precision]).removeprefix("torch."),
    }

    say(f"warm-up: {config.warmup} steps" + (" (includes torch.compile)" if config.compile else ""))
    start = time.perf_counter()
    if config.warmup:
        runner.run_window(config.warmup)
    result["warmup_s"] = time.perf_counter() - start

    seconds = []
    usage_before = _process_usage()
    for window in range(config.windows):
        seconds.append(runner.run_window(config.steps))
        say(f"window {window + 1}/{config.windows}: "
            f"{config.steps * config.batch_size / seconds[-1]:.1f} images/s")  # fmt: skip
    usage_after = _process_usage()
    rates = [config.steps * config.batch_size / s for s in seconds]
    result["images_per_s"] = statistics.median(rates)
    result["images_per_s_windows"] = rates
    result["step_ms"] = 1000 * statistics.median(seconds) / config.steps
    result["loss"] = runner.last_loss
    # Host-side costs of the timed windows, per step: CPU time in user and kernel mode and
    # page faults (fresh memory being zero-filled). None where the OS does not report them.
    timed_steps = config.windows * config.steps
    for key in ("user_ms", "system_ms", "page_faults"):
        result[f"{key}_per_step"] = (
            (usage_after[key] - usage_before[key]) / timed_steps
            if usage_before and usage_after
            else None
        )
    # Whether malloc keeps freed blocks (see byol.train.keep_freed_memory; CPU runs only).
    result["keep_freed_memory"] = keep_freed_memory() if device.type == "cpu" else None

    if config.stages:
        say(f"instrumented pass: {config.steps} steps")
        records = runner.stage_times(config.steps)
        result["stages_ms"] = {
            stage: 1000 * statistics.median(r[stage] for r in records) for stage in STAGES
        }
        result["stages_sum_ms"] = 1000 * statistics.median(sum(r.values()) for r in records)
    else:
        result["stages_ms"] = None
        result["stages_sum_ms"] = None

    result["flops_per_image"] = None
    result["achieved_gflops"] = None
    if config.flops:
        say("counting FLOPs")
        view1, view2 = runner.sample_views(min(config.batch_size, 16))
        flops = step_flops_per_image(runner.model, view1, view2)
        result["flops_per_image"] = flops
        result["achieved_gflops"] = flops * result["images_per_s"] / 1e9

    result["matmul_gflops"] = None
    result["conv3x3_gflops"] = None
    result["ceiling_gflops"] = None
    result["fraction_of_ceiling"] = None
    if config.ceiling:
        say("measuring the device's matmul and convolution rates")
        dtype = _DTYPES[config.precision]
        matmul = {"fp32": matmul_rate(device, torch.float32)}
        if config.precision != "fp32":
            matmul[config.precision] = matmul_rate(device, dtype)
        conv = {
            "channels_last": conv3x3_rate(device, dtype, channels_last=True),
            "contiguous": conv3x3_rate(device, dtype, channels_last=False),
        }
        result["matmul_gflops"] = matmul
        result["conv3x3_gflops"] = conv
        ceiling = max(matmul[config.precision], *conv.values())
        result["ceiling_gflops"] = ceiling
        if result["achieved_gflops"] is not None:
            result["fraction_of_ceiling"] = result["achieved_gflops"] / ceiling

    if config.profile_steps:
        say(f"profiling {config.profile_steps} steps")
        result["profile"] = runner.profile(config.profile_steps)
    return result


def format_table(result: dict[str, Any]) -> str:
    """The results of :func:`run_bench` as a plain-text table."""
    config = result["config"]
    machine = result["machine"]
    where = machine.get("gpu") or f"{machine['cpu']}, {machine['threads']} threads"
    rows: list[tuple[str, str]] = [
        ("setup", f"{config['arch']} {config['image_size']} px, batch {config['batch_size']}, "
                  f"{config['precision']}, compile {'on' if config['compile'] else 'off'}, "
                  f"channels_last {'on' if config['channels_last'] else 'off'}"),
        ("device", f"{machine['device']} ({where}), torch {machine['torch']}"),
        ("throughput", f"{result['images_per_s']:.1f} images/s (median of "
                       f"{len(result['images_per_s_windows'])} windows: "
                       + ", ".join(f"{r:.1f}" for r in result["images_per_s_windows"]) + ")"),
        ("step", f"{result['step_ms']:.1f} ms (warm-up {result['warmup_s']:.1f} s)"),
    ]  # fmt: skip
    if config["ema"] != "foreach" or config["lars"] != "foreach" or config["sync_every_step"]:
        rows.append(("variant", f"ema {config['ema']}, lars {config['lars']}, sync every step "
                                f"{'on' if config['sync_every_step'] else 'off'}"))  # fmt: skip
    if result.get("system_ms_per_step") is not None:
        rows.append((
            "host per step",
            f"{result['user_ms_per_step']:.0f} ms user, {result['system_ms_per_step']:.0f} ms "
            f"system CPU time, {result['page_faults_per_step']:.0f} page faults "
            f"(keep freed memory: {result['keep_freed_memory']})",
        ))  # fmt: skip
    if result.get("stages_ms"):
        total = result["stages_sum_ms"] or 1.0
        for stage, ms in result["stages_ms"].items():
            rows.append((f"  {stage}", f"{ms:8.2f} ms  {100 * ms / total:5.1f}%"))
        rows.append(("  sum of stages", f"{result['stages_sum_ms']:8.2f} ms"))
    if result.get("flops_per_image") is not None:
        rows.append(("work", f"{result['flops_per_image'] / 1e6:.1f} MFLOP per image per step"))
        rows.append(("achieved", f"{result['achieved_gflops']:.1f} GFLOP/s"))
    if result.get("matmul_gflops"):
        rows.append(
            (
                "matmul",
                ", ".join(f"{k} {v:.1f}" for k, v in result["matmul_gflops"].items()) + " GFLOP/s",
            )
        )
        rows.append(
            (
                "conv 3x3",
                ", ".join(f"{k} {v:.1f}" for k, v in result["conv3x3_gflops"].items()) + " GFLOP/s",
            )
        )
        rows.append(("ceiling", f"{result['ceiling_gflops']:.1f} GFLOP/s"))
    if result.get("fraction_of_ceiling") is not None:
        rows.append(("of ceiling", f"{100 * result['fraction_of_ceiling']:.1f}%"))
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    if result.get("profile"):
        lines += ["", result["profile"]]
    return "\n".join(lines)
