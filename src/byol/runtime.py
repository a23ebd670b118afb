"""Runtime choices: which device, which precision, and how the CPU allocator behaves.

Precision is chosen from what the hardware is, at run time: ``--precision auto`` is bf16
autocast where bf16 is native (a CPU with AMX-BF16 or AVX512-BF16, a CUDA GPU with bf16) and
fp32 elsewhere; the loss, its normalisation, the target EMA and LARS stay in fp32 whatever the
precision.

One place decides each of them for every command (training, evaluation, hand-over, the
distributed launcher and ``byol bench``), so a ``--device`` means the same thing everywhere.
"""

from __future__ import annotations

import ctypes
import os
import sys

import torch

from .errors import ConfigError

__all__ = [
    "AUTOCAST_DTYPES",
    "NATIVE_CPU_FLAGS",
    "autocast",
    "cpu_flags",
    "describe_precision",
    "inference_batch_size",
    "keep_freed_memory",
    "native_precision",
    "precision_warning",
    "resolve_device",
    "resolve_precision",
    "set_malloc_thresholds",
]

#: The autocast dtype of each reduced precision (fp32 runs without autocast).
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def inference_batch_size(device: torch.device | str) -> int:
    """Images per forward pass where an encoder only infers (features, held-out scores): 512 on
    a GPU, which wants large batches; 128 on a CPU, where a batch whose activations stay in the
    caches runs faster (the convnet-512 at 28 px, AMD EPYC: 1,172 images/s at 128 against 771 at
    512 on one thread, 1,948 against 1,122 on two; benchmarks/RESULTS.md, "Inference
    batches")."""
    return 128 if torch.device(device).type == "cpu" else 512


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """The autocast context of a resolved ``precision`` (``fp32``: autocast disabled)."""
    dtype = AUTOCAST_DTYPES.get(precision)
    return torch.autocast(device.type, dtype or torch.float32, enabled=dtype is not None)


def resolve_device(
    name: torch.device | str | None = "auto", *, local_rank: int | None = None
) -> torch.device:
    """``name`` as a device; None or ``auto``: CUDA when available, else the CPU.

    With ``local_rank`` (one process of a distributed job), a CUDA device is
    ``cuda:LOCAL_RANK`` and only ``cpu`` and ``cuda`` are accepted. Raises
    :class:`ConfigError` naming ``--device`` for an unknown name, CUDA on a machine without it,
    or a local rank without a GPU of its own.
    """
    if name is None or name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {name!r} is not a device (try cpu, cuda or cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {str(name)!r} requested but CUDA is not available here")
    if local_rank is None or device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ConfigError(
            f"--device {str(name)!r} is not supported for distributed training; use cuda or cpu"
        )
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ConfigError(
            f"LOCAL_RANK {local_rank} has no GPU: only {count} visible on this machine; start "
            f"at most {count} processes per node (torchrun --nproc_per_node)"
        )
    return torch.device("cuda", local_rank)


# The CPU flags (as /proc/cpuinfo names them) that give each reduced precision native
# matrix / vector instructions; without them oneDNN emulates the type in fp32 code paths.
# Measured on the fashion-mnist preset's step (docs/presets.md, rounds 7-8): bf16 runs 1.52x
# fp32 with AMX (Intel Xeon) and 1.22-1.31x with AVX512-BF16 alone (AMD EPYC, family 26), so
# either flag makes bf16 the faster choice.
NATIVE_CPU_FLAGS = {"bf16": ("amx_bf16", "avx512_bf16"), "fp16": ("amx_fp16", "avx512_fp16")}


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags: /proc/cpuinfo, and torch's own AMX / AVX512-BF16 checks (which
    also work where /proc is not readable)."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    flags.update(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    checks = {"amx_bf16": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported",
              "amx_fp16": "_is_amx_fp16_supported"}  # fmt: skip
    for flag, check in checks.items():
        function = getattr(torch.cpu, check, None)
        if callable(function) and function():
            flags.add(flag)
    return frozenset(flags)


def native_precision(
    precision: str, device: torch.device, *, flags: frozenset[str] | None = None
) -> bool:
    """Whether ``device`` computes ``precision`` natively (fp32 always does). On a CPU: the
    AMX or AVX-512 instructions of that type (``flags`` default: :func:`cpu_flags`); on CUDA:
    bf16 where the GPU supports it, fp16 always."""
    if precision not in AUTOCAST_DTYPES:
        return True
    if device.type == "cuda":
        return precision == "fp16" or torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    present = cpu_flags() if flags is None else flags
    return any(flag in present for flag in NATIVE_CPU_FLAGS[precision])


def resolve_precision(
    name: str, device: torch.device, *, flags: frozenset[str] | None = None
) -> str:
    """``auto``: bf16 where the hardware computes it natively (CPUs with AMX-BF16 or
    AVX512-BF16, CUDA GPUs with bf16), fp32 elsewhere. Any other name is kept as it is."""
    if name != "auto":
        return name
    return "bf16" if native_precision("bf16", device, flags=flags) else "fp32"


def precision_warning(
    precision: str, device: torch.device, *, flags: frozenset[str] | None = None
) -> str | None:
    """A warning for a precision that runs in emulation on ``device``, else None."""
    if native_precision(precision, device, flags=flags):
        return None
    needed = " or ".join(f.upper() for f in NATIVE_CPU_FLAGS.get(precision, ()))
    return (
        f"precision {precision} runs in emulation on this {device.type} (no {needed}): often "
        "many times slower than fp32; use --precision fp32 or auto here"
    )


def describe_precision(requested: str, precision: str, device: torch.device) -> str:
    """One line for the start of a run: the precision and why, e.g. ``bf16 (auto: native bf16
    on this cpu)``."""
    if requested != "auto":
        return f"{precision} (asked for)"
    native = native_precision("bf16", device)
    if (precision == "bf16") != native:
        return f"{precision} (auto, kept from the run's start)"
    if precision == "fp32":
        return f"fp32 (auto: no native bf16 on this {device.type})"
    return f"{precision} (auto: native {precision} on this {device.type})"


_FREED_MEMORY_KEPT: bool | None = None


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks for reuse instead of handing them back to the OS.

    A CPU training step allocates and frees the same large activation buffers every step.
    glibc serves blocks above its mmap threshold (at most 32 MiB, adaptive) with fresh ``mmap``
    calls, whose pages the kernel zero-fills on first touch: ~100k page faults per convnet
    step at batch 256, about 15% of the step spent in the kernel (``byol bench`` reports the
    system time and page faults). Raising the mmap and trim thresholds to 1 GiB lets freed
    blocks be reused. Process-wide and applied once (the first CPU trainer does it); the price
    is that the process keeps its peak heap. Set ``BYOL_KEEP_FREED_MEMORY=0`` to leave malloc
    alone. Returns whether the setting is in effect (False off glibc).
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
