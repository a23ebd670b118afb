"""Two-view augmentation throughput: byol.augment.BYOLAugment vs per-image torchvision v2.

Cases (batch 256, uint8 RGB inputs held in memory):

* 32 px output from 32×32 inputs, ``cifar`` preset;
* 96 px output from 96×96 inputs, ``imagenet`` preset.

Ours runs batched in the main process (with torch's default intra-op threads, and again with 1
thread) and batched inside 2 DataLoader workers as their collate_fn. The baseline is the
equivalent torchvision.transforms.v2 pipeline applied per image in a Dataset, fed through a
DataLoader with 2 worker processes (1 thread each, torch's default there). Both views are
produced in all cases. Each repeat processes the whole in-memory set; the medians of the
repeats are reported. A CUDA column (ours, batch already on the GPU) is added when a GPU is
present.

On a shared machine whose cores are oversubscribed, torch's multi-threaded ops wait on each
other at every op, which is why the 1-thread and in-worker columns are reported too.

Writes its section of benchmarks/RESULTS.md, between ``<!-- augment:begin -->`` and
``<!-- augment:end -->``.

    python benchmarks/augment.py [--repeats 5] [--images-32 2048] [--images-96 512] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from byol.augment import IMAGENET_MEAN, IMAGENET_STD, PRESETS, BYOLAugment, ViewConfig
from byol.color import blur_kernel_size

BATCH = 256
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
BEGIN, END = "<!-- augment:begin -->", "<!-- augment:end -->"


def torchvision_view(config: ViewConfig, size: int) -> v2.Compose:
    """The per-image torchvision equivalent of one view (ops with probability 0 left out)."""
    steps: list = [
        v2.RandomResizedCrop(
            size, scale=config.crop_scale, ratio=config.crop_ratio, antialias=True
        ),
        v2.RandomHorizontalFlip(config.flip_prob),
        v2.RandomApply(
            [v2.ColorJitter(config.brightness, config.contrast, config.saturation, config.hue)],
            p=config.jitter_prob,
        ),
        v2.RandomGrayscale(config.grayscale_prob),
    ]
    if config.blur_prob > 0:
        blur = v2.GaussianBlur(blur_kernel_size(size), sigma=config.blur_sigma)
        steps.append(v2.RandomApply([blur], p=config.blur_prob))
    if config.solarize_prob > 0:
        steps.append(v2.RandomSolarize(threshold=128, p=config.solarize_prob))  # uint8 >= 0.5
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(steps)


class TwoViews(Dataset):
    """In-memory uint8 images; each item is the two augmented views of one image."""

    def __init__(self, images: torch.Tensor, view1: v2.Compose, view2: v2.Compose) -> None:
        self.images, self.view1, self.view2 = images, view1, view2

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        return self.view1(image), self.view2(image)


def time_torchvision(images: torch.Tensor, preset: str, size: int, repeats: int) -> list[float]:
    view1, view2 = (torchvision_view(c, size) for c in PRESETS[preset])
    loader = DataLoader(
        TwoViews(images, view1, view2),
        batch_size=BATCH,
        num_workers=2,
        persistent_workers=True,
        shuffle=False,
    )
    return time_loader(loader, len(images), repeats)


class ImageBlock(Dataset):
    """In-memory uint8 images fetched a whole batch at a time (``__getitems__``)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        return self.images[indices[0] : indices[-1] + 1]  # sequential sampler: a slice


class AugmentCollate:
    """collate_fn running our batched augmentation inside a worker (seeded per worker)."""

    def __init__(self, preset: str, size: int) -> None:
        self.aug = BYOLAugment(preset, size)
        self.generator: torch.Generator | None = None

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.generator is None:
            info = torch.utils.data.get_worker_info()
            self.generator = torch.Generator().manual_seed(info.id if info else 0)
        return self.aug(batch, generator=self.generator)


def time_ours_in_workers(images: torch.Tensor, preset: str, size: int, repeats: int) -> list[float]:
    loader = DataLoader(
        ImageBlock(images),
        batch_size=BATCH,
        num_workers=2,
        persistent_workers=True,
        shuffle=False,
        collate_fn=AugmentCollate(preset, size),
    )
    return time_loader(loader, len(images), repeats)


def time_loader(loader: DataLoader, count: int, repeats: int) -> list[float]:
    for _ in loader:  # warm-up: start the workers
        pass
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in loader:
            pass
        rates.append(count / (time.perf_counter() - start))
    return rates


