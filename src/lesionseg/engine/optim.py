"""Optimiser and learning-rate schedule registries: a recipe names them, the trainer builds them, no if/elif.

An optimiser factory takes the trainable parameters and the :class:`~lesionseg.engine.config.OptimConfig`. A schedule
is a pure function of where the run is (:class:`ScheduleState`) returning the learning rate, evaluated before every
step, so it needs no state of its own in a checkpoint and stretches over a wall-clock budget as over epochs. Schedules
take extra options from ``optim.scheduler_kwargs``; unknown options are an error at config time.

Registered schedules:

- ``cosine``: one cosine from ``lr`` to ``min_lr`` over the whole run (by steps, or by wall-clock under a budget).
- ``poly``: ``lr * (1 - t) ** power`` (``power`` 0.9), floored at ``min_lr``.
- ``constant``: ``lr``.
- ``cosine_annealing``: torch's ``CosineAnnealingLR(T_max, eta_min)`` stepped once per epoch, as the VM-UNet family's
  code runs it (``t_max_epochs`` 50). Stepped past ``T_max`` it is periodic: down over ``T_max`` epochs, back up over
  the next ``T_max``; that is what a 300-epoch run with ``T_max`` 50 gets.
- ``cosine_restarts``: SGDR (Loshchilov and Hutter 2017; torch's ``CosineAnnealingWarmRestarts`` stepped once per
  epoch), a cosine from ``lr`` to ``min_lr`` over ``t0_epochs`` that jumps back to ``lr``, each cycle ``t_mult`` times
  longer.
- ``step``: ``lr * gamma ** floor(epoch / step_epochs)``, torch's ``StepLR`` (MGMFNet's repository: halve every 12
  epochs); ``min_lr`` does not apply.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..registry import Registry

__all__ = [
    "OPTIMIZERS",
    "SCHEDULERS",
    "ScheduleState",
    "build_optimizer",
    "check_scheduler_kwargs",
    "list_optimizers",
    "list_schedulers",
    "register_optimizer",
    "register_scheduler",
    "scheduled_lr",
]

OptimizerFactory = Callable[..., torch.optim.Optimizer]
ScheduleFn = Callable[..., float]

#: Optimiser factories ``fn(params, cfg: OptimConfig) -> Optimizer`` by name.
OPTIMIZERS: Registry[OptimizerFactory] = Registry("optim.name")
#: Learning-rate schedules ``fn(state: ScheduleState, lr, min_lr, **options) -> float`` by name.
SCHEDULERS: Registry[ScheduleFn] = Registry("optim.scheduler")


def register_optimizer(name: str) -> Callable[[OptimizerFactory], OptimizerFactory]:
    """Register ``fn(params, cfg: OptimConfig) -> Optimizer`` under ``name``."""
    return OPTIMIZERS.register(name)


def register_scheduler(name: str) -> Callable[[ScheduleFn], ScheduleFn]:
    """Register ``fn(state: ScheduleState, lr, min_lr, **options) -> float`` under ``name``."""
    return SCHEDULERS.register(name)


def list_optimizers() -> list[str]:
    """The registered optimiser names, sorted."""
    return OPTIMIZERS.names()


def list_schedulers() -> list[str]:
    """The registered schedule names, sorted."""
    return SCHEDULERS.names()


def build_optimizer(params: Iterable[nn.Parameter], cfg: Any) -> torch.optim.Optimizer:
    """The optimiser ``cfg.name`` names over ``params``.

    Raises:
        ValueError: an unregistered name (the message suggests the closest and lists the registered ones).
    """
    return OPTIMIZERS.get(cfg.name)(list(params), cfg)


@register_optimizer("adam")
def _adam(params: list[nn.Parameter], cfg: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


@register_optimizer("adamw")
def _adamw(params: list[nn.Parameter], cfg: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


@register_optimizer("sgd")
def _sgd(params: list[nn.Parameter], cfg: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)


# ------------------------------------------------------------------------------------------------------- schedules
@dataclass(frozen=True)
class ScheduleState:
    """Where a run is when its learning rate is asked for.

    Attributes:
        epoch: epochs done, fractional within an epoch (steps done / steps per epoch).
        progress: fraction of the run done in [0, 1]: by steps, or by wall-clock under a time budget (whichever is
            further).
    """

    epoch: float
    progress: float


def check_scheduler_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """Raise ``ValueError`` for an unregistered schedule or options it does not take (naming both)."""
    params = inspect.signature(SCHEDULERS.get(name)).parameters
    known = [p for p in params if p not in ("state", "lr", "min_lr")]
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ValueError(
            f"optim.scheduler_kwargs {unknown} not taken by scheduler {name!r}; it takes {known or 'no options'}"
        )
    for key, value in kwargs.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"optim.scheduler_kwargs.{key} must be a positive number, got {value!r}")
    scheduled_lr(name, ScheduleState(epoch=0.0, progress=0.0), 1.0, 0.0, kwargs)  # option checks of the schedule


def scheduled_lr(name: str, state: ScheduleState, lr: float, min_lr: float, kwargs: dict[str, Any]) -> float:
    """The learning rate of schedule ``name`` at ``state`` (warm-up is applied by the caller)."""
    return float(SCHEDULERS.get(name)(state, lr, min_lr, **kwargs))


def _cosine(t: float, lr: float, min_lr: float) -> float:
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * t))


@register_scheduler("cosine")
def _cosine_run(state: ScheduleState, lr: float, min_lr: float) -> float:
    return _cosine(state.progress, lr, min_lr)


@register_scheduler("poly")
def _poly(state: ScheduleState, lr: float, min_lr: float, power: float = 0.9) -> float:
    return max(min_lr, lr * (1 - state.progress) ** power)


@register_scheduler("constant")
def _constant(state: ScheduleState, lr: float, min_lr: float) -> float:
    return lr


@register_scheduler("cosine_annealing")
def _cosine_annealing(state: ScheduleState, lr: float, min_lr: float, t_max_epochs: float = 50) -> float:
    # torch's closed form eta_min + (eta_max - eta_min) (1 + cos(pi T_cur / T_max)) / 2 with T_cur = whole epochs done
    # (the papers' code calls scheduler.step() once per epoch), not wrapped: past T_max it climbs back.
    return _cosine(math.floor(state.epoch + 1e-9) / t_max_epochs, lr, min_lr)


@register_scheduler("cosine_restarts")
def _cosine_restarts(state: ScheduleState, lr: float, min_lr: float, t0_epochs: float = 50, t_mult: float = 1) -> float:
    if t_mult < 1:
        raise ValueError(f"optim.scheduler_kwargs.t_mult must be >= 1 (cycles never shrink), got {t_mult}")
    # Stepped once per epoch, as torch's CosineAnnealingWarmRestarts in an epoch loop.
    epoch, length = float(math.floor(state.epoch + 1e-9)), float(t0_epochs)
    while epoch >= length:
        epoch -= length
        length *= t_mult
    return _cosine(epoch / length, lr, min_lr)


@register_scheduler("step")
def _step(state: ScheduleState, lr: float, min_lr: float, step_epochs: float = 30, gamma: float = 0.1) -> float:
    return lr * gamma ** math.floor(state.epoch / step_epochs + 1e-9)
