from __future__ import annotations

from torch import nn

from lesionseg.models.complexity import count_macs, count_parameters


def test_conv_macs_by_hand():
    conv = nn.Conv2d(3, 8, 3, padding=1)  # 8 outputs x 16x16 positions x 3x3x3 kernel taps
    assert count_macs(conv, (16, 16)) == 8 * 16 * 16 * 27
    assert count_parameters(conv) == 8 * 27 + 8


def test_frozen_parameters_excluded_on_request():
    lin = nn.Linear(4, 2)
    lin.bias.requires_grad_(False)
    assert count_parameters(lin) == 8
    assert count_parameters(lin, trainable_only=False) == 10
