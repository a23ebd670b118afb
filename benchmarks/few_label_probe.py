"""A linear probe on few labels (issue 21): what a checkpoint's frozen features give with 1% and
10% of the training labels, the reference point for semi-supervised fine-tuning.

The labelled images are ``byol.evaluate.finetune.class_balanced_subset(labels, fraction,
seed)``; the probe is ``byol.evaluate.linear_probe`` (learning rate chosen on 10% of those
labelled images, scored on the test split).

    .venv/bin/python benchmarks/few_label_probe.py RUN_OR_CHECKPOINT [--fractions 0.01 0.1]
"""

from __future__ import annotations

import argparse

from byol.evaluate import linear_probe
from byol.evaluate.finetune import class_balanced_subset
from byol.handover import encode_dataset, load_data_for, load_encoder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    encoder, info = load_encoder(args.checkpoint)
    train, test = (load_data_for(info, split=split) for split in ("train", "test"))
    train_features = encode_dataset(encoder, train, info)
    test_features = encode_dataset(encoder, test, info)
    for fraction in args.fractions:
        subset = class_balanced_subset(train.labels, fraction, seed=args.seed)
        result = linear_probe(train_features[subset], train.labels[subset], test_features,
                              test.labels, seed=args.seed)  # fmt: skip
        print(f"{100 * fraction:g}% labels ({len(subset)} images): linear probe top-1 "
              f"{100 * float(result['top1']):.2f}%")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
