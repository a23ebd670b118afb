"""Training-step throughput on this machine, with and without each optimisation.

For each backbone (default: the CPU-scale convnet at batch 256 and the small-stem ResNet-18 at
batch 64, both 32 px, fp32) it builds one :class:`byol.bench.TrainStepRunner` per variant

* ``default``: what ``byol train`` does (channels_last, the loss's two halves on two threads,
  fused foreach EMA and LARS, no host sync in the step, no compile);
* ``no channels_last``, ``loop EMA``, ``loop LARS``,
  ``sync every step``: one optimisation undone each;
* ``compile``: ``torch.compile`` of the model (``--compile`` in ``byol train``);

then times them in interleaved windows (every round runs one window of each variant, so load
changes on the shared machine hit all variants alike) and reports medians, per-stage times of
an instrumented pass, the FLOPs of the step, the machine's matmul/convolution rates and a
``torch.profiler`` summary of the default step. Writes its section of benchmarks/RESULTS.md
(between ``<!-- train_step:begin -->`` and ``<!-- train_step:end -->``) with ``--write``.

    .venv/bin/python benchmarks/train_step.py [--write] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from byol.bench import (
    STAGES,
    BenchConfig,
    TrainStepRunner,
    conv3x3_rate,
    device_info,
    matmul_rate,
    step_flops_per_image,
)
from results_file import RESULTS, write_section

VARIANTS: dict[str, dict] = {
    "default": {},
    "no channels_last": {"channels_last": False},
    "loop EMA": {"ema": "loop"},
    "loop LARS": {"lars": "loop"},
    "sync every step": {"sync_every_step": True},
    "compile": {"compile": True},
}


def log(message: str) -> None:
    print(f"train_step: {message}", file=sys.stderr, flush=True)


def measure_arch(base: BenchConfig, variants: list[str], rounds: int, profile_steps: int) -> dict:
    """Interleaved windows of every variant, then stages, FLOPs and (for default) a profile."""
    runners: dict[str, TrainStepRunner] = {}
    warmup_seconds: dict[str, float] = {}
    for name in variants:
        runner = TrainStepRunner(replace(base, **VARIANTS[name]))
        start = time.perf_counter()
        try:
            runner.run_window(max(1, base.warmup))
        except Exception as error:  # compile can fail on a machine without a working compiler
            log(f"{base.arch} {name}: skipped ({type(error).__name__}: {error})")
            continue
        warmup_seconds[name] = time.perf_counter() - start
        runners[name] = runner
        log(f"{base.arch} {name}: warm-up {warmup_seconds[name]:.1f} s")
    rates: dict[str, list[float]] = {name: [] for name in runners}
    host: dict[str, list[dict[str, float]]] = {name: [] for name in runners}
    for round_index in range(rounds):
        for name, runner in runners.items():
            runner.run_window(1)  # settle: caches and allocator back to this variant's state
            before = resource.getrusage(resource.RUSAGE_SELF)
            seconds = runner.run_window(base.steps)
            after = resource.getrusage(resource.RUSAGE_SELF)
            rates[name].append(base.steps * base.batch_size / seconds)
            host[name].append({
                "user_ms": 1000 * (after.ru_utime - before.ru_utime) / base.steps,
                "system_ms": 1000 * (after.ru_stime - before.ru_stime) / base.steps,
                "page_faults": (after.ru_minflt - before.ru_minflt) / base.steps,
            })  # fmt: skip
        log(f"{base.arch} round {round_index + 1}/{rounds}: "
            + ", ".join(f"{n} {r[-1]:.1f}" for n, r in rates.items()))  # fmt: skip
    stages: dict[str, dict[str, float]] = {}
    for name, runner in runners.items():
        records = runner.stage_times(base.steps)
        stages[name] = {s: 1000 * statistics.median(r[s] for r in records) for s in STAGES}
        stages[name]["sum"] = 1000 * statistics.median(sum(r.values()) for r in records)
    default = runners["default"]
    flops = step_flops_per_image(default.model, *default.sample_views(min(base.batch_size, 16)))
    profile = default.profile(profile_steps, row_limit=15) if profile_steps else None
    return {
        "config": asdict(base),
        "images_per_s": {name: statistics.median(r) for name, r in rates.items()},
        "windows": rates,
        "warmup_s": warmup_seconds,
        "host_per_step": {
            name: {k: statistics.median(w[k] for w in windows) for k in windows[0]}
            for name, windows in host.items()
        },
        "stages_ms": stages,
        "flops_per_image": flops,
        "profile": profile,
    }


def measure_malloc(base: BenchConfig, rounds: int) -> dict:
    """``byol bench`` in alternating subprocesses with and without keep_freed_memory (a
    process-wide malloc setting, so it cannot be interleaved inside one process)."""
    command = [
        sys.executable, "-m", "byol", "bench", "--arch", base.arch, "--image-size",
        str(base.image_size), "--batch-size", str(base.batch_size), "--precision",
        base.precision, "--steps", str(base.steps), "--windows", "3", "--warmup",
        str(max(1, base.warmup)), "--device", "cpu", "--small-images", "--no-stages",
        "--no-flops", "--no-ceiling", "--json",
    ]  # fmt: skip
    settings = {"keep freed memory (default)": "1", "glibc malloc defaults": "0"}
    runs: dict[str, list[dict]] = {name: [] for name in settings}
    for round_index in range(rounds):
        for name, value in settings.items():
            env = {**os.environ, "BYOL_KEEP_FREED_MEMORY": value}
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            runs[name].append(json.loads(done.stdout))
        log(f"{base.arch} malloc round {round_index + 1}/{rounds}: " + ", ".join(
            f"{n} {r[-1]['images_per_s']:.1f}" for n, r in runs.items()
        ))  # fmt: skip
    summary = {}
    for name, results in runs.items():
        windows = [rate for result in results for rate in result["images_per_s_windows"]]
        summary[name] = {
            "images_per_s": statistics.median(windows),
            "windows": windows,
            **{key: statistics.median(r[f"{key}_per_step"] for r in results)
               for key in ("user_ms", "system_ms", "page_faults")},
        }  # fmt: skip
    return {"command": "BYOL_KEEP_FREED_MEMORY=1 (or 0) " + shlex.join(["byol", *command[3:]]),
            "results": summary}  # fmt: skip


def measure_ceiling() -> dict[str, float]:
    cpu = torch.device("cpu")
    return {
        "matmul fp32 2048²": matmul_rate(cpu),
        "conv3x3 fp32 channels_last": conv3x3_rate(cpu, channels_last=True),
        "conv3x3 fp32 contiguous": conv3x3_rate(cpu, channels_last=False),
    }


def format_section(results: list[dict], ceiling: dict, command: str, load: str) -> str:
    machine = device_info(torch.device("cpu"))
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    best = max(ceiling.values())
    lines = [
        "## Training step (`byol bench`, `benchmarks/train_step.py`)",
        "",
        f"Measured {when} on {machine['cpu']} ({machine['cpu_count']} cores, "
        f"{machine['threads']} intra-op threads), torch {machine['torch']}, Python "
        f"{machine['python']}. Load averages (1, 5, 15 min): {load} (the machine is shared).",
        "",
        "```",
        command,
        "```",
        "",
        "Single rows can be reproduced with `byol bench`, e.g. `byol bench --arch convnet "
        "--image-size 32 --batch-size 256 --precision fp32` (add `--no-channels-last`, "
        "`--ema loop`, `--lars loop`, `--sync-every-step` or "
        "`--compile` for the variants).",
        "",
        "Machine ceiling (best of 5 windows of 0.3 s, measured before and after the runs): "
        + ", ".join(f"{k} {v:.1f}" for k, v in ceiling.items())
        + " GFLOP/s.",
        "",
    ]
    for r in results:
        c = r["config"]
        flops = r["flops_per_image"]
        default = r["images_per_s"]["default"]
        lines += [
            f"### {c['arch']}, {c['image_size']} px, batch {c['batch_size']}, {c['precision']}",
            "",
            f"BYOL step: {flops / 1e6:.1f} MFLOP per image (matmuls and convolutions, "
            f"FlopCounterMode). Default: {default:.1f} images/s = "
            f"{flops * default / 1e9:.1f} GFLOP/s = **{100 * flops * default / 1e9 / best:.0f}% "
            "of the best measured rate**.",
            "",
            "Stage times (ms) come from the instrumented pass; CPU time (user + system, both "
            "threads) and page faults per step from getrusage over the timed windows.",
            "",
            "| variant | images/s (median) | vs default | "
            + " | ".join(f"{s} ms" for s in STAGES)
            + " | sum ms | CPU ms user + sys | page faults | warm-up s |",
            "|---|---|---|" + "---|" * (len(STAGES) + 4),
        ]
        for name, rate in r["images_per_s"].items():
            stage = r["stages_ms"][name]
            usage = r["host_per_step"][name]
            lines.append(
                f"| {name} | {rate:.1f} | {rate / default:.2f}× | "
                + " | ".join(f"{stage[s]:.1f}" for s in STAGES)
                + f" | {stage['sum']:.1f} | {usage['user_ms']:.0f} + {usage['system_ms']:.0f} "
                f"| {usage['page_faults']:.0f} | {r['warmup_s'][name]:.1f} |"
            )
        lines += ["", "Windows (images/s): " + "; ".join(
            f"{n}: " + ", ".join(f"{v:.1f}" for v in w) for n, w in r["windows"].items()
        ), ""]  # fmt: skip
        malloc = r.get("malloc")
        if malloc:
            lines += [
                "Freed-memory reuse (`byol.runtime.keep_freed_memory`, process-wide, so measured "
                "in alternating `byol bench` subprocesses):",
                "",
                "```",
                malloc["command"],
                "```",
                "",
                "| malloc | images/s (median) | vs glibc defaults | CPU ms user + sys per step "
                "| page faults per step | windows |",
                "|---|---|---|---|---|---|",
            ]
            baseline = malloc["results"]["glibc malloc defaults"]["images_per_s"]
            for name, m in malloc["results"].items():
                lines.append(
                    f"| {name} | {m['images_per_s']:.1f} | {m['images_per_s'] / baseline:.2f}× "
                    f"| {m['user_ms']:.0f} + {m['system_ms']:.0f} | {m['page_faults']:.0f} | "
                    + ", ".join(f"{v:.1f}" for v in m["windows"])
                    + " |"
                )
            lines.append("")
        if r["profile"]:
            lines += [
                "<details><summary>torch.profiler, default variant (top operators by self "
                "CPU time)</summary>",
                "",
                "```",
                r["profile"].strip(),
                "```",
                "</details>",
                "",
            ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", nargs="+", default=["convnet", "resnet18"])
    parser.add_argument("--batch-size", type=int, nargs="+", default=None,
                        help="one per --arch (default: 256 convnet, 64 otherwise)")  # fmt: skip
    parser.add_argument("--steps", type=int, nargs="+", default=None,
                        help="steps per window per --arch (default 6 convnet, else 2)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS),
                        help="default: all for the convnet; default, no channels_last and "
                        "compile for others (EMA/LARS/sync are < 1%% of their step)")  # fmt: skip
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--malloc-rounds", type=int, default=2,
                        help="subprocess pairs for the malloc comparison (0: skip)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="a fast check of the script")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    if args.variants is not None and "default" not in args.variants:
        args.variants.insert(0, "default")
    batch_sizes = args.batch_size or [256 if a == "convnet" else 64 for a in args.arch]
    step_counts = args.steps or [6 if a == "convnet" else 2 for a in args.arch]
    if args.quick:
        batch_sizes = [16] * len(args.arch)
        step_counts, args.rounds, args.warmup, args.profile_steps = [1] * len(args.arch), 2, 1, 1
        args.malloc_rounds = min(args.malloc_rounds, 1)
    with open("/proc/loadavg") as loadavg:
        load = " ".join(loadavg.read().split()[:3])

    # The ceiling is measured before and after the runs and the better value kept: another
    # job on the machine lowers a rate, and a ceiling measured low would flatter the step.
    log("measuring the matmul and convolution rates")
    first_ceiling = measure_ceiling()
    results = []
    for arch, batch_size, steps in zip(args.arch, batch_sizes, step_counts):
        base = BenchConfig(
            arch=arch, image_size=32, batch_size=batch_size, precision="fp32", steps=steps,
            warmup=args.warmup, device="cpu", small_images=True,
        )  # fmt: skip
        variants = args.variants or (
            list(VARIANTS) if arch == "convnet" else ["default", "no channels_last", "compile"]
        )
        results.append(measure_arch(base, variants, args.rounds, args.profile_steps))
        if args.malloc_rounds:
            results[-1]["malloc"] = measure_malloc(base, args.malloc_rounds)
    with open("/proc/loadavg") as loadavg:
        load += " at start, " + " ".join(loadavg.read().split()[:3]) + " at the end"
    log("measuring the matmul and convolution rates again")
    ceiling = {name: max(rate, first_ceiling[name]) for name, rate in measure_ceiling().items()}
    command = ".venv/bin/python benchmarks/train_step.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    text = format_section(results, ceiling, command.strip(), load)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "ceiling": ceiling}, indent=2))
    if args.write:
        write_section("train_step", text)
        log(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
