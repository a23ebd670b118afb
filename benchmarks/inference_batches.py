"""How fast a frozen encoder infers at each batch size and memory layout, and what one epoch of
few-label fine-tuning costs (training plus held-out scoring).

    .venv/bin/python benchmarks/inference_batches.py --threads 1 --write

Why: every evaluation path runs the encoder forward only (features for the linear probe and
k-NN, the k-NN monitor during training, ``byol embed``, RankMe, held-out scores while
fine-tuning), and they all used batches of 512. On a CPU a smaller batch whose activations stay
in the caches runs faster; :func:`byol.runtime.inference_batch_size` picks the batch from the
device, and this script measures the choice. Part one: images/s of ``extract_features`` per
batch size, with the model and input contiguous or both channels-last. Part two: one
fine-tuning epoch on 600 labelled images and the scoring of 6,000 held-out ones, as
``byol eval --protocol finetune`` does every epoch at 1% of Fashion-MNIST's labels; with
``PYTHONPATH=<another checkout>/src`` it times that checkout's fine-tuning the same way.
Random-initialised encoder and random images: speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from byol import backbones
from byol.evaluate import extract_features
from byol.evaluate.finetune import FineTuneRun
from results_file import command_line, publish, report_header

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def encode_rates(encoder: torch.nn.Module, images: torch.Tensor, batch_sizes: list[int],
                 repeats: int) -> dict[tuple[str, int], float]:  # fmt: skip
    """Median images/s of ``extract_features`` per (layout, batch size), interleaved."""
    seconds: dict[tuple[str, int], list[float]] = {}
    for _ in range(repeats):
        for layout, memory_format in LAYOUTS.items():
            model = encoder.to(memory_format=memory_format)
            for batch_size in batch_sizes:
                start = time.perf_counter()
                extract_features(model, images, mean=(0.5,), std=(0.25,), batch_size=batch_size,
                                 channels_last=layout == "channels_last")  # fmt: skip
                seconds.setdefault((layout, batch_size), []).append(time.perf_counter() - start)
    encoder.to(memory_format=torch.contiguous_format)
    return {key: len(images) / statistics.median(times) for key, times in seconds.items()}


def finetune_epoch(encoder: torch.nn.Module, feature_dim: int, channels: int, size: int,
                   repeats: int, n_train: int = 600,
                   n_val: int = 6000) -> dict[str, float]:  # fmt: skip
    """Median seconds of one fine-tuning epoch (``n_train`` images, batch 64) and of scoring
    ``n_val`` held-out images."""
    generator = torch.Generator().manual_seed(0)
    counts = {"train": n_train, "val": n_val, "test": 10}
    images = {part: torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8,
                                  generator=generator) for part, n in counts.items()}  # fmt: skip
    labels = {part: torch.randint(0, 10, (n,), generator=generator) for part, n in counts.items()}
    job = FineTuneRun(encoder, feature_dim, images, labels, mean=(0.5,) * channels,
                      std=(0.25,) * channels, size=size, batch_size=64, weight_decay=0.0,
                      crop="pad", seed=0, device=torch.device("cpu"))  # fmt: skip
    job.train(0.1, 1)  # warm-up
    train_s, score_s = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        model, _ = job.train(0.1, 1)
        trained = time.perf_counter()
        job.scores(model, "val")
        train_s.append(trained - start)
        score_s.append(time.perf_counter() - trained)
    return {"train": statistics.median(train_s), "score": statistics.median(score_s)}


def report(args: argparse.Namespace, rates: dict, epoch: dict | None) -> str:
    conditions = (f"{args.threads} thread(s), fp32, {args.arch} at {args.image_size} px, "
                  f"{args.channels} channel(s), {args.images} images per pass over the set, "
                  f"median of {args.repeats} interleaved repeats")  # fmt: skip
    flags = "".join(f" {arg}" for arg in sys.argv[1:] if arg != "--write")
    lines = report_header("Inference batches (`benchmarks/inference_batches.py`)", conditions,
                          command_line("inference_batches.py", args.write) + flags)  # fmt: skip
    lines += ["| batch | contiguous (images/s) | channels_last (images/s) |", "|---:|---:|---:|"]
    for batch_size in args.batch_sizes:
        lines.append(f"| {batch_size} | {rates['contiguous', batch_size]:.0f} | "
                     f"{rates['channels_last', batch_size]:.0f} |")  # fmt: skip
    if epoch is not None:
        lines += ["", f"One fine-tuning epoch on 600 images: {epoch['train']:.2f} s of training "
                  f"and {epoch['score']:.2f} s scoring 6,000 held-out images "
                  f"(package: `{Path(__import__('byol').__file__).parent}`)."]  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="convnet-512")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--images", type=int, default=3072)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--finetune", action=argparse.BooleanOptionalAction, default=True,
                        help="also time a fine-tuning epoch and its held-out scoring")  # fmt: skip
    parser.add_argument("--write", action="store_true",
                        help="put the table in benchmarks/RESULTS.md")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    encoder, feature_dim = backbones.build(args.arch, small_images=True,
                                           in_channels=args.channels,
                                           image_size=args.image_size)  # fmt: skip
    shape = (args.images, args.channels, args.image_size, args.image_size)
    images = torch.randint(0, 256, shape, dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))  # fmt: skip
    rates = encode_rates(encoder, images, args.batch_sizes, args.repeats)
    epoch = (finetune_epoch(encoder, feature_dim, args.channels, args.image_size, args.repeats)
             if args.finetune else None)  # fmt: skip
    publish("inference_batches", report(args, rates, epoch), args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
