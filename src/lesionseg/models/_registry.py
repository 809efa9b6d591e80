"""Model registry: ``@register_model`` factories, ``build_model`` by name, ``list_models``.

The public :func:`~lesionseg.models.hub.create_model` (also ``lesionseg.create_model``) adds shipped weights on top of
:func:`build_model`; this module knows nothing of weights, so that ``hub`` can import it and not the other way round.
Every lookup here first imports the model files (:func:`load_zoo`, once), so that the package itself can load without
torch.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..registry import Registry

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "MODELS",
    "build_model",
    "check_model_options",
    "is_model",
    "model_options",
    "list_models",
    "load_zoo",
    "model_entrypoint",
    "model_tags",
    "register_model",
]

#: Every model factory, with its size tags ``paper_size`` and ``cpu_size``.
MODELS: Registry[Callable[..., nn.Module]] = Registry("model")

_zoo_loaded = False


def load_zoo() -> None:
    """Import every model file once, so that each factory is registered (the lookups below call it)."""
    global _zoo_loaded
    if _zoo_loaded:
        return
    from . import (  # noqa: F401  (each file registers its factories)
        attention_unet,
        cmssm_unet,
        eamnet,
        efp,
        egeunet,
        hcmamba,
        lv_unet,
        malunet,
        maskformer,
        medmamba,
        mgmfnet,
        resunetpp,
        sc_unext,
        segformer,
        transfuse,
        unet,
        unetpp,
        unext,
        utnetv2,
        vmunet,
    )

    _zoo_loaded = True


def register_model(fn: Callable[..., nn.Module] | None = None, *, paper_size: bool = False, cpu_size: bool = False):
    """Register a model factory under its function name.

    Args:
        fn: factory ``(in_channels=3, num_classes=1, **kw) -> nn.Module``.
        paper_size: the factory builds the configuration published in the paper.
        cpu_size: the factory builds a configuration small enough to train on 2 CPU cores.
    """
    wrap = MODELS.register(paper_size=paper_size, cpu_size=cpu_size)
    return wrap(fn) if fn is not None else wrap


def list_models(pattern: str = "*", *, cpu_size: bool | None = None, paper_size: bool | None = None) -> list[str]:
    """Sorted names of registered models matching a shell-style ``pattern`` and size tags."""
    load_zoo()
    names = []
    for name in MODELS.names():
        tags = MODELS.info(name)
        if not fnmatch.fnmatch(name, pattern):
            continue
        if cpu_size is not None and tags["cpu_size"] != cpu_size:
            continue
        if paper_size is not None and tags["paper_size"] != paper_size:
            continue
        names.append(name)
    return names


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model."""
    load_zoo()
    return name in MODELS


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The factory registered as ``name``.

    Raises:
        ValueError: unknown name (the message suggests the closest and lists the known ones).
    """
    load_zoo()
    return MODELS.get(name)


def model_tags(name: str) -> Mapping[str, bool]:
    """The size tags of model ``name``: ``{"paper_size": ..., "cpu_size": ...}``."""
    load_zoo()
    return MODELS.info(name)


def build_model(name: str, in_channels: int = 3, num_classes: int = 1, **kwargs: Any) -> nn.Module:
    """Build a registered model by name, with fresh weights.

    Args:
        name: registered factory name (see ``list_models()``).
        in_channels: input image channels (3 for RGB, 1 for grayscale).
        num_classes: output logit channels (1 for binary lesion segmentation).
        **kwargs: architecture options forwarded to the factory (module switches, widths).

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    return model_entrypoint(name)(in_channels=in_channels, num_classes=num_classes, **kwargs)


_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def model_options(name: str) -> frozenset[str] | None:
    """The keyword options model ``name`` accepts besides ``in_channels`` and ``num_classes``.

    A factory that forwards ``**kwargs`` is followed to the class it returns (its annotation), and a constructor that
    forwards them to its base class's; None when the chain cannot be followed (then any option may be valid).

    Raises:
        ValueError: unknown model name.
    """
    from torch import nn

    fn = model_entrypoint(name)
    names: set[str] = set()
    params = inspect.signature(fn).parameters.values()
    names |= {p.name for p in params if p.kind in _NAMED}
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return frozenset(names - {"in_channels", "num_classes"})
    try:
        cls = typing.get_type_hints(fn).get("return")
    except Exception:  # an annotation that cannot be resolved: the options cannot be told
        return None
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        return None
    for base in cls.__mro__:
        if base is nn.Module:
            break
        if "__init__" not in vars(base):
            continue
        params = inspect.signature(vars(base)["__init__"]).parameters.values()
        names |= {p.name for p in params if p.kind in _NAMED}
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return frozenset(names - {"self", "in_channels", "num_classes"})
    return None


def check_model_options(name: str, kwargs: Mapping[str, Any]) -> str | None:
    """What is wrong with ``kwargs`` as options of model ``name`` (unknown names), or None when nothing is.

    Raises:
        ValueError: unknown model name (the message lists the known ones).
    """
    known = model_options(name)
    if known is None:
        return None
    reserved = sorted(k for k in kwargs if k in ("in_channels", "num_classes"))
    if reserved:
        return f"{', '.join(reserved)} set apart from the model's options, not among them"
    unknown = sorted(k for k in kwargs if k not in known)
    if not unknown:
        return None
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"unknown option(s) {', '.join(hints)} for model {name!r}; it takes {', '.join(sorted(known)) or 'none'}"
