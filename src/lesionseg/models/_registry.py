"""Model registry: ``@register_model`` factories, ``create_model`` by name, ``list_models``."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["register_model", "create_model", "list_models", "model_entrypoint", "is_model"]

_MODEL_ENTRYPOINTS: dict[str, Callable[..., nn.Module]] = {}
_MODEL_DEFAULTS: dict[str, dict[str, Any]] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, *, paper_size: bool = False, cpu_size: bool = False):
    """Register a model factory under its function name.

    Args:
        fn: factory ``(in_channels=3, num_classes=1, **kw) -> nn.Module``.
        paper_size: the factory builds the configuration published in the paper.
        cpu_size: the factory builds a configuration small enough to train on 2 CPU cores.
    """

    def wrap(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = f.__name__
        if name in _MODEL_ENTRYPOINTS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODEL_ENTRYPOINTS[name] = f
        _MODEL_DEFAULTS[name] = {"paper_size": paper_size, "cpu_size": cpu_size}
        return f

    return wrap(fn) if fn is not None else wrap


def list_models(pattern: str = "*", *, cpu_size: bool | None = None, paper_size: bool | None = None) -> list[str]:
    """Sorted names of registered models matching a shell-style ``pattern`` and size tags."""
    names = []
    for name in sorted(_MODEL_ENTRYPOINTS):
        tags = _MODEL_DEFAULTS[name]
        if not fnmatch.fnmatch(name, pattern):
            continue
        if cpu_size is not None and tags["cpu_size"] != cpu_size:
            continue
        if paper_size is not None and tags["paper_size"] != paper_size:
            continue
        names.append(name)
    return names


def is_model(name: str) -> bool:
    return name in _MODEL_ENTRYPOINTS


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    if name not in _MODEL_ENTRYPOINTS:
        known = ", ".join(sorted(_MODEL_ENTRYPOINTS))
        raise ValueError(f"unknown model {name!r}; known models: {known}")
    return _MODEL_ENTRYPOINTS[name]


def create_model(
    name: str, in_channels: int = 3, num_classes: int = 1, pretrained: str | None = None, **kwargs: Any
) -> nn.Module:
    """Build a registered model by name, optionally with shipped weights.

    Args:
        name: registered factory name (see ``list_models()``).
        in_channels: input image channels (3 for RGB, 1 for grayscale).
        num_classes: output logit channels (1 for binary lesion segmentation).
        pretrained: tag of shipped weights for this model (``"skin"``, ``"polyp"``; see
            ``lesionseg.models.hub.list_pretrained()``); the architecture options come from the weights' record and
            ``kwargs`` must not contradict them. Nothing is downloaded.
        **kwargs: architecture options forwarded to the factory (module switches, widths).

    Raises:
        ValueError: for an unknown name (the message lists the known ones), an unknown tag, or weights that belong
            to another model or another input/output shape.
    """
    if pretrained is None:
        return model_entrypoint(name)(in_channels=in_channels, num_classes=num_classes, **kwargs)
    from .hub import load_pretrained

    model, record = load_pretrained(pretrained)
    expected = {
        "model": (record.model, name),
        "in_channels": (record.in_channels, in_channels),
        "num_classes": (record.num_classes, num_classes),
    }
    expected.update({k: (record.model_kwargs.get(k), v) for k, v in kwargs.items()})
    clashes = [f"{k}={want!r} (weights: {have!r})" for k, (have, want) in expected.items() if have != want]
    if clashes:
        raise ValueError(f"pretrained {pretrained!r} does not fit {name}: {', '.join(clashes)}")
    return model.train()
