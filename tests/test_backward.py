"""Backward passes: against PyTorch autograd, finite differences and adjoint identities.

Run on every available CPU backend (the gradients are built from that
backend's forward kernels).
"""
import numpy as np
import pytest

import fastconv as fc
from fastconv import backward as bw
from fastconv import registry
from fastconv.testing import assert_close

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


def _cpu_backends():
    out = []
    for be in registry.all_backends():
        if be.device == "cpu":
            marks = [] if be.available else [pytest.mark.skip(reason=be.unavailable_reason())]
            out.append(pytest.param(be.name, marks=marks, id=be.name))
    return out


CONV_CASES = [
    ((2, 4, 7, 8), (6, 2, 3, 3), dict(stride=2, padding=1, groups=2)),
    ((1, 3, 9, 7), (4, 3, 2, 3), dict(stride=(3, 2), padding=(0, 1), dilation=(1, 2))),
    ((2, 3, 6, 6), (2, 3, 4, 4), dict(padding="same")),
    ((1, 2, 7, 6), (3, 2, 3, 2), dict(padding=2, padding_mode="reflect")),
    ((1, 2, 6, 7), (3, 2, 3, 3), dict(padding=(1, 2), padding_mode="replicate", stride=2)),
    ((2, 2, 5, 6), (2, 2, 3, 3), dict(padding=(2, 1), padding_mode="circular", dilation=2)),
    ((1, 3, 8, 8), (3, 1, 3, 3), dict(padding=1, groups=3)),
    ((1, 2, 9, 9), (2, 2, 2, 2), dict(stride=4)),   # stride > kernel: rows never read
    ((3, 6, 6), (2, 3, 3, 3), dict(padding=1)),     # unbatched
]


@needs_torch
@pytest.mark.parametrize("backend", _cpu_backends())
@pytest.mark.parametrize("xs,ws,kw", CONV_CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conv2d_backward_matches_pytorch(backend, xs, ws, kw, dtype, rng):
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    mode = kw.pop("padding_mode", "zeros")
    mod = torch.nn.Conv2d(xs[-3], ws[0], ws[2:], bias=True, padding_mode=mode,
                          dtype=getattr(torch, dtype), **kw)
    with torch.no_grad():
        mod.weight.copy_(torch.from_numpy(w))
        mod.bias.copy_(torch.from_numpy(b))
    xt = torch.from_numpy(x).requires_grad_()
    y = mod(xt)
    gy = rng.standard_normal(tuple(y.shape)).astype(dtype)
    y.backward(torch.from_numpy(gy))
    gx, gw, gb = bw.conv2d_backward(gy, x, w, padding_mode=mode, backend=backend, **kw)
    assert_close(gx, xt.grad.numpy(), dtype, "grad_input")
    assert_close(gw, mod.weight.grad.numpy(), dtype, "grad_weight")
    assert_close(gb, mod.bias.grad.numpy(), dtype, "grad_bias")


CONVT_CASES = [
    ((2, 4, 4, 5), (4, 3, 3, 3), dict(stride=2, padding=1, output_padding=1, groups=2)),
    ((1, 3, 5, 4), (3, 2, 2, 3), dict(stride=(2, 3), dilation=(2, 1), output_padding=(1, 2))),
    ((1, 2, 4, 4), (2, 2, 3, 3), dict(dilation=3, output_padding=2)),  # output_padding >= stride
    ((2, 4, 4), (2, 3, 3, 3), dict(stride=2)),                          # unbatched
]


@needs_torch
@pytest.mark.parametrize("backend", _cpu_backends())
@pytest.mark.parametrize("xs,ws,kw", CONVT_CASES)
def test_conv_transpose2d_backward_matches_pytorch(backend, xs, ws, kw, rng):
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    xt, wt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    bt = torch.zeros(ws[1] * kw.get("groups", 1), dtype=torch.float64, requires_grad=True)
    y = F.conv_transpose2d(xt, wt, bt, **kw)
    gy = rng.standard_normal(tuple(y.shape))
    y.backward(torch.from_numpy(gy))
    gx, gw, gb = bw.conv_transpose2d_backward(gy, x, w, backend=backend, **kw)
    assert_close(gx, xt.grad.numpy(), "float64", "grad_input")
    assert_close(gw, wt.grad.numpy(), "float64", "grad_weight")
    assert_close(gb, bt.grad.numpy(), "float64", "grad_bias")


@needs_torch
@pytest.mark.parametrize("kw", [dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                                dict(kernel_size=(2, 3), stride=1, dilation=2),
                                dict(kernel_size=2)])
def test_max_pool2d_backward_matches_pytorch(kw, rng):
    x = rng.standard_normal((2, 3, 9, 8)).round(1)  # ties
    xt = torch.from_numpy(x).requires_grad_()
    y, idx = F.max_pool2d(xt, return_indices=True, **kw)
    gy = rng.standard_normal(tuple(y.shape))
    y.backward(torch.from_numpy(gy))
    _, fidx = fc.max_pool2d(x, return_indices=True, **kw)
    gx = bw.max_pool2d_backward(gy, fidx, x.shape, **kw)
    assert_close(gx, xt.grad.numpy(), "float64", "max grad")


@needs_torch
@pytest.mark.parametrize("kw", [dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                                dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                                     count_include_pad=False),
                                dict(kernel_size=(4, 3), stride=(3, 2), padding=(2, 1),
                                     divisor_override=5)])
