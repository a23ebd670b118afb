"""Side by side: our training step against lucidrains' byol-pytorch and lightly's BYOL recipe.

Installs nothing. Run it with an interpreter that can import ``byol``, ``byol_pytorch`` and
``lightly`` (``bash benchmarks/peers-setup.sh`` makes ``benchmarks/.peers-venv``):

    benchmarks/.peers-venv/bin/python benchmarks/peers.py [--arch convnet|resnet18 ...] \
        [--precision fp32 bf16]

All three run in this one process on the same backbone module (``byol.backbones.build``, the
same seed), the same in-memory uint8 images (random, 32×32 RGB by default), the same batch
size, the same precision (``--precision``: fp32, and/or bf16 with the peers' forward and loss
under ``torch.autocast`` as a user would add it, one interleaved comparison per precision) and
the same projector/predictor widths (hidden 4096, output 256 by default; see
``--hidden-dim``). Each implementation keeps its own recipe otherwise:

* **ours**: the real ``byol train`` step through :class:`byol.bench.TrainStepRunner`
  (per-sample augmentation of the batch in the main process, per-view forwards, LARS, fused
  EMA, channels_last).
* **lucidrains**: ``BYOL(net, image_size=..., hidden_layer=-1)`` then, per step, ``loss =
  learner(images); opt.zero_grad(); loss.backward(); opt.step();
  learner.update_moving_average()`` with Adam (lr 3e-4) as in its README. Its own default
  augmentations run on the batch tensor (one draw of jitter/blur/crop per batch), and the two
  views go through each network concatenated. ``use_simplicial_embeddings`` (on by default in
  0.9, not part of BYOL) is turned off so the networks match; ``hidden_layer=-1`` takes the
  backbone's output, which is the pooled representation for both backbones.
* **lightly**: the BYOL module of lightly's example (``BYOLProjectionHead``,
  ``BYOLPredictionHead``, ``deactivate_requires_grad``, ``update_momentum`` with
  ``cosine_schedule``, ``NegativeCosineSimilarity``, SGD lr 0.06) fed by a DataLoader with 2
  workers that applies ``BYOLTransform`` (per-image torchvision transforms on PIL images, as the
  example's CIFAR-10 dataset yields; blur off at 32 px as in the example) to an in-memory
  dataset. Workers are persistent (no restart cost at the tiny epoch boundaries).

Timing: every implementation first runs ``--warmup`` steps; then ``--rounds`` rounds each time
one window of ``--steps`` steps per implementation, interleaved, so a load change on the machine
hits all of them alike. Before each window a few untimed steps let the implementation reach its
steady state (lightly: its prefetch queue, which fills while the others run, is drained first;
after its window the run waits until its workers are idle, their queue full again, so they
do not steal the next window's CPU). Medians of the windows are compared.

Writes its section of benchmarks/RESULTS.md (between ``<!-- peers:begin -->`` and
``<!-- peers:end -->``) with ``--write``; several ``--arch`` values go into one table.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from torch import nn

from byol import backbones
from byol.bench import BenchConfig, TrainStepRunner, device_info
from byol.runtime import set_malloc_thresholds
from results_file import RESULTS, write_section


def _import_peers() -> None:
    missing = []
    for module in ("byol_pytorch", "lightly"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        sys.exit(
            f"peers.py: cannot import {', '.join(missing)}; run `bash benchmarks/peers-setup.sh` "
            "and use benchmarks/.peers-venv/bin/python"
        )


def _autocast(precision: str):
    """``torch.autocast`` on the CPU in bf16, or nothing for fp32: how a user wraps a peer's
    forward and loss in mixed precision (the backward follows the recorded dtypes)."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def _backbone(arch: str, seed: int) -> tuple[nn.Module, int]:
    torch.manual_seed(seed)
    return backbones.build(arch, small_images=True)


