"""The one registry helper: registration, lookups with suggestions, metadata, and its use by every concept."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from lesionseg.registry import Registry, UnknownNameError, suggest

SRC = Path(__file__).resolve().parents[1] / "src" / "lesionseg"


def test_register_bare_named_and_with_metadata():
    reg: Registry = Registry("widget")

    @reg.register
    def alpha(): ...

    @reg.register("beta")
    def _b(): ...

    @reg.register(size="small")
    def gamma(): ...

    assert reg.names() == ["alpha", "beta", "gamma"]
    assert [n for n, _ in reg.items()] == ["alpha", "beta", "gamma"]  # registration order
    assert reg.get("beta") is _b and reg.get("alpha") is alpha
    assert dict(reg.info("gamma")) == {"size": "small"} and dict(reg.info("alpha")) == {}
    assert "alpha" in reg and "delta" not in reg and len(reg) == 3 and list(reg) == ["alpha", "beta", "gamma"]
    with pytest.raises(TypeError):
        reg.info("gamma")["size"] = "large"  # metadata is read-only


def test_unknown_name_suggests_the_closest_and_lists_all():
    reg: Registry = Registry("loss")
    for name in ("dice", "bce", "bce_dice"):
        reg.add(name, object())
    with pytest.raises(UnknownNameError) as err:
        reg.get("dise")
    assert str(err.value) == "unknown loss 'dise' (did you mean 'dice'?); known: bce, bce_dice, dice"
    assert err.value.suggestions == ["dice"] and err.value.known == ["bce", "bce_dice", "dice"]
    assert isinstance(err.value, ValueError) and isinstance(err.value, KeyError)
    with pytest.raises(ValueError, match=r"^unknown loss 'xyzzy'; known: bce, bce_dice, dice$"):
        reg.get("xyzzy")
    with pytest.raises(ValueError, match="unknown loss"):
        reg.info("xyzzy")
    assert "none registered" in str(Registry("thing").unknown("x"))


def test_bad_registrations_are_refused():
    reg: Registry = Registry("model")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="model 'a' is already registered"):
        reg.add("a", 2)
    with pytest.raises(ValueError, match="non-empty string"):
        reg.add("", 3)
    with pytest.raises(ValueError, match="must be callable"):
        reg.register("b")(42)
    assert reg.get("a") == 1


def test_copy_is_independent():
    reg: Registry = Registry("thing")
    reg.add("a", 1)
    other = reg.copy()
    other.add("b", 2)
    assert reg.names() == ["a"] and other.names() == ["a", "b"]


def test_suggest_orders_by_similarity():
    assert suggest("unet_smal", ["unet", "unet_small", "unext_s"])[0] == "unet_small"
    assert suggest("zzz", ["unet", "efp"]) == []


def test_registry_is_the_bottom_layer():
    tree = ast.parse((SRC / "registry.py").read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.startswith(("lesionseg", "."))], imported


@pytest.mark.parametrize(
    ("lookup", "message"),
    [
        ("lesionseg.models:model_entrypoint", "unknown model 'unet_smal' (did you mean 'unet_small'"),
        ("lesionseg.losses:build_loss", "unknown loss 'dise' (did you mean 'dice'"),
        ("lesionseg.metrics:get_metric", "unknown metric 'dise' (did you mean 'dice'"),
    ],
)
def test_every_concept_suggests(lookup: str, message: str):
    import importlib

    module, fn = lookup.split(":")
    name = message.split("'")[1]
    with pytest.raises(ValueError) as err:
        getattr(importlib.import_module(module), fn)(name)
    assert message in str(err.value)


def test_layouts_optimisers_and_schedules_suggest(tmp_path: Path):
    from lesionseg.data import find_cases
    from lesionseg.engine.optim import build_optimizer, check_scheduler_kwargs

    with pytest.raises(ValueError, match=r"unknown layout 'ph' \(did you mean 'ph2'\?\)"):
        find_cases(tmp_path, "ph")
    with pytest.raises(ValueError, match=r"unknown optim.scheduler 'cosin' \(did you mean 'cosine'"):
        check_scheduler_kwargs("cosin", {})

    class Cfg:
        name = "adamm"

    with pytest.raises(ValueError, match=r"unknown optim.name 'adamm' \(did you mean 'adam'"):
        build_optimizer([], Cfg())
