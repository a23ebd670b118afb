"""A tuning run with a recipe change that has no config key yet (round 4 of docs/presets.md).

    PATCH='{"predictor_lr": 10}' .venv/bin/python benchmarks/tune_patched.py NAME 'JSON' [SIZES]

Applies the changes named in the ``PATCH`` environment variable (JSON), then runs
``benchmarks/tune_fashion_mnist.py`` with the same arguments:

* ``"predictor_lr": k``: the predictor's parameters get k × the learning rate (LARS as usual);
* ``"jitter": [brightness, contrast]``: colour-jitter strengths of both views of the
  ``fashion-mnist`` augmentation preset (grayscale images: saturation and hue do nothing);
* ``"solarize": [p1, p2]``: solarisation probabilities of view 1 and view 2.

(Round 4's 512-wide run patched the encoder's widths; that encoder is now ``convnet-512``, so
``'{"arch": "convnet-512"}'`` reproduces it without a patch.)

These are experiment hooks, not features: a change that wins becomes a config key or preset.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from dataclasses import replace
from pathlib import Path

import byol.augment as augment
import byol.optim as optim
import byol.train as train

patch = json.loads(os.environ.get("PATCH", "{}"))

if "predictor_lr" in patch:
    scale = float(patch["predictor_lr"])
    plain_groups = optim.param_groups

    def groups_with_predictor_scale(model, weight_decay, *, parameters=None):
        predictor = {id(p) for p in model.predictor.parameters()}
        groups = []
        for group in plain_groups(model, weight_decay, parameters=parameters):
            rest = [p for p in group["params"] if id(p) not in predictor]
            head = [p for p in group["params"] if id(p) in predictor]
            groups += [{**group, "params": rest}] if rest else []
            groups += [{**group, "params": head, "lr_scale": scale}] if head else []
        return groups

    plain_step = optim.LARS.step

    def scaled_step(self, closure=None):
        # The trainer sets every group's lr each step; scale it for this step only.
        saved = [group["lr"] for group in self.param_groups]
        for group in self.param_groups:
            group["lr"] *= group.get("lr_scale", 1.0)
        try:
            return plain_step(self, closure)
        finally:
            for group, lr in zip(self.param_groups, saved, strict=True):
                group["lr"] = lr

    train.param_groups = groups_with_predictor_scale
    optim.LARS.step = scaled_step

view1, view2 = augment.PRESETS["fashion-mnist"]
if "jitter" in patch:
    brightness, contrast = patch["jitter"]
    view1 = replace(view1, brightness=brightness, contrast=contrast)
    view2 = replace(view2, brightness=brightness, contrast=contrast)
if "solarize" in patch:
    view1 = replace(view1, solarize_prob=patch["solarize"][0])
    view2 = replace(view2, solarize_prob=patch["solarize"][1])
augment.PRESETS["fashion-mnist"] = (view1, view2)

sys.argv = ["tune_fashion_mnist.py", *sys.argv[1:]]
runpy.run_path(str(Path(__file__).with_name("tune_fashion_mnist.py")), run_name="__main__")
