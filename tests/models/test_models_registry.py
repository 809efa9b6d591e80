"""One shared tester for every registered model: logits shape, gradients to every parameter, odd sizes, flags."""

from __future__ import annotations

import pytest
import torch
from model_checks import check_save_load_roundtrip, params_without_grad

from lesionseg.models import ModelOutput, create_model, list_models, model_tags

CPU_MODELS = list_models(cpu_size=True)
ALL_MODELS = list_models()


def _size(model: torch.nn.Module, base: int = 64) -> int:
    stride = getattr(model, "stride", 1)
    return max(base, stride) // stride * stride


def test_every_model_has_a_size_tag():
    for name in ALL_MODELS:
        tags = model_tags(name)
        assert tags["cpu_size"] or tags["paper_size"], f"{name} is neither cpu_size nor paper_size"


def test_unknown_model_lists_known_ones_and_suggests_the_closest():
    with pytest.raises(ValueError, match="unknown model 'no_such_model'; known: .*unet_small"):
        create_model("no_such_model")
    with pytest.raises(ValueError, match=r"unknown model 'unet_smal' \(did you mean 'unet_small' or "):
        create_model("unet_smal")


@pytest.mark.parametrize("name", CPU_MODELS)
def test_forward_shape_and_gradients(name):
    torch.manual_seed(0)
    model = create_model(name, in_channels=3, num_classes=1)
    s = _size(model)
    x = torch.randn(2, 3, s, s)
    model.train()
    out = model(x)
    assert out.shape == (2, 1, s, s)
    out.float().square().mean().backward()
    no_grad = params_without_grad(model)
    assert not no_grad, f"{name}: parameters without gradient: {no_grad[:5]}"


@pytest.mark.parametrize("name", CPU_MODELS)
def test_rectangular_grayscale_multiclass(name):
    model = create_model(name, in_channels=1, num_classes=2).eval()
    stride = getattr(model, "stride", 1)
    h, w = 3 * max(stride, 16), 5 * max(stride, 16)
    with torch.no_grad():
        out = model(torch.randn(1, 1, h, w))
    assert out.shape == (1, 2, h, w)


@pytest.mark.parametrize("name", CPU_MODELS)
def test_size_not_multiple_of_stride_is_rejected(name):
    model = create_model(name).eval()
    stride = getattr(model, "stride", 1)
    if stride == 1:
        pytest.skip("accepts any size")
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(1, 3, stride * 4 + 1, stride * 4))


@pytest.mark.parametrize("name", CPU_MODELS)
def test_return_aux_gives_model_output(name):
    model = create_model(name).eval()
    s = _size(model)
    with torch.no_grad():
        out = model(torch.randn(1, 3, s, s), return_aux=True)
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (1, 1, s, s)


@pytest.mark.parametrize("name", CPU_MODELS)
def test_predict_is_probability(name):
    model = create_model(name)
    s = _size(model)
    p = model.predict(torch.randn(1, 3, s, s))
    assert p.min() >= 0 and p.max() <= 1
    assert not model.training


def test_save_load_gives_the_same_output(tmp_path):
    check_save_load_roundtrip("unet_small", tmp_path)


@pytest.mark.heavy
@pytest.mark.parametrize("name", CPU_MODELS)
def test_save_load_gives_the_same_output_every_model(name, tmp_path):
    check_save_load_roundtrip(name, tmp_path)
