"""Named starting points for ``byol train --preset``.

The ``imagenet-*`` presets mirror the paper's ImageNet table by schedule length (base learning
rate for batch 256, weight decay, τ_base); ``cifar`` is the common CIFAR reproduction recipe;
``fashion-mnist`` is the project's own tuned CPU recipe (docs/presets.md says how it was
chosen).
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRESETS"]

PRESETS: dict[str, dict[str, Any]] = {
    "imagenet-40": {"arch": "resnet50", "epochs": 40, "batch_size": 4096, "base_lr": 0.45,
                    "weight_decay": 1e-6, "target_decay": 0.97, "augment": "imagenet",
                    "image_size": 224, "warmup_epochs": 10},
    "imagenet-100": {"arch": "resnet50", "epochs": 100, "batch_size": 4096, "base_lr": 0.45,
                     "weight_decay": 1e-6, "target_decay": 0.99, "augment": "imagenet",
                     "image_size": 224, "warmup_epochs": 10},
    "imagenet-300": {"arch": "resnet50", "epochs": 300, "batch_size": 4096, "base_lr": 0.3,
                     "weight_decay": 1e-6, "target_decay": 0.99, "augment": "imagenet",
                     "image_size": 224, "warmup_epochs": 10},
    "imagenet-1000": {"arch": "resnet50", "epochs": 1000, "batch_size": 4096, "base_lr": 0.2,
                      "weight_decay": 1.5e-6, "target_decay": 0.996, "augment": "imagenet",
                      "image_size": 224, "warmup_epochs": 10},
    # CIFAR reproductions: ResNet-18 with the small-image stem, batch 256, 1000 epochs.
    "cifar": {"arch": "resnet18", "small_images": True, "epochs": 1000, "batch_size": 256,
              "base_lr": 1.0, "weight_decay": 1e-5, "target_decay": 0.99, "augment": "cifar",
              "warmup_epochs": 10},
    "fashion-mnist": {"data": "fashion-mnist", "arch": "convnet-512", "epochs": 4,
                      "batch_size": 128, "base_lr": 8.0, "weight_decay": 1e-5,
                      "target_decay": 0.996, "augment": "fashion-mnist", "warmup_epochs": 0.5,
                      "hidden_dim": 1024, "image_size": 16, "eval_image_size": 28},
}  # fmt: skip