class _Ours:
    name = "ours"
    settle = 1

    def __init__(self, args: argparse.Namespace, images: torch.Tensor) -> None:
        config = BenchConfig(
            arch=args.arch, image_size=args.image_size, batch_size=args.batch_size,
            precision=args.precision, device="cpu", hidden_dim=args.hidden_dim,
            projection_dim=args.projection_dim, small_images=True, seed=args.seed,
            dataset_batches=args.dataset_batches,
        )  # fmt: skip
        self.runner = TrainStepRunner(config, images=images)

    def steps(self, count: int) -> None:
        self.runner.run_window(count)

    def pause(self) -> None:
        pass


class _Lucidrains:
    name = "lucidrains"
    settle = 1

    def __init__(self, args: argparse.Namespace, images: torch.Tensor) -> None:
        from byol_pytorch import BYOL

        net, _ = _backbone(args.arch, args.seed)
        self.learner = BYOL(
            net, image_size=args.image_size, hidden_layer=-1,
            projection_size=args.projection_dim, projection_hidden_size=args.hidden_dim,
            use_simplicial_embeddings=False,
        )  # fmt: skip
        self.optimizer = torch.optim.Adam(self.learner.parameters(), lr=3e-4)
        self.images = images
        self.batch_size = args.batch_size
        self.generator = torch.Generator().manual_seed(args.seed)
        self.precision = args.precision
        self.learner.train()

    def steps(self, count: int) -> None:
        loss_sum = torch.zeros(())
        for _ in range(count):
            index = torch.randint(0, len(self.images), (self.batch_size,),
                                  generator=self.generator)  # fmt: skip
            # In-memory uint8 → float in [0, 1], the input its augmentations expect.
            batch = self.images[index].float().div_(255)
            with _autocast(self.precision):  # as a user would add mixed precision
                loss = self.learner(batch)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.learner.update_moving_average()
            loss_sum += loss.detach()
        float(loss_sum)

    def pause(self) -> None:
        pass


class _LightlyBYOL(nn.Module):
    """The BYOL module of lightly's example, with our widths (its example: hidden 1024)."""

    def __init__(self, backbone: nn.Module, feature_dim: int, hidden: int, out: int) -> None:
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        super().__init__()
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(feature_dim, hidden, out)
        self.prediction_head = BYOLPredictionHead(out, hidden, out)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.backbone(x).flatten(start_dim=1)
        return self.prediction_head(self.projection_head(y))

    def forward_momentum(self, x: torch.Tensor) -> torch.Tensor:
        y = self.backbone_momentum(x).flatten(start_dim=1)
        return self.projection_head_momentum(y).detach()


class _PILImages(torch.utils.data.Dataset):
    """In-memory images handed out as PIL images, as torchvision's CIFAR-10 does."""

    def __init__(self, images: torch.Tensor, transform) -> None:
        self.images = images.permute(0, 2, 3, 1).contiguous().numpy()  # N, H, W, C uint8
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index])), 0


class _Lightly:
    name = "lightly"

    def __init__(self, args: argparse.Namespace, images: torch.Tensor) -> None:
        from lightly.loss import NegativeCosineSimilarity
        from lightly.transforms.byol_transform import (
            BYOLTransform,
            BYOLView1Transform,
            BYOLView2Transform,
        )

        backbone, feature_dim = _backbone(args.arch, args.seed)
        self.model = _LightlyBYOL(backbone, feature_dim, args.hidden_dim, args.projection_dim)
        self.model.train()
        transform = BYOLTransform(
            view_1_transform=BYOLView1Transform(input_size=args.image_size, gaussian_blur=0.0),
            view_2_transform=BYOLView2Transform(input_size=args.image_size, gaussian_blur=0.0),
        )
        self.workers = args.workers
        self.prefetch_factor = 2
        loader = torch.utils.data.DataLoader(
            _PILImages(images, transform), batch_size=args.batch_size, shuffle=True,
            drop_last=True, num_workers=self.workers, persistent_workers=self.workers > 0,
            prefetch_factor=self.prefetch_factor if self.workers > 0 else None,
        )  # fmt: skip
        self.loader = loader
        self.batches = self._cycle()
        self.settle = max(1, self.workers * self.prefetch_factor)
        self.criterion = NegativeCosineSimilarity()
        self.precision = args.precision
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.06)
        self.step = 0
        self.total_steps = 100_000

    def _cycle(self):
        while True:
            yield from self.loader

    def steps(self, count: int) -> None:
        from lightly.models.utils import update_momentum
        from lightly.utils.scheduler import cosine_schedule

        model = self.model
        loss_sum = torch.zeros(())
        for _ in range(count):
            (x0, x1), _ = next(self.batches)
            momentum = cosine_schedule(self.step, self.total_steps, 0.996, 1)
            update_momentum(model.backbone, model.backbone_momentum, m=momentum)
            update_momentum(model.projection_head, model.projection_head_momentum, m=momentum)
            with _autocast(self.precision):  # as a user would add mixed precision
                p0 = model(x0)
                z0 = model.forward_momentum(x0)
                p1 = model(x1)
                z1 = model.forward_momentum(x1)
                loss = 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))
            loss_sum += loss.detach()
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad()
            self.step += 1
        float(loss_sum)

    def pause(self) -> None:
        # Let the workers refill their queue now rather than during the next runner's window.
        _wait_until_children_idle()


