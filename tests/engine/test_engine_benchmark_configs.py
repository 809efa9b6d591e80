"""Every shipped benchmark config loads, names model configs that load, and a feature layer the model has."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lesionseg.engine import load_config
from lesionseg.engine.benchmark import load_benchmark_config
from lesionseg.models import create_model

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs" / "benchmark").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_benchmark_config_is_valid(path: Path, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    cfg = load_benchmark_config(path)
    assert cfg.num_runs == 3
    arch = {}
    for model in cfg.models:
        run = load_config(model.config, list(model.set))
        arch[model.name] = run.model
    net = create_model(arch[cfg.report.feature_model].name, **arch[cfg.report.feature_model].kwargs).eval()
    layer = net.get_submodule(cfg.report.feature_layer)  # raises AttributeError naming the missing part
    # the feature-map figure needs the layer to run in the forward pass and give a multi-channel spatial map
    maps: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda _m, _i, out: maps.append(out))
    with torch.no_grad():
        net(torch.zeros(1, net.in_channels if hasattr(net, "in_channels") else 3, 64, 64))
    hook.remove()
    assert len(maps) >= 1, f"{cfg.report.feature_layer} never runs in {arch[cfg.report.feature_model].name}'s forward"
    fmap = maps[0]
    assert isinstance(fmap, torch.Tensor) and fmap.ndim == 4, type(fmap)
    assert fmap.shape[1] > 1 and min(fmap.shape[-2:]) >= 2, tuple(fmap.shape)


def test_ph2_and_kvasir_cover_the_zoo() -> None:
    for name in ("ph2", "kvasir_seg"):
        cfg = load_benchmark_config(REPO / "configs" / "benchmark" / f"{name}.yaml")
        names = {load_config(REPO / m.config).model.name for m in cfg.models}
        assert {"eamnet_s", "mgmfnet_s", "efp_s", "sc_unext", "cmssm_unet_s"} <= names
        assert {"unet_small", "unext", "malunet", "egeunet", "vmunet_s", "segformer_s"} <= names
