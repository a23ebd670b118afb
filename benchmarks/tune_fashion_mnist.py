"""One tuning run of the Fashion-MNIST preset, scored on a 5000-image holdout of the training
split (the test split is never used for choices).

    .venv/bin/python benchmarks/tune_fashion_mnist.py NAME '{"epochs": 2.5, "base_lr": 4.0}' [SIZES]

Pre-trains with the fashion-mnist preset plus the JSON overrides on the other 55,000 training
images, then scores the online encoder on the holdout: a linear probe trained on the features
of all 55,000 pre-training images (learning rate chosen on 10% of them, as in the benchmark)
and k-NN (k = 200, T = 0.1) with the same images as the memory bank, at the run's evaluation
size, or at each side in the optional JSON list SIZES (e.g. '[16, 20, 24, 28]', the round-3
view-size runs). Appends one JSON line to /tmp/tune/results.jsonl.
"""

import json
import shutil
import sys
import time

from byol.config import resolve
from byol.evaluate import extract_features, knn_accuracy, linear_probe
from byol.train import Trainer

name = sys.argv[1]
overrides = json.loads(sys.argv[2])
base = {
    "preset": "fashion-mnist", "holdout": 5000, "knn_every": 0, "tensorboard": False,
    "log_every": 50, "checkpoint_every": 100000, "num_workers": 0, "out": f"/tmp/tune/{name}",
}  # fmt: skip
shutil.rmtree(base["out"], ignore_errors=True)
config = resolve({**base, **overrides})
trainer = Trainer(config, show_progress=False)
start = time.time()
result = trainer.fit()
seconds = time.time() - start
data, _, queries = trainer._load_data()
encoder = trainer.model.online_encoder
eval_sizes = json.loads(sys.argv[3]) if len(sys.argv) > 3 else [trainer.image_size]
by_size = {}
for size in eval_sizes:
    scale = {"mean": trainer.mean, "std": trainer.std, "size": size}
    f_train = extract_features(encoder, data.images, **scale)
    f_query = extract_features(encoder, queries.images, **scale)
    probe = linear_probe(f_train, data.labels, f_query, queries.labels, seed=0)
    knn = knn_accuracy(f_train, data.labels, f_query, queries.labels, k=200, temperature=0.1)
    by_size[size] = {"linear_top1": probe["top1"], "knn_top1": knn["top1"],
                     "lr": probe["learning_rate"]}  # fmt: skip
out = {
    "name": name,
    "overrides": overrides,
    "steps": result.step,
    "train_seconds": round(seconds, 1),
    "images_per_s": round(result.step * trainer.config.batch_size / seconds, 1),
    **by_size[eval_sizes[0]],
    "by_eval_size": by_size,
    "final_loss": result.loss,
}
print(json.dumps(out))
with open("/tmp/tune/results.jsonl", "a") as f:
    f.write(json.dumps(out) + "\n")
