"""Every shipped benchmark config loads, names model configs that load, and a feature layer the model has."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lesionseg.benchmark import load_benchmark_config
from lesionseg.engine import load_config
from lesionseg.models import create_model

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs" / "benchmark").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_benchmark_config_is_valid(path: Path, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    cfg = load_benchmark_config(path)
    assert cfg.num_runs == 3
    assert all(m.epochs >= 1 for m in cfg.models) and cfg.threads == 1
    assert cfg.results_dir == f"docs/results/{cfg.name}" and cfg.out_dir == f"runs/benchmark/{cfg.name}"
    arch = {}
    for model in cfg.models:
        run = load_config(model.config, list(model.set))
        arch[model.name] = run.model
    if cfg.report.feature_model is None:  # no feature-map figure (the protocol audit)
        return
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
    def archs(name: str) -> list[str]:
        cfg = load_benchmark_config(REPO / "configs" / "benchmark" / f"{name}.yaml")
        # Nothing changes a model's recipe; the disk cache only changes speed (bit-identical, tests/data).
        assert cfg.precision == "auto" and set(cfg.train) <= {"data.cache_dir=auto"}
        return [load_config(REPO / m.config).model.name for m in cfg.models]

    methods = {"eamnet_s", "mgmfnet_s", "efp_s", "sc_unext", "cmssm_unet_s"}
    assert methods | {"unet_small", "unext", "malunet", "egeunet", "vmunet_s", "segformer_s"} <= set(archs("ph2"))
    assert sorted(archs("kvasir_seg")) == sorted(methods | {"unet_small", "unext", "malunet"})
    assert not load_benchmark_config(REPO / "configs" / "benchmark" / "ph2.yaml").cross  # no skin-on-polyp


def test_isic2018_to_ph2_tests_on_isic_and_cross_evaluates_on_ph2() -> None:
    cfg = load_benchmark_config(REPO / "configs" / "benchmark" / "isic2018_to_ph2.yaml")
    assert cfg.data["layout"] == "isic2018" and cfg.protocol.kind == "official"
    assert [(c.name, c.root, c.layout) for c in cfg.cross] == [("ph2", "../shared/data/ph2", "ph2")]
