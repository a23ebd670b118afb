"""Data-parallel training (issue 8): torchrun + DDP + synchronised BatchNorm, on CPU with gloo.

The distributed cases run this file as a torchrun worker script
(``python -m torch.distributed.run ... tests/test_ddp.py CASE OUT``); each rank writes what it
saw under OUT and the test compares it with a single process computing the same thing.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from byol import load_checkpoint
from byol.checkpoint import CheckpointManager
from byol.config import resolve
from byol.ddp import launch_local, without_nproc
from byol.errors import ConfigError
from byol.syncbn import CPUSyncBatchNorm, convert_sync_batchnorm
from byol.train import Trainer

THIS_FILE = Path(__file__).resolve()
TIMEOUT = 240  # seconds for one torchrun job (about 10 s on an idle 2-core machine)


def _child_env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)  # fmt: skip
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(
    launch: list[str], target: list[str], *, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", *launch, *target]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT, env=env or _child_env()
    )


# The arguments of a multi-node launch (see docs/distributed.md), on one machine.
def _multinode_launch() -> list[str]:
    return ["--nnodes=1", "--node-rank=0", "--nproc-per-node=2", "--rdzv-backend=c10d",
            f"--rdzv-endpoint=localhost:{_free_port()}", "--rdzv-id=byol-test"]  # fmt: skip


# --------------------------------------------------------------------------- helpers shared
# by the workers (in the torchrun processes) and the tests (in this process)
def fixed_views(images: torch.Tensor, generator: torch.Generator | None = None):
    """A deterministic stand-in for the random augmentations: a function of each image only.

    One process on the whole batch and two processes on its halves then see exactly the same
    views, so their results must agree. The two views differ (flip, contrast, shift) so the
    BYOL loss has something to learn.
    """
    x = images.float() / 255.0
    view1 = (x - 0.35) / 0.3
    view2 = (x.flip(-1) * 0.7 + 0.2 - 0.35) / 0.3
    return view1, view2


class TracedTrainer(Trainer):
    """A Trainer with fixed views that records the model's full state after every step."""

    def build(self, data) -> None:
        super().build(data)
        self.augment = fixed_views
        self.trace: list[dict[str, torch.Tensor]] = []

    def step(self, images, step, mark=None):
        result = super().step(images, step, mark)
        self.trace.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return result


def tiny_images(path: Path) -> Path:
    # 64 random 1x8x8 images: every half batch has different statistics.
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(64, 1, 8, 8), dtype=np.uint8)
    images[::2] //= 3  # two populations, interleaved by the shuffled order into both shards
    np.save(path, images)
    return path


def trainer_config(data: Path, out: Path):
    return resolve({
        "data": str(data), "arch": "convnet", "hidden_dim": 32, "projection_dim": 16,
        "batch_size": 16, "epochs": 2, "warmup_epochs": 0, "base_lr": 4.0,
        "trust_coefficient": 0.02, "target_decay": 0.9, "max_steps": 4,
        "checkpoint_every": 2, "log_every": 1, "knn_every": 0, "tensorboard": False,
        "num_workers": 0, "device": "cpu", "out": str(out),
        # fp32 on every CPU: the comparison is to 1e-5, which bf16 (auto on AMX) cannot hold.
        "precision": "fp32",
    })  # fmt: skip


