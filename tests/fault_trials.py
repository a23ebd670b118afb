"""Kill ``byol train`` at random moments with SIGKILL, resume it, and check nothing was lost.

A *round* is one run folder: ``byol train`` is started as a subprocess, killed with SIGKILL at
a random moment, started again (which resumes), killed again, ... and finally allowed to run
to the end. Each kill is a *trial*. After every kill the harness checks, on its own:

* every checkpoint file left in ``checkpoints/`` passes :func:`byol.load_checkpoint` (writes
  are atomic, so a kill never leaves a half-written ``last.pt`` or ``step-*.pt``);
* the next launch resumes from the newest of those checkpoints (never an older one, never
  from scratch) and so loses at most the steps completed since that checkpoint, which is at
  most ``--checkpoint-every``;
* every step any launch logged has the same loss, bit for bit, as the uninterrupted reference
  run at that step (so resumed runs repeat the very same computations);

and at the end of a round that the final ``last.pt`` (weights, optimizer state, random number
generator states) is bitwise equal to the reference run's, that the working directory the
subprocesses ran in is still empty and that no temporary checkpoint file is left behind.

Kill moments, by trial *mode* (chosen in a fixed rotation, delays drawn from a seeded RNG and
stretched to twice the steps left per kill left, at least 3 steps but short of the end, so
that a round's kills spread over the whole run):

* ``checkpoint-write``: as soon as the harness sees a checkpoint's temporary file (the
  payload being written and fsynced), after skipping a random number of writes: kills
  inside the write;
* ``training``: a random delay (in step times) after the launch logged its first step;
* ``startup``: a random delay within the launch's start-up (imports, data, checkpoint load).

Run the long version with ``.venv/bin/python -m pytest -m slow tests/test_faults.py -s`` or
directly: ``.venv/bin/python tests/fault_trials.py --trials 24`` (prints a JSON summary).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MODES = ("checkpoint-write", "training", "checkpoint-write", "training", "startup")
# The run every trial repeats: 22 steps per epoch, so a 30-step run crosses an epoch boundary.
TRAIN_ARGS = (
    "--data", "digits", "--arch", "convnet", "--hidden-dim", "64", "--projection-dim", "32",
    "--batch-size", "64", "--epochs", "2", "--warmup-epochs", "0.5", "--base-lr", "0.5",
    "--knn-every", "0", "--no-tensorboard", "--num-workers", "0", "--log-every", "1",
    "--keep-checkpoints", "2", "--seed", "0", "--device", "cpu", "--precision", "fp32",
)  # fmt: skip
_RESUMED = re.compile(r"byol: resuming .* at step (\d+)")
_POLL_S = 0.0005


@dataclass
class Trial:
    """One SIGKILL and what the next launch made of it."""

    round: int
    index: int
    mode: str
    delay_s: float = 0.0  # seconds from launch to SIGKILL
    killed: bool = False  # False: the launch finished before the kill came
    mid_write: bool = False  # a checkpoint temporary file was on disk after the kill
    steps_done: int = 0  # newest step the killed launch itself logged (0: none)
    checkpoint_step: int = 0  # newest valid checkpoint on disk after the kill
    invalid_files: list[str] = field(default_factory=list)
    resumed_step: int = -1  # the step the next launch resumed from
    lost_steps: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def survived(self) -> bool:
        return self.killed and not self.problems


@dataclass
class Summary:
    """Totals over all trials; ``ok`` when every trial survived and every round matched."""

    trials: int
    survived: int
    killed_mid_write: int
    modes: dict[str, int]
    lost_steps_total: int
    lost_steps_max: int
    rounds: int
    mismatches: int  # rounds whose final checkpoint differs from the uninterrupted run
    loss_mismatches: int  # logged steps whose loss differs from the uninterrupted run
    checkpoint_every: int
    steps: int
    seconds: float
    problems: list[str]

    @property
    def ok(self) -> bool:
        return self.survived == self.trials and not self.mismatches and not self.problems


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    # One intra-op thread: bitwise reproducible on CPU, and fast for these tiny tensors.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def train_argv(out: Path, steps: int, checkpoint_every: int) -> list[str]:
    """``byol train`` arguments of the trial run (without the program name)."""
    return ["train", *TRAIN_ARGS, "--max-steps", str(steps),
            "--checkpoint-every", str(checkpoint_every), "--out", str(out)]  # fmt: skip


def _metric_lines(out: Path) -> list[dict[str, Any]]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    lines = []
    for text in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            lines.append(json.loads(text))
    return lines


def _logged_losses(out: Path) -> dict[int, list[float]]:
    losses: dict[int, list[float]] = {}
    for record in _metric_lines(out):
        if "loss" in record:
            losses.setdefault(int(record["step"]), []).append(record["loss"])
    return losses


def _checkpoint_state(out: Path) -> tuple[int, list[str], int]:
    """Newest valid checkpoint step, the invalid checkpoint files, and temporary files."""
    from byol import CheckpointError, load_checkpoint

    folder = out / "checkpoints"
    if not folder.is_dir():
        return 0, [], 0
    newest, invalid, temporaries = 0, [], 0
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            temporaries += 1
            continue
        try:
            newest = max(newest, int(load_checkpoint(path)["step"]))
        except CheckpointError as error:
            invalid.append(f"{path.name}: {error}")
    return newest, invalid, temporaries


def _temporary_names(folder: Path) -> set[str]:
    try:
        return {e.name for e in os.scandir(folder) if e.name.endswith(".tmp")}
    except FileNotFoundError:
        return set()


def _lines_in(path: Path) -> int:
    try:
        with open(path, "rb") as file:
            return file.read().count(b"\n")
    except FileNotFoundError:
        return 0


class _Launch:
    """One ``byol train`` subprocess with its output in files outside the run folder."""

    def __init__(self, argv: list[str], cwd: Path, log: Path) -> None:
        self.log = log
        self.started = time.perf_counter()
        with open(log, "wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "byol", *argv], cwd=cwd, env=_environment(),
                stdout=output, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> float:
        delay = time.perf_counter() - self.started
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        return delay

    def finish(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class FaultTrials:
    """Runs rounds of kill-and-resume of the trial run until ``trials`` kills were made.

    ``in_process_ends``: compute the reference run and every round's final, uninterrupted
    launch in this process (through :func:`byol.cli.main`) instead of a subprocess, which
    saves two interpreter start-ups per round; the killed launches are always subprocesses.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        trials: int,
        steps: int = 30,
        checkpoint_every: int = 1,
        kills_per_round: int = 8,
        seed: int = 0,
        modes: tuple[str, ...] = MODES,
        in_process_ends: bool = False,
        timeout_s: float = 300.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.trials = trials
        self.steps = steps
        self.checkpoint_every = checkpoint_every
        self.kills_per_round = kills_per_round
        self.rng = random.Random(seed)
        self.modes = modes
        self.in_process_ends = in_process_ends
        self.timeout_s = timeout_s
        self.cwd = self.workdir / "cwd"  # where the subprocesses run: must stay empty
        self.logs = self.workdir / "logs"
        self.runs = self.workdir / "runs"
        self.startup_s = 5.0  # refined from every launch that reaches its first step
        self.step_s = 0.2
        self.results: list[Trial] = []
        self.problems: list[str] = []
        self.mismatches = 0
        self.loss_mismatches = 0
        self.rounds = 0
        self._launches = 0

    # ------------------------------------------------------------------ launches
    def _argv(self, out: Path) -> list[str]:
        return train_argv(out, self.steps, self.checkpoint_every)

    def _launch(self, out: Path) -> _Launch:
        self._launches += 1
        return _Launch(self._argv(out), self.cwd, self.logs / f"launch-{self._launches:03d}.log")

    def _run_to_end(self, out: Path) -> tuple[int, str]:
        """An uninterrupted launch: its exit code and output."""
        if not self.in_process_ends:
            launch = self._launch(out)
            try:
                code = launch.finish(self.timeout_s)
            finally:  # a timeout or an interrupt must not leave the process running
                if launch.running():
                    launch.kill()
            return code, launch.output()
        from byol.cli import main

        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            code = main(self._argv(out))
        return code, buffer.getvalue()

    def _wait_for_training(self, launch: _Launch, metrics: Path, lines_before: int) -> bool:
        """Wait until the launch logs a step; refine the start-up time estimate."""
        while launch.running():
            if _lines_in(metrics) > lines_before:
                self.startup_s = time.perf_counter() - launch.started
                return True
            time.sleep(_POLL_S * 4)
        return False

    def _kill_at_random(self, launch: _Launch, out: Path, trial: Trial, spread: float) -> None:
        """SIGKILL ``launch`` at a moment chosen by ``trial.mode``; ``spread`` (in steps)
        stretches the random delays so that a round's kills cover the whole run."""
        metrics = out / "metrics.jsonl"
        earlier_temporaries = _temporary_names(out / "checkpoints")
        lines_before = _lines_in(metrics)
        if trial.mode == "startup":
            deadline = launch.started + self.rng.uniform(0.05, 1.0) * self.startup_s
            while launch.running() and time.perf_counter() < deadline:
                time.sleep(_POLL_S * 4)
        elif trial.mode == "training":
            if self._wait_for_training(launch, metrics, lines_before):
                first = time.perf_counter()
                lines_first = _lines_in(metrics)
                deadline = first + self.rng.uniform(0.0, spread) * self.step_s
                while launch.running() and time.perf_counter() < deadline:
                    time.sleep(_POLL_S * 4)
                done = _lines_in(metrics) - lines_first
                if done > 0:  # a running estimate of one step's duration (with its checkpoint)
                    self.step_s = 0.5 * self.step_s + 0.5 * (time.perf_counter() - first) / done
        else:  # checkpoint-write
            skip = self.rng.randint(0, max(0, int(spread) - 1))
            seen: set[str] = set()
            folder = out / "checkpoints"
            while launch.running():
                names = _temporary_names(folder) - seen
                if names:
                    if len(seen) >= skip:
                        break
                    seen |= names
                time.sleep(_POLL_S)
        trial.killed = launch.running()
        trial.delay_s = launch.kill()
        trial.mid_write = bool(_temporary_names(out / "checkpoints") - earlier_temporaries)

    # ------------------------------------------------------------------ checks
    def _compare_losses(self, out: Path, reference: dict[int, list[float]]) -> None:
        for step, values in _logged_losses(out).items():
            expected = reference.get(step, [None])[0]
            for value in values:
                if value != expected:
                    self.loss_mismatches += 1
                    self.problems.append(
                        f"{out.name}: step {step} logged loss {value!r}, the uninterrupted run "
                        f"{expected!r}"
                    )

    def _compare_final(self, out: Path, reference_out: Path) -> list[str]:
        import torch

        from byol import load_checkpoint

        a = load_checkpoint(reference_out / "checkpoints" / "last.pt")
        b = load_checkpoint(out / "checkpoints" / "last.pt")
        differences = []
        if a["step"] != b["step"]:
            differences.append(f"step {b['step']} != {a['step']}")
        for key, tensor in a["model"].items():
            if not torch.equal(tensor, b["model"][key]):
                differences.append(f"model.{key}")
        for index, state in a["optimizer"]["state"].items():
            for name, tensor in state.items():
                other = b["optimizer"]["state"][index][name]
                if isinstance(tensor, torch.Tensor) and not torch.equal(tensor, other):
                    differences.append(f"optimizer.state.{index}.{name}")
        if not all(
            torch.equal(x, y) for x, y in zip(a["rng"]["augment"], b["rng"]["augment"], strict=True)
        ):
            differences.append("rng.augment")
        if not torch.equal(a["rng"]["torch"], b["rng"]["torch"]):
            differences.append("rng.torch")
        return differences

    # ------------------------------------------------------------------ the trials
    def run(self, reference_out: Path | None = None) -> Summary:
        """Make the trials; ``reference_out``: an uninterrupted run of the same steps to
        compare with (by default the harness makes one first)."""
        started = time.perf_counter()
        for folder in (self.cwd, self.logs, self.runs):
            folder.mkdir(parents=True, exist_ok=True)
        if reference_out is None:
            reference_out = self.runs / "reference"
            code, text = self._run_to_end(reference_out)
            if code != 0:
                raise RuntimeError(f"the uninterrupted reference run failed ({code}):\n{text}")
        reference_losses = {s: v for s, v in _logged_losses(reference_out).items()}
        while len(self.results) < self.trials:
            self._round(reference_out, reference_losses)
        if any(self.cwd.iterdir()):
            self.problems.append(
                f"files appeared in the working directory: {sorted(os.listdir(self.cwd))}"
            )
        killed = [t for t in self.results if t.killed]
        modes: dict[str, int] = {}
        for trial in killed:
            modes[trial.mode] = modes.get(trial.mode, 0) + 1
        return Summary(
            trials=len(killed), survived=sum(t.survived for t in killed),
            killed_mid_write=sum(t.mid_write for t in killed), modes=modes,
            lost_steps_total=sum(t.lost_steps for t in killed),
            lost_steps_max=max((t.lost_steps for t in killed), default=0),
            rounds=self.rounds, mismatches=self.mismatches,
            loss_mismatches=self.loss_mismatches, checkpoint_every=self.checkpoint_every,
            steps=self.steps, seconds=round(time.perf_counter() - started, 1),
            problems=self.problems + [p for t in killed for p in t.problems],
        )  # fmt: skip

    def _round(self, reference_out: Path, reference_losses: dict[int, list[float]]) -> None:
        self.rounds += 1
        out = self.runs / f"round-{self.rounds:02d}"
        pending: list[Trial] = []  # kills whose resume point no launch has shown yet
        kills = 0
        while kills < self.kills_per_round and len(self.results) < self.trials:
            mode = self.modes[len(self.results) % len(self.modes)]
            trial = Trial(self.rounds, len(self.results), mode)
            records_before = len(_metric_lines(out))
            launch = self._launch(out)
            reached = self.results[-1].checkpoint_step if kills else 0
            # Twice the steps left per kill left, so the expected progress per kill spreads
            # the round's kills over the whole run; short of the end, so a kill still comes.
            left = self.steps - reached
            spread = min(max(3.0, 2 * left / (self.kills_per_round - kills)), max(1.0, left - 1))
            try:
                self._kill_at_random(launch, out, trial, spread)
            finally:
                if launch.running():
                    launch.kill()
            new_records = _metric_lines(out)[records_before:]
            self._settle(pending, _resumed_from(launch.output(), new_records))
            if not trial.killed:  # the run reached its end before the kill came
                if launch.process.returncode != 0:
                    self.problems.append(f"{out.name}: a launch failed:\n{launch.output()[-2000:]}")
                break
            self._inspect_after_kill(out, trial, new_records)
            self.results.append(trial)
            pending.append(trial)
            kills += 1
        records_before = len(_metric_lines(out))
        code, text = self._run_to_end(out)
        self._settle(pending, _resumed_from(text, _metric_lines(out)[records_before:]))
        for trial in pending:  # the final launch always shows where it resumed
            trial.problems.append("no launch showed where the run resumed after this kill")
        if code != 0:
            self.problems.append(f"{out.name}: the final launch failed with exit code {code}:\n"
                                 + text[-2000:])  # fmt: skip
            self.mismatches += 1
            return
        differences = self._compare_final(out, reference_out)
        if differences:
            self.mismatches += 1
            self.problems.append(f"{out.name}: final state differs: {', '.join(differences)}")
        self._compare_losses(out, reference_losses)
        _, invalid, temporaries = _checkpoint_state(out)
        if invalid or temporaries:
            self.problems.append(
                f"{out.name}: after the final launch {len(invalid)} invalid checkpoint(s) and "
                f"{temporaries} leftover temporary file(s)"
            )
        garbled = _unparseable_lines(out)
        if garbled:
            self.problems.append(f"{out.name}: {garbled} unparseable line(s) in metrics.jsonl")

    def _inspect_after_kill(
        self, out: Path, trial: Trial, new_records: list[dict[str, Any]]
    ) -> None:
        trial.checkpoint_step, trial.invalid_files, _ = _checkpoint_state(out)
        # Only the steps this launch completed count as lost when they are redone.
        trial.steps_done = max((int(r["step"]) for r in new_records if "loss" in r), default=0)
        if trial.invalid_files:
            trial.problems.append(
                f"invalid checkpoint file(s) after the kill: {'; '.join(trial.invalid_files)}"
            )

    def _settle(self, pending: list[Trial], resumed: int | None) -> None:
        """Judge the pending kills once a launch has shown the step it resumed from."""
        if resumed is None:
            return  # this launch died before it got that far: the next one will show it
        for trial in pending:
            trial.resumed_step = resumed
            if resumed != trial.checkpoint_step:
                trial.problems.append(
                    f"resumed from step {resumed}, but the newest valid checkpoint after the "
                    f"kill was step {trial.checkpoint_step}"
                )
            trial.lost_steps = max(0, trial.steps_done - resumed)
            if trial.lost_steps > self.checkpoint_every:
                trial.problems.append(
                    f"lost {trial.lost_steps} steps (more than --checkpoint-every "
                    f"{self.checkpoint_every})"
                )
        pending.clear()


