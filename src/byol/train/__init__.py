"""Training: :func:`train` runs one ``byol train`` job; :class:`Trainer` is the job.

* :mod:`byol.train.trainer` - the update function and the job around it;
* :mod:`byol.train.batches` - the data order (exact resume);
* :mod:`byol.train.monitor` - the run's data and its k-NN monitor;
* :mod:`byol.train.session` - logging window, divergence checks, progress bar, SIGTERM.
"""

from .batches import epoch_order
from .trainer import RunResult, Trainer, train

__all__ = ["RunResult", "Trainer", "epoch_order", "train"]
