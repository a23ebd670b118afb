"""Evaluation protocols for a trained encoder, one module each; they work on plain tensors and
``nn.Module`` objects, independent of how the encoder was trained or the data loaded.

* :mod:`byol.evaluate.features` - :func:`extract_features` (frozen encoder on whole images)
  and :func:`pixel_features` (normalised raw pixels, the baseline any representation must
  beat);
* :mod:`byol.evaluate.knn` - :func:`knn_accuracy`, weighted cosine k-NN;
* :mod:`byol.evaluate.linear` - :func:`linear_probe` on pre-computed features (the paper's
  protocol, learning rate chosen on training data only) and :func:`select_learning_rate`;
* :mod:`byol.evaluate.augmented` - :func:`linear_probe_augmented`, the probe trained on
  freshly augmented images every epoch;
* :mod:`byol.evaluate.rankme` - :func:`rankme`, the label-free effective rank of embeddings;
* :mod:`byol.evaluate.table` - :func:`format_results_table`.
"""

from .augmented import linear_probe_augmented
from .checks import topk_accuracy
from .features import extract_features, pixel_features
from .knn import knn_accuracy, knn_predict
from .linear import PAPER_LEARNING_RATES, linear_probe, select_learning_rate
from .rankme import rankme
from .table import format_results_table

__all__ = [
    "PAPER_LEARNING_RATES",
    "extract_features",
    "format_results_table",
    "knn_accuracy",
    "knn_predict",
    "linear_probe",
    "linear_probe_augmented",
    "pixel_features",
    "rankme",
    "select_learning_rate",
    "topk_accuracy",
]
