"""One tuning run of the Fashion-MNIST preset, scored on a 5000-image holdout of the training
split (the test split is never used for choices).

    .venv/bin/python benchmarks/tune_fashion_mnist.py NAME '{"epochs": 1, "base_lr": 2.0}'

Pre-trains with the fashion-mnist preset plus the JSON overrides, then scores the encoder with
k-NN (k = 200, on a 10,000-image bank of the remaining training images) and a linear probe
trained on that bank; appends one JSON line to /tmp/tune/results.jsonl.
"""

import json
import shutil
import sys
import time

from byol.config import resolve
from byol.evaluate import extract_features, linear_probe
from byol.train import Trainer

name = sys.argv[1]
overrides = json.loads(sys.argv[2])
base = {
    "preset": "fashion-mnist", "holdout": 5000, "knn_every": 1, "tensorboard": False,
    "log_every": 50, "checkpoint_every": 100000, "num_workers": 0, "out": f"/tmp/tune/{name}",
}  # fmt: skip
shutil.rmtree(base["out"], ignore_errors=True)
config = resolve({**base, **overrides})
trainer = Trainer(config, show_progress=False)
t = time.time()
result = trainer.fit()
seconds = time.time() - t
data, bank, queries = trainer._load_data()
enc = trainer.model.online_encoder
fb = extract_features(enc, bank.images, mean=trainer.mean, std=trainer.std, size=trainer.image_size)
fq = extract_features(
    enc, queries.images, mean=trainer.mean, std=trainer.std, size=trainer.image_size
)
probe = linear_probe(fb, bank.labels, fq, queries.labels, epochs=50)
out = {
    "name": name,
    "overrides": overrides,
    "train_seconds": seconds,
    "knn_top1": result.knn_top1,
    "linear_top1_bank10k": probe["top1"],
    "lr": probe["learning_rate"],
    "final_loss": result.loss,
}
print(json.dumps(out))
with open("/tmp/tune/results.jsonl", "a") as f:
    f.write(json.dumps(out) + "\n")
