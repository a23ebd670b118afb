"""Few labels (issue 21): a frozen linear probe, and fine-tuning with a chosen head start and
rate grid, on the class-balanced labelled subsets of ``byol eval --protocol finetune``.

The labelled images are ``class_balanced_subset(labels, fraction, seed)`` drawn from the
training split minus the protocol's held-out 10% (``seed + 1``), exactly as ``byol eval
--protocol finetune`` draws them. The probe is ``byol.evaluate.linear_probe`` (rate chosen on
10% of the labelled images); ``--finetune`` runs ``byol.evaluate.finetune`` with
``--head-init`` and the given rate grid (rate and epochs chosen on the held-out 10%). Both are
scored on the test split.

    .venv/bin/python benchmarks/few_label_probe.py RUN [--fractions 0.01 0.1]
    .venv/bin/python benchmarks/few_label_probe.py RUN --fractions 0.01 --finetune 0.003 0.001 \\
        0.0003 --head-init linear-probe --epochs 15
"""

from __future__ import annotations

import argparse
import time

from byol.evaluate import linear_probe
from byol.evaluate.finetune import HEAD_INITS, class_balanced_subset, finetune
from byol.evaluation_files import augmented_crop, open_evaluation
from byol.evaluation_label_scarce import FINETUNE_VAL_FRACTION
from byol.handover import encode_dataset


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--finetune", type=float, nargs="+", metavar="LR",
                        help="also fine-tune with this learning-rate grid")  # fmt: skip
    parser.add_argument("--head-init", choices=HEAD_INITS, default="random")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    run = open_evaluation(args.checkpoint, data=None, data_root=None, device=None)
    train, test, info = run.train, run.test, run.info
    val = class_balanced_subset(train.labels, FINETUNE_VAL_FRACTION, seed=args.seed + 1)
    train_features = encode_dataset(run.encoder, train, info)
    test_features = encode_dataset(run.encoder, test, info)
    for fraction in args.fractions:
        subset = class_balanced_subset(train.labels, fraction, seed=args.seed, exclude=val)
        probe = linear_probe(train_features[subset], train.labels[subset], test_features,
                             test.labels, seed=args.seed)  # fmt: skip
        print(f"{100 * fraction:g}% labels ({len(subset)} images): linear probe top-1 "
              f"{100 * float(probe['top1']):.2f}%", flush=True)  # fmt: skip
        if not args.finetune:
            continue
        started = time.perf_counter()
        images = {"train": train.images[subset], "val": train.images[val], "test": test.images}
        labels = {"train": train.labels[subset], "val": train.labels[val], "test": test.labels}
        result = finetune(run.encoder, info.feature_dim, images, labels, mean=info.mean,
                          std=info.std, size=info.image_size, crop=augmented_crop(info),
                          seed=args.seed, device=run.device, learning_rates=args.finetune,
                          epochs=args.epochs, head_init=args.head_init)  # fmt: skip
        print(f"{100 * fraction:g}% labels: fine-tuned ({args.head_init} head, grid "
              f"{args.finetune}) top-1 {100 * result['top1']:.2f}% (lr "
              f"{result['learning_rate']:g}, {result['epochs']} epochs, "
              f"{time.perf_counter() - started:.0f}s)", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
