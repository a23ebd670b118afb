"""Does mirroring help the linear probe? One tuning run's encoder, scored on its holdout only.

    .venv/bin/python benchmarks/mirror_probe.py RUN_DIR

``RUN_DIR`` is a run made by ``benchmarks/tune_preset.py`` (with ``holdout`` in its config;
the test split is never read). Three linear probes on the frozen encoder's features at the
run's evaluation size, each with the benchmark's protocol (learning rate chosen on 10% of the
training rows):

* ``plain``: the benchmark's probe;
* ``mirrored_train``: trained on every training image and its horizontal mirror (twice the
  rows; the paper trains its probe on flipped images), scored on the plain held-out images;
* ``mirrored_train_test_average``: as above, each held-out image scored on the mean of its
  own and its mirror's features. That is test-time augmentation, which the paper's protocol
  does not do; it is measured to know its size, not to be reported as the benchmark.

Only in ``mirrored_train``'s selection can an image and its mirror fall on both sides of the
10% split, which flatters its chosen rate's held-out score but not the final holdout score.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from byol.config import load_config
from byol.evaluate import extract_features, linear_probe
from byol.handover import load_encoder
from byol.train.monitor import load_training_data


def holdout_split(run_dir: Path):
    """A tuning run's config, pre-training images and held-out images; refuses a run without
    a holdout, so that no script built on it ever scores on the test split."""
    config = load_config(run_dir / "config.yaml")
    if not config.holdout:
        raise SystemExit(f"{run_dir / 'config.yaml'} has no holdout; this script never scores "
                         "on the test split")  # fmt: skip
    data, monitor = load_training_data(config)
    return config, data, monitor.queries


def mirror_probes(run_dir: Path, checkpoint: str = "last.pt") -> dict:
    """The three probes' holdout top-1 (and chosen learning rates) for one run."""
    config, data, held_out = holdout_split(run_dir)
    encoder, info = load_encoder(run_dir / "checkpoints" / checkpoint)

    def features(images: torch.Tensor) -> torch.Tensor:
        return extract_features(encoder, images, mean=info.mean, std=info.std,
                                size=info.image_size)  # fmt: skip

    train, train_mirror = features(data.images), features(data.images.flip(-1))
    test, test_mirror = features(held_out.images), features(held_out.images.flip(-1))
    both = torch.cat([train, train_mirror])
    both_labels = torch.cat([data.labels, data.labels])
    seed = config.seed
    probes = {
        "plain": linear_probe(train, data.labels, test, held_out.labels, seed=seed),
        "mirrored_train": linear_probe(both, both_labels, test, held_out.labels, seed=seed),
        "mirrored_train_test_average": linear_probe(
            both, both_labels, (test + test_mirror) / 2, held_out.labels, seed=seed
        ),
    }
    return {"run": str(run_dir), "checkpoint": checkpoint, "eval_size": info.image_size,
            **{name: {"top1": p["top1"], "learning_rate": p["learning_rate"]}
               for name, p in probes.items()}}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a tune_preset.py run folder")
    parser.add_argument("--checkpoint", default="last.pt")
    args = parser.parse_args()
    print(json.dumps(mirror_probes(args.run_dir, args.checkpoint)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