def _gather_sum(tensor: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    total = tensor.detach().clone()
    dist.all_reduce(total)
    return total


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


# --------------------------------------------------------------------------- worker cases
def worker_collectives(out: Path) -> None:
    """Synchronised BatchNorm against plain BatchNorm on the concatenation, and the context."""
    from byol.ddp import Distributed

    context = Distributed.from_environment("cpu")
    rank = context.rank
    report: dict[str, object] = {"rank": rank, "backend": context.backend}

    # Shards of different sizes and statistics: rank 1's values are shifted and scaled.
    for name, shape, sizes in (("1d", (6,), (3, 5)), ("2d", (4, 3, 3), (2, 3))):
        generator = torch.Generator().manual_seed(11)
        full = torch.randn(sum(sizes), *shape, generator=generator)
        full[sizes[0] :] = full[sizes[0] :] * 2.5 + 3.0
        upstream = torch.randn(full.shape, generator=generator)
        plain = (nn.BatchNorm1d if len(shape) == 1 else nn.BatchNorm2d)(shape[0])
        with torch.no_grad():
            plain.weight.copy_(torch.rand(shape[0], generator=generator) + 0.5)
            plain.bias.copy_(torch.randn(shape[0], generator=generator))
        synced = convert_sync_batchnorm(copy.deepcopy(plain))
        per_rank = copy.deepcopy(plain)  # what unsynchronised data parallelism would do
        start = sum(sizes[:rank])
        rows = slice(start, start + sizes[rank])
        diffs: dict[str, float] = {}
        for iteration in range(2):  # twice: running statistics accumulate
            reference_input = full.clone().requires_grad_(True)
            reference = plain(reference_input)
            (reference * upstream).sum().backward()

            local_input = full[rows].clone().requires_grad_(True)
            output = synced(local_input)
            (output * upstream[rows]).sum().backward()
            unsynced = per_rank(full[rows])
            diffs[f"output{iteration}"] = _max_diff(output, reference[rows])
            diffs[f"input_grad{iteration}"] = _max_diff(
                local_input.grad, reference_input.grad[rows]
            )
            diffs[f"per_rank_output{iteration}"] = _max_diff(unsynced, reference[rows])
        # Weight/bias gradients are per-rank shares; DDP's reduction adds them up.
        diffs["weight_grad"] = _max_diff(_gather_sum(synced.weight.grad), plain.weight.grad)
        diffs["bias_grad"] = _max_diff(_gather_sum(synced.bias.grad), plain.bias.grad)
        diffs["running_mean"] = _max_diff(synced.running_mean, plain.running_mean)
        diffs["running_var"] = _max_diff(synced.running_var, plain.running_var)
        diffs["per_rank_running_mean"] = _max_diff(per_rank.running_mean, plain.running_mean)
        diffs["batches_tracked"] = float(synced.num_batches_tracked)
        diffs["weight_grad_norm"] = float(plain.weight.grad.norm())
        synced.eval()
        plain.eval()
        diffs["eval_output"] = _max_diff(synced(full[rows]), plain(full)[rows])
        report[name] = diffs
        report[f"{name}_class"] = type(synced).__name__

    # The context's own collectives.
    report["shard8"] = context.shard(torch.arange(8)).tolist()
    try:
        context.shard(torch.arange(7))
        report["shard7"] = "no error"
    except ConfigError as error:
        report["shard7"] = str(error)
    report["mean"] = float(context.mean(torch.tensor(float(rank) * 4.0)))
    report["max"] = float(context.max(torch.tensor(float(rank) - 7.0)))
    report["any"] = [context.any(rank == 1), context.any(False)]
    states = context.gather_generator_states(torch.Generator().manual_seed(rank).get_state())
    report["states_equal_seeds"] = [
        torch.equal(state, torch.Generator().manual_seed(r).get_state())
        for r, state in enumerate(states)
    ]
    context.barrier()
    (out / f"collectives-{rank}.json").write_text(json.dumps(report))


def worker_trainer(out: Path) -> None:
    """A real Trainer (fixed views) under DDP, recording the state after every step."""
    if os.environ.get("BYOL_TEST_PER_RANK_BN"):  # negative control: no synchronisation
        import byol.ddp

        byol.ddp.convert_sync_batchnorm = lambda module: module
    saves: list[int] = []
    original_save = CheckpointManager.save

    def counting_save(self, payload, step):
        saves.append(step)
        return original_save(self, payload, step)

    CheckpointManager.save = counting_save
    trainer = TracedTrainer(trainer_config(out / "images.npy", out / "run"), show_progress=False)
    result = trainer.fit()
    rank = trainer.dist.rank
    norm_types = nn.BatchNorm1d | nn.BatchNorm2d | nn.SyncBatchNorm | CPUSyncBatchNorm
    batchnorms = [m for m in trainer.model.modules() if isinstance(m, norm_types)]
    torch.save(trainer.trace, out / f"trace-{rank}.pt")
    (out / f"trainer-{rank}.json").write_text(json.dumps({
        "saves": saves, "step": result.step, "world_size": trainer.dist.world_size,
        "forward": type(trainer.forward).__name__,
        "batchnorms": len(batchnorms),
        "synchronised": sum(isinstance(m, CPUSyncBatchNorm) for m in batchnorms),
    }))  # fmt: skip


def worker_hang(out: Path) -> None:
    """Rank 1 stops answering; rank 0 must give up after BYOL_DIST_TIMEOUT, not hang."""
    from byol.ddp import Distributed

    context = Distributed.from_environment("cpu")
    if context.rank == 1:
        time.sleep(120)
    context.barrier()


def worker_all(out: Path) -> None:
    # One torchrun job for all checks: starting the processes costs more than the checks.
    worker_collectives(out)
    worker_trainer(out)
    # What `torchrun -m byol train` runs: 4 steps straight, and 2 steps of a run that the
    # test resumes with `byol train --nproc 2`.
    from byol.cli import main

    assert main(_cli_args(out / "images.npy", out / "straight", 4)) == 0
    assert main(_cli_args(out / "images.npy", out / "resumed", 2)) == 0


WORKERS = {"all": worker_all, "collectives": worker_collectives, "trainer": worker_trainer,
           "hang": worker_hang}  # fmt: skip


@pytest.fixture(scope="module")
def ddp_job(tmp_path_factory) -> Path:
    """The output folder of the one 2-process job the tests below share (see worker_all).

    It is launched with the multi-node arguments (c10d rendezvous on localhost).
    """
    out = tmp_path_factory.mktemp("ddp_job")
    tiny_images(out / "images.npy")
    result = _torchrun(_multinode_launch(), [str(THIS_FILE), "all", str(out)])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return out


# --------------------------------------------------------------------------- tests
def test_synchronised_batchnorm_equals_batchnorm_on_concatenated_shards(ddp_job):
    reports = [json.loads((ddp_job / f"collectives-{r}.json").read_text()) for r in (0, 1)]
    for report in reports:
        assert report["backend"] == "gloo"
        for name in ("1d", "2d"):
            diffs = report[name]
            assert report[f"{name}_class"] == "CPUSyncBatchNorm"
            for key in ("output0", "output1", "input_grad0", "input_grad1", "weight_grad",
                        "bias_grad", "running_mean", "running_var", "eval_output"):  # fmt: skip
                assert diffs[key] < 1e-5, (report["rank"], name, key, diffs[key])
            assert diffs["batches_tracked"] == 2
            assert diffs["weight_grad_norm"] > 0.1  # the gradient comparison is not vacuous
            # Plain per-rank BatchNorm is far off: the shards' statistics really differ.
            assert diffs["per_rank_output0"] > 0.1
            assert diffs["per_rank_running_mean"] > 0.05
    first, second = reports
    assert first["shard8"] == [0, 1, 2, 3] and second["shard8"] == [4, 5, 6, 7]
    assert "--batch-size 7 is not divisible by the 2 processes" in first["shard7"]
    for report in reports:
        assert report["mean"] == 2.0 and report["max"] == -6.0
        assert report["any"] == [True, False]
        assert report["states_equal_seeds"] == [True, True]


def test_two_processes_equal_one_process_on_the_global_batch(ddp_job, tmp_path):
    traces = [torch.load(ddp_job / f"trace-{r}.pt") for r in (0, 1)]
    infos = [json.loads((ddp_job / f"trainer-{r}.json").read_text()) for r in (0, 1)]

    data = ddp_job / "images.npy"
    single = TracedTrainer(trainer_config(data, tmp_path / "single"), show_progress=False)
    assert single.fit().step == 4
    assert not single.dist.enabled

    assert len(traces[0]) == len(traces[1]) == len(single.trace) == 4
    worst = 0.0
    for step, (rank0, rank1, reference) in enumerate(zip(*traces, single.trace)):
        assert rank0.keys() == reference.keys()
        for key, value in reference.items():
            # Every rank holds the very same online and target weights and statistics...
            assert torch.equal(rank0[key], rank1[key]), (step, key)
            # ...which are those of one process on the whole global batch.
            diff = _max_diff(rank0[key], value)
            assert diff <= 1e-5, (step, key, diff)
            worst = max(worst, diff)
    print(f"largest difference from one process: {worst:.2e}")
    # The comparison is not vacuous: online and target weights moved, target != online.
    first, last = single.trace[0], single.trace[-1]
    for key in ("online_encoder.0.weight", "predictor.0.weight", "target_encoder.0.weight",
                "target_projector.3.weight", "online_encoder.1.running_var"):  # fmt: skip
        assert _max_diff(first[key], last[key]) > 1e-3, key
    assert _max_diff(last["online_encoder.0.weight"], last["target_encoder.0.weight"]) > 1e-3

    for rank, info in enumerate(infos):
        assert info["world_size"] == 2 and info["step"] == 4
        assert info["forward"] == "DistributedDataParallel"
        assert info["batchnorms"] == info["synchronised"] == 11  # encoders 4+4, heads 3
        # Only rank 0 writes checkpoints.
        assert info["saves"] == ([2, 4] if rank == 0 else [])
    records = (ddp_job / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in records] == [1, 2, 3, 4]
    checkpoint = load_checkpoint(ddp_job / "run" / "checkpoints" / "last.pt")
    for key, value in checkpoint["model"].items():
        assert torch.equal(value, traces[0][-1][key]), key
    states = checkpoint["rng"]["augment"]
    assert len(states) == 2 and not torch.equal(states[0], states[1])


def _cli_args(data: Path, out: Path, max_steps: int) -> list[str]:
    return [
        "train", "--data", str(data), "--arch", "convnet", "--hidden-dim", "32",
        "--projection-dim", "16", "--batch-size", "16", "--epochs", "1", "--max-steps",
        str(max_steps), "--checkpoint-every", "2", "--log-every", "1", "--knn-every", "0",
        "--no-tensorboard", "--num-workers", "0", "--device", "cpu", "--out", str(out),
    ]  # fmt: skip


def test_cli_resume_under_torchrun_is_exact_and_rank0_writes(ddp_job):
    # ddp_job ran `byol train` for 4 steps straight, and for 2 steps into `resumed`; resume
    # that with `byol train --nproc 2` (torchrun --standalone inside the byol process).
    straight, resumed = ddp_job / "straight", ddp_job / "resumed"
    assert load_checkpoint(resumed / "checkpoints" / "last.pt")["step"] == 2
    result = subprocess.run(
        [sys.executable, "-m", "byol", *_cli_args(ddp_job / "images.npy", resumed, 4),
         "--nproc", "2"],
        capture_output=True, text=True, timeout=TIMEOUT, env=_child_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]
    assert "byol: steps           4/" in result.stdout
    # Rank 0 alone reports the resumption.
    assert result.stderr.count("byol: resuming") == 1
    assert "at step 2" in result.stderr

    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 4
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key, state in a["optimizer"]["state"].items():
        assert torch.equal(
            state["momentum_buffer"], b["optimizer"]["state"][key]["momentum_buffer"]
        )
    # Both ranks' augmentation generators are saved (different seeds) and restored.
    assert len(a["rng"]["augment"]) == 2
    assert not torch.equal(a["rng"]["augment"][0], a["rng"]["augment"][1])
    for state_a, state_b in zip(a["rng"]["augment"], b["rng"]["augment"]):
        assert torch.equal(state_a, state_b)
    # One writer: every step logged once, the checkpoint folder holds no per-rank leftovers.
    for run in (straight, resumed):
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
        # The label-free monitor (the .npy has no labels) once, at the end of the run.
        assert [r["step"] for r in records if "rankme" in r] == [4]
        files = sorted(p.name for p in (run / "checkpoints").iterdir())
        assert files == ["last.pt", "step-00000002.pt", "step-00000004.pt"]


def test_launch_local_runs_torchrun_and_reports_a_failed_process(monkeypatch, capsys):
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    launched = []
    monkeypatch.setattr(torchrun, "run", launched.append)
    argv = ["train", "--nproc", "3", "--data", "digits", "--batch-size", "30"]
    assert launch_local(3, argv) == 0
    (arguments,) = launched
    assert arguments.standalone and arguments.nproc_per_node == "3" and arguments.module
    assert arguments.training_script == "byol"
    assert arguments.training_script_args == ["train", "--data", "digits", "--batch-size", "30"]

    def fail(arguments):
        failure = ProcessFailure(local_rank=1, pid=123, exitcode=2, error_file="")
        raise ChildFailedError("byol", {1: failure})

    monkeypatch.setattr(torchrun, "run", fail)
    assert launch_local(2, ["train"]) == 2
    assert "process 1 of 2 failed (exit code 2)" in capsys.readouterr().err


@pytest.mark.slow
def test_a_rank_that_stops_answering_fails_the_job_after_the_timeout(tmp_path):
    started = time.perf_counter()
    result = _torchrun(
        ["--standalone", "--nproc-per-node=2"], [str(THIS_FILE), "hang", str(tmp_path)],
        env=_child_env(BYOL_DIST_TIMEOUT="0.05"),  # 3 seconds
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    assert result.returncode != 0
    assert elapsed < 100  # not the 120 s the silent rank sleeps
    assert "ChildFailedError" in result.stderr
    assert "Timed out waiting 3000ms" in result.stderr  # rank 0 gave up after BYOL_DIST_TIMEOUT


def test_nproc_flag_is_removed_from_the_forwarded_arguments():
    argv = ["train", "--nproc", "2", "--data", "digits", "--nproc=3", "--out", "x"]
    assert without_nproc(argv) == ["train", "--data", "digits", "--out", "x"]


def test_environment_errors_name_the_variable(monkeypatch):
    from byol.ddp import Distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ConfigError, match="RANK is not set"):
        Distributed.from_environment("cpu")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("BYOL_DIST_TIMEOUT", "soon")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    with pytest.raises(ConfigError, match="BYOL_DIST_TIMEOUT='soon'"):
        Distributed.from_environment("cpu")


def test_cpu_sync_batchnorm_is_plain_batchnorm_in_one_process():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.BatchNorm1d(16))
    reference = copy.deepcopy(model)
    optimizer_params = {id(p) for p in model.parameters()}
    converted = convert_sync_batchnorm(model)
    assert converted is model
    assert isinstance(model[1], CPUSyncBatchNorm) and isinstance(model[3], CPUSyncBatchNorm)
    # The same Parameter objects: an optimizer built before the conversion still works.
    assert {id(p) for p in model.parameters()} == optimizer_params
    assert model.state_dict().keys() == reference.state_dict().keys()
    x = torch.randn(5, 2, 4, 4)
    assert torch.allclose(model(x), reference(x), atol=1e-6)
    assert torch.allclose(model[1].running_var, reference[1].running_var)


