"""Runtime choices: which device, which precision, and how the CPU allocator behaves.

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
    "keep_freed_memory",
    "precision_warning",
    "resolve_device",
    "resolve_precision",
    "set_malloc_thresholds",
]

#: The autocast dtype of each reduced precision (fp32 runs without autocast).
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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


def resolve_precision(name: str, device: torch.device) -> str:
    """fp32 on CPU (no native bf16/fp16 there), bf16 on GPUs that support it."""
    if name != "auto":
        return name
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def precision_warning(precision: str, device: torch.device) -> str | None:
    """A warning for a precision that runs in emulation on ``device``, else None."""
    if precision in AUTOCAST_DTYPES and device.type == "cpu":
        return (
            f"precision {precision} on CPU runs in emulation here (often ~100x slower than "
            "fp32); use --precision fp32 on CPU"
        )
    return None


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
