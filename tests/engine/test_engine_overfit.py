"""Integration: a small U-Net overfits a few real PH2 cases (the loss falls, the Dice on them rises)."""

from __future__ import annotations

import pytest
import torch

from lesionseg.data import SegmentationDataset, find_cases
from lesionseg.engine import evaluate_dataset
from lesionseg.inference import Predictor
from lesionseg.losses import BCEDiceLoss
from lesionseg.models import create_model


@pytest.mark.data
def test_overfit_four_ph2_cases(ph2_root):
    torch.manual_seed(0)
    torch.set_num_threads(2)
    cases = find_cases(ph2_root)[:4]
    ds = SegmentationDataset(cases, size=(64, 64))
    x = torch.stack([ds[i][0] for i in range(4)])
    y = torch.stack([ds[i][1] for i in range(4)])
    model = create_model("unet_small", channels=(8, 16, 32))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = BCEDiceLoss()
    losses = []
    for _ in range(50):
        model.train()
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    predictor = Predictor(model, ds.size)  # the dataset's default normalisation, as trained
    dice = evaluate_dataset(predictor, ds).aggregate()["per_image"]["dice"]
    assert dice > 0.85, dice