if __name__ == "__main__":
    WORKERS[sys.argv[1]](Path(sys.argv[2]))


def _rank_pids(parent: int, rank: str) -> list[int]:
    """Processes under ``parent`` whose environment says RANK=``rank``."""
    found, pending = [], [parent]
    while pending:
        pid = pending.pop()
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if f"RANK={rank}".encode() in environ and pid != parent:
                found.append(pid)
            for task in Path(f"/proc/{pid}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_a_killed_rank_restarts_the_group_which_resumes_bitwise(tmp_path):
    # torchrun --max-restarts 1: SIGKILL rank 1 mid-run; the agent restarts both ranks, which
    # resume the run folder from its last checkpoint and end equal to an uninterrupted run.

    data = tiny_images(tmp_path / "images.npy")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    launch = ["--standalone", "--nproc-per-node=2", "--max-restarts=1"]
    for out in (straight, killed):
        args = [*_cli_args(data, out, 40), "--epochs", "10", "--precision", "fp32"]
        if out == straight:
            result = _torchrun(launch, ["-m", "byol", *args])
            assert result.returncode == 0, result.stderr[-3000:]
            continue
        command = [sys.executable, "-m", "torch.distributed.run", *launch, "-m", "byol", *args]
        process = subprocess.Popen(command, env=_child_env(), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + TIMEOUT
        while not (out / "checkpoints" / "step-00000004.pt").exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        victims = _rank_pids(process.pid, "1")
        assert victims, "rank 1 not found"
        os.kill(victims[0], signal.SIGKILL)
        _, stderr = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0, stderr[-3000:]
        assert "byol: resuming" in stderr
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(killed / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 40
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