def _children_cpu_seconds() -> float:
    """CPU time used so far by this process's live child processes (DataLoader workers)."""
    total, me, tick = 0.0, os.getpid(), os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        if int(fields[1]) == me:  # parent pid
            total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return total


def _wait_until_children_idle(limit: float = 30.0, quiet: float = 0.2) -> None:
    """Sleep until the child processes have used no CPU for ``quiet`` seconds (at most
    ``limit``): the workers' prefetch queue is then full and they stop competing."""
    deadline = time.perf_counter() + limit
    used = _children_cpu_seconds()
    while time.perf_counter() < deadline:
        time.sleep(quiet)
        now = _children_cpu_seconds()
        if now - used < 0.01:
            return
        used = now


def _set_malloc(keep_freed_memory: bool) -> None:
    """Switch glibc's malloc between our setting and its own steady state, per runner.

    ``byol train`` raises the mmap and trim thresholds to 1 GiB (byol.runtime.keep_freed_memory),
    a process-wide setting that the peers, as shipped, do not make. For a peer's windows this
    puts back what glibc's adaptive thresholds converge to (mmap threshold at its 32 MiB
    maximum, trim threshold twice that), the most favourable default state for the peer.
    """
    if keep_freed_memory:
        set_malloc_thresholds(1 << 30, 1 << 30)
    else:
        set_malloc_thresholds(32 << 20, 64 << 20)


