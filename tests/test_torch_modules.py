"""fastconv.torch: autograd functions (gradcheck), nn.Module drop-ins and swap_modules."""
import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import fastconv.torch as fct  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(np.random.SeedSequence().entropy % 2**31)


def _t(*shape):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("kw", [dict(stride=2, padding=1, groups=2),
                                dict(padding="same", dilation=2),
                                dict(padding=1, padding_mode="reflect"),
                                dict(padding=(1, 2), padding_mode="circular", stride=(2, 1))])
def test_conv2d_gradcheck(kw):
    mode = kw.pop("padding_mode", "zeros")
    x, w, b = _t(2, 4, 6, 5), _t(4, 2 if kw.get("groups") else 4, 3, 2), _t(4)
    assert torch.autograd.gradcheck(
        lambda x, w, b: fct.conv2d(x, w, b, padding_mode=mode, **kw), (x, w, b), fast_mode=True)


def test_conv_transpose2d_gradcheck():
    x, w, b = _t(2, 4, 3, 4), _t(4, 3, 3, 2), _t(6)
    assert torch.autograd.gradcheck(
        lambda x, w, b: fct.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1,
                                             groups=2), (x, w, b), fast_mode=True)


def test_pooling_gradcheck():
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64).round(decimals=2).requires_grad_()
    x = (x + 1e-3 * torch.arange(x.numel(), dtype=torch.float64).reshape(x.shape)).detach()
    x.requires_grad_()  # distinct values: max pooling is differentiable there
    assert torch.autograd.gradcheck(lambda x: fct.max_pool2d(x, 3, 2, 1, ceil_mode=True), (x,), fast_mode=True)
    assert torch.autograd.gradcheck(
        lambda x: fct.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False), (x,))
    assert torch.autograd.gradcheck(lambda x: fct.adaptive_avg_pool2d(x, (4, 3)), (x,), fast_mode=True)
    assert torch.autograd.gradcheck(lambda x: fct.adaptive_max_pool2d(x, (3, 4)), (x,), fast_mode=True)


def test_modules_keep_torch_constructors_and_init():
    torch.manual_seed(0)
    a = nn.Conv2d(3, 8, 5, stride=2, padding=2, bias=True)
    torch.manual_seed(0)
    b = fct.Conv2d(3, 8, 5, stride=2, padding=2, bias=True)
    assert isinstance(b, nn.Conv2d)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(b(x), a(x), rtol=1e-5, atol=1e-5)


def test_conv_transpose_module_output_size():
    m = fct.ConvTranspose2d(4, 2, 3, stride=2, padding=1)
    ref = copy.deepcopy(m)
    ref.__class__ = nn.ConvTranspose2d
    x = torch.randn(1, 4, 5, 5)
    out = m(x, output_size=(10, 10))
    assert out.shape == (1, 2, 10, 10)
    torch.testing.assert_close(out, ref(x, output_size=(10, 10)), rtol=1e-5, atol=1e-5)


def _small_net():
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1, padding_mode="replicate", groups=2), nn.Tanh(),
        nn.AvgPool2d(2, ceil_mode=True), nn.ConvTranspose2d(8, 4, 2, stride=2), nn.ReLU(),
        nn.AdaptiveMaxPool2d(3), nn.AdaptiveAvgPool2d((2, 2)), nn.Flatten(), nn.Linear(16, 5))


def test_swap_modules_keeps_weights_outputs_and_gradients():
    torch.manual_seed(1)
    model = _small_net().double()
    fast = fct.swap_modules(copy.deepcopy(model))
    kinds = {type(m).__module__ for m in fast.modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d))}
    assert kinds == {"fastconv.torch"}
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    out_ref, out = model(x), fast(x)
    torch.testing.assert_close(out, out_ref, rtol=1e-10, atol=1e-12)
    out_ref.square().sum().backward()
    out.square().sum().backward()
    for (name, p_ref), (_, p) in zip(model.named_parameters(), fast.named_parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-9, atol=1e-12, msg=name)


def test_swap_modules_keeps_parameter_identity():
    model = _small_net()
    params = list(model.parameters())
    fct.swap_modules(model)
    assert all(a is b for a, b in zip(params, model.parameters()))
