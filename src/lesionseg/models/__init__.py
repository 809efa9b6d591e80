"""Segmentation models behind one registry; every ``forward`` returns logits at the input size."""

from __future__ import annotations

from . import attention_unet as _attention_unet  # noqa: F401
from . import cmssm_unet as _cmssm_unet  # noqa: F401
from . import eamnet as _eamnet  # noqa: F401
from . import efp as _efp  # noqa: F401
from . import egeunet as _egeunet  # noqa: F401
from . import hcmamba as _hcmamba  # noqa: F401
from . import lv_unet as _lv_unet  # noqa: F401
from . import malunet as _malunet  # noqa: F401
from . import maskformer as _maskformer  # noqa: F401
from . import medmamba as _medmamba  # noqa: F401
from . import mgmfnet as _mgmfnet  # noqa: F401
from . import resunetpp as _resunetpp  # noqa: F401
from . import sc_unext as _sc_unext  # noqa: F401
from . import segformer as _segformer  # noqa: F401
from . import transfuse as _transfuse  # noqa: F401
from . import unet as _unet  # noqa: F401  (registers the factories)
from . import unetpp as _unetpp  # noqa: F401
from . import unext as _unext  # noqa: F401
from . import utnetv2 as _utnetv2  # noqa: F401
from . import vmunet as _vmunet  # noqa: F401
from ._registry import (
    MODELS,
    build_model,
    check_model_options,
    is_model,
    list_models,
    model_entrypoint,
    model_options,
    model_tags,
    register_model,
)
from .base import ModelOutput, SegmentationModel
from .hub import create_model
from .unet import UNet

__all__ = [
    "MODELS",
    "check_model_options",
    "model_options",
    "ModelOutput",
    "SegmentationModel",
    "UNet",
    "build_model",
    "create_model",
    "is_model",
    "list_models",
    "model_entrypoint",
    "model_tags",
    "register_model",
]