def _versions() -> dict[str, str]:
    found = {}
    for name in ("torch", "torchvision", "byol", "byol-pytorch", "lightly", "pillow"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def compare(args: argparse.Namespace, log=print) -> dict:
    """Build the three runners on the same images and time them in interleaved windows."""
    generator = torch.Generator().manual_seed(args.seed)
    count = args.batch_size * args.dataset_batches
    images = torch.randint(0, 256, (count, 3, args.image_size, args.image_size),
                           dtype=torch.uint8, generator=generator)  # fmt: skip
    runners = [_Ours(args, images), _Lucidrains(args, images), _Lightly(args, images)]
    # (label, runner, malloc keeps freed memory): ours always as byol train runs it; the peers
    # as they ship, and with --peers-malloc both also with our setting, in extra windows.
    slots = [("ours", runners[0], True)]
    for peer in runners[1:]:
        if args.peers_malloc in ("default", "both"):
            slots.append((peer.name, peer, False))
        if args.peers_malloc in ("kept", "both"):
            label = peer.name if args.peers_malloc == "kept" else f"{peer.name} (kept)"
            slots.append((label, peer, True))
    for label, runner, keep in slots:
        log(f"{args.arch}: warm-up {label} ({args.warmup} steps)")
        _set_malloc(keep)
        runner.steps(args.warmup)
        runner.pause()
    seconds: dict[str, list[float]] = {label: [] for label, _, _ in slots}
    for round_index in range(args.rounds):
        for label, runner, keep in slots:
            _set_malloc(keep)
            runner.steps(runner.settle)
            start = time.perf_counter()
            runner.steps(args.steps)
            seconds[label].append(time.perf_counter() - start)
            runner.pause()
            rate = args.steps * args.batch_size / seconds[label][-1]
            log(f"{args.arch}: round {round_index + 1}/{args.rounds} {label}: "
                f"{rate:.1f} images/s")  # fmt: skip
    rates = {
        name: [args.steps * args.batch_size / s for s in values] for name, values in seconds.items()
    }
    medians = {name: statistics.median(values) for name, values in rates.items()}
    faster_peer = max(medians["lucidrains"], medians["lightly"])
    # FLOPs of the (shared) architecture's BYOL step, counted on ours.
    ours = runners[0].runner
    from byol.bench import step_flops_per_image

    flops = step_flops_per_image(ours.model, *ours.sample_views(min(args.batch_size, 16)))
    # Where our step's time goes (instrumented pass), for the analysis under the table.
    _set_malloc(True)
    records = ours.stage_times(max(2, args.steps))
    stages = {name: statistics.median(r[name] for r in records) for name in records[0]}
    return {
        "arch": args.arch, "image_size": args.image_size, "batch_size": args.batch_size,
        "precision": args.precision,
        "hidden_dim": args.hidden_dim, "projection_dim": args.projection_dim,
        "images_per_s": medians, "windows": rates,
        "ratio_vs_lucidrains": medians["ours"] / medians["lucidrains"],
        "ratio_vs_lightly": medians["ours"] / medians["lightly"],
        "ratio_vs_faster_peer": medians["ours"] / faster_peer,
        "flops_per_image": flops,
        "peers_malloc": args.peers_malloc,
        "gflops": {name: flops * value / 1e9 for name, value in medians.items()},
        "ours_stages_ms": {name: 1000 * value for name, value in stages.items()},
    }  # fmt: skip


def measure_ceiling(precisions: tuple[str, ...] = ("fp32",)) -> dict[str, float]:
    """The matmul and 3x3-convolution rates at each precision (keys name the precision)."""
    from byol.bench import conv3x3_rate, matmul_rate

    cpu = torch.device("cpu")
    rates = {}
    for precision in precisions:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        rates[f"matmul {precision} 2048²"] = matmul_rate(cpu, dtype)
        rates[f"conv3x3 {precision} channels_last"] = conv3x3_rate(cpu, dtype,
                                                                   channels_last=True)  # fmt: skip
    return rates


# The targets: (minimum ratio to the faster peer, minimum fraction of the ceiling).
TARGETS = {"convnet": (2.0, None), "resnet18": (1.2, 0.85)}


def _analysis(r: dict, ceiling: float) -> list[str]:
    """Targets met or not, and the bounds that explain a miss, from the run's own numbers."""
    m, flops, stages = r["images_per_s"], r["flops_per_image"], r["ours_stages_ms"]
    faster = max(m["lucidrains"], m["lightly"])
    fraction = flops * m["ours"] / 1e9 / ceiling
    kernels = stages["forward"] + stages["backward"]
    total = sum(stages.values())
    lines = [
        f"- **{r['arch']}, {r.get('precision', 'fp32')}**: ours "
        f"{r['ratio_vs_faster_peer']:.2f}× the faster peer, at "
        f"{100 * fraction:.0f}% of the machine's best measured rate ({ceiling:.0f} GFLOP/s); "
        f"the peers at {100 * flops * m['lucidrains'] / 1e9 / ceiling:.0f}% (lucidrains) and "
        f"{100 * flops * m['lightly'] / 1e9 / ceiling:.0f}% (lightly)."
    ]
    ratio_target, fraction_target = TARGETS.get(r["arch"], (None, None))
    verdicts = []
    if ratio_target is not None:
        met = r["ratio_vs_faster_peer"] >= ratio_target
        verdicts.append(f"≥ {ratio_target}× the faster peer: {'met' if met else 'not met'}")
    if fraction_target is not None:
        met = fraction >= fraction_target
        verdicts.append(f"≥ {100 * fraction_target:.0f}% of the ceiling: "
                        f"{'met' if met else 'not met'}")  # fmt: skip
    if verdicts:
        lines.append("  Targets: " + "; ".join(verdicts) + ".")
    at_ceiling = ceiling * 1e9 / flops
    kernels_only = m["ours"] * total / kernels
    lines.append(
        f"  Our step (instrumented pass, {total:.0f} ms): forward + backward "
        f"{100 * kernels / total:.0f}%, augmentation {100 * stages['augment'] / total:.1f}%, "
        f"LARS {100 * stages['optimizer'] / total:.1f}%, EMA {100 * stages['ema'] / total:.1f}%, "
        f"data {100 * stages['data'] / total:.1f}%. Bounds: at the ceiling the step would run "
        f"{at_ceiling:.0f} images/s ({at_ceiling / faster:.2f}× the faster peer); with everything "
        f"but the forward and backward free, {kernels_only:.0f} images/s "
        f"({kernels_only / faster:.2f}×). The forward and backward are PyTorch's own "
        "convolution, matmul and BatchNorm kernels, which the peers call too."
    )
    return lines


def format_results(
    results: list[dict], command: str, load: str, ceiling: dict[str, float] | None = None
) -> str:
    machine = device_info(torch.device("cpu"))
    versions = _versions()
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    first = results[0]
    lines = [
        "## Peers: same backbone, same images, same process",
        "",
        f"Measured {when} on {machine['cpu']} ({machine['cpu_count']} cores, "
        f"{machine['threads']} intra-op threads), Python {platform.python_version()}, "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f". Load averages (1, 5, 15 min): {load}.",
        "",
        "```",
        "bash benchmarks/peers-setup.sh",
        command,
        "```",
        "",
        f"{first['image_size']}×{first['image_size']} RGB, CPU, at each precision listed (bf16: "
        "ours as `--precision bf16` trains, the peers' forward and loss under "
        "`torch.autocast('cpu', dtype=torch.bfloat16)` as a user would add it; each precision's "
        "ratios from its own interleaved run). Projector and predictor "
        f"hidden {first['hidden_dim']}, output {first['projection_dim']} in all three (the "
        "paper's and lucidrains' defaults are 4096 / 256, lightly's example uses 1024 / 256; "
        "the peers were set to ours). Medians of interleaved windows; every window listed. "
        "GFLOP/s = FLOPs of the architecture's BYOL step (counted on ours) × images/s.",
        "",
        "| backbone | batch | precision | ours (img/s) | lucidrains (img/s) | lightly (img/s) "
        "| ours / lucidrains | ours / lightly | ours / faster peer | GFLOP/s ours / peers |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r["images_per_s"]
        g = r["gflops"]
        lines.append(
            f"| {r['arch']} | {r['batch_size']} | {r.get('precision', 'fp32')} "
            f"| {m['ours']:.1f} | {m['lucidrains']:.1f} "
            f"| {m['lightly']:.1f} | {r['ratio_vs_lucidrains']:.2f}× | "
            f"{r['ratio_vs_lightly']:.2f}× | **{r['ratio_vs_faster_peer']:.2f}×** | "
            f"{g['ours']:.1f} / {g['lucidrains']:.1f}, {g['lightly']:.1f} |"
        )
    lines += ["", "Windows (images/s):", ""]
    for r in results:
        for name, values in r["windows"].items():
            lines.append(f"- {r['arch']} {r.get('precision', 'fp32')} {name}: "
                         + ", ".join(f"{v:.1f}" for v in values))  # fmt: skip
    if ceiling:
        lines += [
            "",
            "Machine ceiling (best of 5 windows, before and after the runs): "
            + ", ".join(f"{k} {v:.1f}" for k, v in ceiling.items())
            + " GFLOP/s.",
            "",
        ]
        for r in results:  # each row against the ceiling at its own precision
            precision = r.get("precision", "fp32")
            lines += _analysis(r, max(v for k, v in ceiling.items() if f" {precision} " in k))
    malloc = {
        "default": "the peers' windows ran with glibc's own steady-state malloc thresholds (as "
        "they ship; ours raises them, see `byol.runtime.keep_freed_memory`)",
        "kept": "all three ran with our malloc setting (`--peers-malloc kept`: the peers get "
        "our freed-memory reuse too)",
        "both": "the table's peer columns ran with glibc's own steady-state malloc thresholds "
        "(as they ship; ours raises them, see `byol.runtime.keep_freed_memory`); extra windows "
        "gave the peers our setting too, for the ratios below",
    }[first["peers_malloc"]]
    lines += ["", f"Malloc: {malloc}."]
    for r in results:
        m = r["images_per_s"]
        if "lucidrains (kept)" in m:
            faster = max(m["lucidrains (kept)"], m["lightly (kept)"])
            lines.append(
                f"- {r['arch']}, peers with our malloc setting: lucidrains "
                f"{m['lucidrains (kept)']:.1f}, lightly {m['lightly (kept)']:.1f} images/s; "
                f"ours / faster peer **{m['ours'] / faster:.2f}×**."
            )
    lines += [
        "",
        "",
        "What differs besides speed: lucidrains draws one set of colour/blur/crop parameters "
        "per batch (not per image) and runs the two views concatenated through each network "
        "(BatchNorm statistics over both views); lightly and ours follow the paper (per-image "
        "parameters, per-view forwards). Optimisers: Adam (lucidrains' README), SGD (lightly's "
        "example), LARS (ours).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", nargs="+", default=["convnet", "resnet18"],
                        help="backbones (default: convnet resnet18)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, nargs="+", default=None,
                        help="one per --arch (default: 256 for convnet, 64 otherwise)")  # fmt: skip
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--precision", nargs="+", choices=("fp32", "bf16"), default=["fp32"],
                        help="one interleaved comparison per precision (bf16: the peers under "
                        "torch.autocast, ours as byol train --precision bf16)")  # fmt: skip
    parser.add_argument("--hidden-dim", type=int, default=4096)
    parser.add_argument("--projection-dim", type=int, default=256)
    parser.add_argument("--steps", type=int, nargs="+", default=None,
                        help="steps per window per --arch (default 8 convnet, else 2)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="lightly's DataLoader workers")
    parser.add_argument("--peers-malloc", choices=("default", "kept", "both"), default="both",
                        help="malloc state in the peers' windows: glibc's (default: as "
                        "they ship), ours (kept), or both, in separate windows")  # fmt: skip
    parser.add_argument("--dataset-batches", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    _import_peers()

    batch_sizes = args.batch_size or [256 if a == "convnet" else 64 for a in args.arch]
    step_counts = args.steps or [8 if a == "convnet" else 2 for a in args.arch]
    if len(batch_sizes) != len(args.arch) or len(step_counts) != len(args.arch):
        parser.error("give one --batch-size and one --steps per --arch")
    with open("/proc/loadavg") as loadavg:
        load = " ".join(loadavg.read().split()[:3])
    print("peers.py: measuring the matmul and convolution rates", file=sys.stderr)
    first_ceiling = measure_ceiling(tuple(args.precision))
    results = []
    for arch, batch_size, steps in zip(args.arch, batch_sizes, step_counts):
        for precision in args.precision:
            run_args = argparse.Namespace(**{**vars(args), "arch": arch, "precision": precision,
                                             "batch_size": batch_size, "steps": steps})  # fmt: skip
            r = compare(run_args, log=lambda m: print(m, file=sys.stderr, flush=True))
            results.append(r)
            rates = ", ".join(f"{k} {v:.1f} img/s" for k, v in r["images_per_s"].items())
            ratio = r["ratio_vs_faster_peer"]
            print(f"{arch} {precision}: {rates}; ours / faster peer {ratio:.2f}x", flush=True)
    with open("/proc/loadavg") as loadavg:
        load += " at start, " + " ".join(loadavg.read().split()[:3]) + " at the end"
    command = "benchmarks/.peers-venv/bin/python benchmarks/peers.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    # A busy machine only lowers a rate: keep the better of the two measurements.
    ceiling = {name: max(rate, first_ceiling[name])
               for name, rate in measure_ceiling(tuple(args.precision)).items()}  # fmt: skip
    text = format_results(results, command, load, ceiling)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.write:
        write_section("peers", text)
        print(f"wrote {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
