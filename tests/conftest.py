"""Test-wide settings.

The tests use tiny tensors, for which one intra-op thread is fastest, and OpenMP's spinning
worker threads slow down by orders of magnitude when the machine is busy. Set before torch is
imported so that subprocesses (CLI and torchrun tests) inherit it.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
