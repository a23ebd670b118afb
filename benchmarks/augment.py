"""Two-view augmentation throughput: byol.augment.BYOLAugment vs per-image torchvision v2.

Cases (batch 256, uint8 RGB inputs held in memory):

* 32 px output from 32×32 inputs, ``cifar`` preset;
* 96 px output from 96×96 inputs, ``imagenet`` preset.

Ours runs batched in the main process (with torch's default intra-op threads, and again with 1
thread); the baseline is the equivalent torchvision.transforms.v2 pipeline applied per image in
a Dataset, fed through a DataLoader with 2 worker processes (1 thread each, torch's default
there). Both views are produced in both. Each repeat processes the whole in-memory set; the
medians of the repeats are reported. A CUDA row (ours, batch already on the GPU) is added when
a GPU is present.

Writes its section of benchmarks/RESULTS.md, between ``<!-- augment:begin -->`` and
``<!-- augment:end -->``.

    python benchmarks/augment.py [--repeats 5] [--images-32 2048] [--images-96 1024] [--no-write]
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
    for _ in loader:  # warm-up: start the workers
        pass
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in loader:
            pass
        rates.append(len(images) / (time.perf_counter() - start))
    del loader
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
    parser.add_argument("--images-96", type=int, default=1024, help="images per repeat, 96 px")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    load_before = os.getloadavg()
    default_threads = torch.get_num_threads()
    cases = [(32, "cifar", args.images_32), (96, "imagenet", args.images_96)]
    rows = []
    for size, preset, count in cases:
        images = torch.randint(
            0, 256, (count, 3, size, size), dtype=torch.uint8, generator=torch.Generator()
        )
        base = statistics.median(time_torchvision(images, preset, size, args.repeats))
        ours = statistics.median(time_ours(images, preset, size, args.repeats, torch.device("cpu")))
        torch.set_num_threads(1)
        ours_1t = statistics.median(
            time_ours(images, preset, size, args.repeats, torch.device("cpu"))
        )
        torch.set_num_threads(default_threads)
        gpu = None
        if torch.cuda.is_available():
            gpu = statistics.median(
                time_ours(images, preset, size, args.repeats, torch.device("cuda"))
            )
        rows.append((size, preset, base, ours, ours_1t, gpu))
        print(
            f"{size:>3} px {preset:<9} torchvision 2 workers {base:9.0f} img/s | ours "
            f"{default_threads} threads {ours:9.0f} img/s ({ours / base:.1f}x) | ours 1 thread "
            f"{ours_1t:9.0f} img/s ({ours_1t / base:.1f}x)"
            + (f" | ours CUDA {gpu:9.0f} img/s" if gpu else ""),
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
        f"- Batch {BATCH}, uint8 RGB in memory, both views; median of {args.repeats} repeats "
        f"over {args.images_32} (32 px) / {args.images_96} (96 px) images. Load average "
        f"(1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after: the machine is "
        "shared, so absolute numbers are noisy; both sides ran in the same run.",
        "- Baseline: per-image `torchvision.transforms.v2` (RandomResizedCrop, "
        "RandomHorizontalFlip, RandomApply(ColorJitter, 0.8), RandomGrayscale(0.2), "
        "GaussianBlur / RandomSolarize with the view's probabilities, ToDtype, Normalize) in a "
        "Dataset through a DataLoader with 2 workers.",
        "",
        "| output | preset | torchvision, 2 workers (img/s) | ours, "
        f"{default_threads} threads (img/s) | ratio | ours, 1 thread (img/s) | ratio |"
        + (" ours, CUDA (img/s) |" if gpu_name else ""),
        "|---|---|---:|---:|---:|---:|---:|" + ("---:|" if gpu_name else ""),
    ]
    for size, preset, base, ours, ours_1t, gpu in rows:
        lines.append(
            f"| {size}×{size} | {preset} | {base:,.0f} | {ours:,.0f} | {ours / base:.1f}× | "
            f"{ours_1t:,.0f} | {ours_1t / base:.1f}× |" + (f" {gpu:,.0f} |" if gpu else "")
        )
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    if not args.no_write:
        write_section(text)
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