def time_ours(
    images: torch.Tensor, preset: str, size: int, repeats: int, device: torch.device
) -> list[float]:
    aug = BYOLAugment(preset, size)
    generator = torch.Generator(device=device).manual_seed(0)
    images = images.to(device)
    batches = images.split(BATCH)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for batch in batches[:2]:  # warm-up
        aug(batch, generator=generator)
    sync()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches:
            aug(batch, generator=generator)
        sync()
        rates.append(len(images) / (time.perf_counter() - start))
    return rates


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_section(text: str) -> None:
    section = f"{BEGIN}\n{text.rstrip()}\n{END}\n"
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        updated = head + section + ("\n" + tail if tail else "")
    else:
        updated = current.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(updated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images-32", type=int, default=2048, help="images per repeat, 32 px")
    parser.add_argument("--images-96", type=int, default=512, help="images per repeat, 96 px")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    load_before = os.getloadavg()
    threads = torch.get_num_threads()
    cpu = torch.device("cpu")
    cases = [(32, "cifar", args.images_32), (96, "imagenet", args.images_96)]
    rows = []
    for size, preset, count in cases:
        images = torch.randint(
            0, 256, (count, 3, size, size), dtype=torch.uint8, generator=torch.Generator()
        )
        row = {"size": size, "preset": preset}
        row["torchvision"] = statistics.median(time_torchvision(images, preset, size, args.repeats))
        row["ours"] = statistics.median(time_ours(images, preset, size, args.repeats, cpu))
        torch.set_num_threads(1)
        row["ours_1t"] = statistics.median(time_ours(images, preset, size, args.repeats, cpu))
        torch.set_num_threads(threads)
        row["ours_workers"] = statistics.median(
            time_ours_in_workers(images, preset, size, args.repeats)
        )
        if torch.cuda.is_available():
            cuda = torch.device("cuda")
            row["gpu"] = statistics.median(time_ours(images, preset, size, args.repeats, cuda))
        rows.append(row)
        base = row["torchvision"]
        print(
            f"{size:>3} px {preset:<9} torchvision {base:7.0f} img/s | ours {threads} threads "
            f"{row['ours']:7.0f} ({row['ours'] / base:.1f}x) | 1 thread {row['ours_1t']:7.0f} "
            f"({row['ours_1t'] / base:.1f}x) | 2 workers {row['ours_workers']:7.0f} "
            f"({row['ours_workers'] / base:.1f}x)"
            + (f" | CUDA {row['gpu']:9.0f}" if "gpu" in row else ""),
            flush=True,
        )
    load_after = os.getloadavg()

    gpu_name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    lines = [
        "## Augmentations: two views per image (`benchmarks/augment.py`)",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {cpu_model()}, {os.cpu_count()} logical cores"
        + (f"; GPU {gpu_name}" if gpu_name else "; no GPU"),
        f"- torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"Python {platform.python_version()}",
        f"- Command: `{' '.join(['python', 'benchmarks/augment.py', *sys.argv[1:]])}`",
        f"- Batch {BATCH}, uint8 RGB in memory, both views, float32 normalised output; median of "
        f"{args.repeats} repeats over {args.images_32} (32 px) / {args.images_96} (96 px) "
        f"images. Load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after "
        "on this shared machine: absolute numbers are noisy, compare within a row.",
        "- Baseline: per-image `torchvision.transforms.v2` (RandomResizedCrop, "
        "RandomHorizontalFlip, RandomApply(ColorJitter, 0.8), RandomGrayscale(0.2), "
        "GaussianBlur / RandomSolarize with the view's probabilities, ToDtype, Normalize) in a "
        "Dataset through a DataLoader with 2 workers.",
        f"- Ours: `BYOLAugment` on whole batches: in the main process with torch's default "
        f"{threads} intra-op threads, with 1 thread, and as the `collate_fn` of a DataLoader "
        "with 2 workers (1 thread each, like the baseline's workers).",
        "- When the load average exceeds the core count, every multi-threaded op waits for a "
        "descheduled sibling thread, so the default-threads column collapses; the 1-thread and "
        "in-worker columns show the cost of the batched ops themselves. Code that augments on a "
        "busy or small CPU should run it with 1 intra-op thread (e.g. in DataLoader workers).",
        "",
        "| output | preset | torchvision, 2 workers | ours, "
        f"{threads} threads | ours, 1 thread | ours, 2 workers |"
        + (" ours, CUDA |" if gpu_name else ""),
        "|---|---|---:|---:|---:|---:|" + ("---:|" if gpu_name else ""),
    ]
    for row in rows:
        base = row["torchvision"]
        cells = [f"{row['size']}×{row['size']}", row["preset"], f"{base:,.0f} img/s"]
        for key in ("ours", "ours_1t", "ours_workers"):
            cells.append(f"{row[key]:,.0f} img/s ({row[key] / base:.1f}×)")
        if gpu_name:
            cells.append(f"{row['gpu']:,.0f} img/s ({row['gpu'] / base:.0f}×)")
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    if not args.no_write:
        write_section(text)
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
