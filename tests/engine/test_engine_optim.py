"""Optimiser and schedule registries: the schedules agree with torch's own schedulers stepped once per epoch."""

from __future__ import annotations

import pytest
import torch

from lesionseg.engine import optim as optim_registry
from lesionseg.engine.config import config_from_dict
from lesionseg.engine.optim import ScheduleState, build_optimizer, register_scheduler, scheduled_lr


def _torch_lrs(make, epochs: int, lr: float = 1e-3) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make(opt)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def _ours(name: str, epochs: int, steps_per_epoch: int = 3, **kw) -> list[float]:
    """Our lr at the first step of every epoch, and check it stays constant within the epoch."""
    out = []
    for e in range(epochs):
        lrs = [
            scheduled_lr(name, ScheduleState(epoch=e + s / steps_per_epoch, progress=0.0), 1e-3, 1e-5, kw)
            for s in range(steps_per_epoch)
        ]
        assert max(lrs) == pytest.approx(min(lrs), rel=1e-9), (name, e)
        out.append(lrs[0])
    return out


def test_cosine_annealing_is_torchs_cosine_annealing_lr_with_t_max_50():
    # 300 epochs with T_max 50, as the VM-UNet family's code: down for 50 epochs, up for the next 50, and so on
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=50, eta_min=1e-5), 300)
    ours = _ours("cosine_annealing", 300, t_max_epochs=50)
    assert ours == pytest.approx(ref, rel=1e-6, abs=1e-12)
    assert ours[50] == pytest.approx(1e-5) and ours[100] == pytest.approx(1e-3)


def test_cosine_restarts_is_sgdr():
    ref = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=2, eta_min=1e-5), 70
    )
    assert _ours("cosine_restarts", 70, t0_epochs=10, t_mult=2) == pytest.approx(ref, rel=1e-6, abs=1e-12)


def test_step_decay_is_step_lr():
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=12, gamma=0.5), 60, lr=1e-3)
    assert _ours("step", 60, step_epochs=12, gamma=0.5) == pytest.approx(ref, rel=1e-9)


def test_run_long_schedules_follow_progress():
    state = ScheduleState(epoch=3.0, progress=0.5)
    assert scheduled_lr("cosine", state, 1e-3, 1e-5, {}) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)
    assert scheduled_lr("poly", state, 1e-3, 1e-5, {}) == pytest.approx(1e-3 * 0.5**0.9)
    assert scheduled_lr("constant", state, 1e-3, 1e-5, {}) == 1e-3


def test_config_validation_consults_the_registries(monkeypatch):
    with pytest.raises(ValueError, match="unknown optim.scheduler 'nope'; known: .*cosine_annealing"):
        config_from_dict({"optim": {"scheduler": "nope"}})
    with pytest.raises(ValueError, match=r"\['t_max'\] not taken by scheduler 'cosine_annealing'"):
        config_from_dict({"optim": {"scheduler": "cosine_annealing", "scheduler_kwargs": {"t_max": 50}}})
    with pytest.raises(ValueError, match="t_mult must be >= 1"):
        config_from_dict({"optim": {"scheduler": "cosine_restarts", "scheduler_kwargs": {"t_mult": 0.5}}})
    with pytest.raises(ValueError, match="optim.name must be one of adam, adamw, sgd"):
        config_from_dict({"optim": {"name": "lion"}})
    # a newly registered schedule is accepted by the config at once
    monkeypatch.setattr(optim_registry, "SCHEDULERS", optim_registry.SCHEDULERS.copy())
    register_scheduler("halfway")(lambda state, lr, min_lr, at=0.5: lr if state.progress < at else min_lr)
    cfg = config_from_dict({"optim": {"scheduler": "halfway", "scheduler_kwargs": {"at": 0.25}}})
    assert scheduled_lr("halfway", ScheduleState(1.0, 0.3), 1.0, 0.1, cfg.optim.scheduler_kwargs) == 0.1


def test_build_optimizer_by_name():
    params = [torch.nn.Parameter(torch.zeros(2))]
    for name, cls in (("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)):
        cfg = config_from_dict({"optim": {"name": name, "lr": 0.1}}).optim
        opt = build_optimizer(params, cfg)
        assert isinstance(opt, cls) and opt.param_groups[0]["lr"] == 0.1
