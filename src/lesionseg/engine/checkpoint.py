"""Checkpoint I/O lives in :mod:`lesionseg.models.hub` (below ``engine`` and ``inference``); re-exported here."""

from __future__ import annotations

from ..models.hub import (
    CheckpointError,
    checkpoint_stem,
    load_model,
    load_record,
    load_state,
    pack_state,
    save_checkpoint,
    unpack_state,
)

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_record",
    "load_model",
    "load_state",
    "checkpoint_stem",
    "pack_state",
    "unpack_state",
]
