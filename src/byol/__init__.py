"""byol: Bootstrap Your Own Latent, faithful to the paper and fast.

The public surface::

    byol.BYOL, byol.MLPHead, byol.regression_loss        the method (model.py)
    byol.LARS, byol.param_groups                          the optimizer (optim.py)
    byol.target_decay, byol.warmup_cosine_lr              the schedules (schedules.py)
    byol.backbones.build                                  encoders (backbones.py)
    byol.augment.BYOLAugment                              the two view pipelines (augment.py)
    byol.data.load_dataset                                dataset sources (data.py)
    byol.load_checkpoint                                  trusted-free checkpoint loading
"""

__version__ = "0.2.0"

from . import backbones
from .checkpoint import load_checkpoint
from .errors import ByolError, CheckpointError, ConfigError, DataError
from .model import BYOL, MLPHead, collapse_std, regression_loss
from .optim import LARS, param_groups
from .schedules import target_decay, warmup_cosine_lr

__all__ = [
    "BYOL",
    "LARS",
    "ByolError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "MLPHead",
    "__version__",
    "backbones",
    "collapse_std",
    "load_checkpoint",
    "param_groups",
    "regression_loss",
    "target_decay",
    "warmup_cosine_lr",
]