def _resumed_from(output: str, new_records: list[dict[str, Any]]) -> int | None:
    """The step a launch resumed from: its message, 0 if it trained without one, else None."""
    found = _RESUMED.findall(output)
    if found:
        return int(found[-1])
    return 0 if any("loss" in r for r in new_records) else None


def _unparseable_lines(out: Path) -> int:
    path = out / "metrics.jsonl"
    count = 0
    for text in path.read_text().splitlines() if path.exists() else []:
        try:
            json.loads(text)
        except json.JSONDecodeError:
            count += 1
    return count


def format_summary(summary: Summary) -> str:
    """A few lines for humans (and docs/reliability.md)."""
    modes = ", ".join(f"{count} {mode}" for mode, count in sorted(summary.modes.items()))
    lines = [
        f"trials (SIGKILLs): {summary.trials} ({modes})",
        f"survived:          {summary.survived}/{summary.trials}",
        f"killed mid-write:  {summary.killed_mid_write} (a checkpoint temporary file was on disk)",
        f"lost steps:        {summary.lost_steps_total} in total, at most {summary.lost_steps_max}"
        f" per kill (checkpoint every {summary.checkpoint_every} step(s))",
        f"rounds:            {summary.rounds} of {summary.steps} steps each",
        f"mismatches:        {summary.mismatches} final states, {summary.loss_mismatches} "
        "logged losses differ from the uninterrupted run",
        f"time:              {summary.seconds:.0f} s",
    ]
    lines += [f"problem: {p}" for p in summary.problems]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--checkpoint-every", type=int, default=1)
    parser.add_argument("--kills-per-round", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="byol-faults-") as scratch:
        harness = FaultTrials(
            args.workdir or Path(scratch), trials=args.trials, steps=args.steps,
            checkpoint_every=args.checkpoint_every, kills_per_round=args.kills_per_round,
            seed=args.seed,
        )  # fmt: skip
        summary = harness.run()
    print(format_summary(summary))
    print(json.dumps({**asdict(summary), "ok": summary.ok}))
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
