"""Shared checks for model tests (imported by the test modules of this folder)."""

from __future__ import annotations

from torch import nn


def params_without_grad(model: nn.Module) -> list[str]:
    """Names of trainable parameters that received no (or an all-zero) gradient from the last backward."""
    return [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
