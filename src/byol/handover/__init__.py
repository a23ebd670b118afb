"""Hand-over of a trained encoder: rebuild it from a checkpoint, embed a dataset, export weights.

* :mod:`byol.handover.load` - :func:`load_encoder` rebuilds the *online* encoder of a
  ``byol train`` checkpoint (the network whose output ``y`` the paper evaluates), in eval mode,
  with what is needed to feed it (:class:`EncoderInfo`).
* :mod:`byol.handover.embed` - :func:`embed` writes the features of every image of a dataset
  split to ``.npy``, with labels and source paths in the same order.
* :mod:`byol.handover.export` - :func:`export_encoder` writes the weights to ``.safetensors``
  plus a JSON sidecar (torchvision or byol layout); :func:`load_exported` reads them back.
"""

from ..runtime import resolve_device as pick_device
from .embed import EmbedResult, companion_paths, embed
from .export import (
    EXPORT_LAYOUTS,
    TORCHVISION_ARCHS,
    ExportResult,
    export_encoder,
    load_exported,
    read_export_metadata,
    sidecar_path,
    torchvision_encoder,
)
from .load import (
    EncoderInfo,
    encode_dataset,
    load_data_for,
    load_encoder,
    resolve_checkpoint,
    run_folder_of,
)

__all__ = [
    "EXPORT_LAYOUTS",
    "TORCHVISION_ARCHS",
    "EmbedResult",
    "EncoderInfo",
    "ExportResult",
    "companion_paths",
    "embed",
    "encode_dataset",
    "export_encoder",
    "load_data_for",
    "load_encoder",
    "load_exported",
    "pick_device",
    "read_export_metadata",
    "resolve_checkpoint",
    "run_folder_of",
    "sidecar_path",
    "torchvision_encoder",
]
