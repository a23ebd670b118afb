"""``byol bench``: the real training step's throughput, its stages and the device's ceiling.

* :mod:`byol.bench.runner` - :class:`BenchConfig`, :class:`TrainStepRunner`, :func:`run_bench`;
* :mod:`byol.bench.ceiling` - matmul / convolution rates, FLOP count, machine description;
* :mod:`byol.bench.ablations` - per-parameter loop versions of the fused EMA and LARS;
* :mod:`byol.bench.table` - the plain-text table of a result.
"""

from .ceiling import conv3x3_rate, device_info, matmul_rate, step_flops_per_image
from .runner import STAGES, TRAIN_KEYS, BenchConfig, TrainStepRunner, run_bench
from .table import format_table

__all__ = [
    "STAGES",
    "TRAIN_KEYS",
    "BenchConfig",
    "TrainStepRunner",
    "conv3x3_rate",
    "device_info",
    "format_table",
    "matmul_rate",
    "run_bench",
    "step_flops_per_image",
]
