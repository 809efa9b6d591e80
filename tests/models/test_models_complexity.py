from __future__ import annotations

import pytest
import torch
from torch import nn

from lesionseg.models import create_model
from lesionseg.models.complexity import count_macs, count_parameters, measure_train_step


def test_conv_macs_by_hand():
    conv = nn.Conv2d(3, 8, 3, padding=1)  # 8 outputs x 16x16 positions x 3x3x3 kernel taps
    assert count_macs(conv, (16, 16)) == 8 * 16 * 16 * 27
    assert count_parameters(conv) == 8 * 27 + 8


def test_frozen_parameters_excluded_on_request():
    lin = nn.Linear(4, 2)
    lin.bias.requires_grad_(False)
    assert count_parameters(lin) == 8
    assert count_parameters(lin, trainable_only=False) == 10


def test_a_timed_train_step_trains_the_model_and_refuses_unknown_precisions() -> None:
    net = create_model("unet_small", channels=(4, 8))
    before = [p.detach().clone() for p in net.parameters()]
    ms = measure_train_step(net, (16, 16), batch=2, precision="bf16", channels_last=True, steps=2, warmup=1)
    assert ms > 0
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters()))  # every step updated the weights
    with pytest.raises(ValueError, match="precision must be fp32, bf16 or fp16"):
        measure_train_step(net, (16, 16), precision="fp8")
