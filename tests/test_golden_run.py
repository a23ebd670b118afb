"""The redesign guard: a fixed-seed 20-step ``byol train`` run gives bitwise the weights it gave
before (``tests/data/golden_run.json``, recorded from the code as it was before the modules
moved).

The run is the README's main job (``--preset fashion-mnist``, with the base learning rate it had
when recorded) cut to 20 steps on the sequential step, in fp32 (what ``--precision auto`` chose
on the recording machine, which has no native bf16; on a machine with bf16, auto would train in
bf16). Bitwise equality only holds for the same kernels: the same torch version, CPU kind and
intra-op thread count as a recording. The file holds the first recording's per-tensor sums and
digest, and the digests of the same run on other CPU kinds (``other_machines``, each added only
after its sums passed the check below). On a machine with no recording the test compares
per-tensor sums instead, each to a tolerance relative to the tensor's L1 norm (``scales``): a
sum of values of both signs (a BatchNorm bias) can change by 10% of itself from
reassociation alone, while its error is bounded by the sizes of the values summed.

Record again (only when a change is *meant* to change the numbers) with
``BYOL_RECORD_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden_run.py``, which drops the
other machines' digests; add this machine's digest to the file with ``BYOL_RECORD_GOLDEN=add``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from byol import load_checkpoint

GOLDEN = Path(__file__).parent / "data" / "golden_run.json"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
# --base-lr 4.0, --predictor-lr-scale 1.0 and --target-decay 0.99: the preset's values when
# the run was recorded (rounds 5, 11 and 14 of docs/presets.md changed them); pinned so that
# the recording still guards the code, not the recipe.
COMMAND = ["train", "--preset", "fashion-mnist", "--max-steps", "20", "--seed", "0",
           "--no-parallel-views", "--num-workers", "0", "--no-tensorboard",
           "--checkpoint-every", "20", "--precision", "fp32", "--base-lr", "4.0",
           "--predictor-lr-scale", "1.0", "--target-decay", "0.99"]  # fmt: skip


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of every tensor, in sorted key order."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def tensor_sums(state: dict[str, torch.Tensor]) -> dict[str, float]:
    return {key: float(value.double().sum()) for key, value in sorted(state.items())
            if value.is_floating_point()}  # fmt: skip


def tensor_scales(state: dict[str, torch.Tensor]) -> dict[str, float]:
    return {key: float(value.double().abs().sum()) for key, value in sorted(state.items())
            if value.is_floating_point()}  # fmt: skip


# Cross-kernel drift of a tensor's sum after the 20 steps, as a fraction of its L1 norm.
# Measured on an AMD EPYC with AVX-512 (family 26, one thread) against the AVX2 recording,
# 2026-12-02: at most 3.3e-3 (online_encoder.7.bias). What the tolerance still catches there
# (largest drift): --base-lr 4.4 (3.0e-2) and --target-decay 0.996 (8.9e-2); it misses a 10x
# weight decay (1.4e-3), which 20 steps barely show. The bitwise check on a recorded machine is
# the strict one.
DRIFT = 2e-2


def cpu_kind() -> str:
    """Vendor, family and model of the CPU (``/proc/cpuinfo``), which pick the kernels that
    ``cpu_capability`` alone does not tell apart (an AMD and an Intel CPU with AVX-512)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("vendor_id", "cpu family", "model") and key not in fields:
                    fields[key] = value.strip()
                if not line.strip():
                    break
    except OSError:
        return "unknown"
    return " ".join(fields.get(key, "?") for key in ("vendor_id", "cpu family", "model"))


def machine() -> dict[str, object]:
    return {"torch": torch.__version__.split("+")[0],
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu": cpu_kind(),
            "threads": int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads()))}  # fmt: skip


def recorded_on(recorded: dict[str, object], here: dict[str, object]) -> bool:
    """Whether ``here`` is the machine of a recording (one recorded before ``cpu`` was noted
    matches on the keys it has)."""
    return all(here.get(key) == value for key, value in recorded.items())


@pytest.mark.skipif(not FASHION_MNIST.exists(), reason="Fashion-MNIST is not installed")
def test_fixed_seed_run_gives_the_recorded_weights(tmp_path):
    out = tmp_path / "golden"
    result = subprocess.run([sys.executable, "-m", "byol", *COMMAND, "--out", str(out)],
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr
    payload = load_checkpoint(out / "checkpoints" / "last.pt")
    assert payload["step"] == 20
    state = payload["model"]
    here = {"machine": machine(), "digest": weights_digest(state)}
    record = os.environ.get("BYOL_RECORD_GOLDEN")
    if record == "1":
        GOLDEN.write_text(json.dumps({"command": "byol " + " ".join(COMMAND), **here,
                                      "sums": tensor_sums(state),
                                      "scales": tensor_scales(state)}, indent=1))  # fmt: skip
    golden = json.loads(GOLDEN.read_text())
    recordings = [golden, *golden.get("other_machines", [])]
    matching = [rec for rec in recordings if recorded_on(rec["machine"], here["machine"])]
    if matching:
        assert here["digest"] == matching[0]["digest"], (
            f"the weights differ from the run recorded on {matching[0]['machine']}"
        )
        return
    # Other kernels: the same computation up to floating-point reassociation.
    sums = tensor_sums(state)
    for key, value in golden["sums"].items():
        allowed = DRIFT * golden["scales"][key] + 1e-6
        assert abs(sums[key] - value) <= allowed, (
            f"{key}: sum {sums[key]:.6g}, recorded {value:.6g}, allowed drift {allowed:.3g}"
        )
    if record == "add":
        golden.setdefault("other_machines", []).append(here)
        GOLDEN.write_text(json.dumps(golden, indent=1))
