"""Shared checks for model tests (imported by the test modules of this folder)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lesionseg.models import create_model
from lesionseg.models.hub import ModelRecord, load_model, save_checkpoint


def params_without_grad(model: nn.Module) -> list[str]:
    """Names of trainable parameters that received no (or an all-zero) gradient from the last backward."""
    return [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]


def check_save_load_roundtrip(name: str, directory: Path, size: int = 32, **kwargs: object) -> None:
    """Train ``name`` one step (weights and batch-norm statistics move away from their initial values), save it as a
    checkpoint, load it into a fresh model and require the same eval output; a fresh model must differ, so that a
    load that silently kept the initial weights cannot pass."""
    torch.manual_seed(0)
    model = create_model(name, **kwargs)
    stride = getattr(model, "stride", 1)
    s = max(size, stride) // stride * stride
    x = torch.randn(2, 3, s, s)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model(x).float().square().mean().backward()
    opt.step()
    record = ModelRecord(model=name, model_kwargs=dict(kwargs), image_size=(s, s), mean=(0.5,) * 3, std=(0.25,) * 3)
    save_checkpoint(directory / name, model, record)
    model.eval()
    loaded, record = load_model(directory / name)
    assert record.model == name and not loaded.training
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)
        torch.manual_seed(1)
        fresh = create_model(name, **kwargs).eval()
        assert not torch.allclose(fresh(x), expected), f"{name}: a fresh model gives the trained model's output"
