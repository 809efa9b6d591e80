"""Name-based construction of losses, with a registry that other modules can extend."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from lesionseg.losses.bce import BCELoss
from lesionseg.losses.compound import BCEDiceLoss
from lesionseg.losses.dice import DiceLoss
from lesionseg.registry import Registry

__all__ = ["LOSSES", "available_losses", "build_loss", "register_loss"]

LossFactory = Callable[..., nn.Module]
_F = TypeVar("_F", bound=LossFactory)

#: Every loss by name.
LOSSES: Registry[LossFactory] = Registry("loss")


def register_loss(name: str) -> Callable[[_F], _F]:
    """Returns a decorator that registers a loss class (or factory function) under ``name``.

    The defining module must be imported (e.g. from ``lesionseg.losses.__init__``) for the registration to happen.

    Args:
        name: Key used with :func:`build_loss`.

    Returns:
        Decorator returning its argument unchanged.

    Raises:
        ValueError: If ``name`` is empty or already registered.

    Example:
        >>> @register_loss("edge")  # doctest: +SKIP
        ... class EdgeLoss(nn.Module): ...
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"loss name must be a non-empty string, got {name!r}")
    return LOSSES.register(name)


def available_losses() -> list[str]:
    """Returns the registered loss names, sorted."""
    return LOSSES.names()


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Builds a registered loss by name.

    Built-in names: ``"bce"`` (:class:`BCELoss`), ``"dice"`` (:class:`DiceLoss`) and ``"bce_dice"``
    (:class:`BCEDiceLoss`, kwargs ``bce_weight``, ``dice_weight``, ...).

    Args:
        name: Registered loss name.
        **kwargs: Keyword arguments for the loss constructor.

    Returns:
        The constructed loss module.

    Raises:
        ValueError: If ``name`` is unknown (the message suggests the closest and lists the known names) or a
            keyword is not accepted.
    """
    factory = LOSSES.get(name)
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as err:
        raise ValueError(f"invalid arguments {sorted(kwargs)} for loss {name!r}: {err}") from err
    return factory(**kwargs)


register_loss("bce")(BCELoss)
register_loss("dice")(DiceLoss)
register_loss("bce_dice")(BCEDiceLoss)