def test_avg_pool2d_backward_matches_pytorch(kw, rng):
    x = rng.standard_normal((2, 3, 9, 8))
    xt = torch.from_numpy(x).requires_grad_()
    y = F.avg_pool2d(xt, **kw)
    gy = rng.standard_normal(tuple(y.shape))
    y.backward(torch.from_numpy(gy))
    assert_close(bw.avg_pool2d_backward(gy, x.shape, **kw), xt.grad.numpy(), "float64")


@needs_torch
@pytest.mark.parametrize("size", [(3, 4), (7, 7), (11, 5)])
def test_adaptive_pool_backward_matches_pytorch(size, rng):
    x = rng.standard_normal((2, 3, 9, 8)).round(1)
    xt = torch.from_numpy(x).requires_grad_()
    y = F.adaptive_avg_pool2d(xt, size)
    gy = rng.standard_normal(tuple(y.shape))
    y.backward(torch.from_numpy(gy))
    assert_close(bw.adaptive_avg_pool2d_backward(gy, x.shape), xt.grad.numpy(), "float64")
    xt.grad = None
    y, _ = F.adaptive_max_pool2d(xt, size, return_indices=True)
    y.backward(torch.from_numpy(gy))
    _, idx = fc.adaptive_max_pool2d(x, size, return_indices=True)
    assert_close(bw.adaptive_max_pool2d_backward(gy, idx, x.shape), xt.grad.numpy(), "float64")


def test_conv2d_backward_finite_differences(rng):
    """Central differences on a tiny float64 case, reflect padding and groups included."""
    x = rng.standard_normal((1, 2, 5, 5))
    w = rng.standard_normal((2, 1, 3, 3))
    kw = dict(stride=2, padding=1, groups=2, padding_mode="reflect")
    gy = rng.standard_normal(fc.conv2d_output_shape(x.shape, w.shape, 2, 1, 1, 2))
    gx, gw, _ = bw.conv2d_backward(gy, x, w, backend="numpy", **kw)
    loss = lambda xx, ww: float(np.vdot(fc.conv2d(xx, ww, backend="numpy", **kw), gy))  # noqa
    eps = 1e-6
    for arr, grad, which in ((x, gx, 0), (w, gw, 1)):
        num = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            plus, minus = arr.copy(), arr.copy()
            plus[i] += eps
            minus[i] -= eps
            args_p = (plus, w) if which == 0 else (x, plus)
            args_m = (minus, w) if which == 0 else (x, minus)
            num[i] = (loss(*args_p) - loss(*args_m)) / (2 * eps)
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)


def test_backward_is_deterministic(rng):
    x = rng.standard_normal((2, 4, 12, 12)).astype(np.float32)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((2, 8, 12, 12)).astype(np.float32)
    first = bw.conv2d_backward(gy, x, w, padding=1)
    for _ in range(3):
        again = bw.conv2d_backward(gy, x, w, padding=1)
        for a, b in zip(first, again):
            assert np.array_equal(a, b)


def test_backward_rejects_wrong_grad_shape(rng):
    x = rng.standard_normal((1, 2, 5, 5))
    w = rng.standard_normal((3, 2, 3, 3))
    with pytest.raises(ValueError, match="grad_output has shape"):
        bw.conv2d_backward(np.zeros((1, 3, 4, 4)), x, w)
    with pytest.raises(ValueError, match="indices must lie"):
        bw.max_pool2d_backward(np.zeros((1, 2, 2, 2)), np.full((1, 2, 2, 2), 99), x.shape, 2)
