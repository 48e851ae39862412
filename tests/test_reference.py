"""The reference is the oracle, so it is checked itself.

* against plain Python loops written straight from the definitions;
* by the adjoint identity <conv2d(x, w), y> == <x, conv_transpose2d(y, w)>;
* on the worked examples of the seed notes (shared/seeds/);
* on the properties the notes state (translation equivariance, max pooling's
  invariance to a small shift);
* against PyTorch itself, where it is installed.
"""
import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv as fc
from fastconv.shapes import conv_transpose_output_size
from fastconv.testing import assert_close, assert_exact


# --------------------------------------------------------------------------
# plain loops, straight from the definitions
# --------------------------------------------------------------------------
def _source_index(i, size, mode):
    """Where padded coordinate i (may be outside [0, size)) reads from, or None for zero."""
    if 0 <= i < size:
        return i
    if mode == "zeros":
        return None
    if mode == "replicate":
        return min(max(i, 0), size - 1)
    if mode == "circular":
        return i % size
    if mode == "reflect":  # mirror without repeating the edge
        return -i if i < 0 else 2 * (size - 1) - i
    raise ValueError(mode)


def loop_conv2d(x, w, b, stride, pads, dilation, groups, mode="zeros"):
    n, c_in, h, wd = x.shape
    c_out, cig, kh, kw = w.shape
    top, bottom, left, right = pads
    ho = (h + top + bottom - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (wd + left + right - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, c_out, ho, wo))
    cog = c_out // groups
    for b_, o, y, xx in itertools.product(range(n), range(c_out), range(ho), range(wo)):
        g = o // cog
        acc = 0.0 if b is None else float(b[o])
        for c, i, j in itertools.product(range(cig), range(kh), range(kw)):
            iy = _source_index(y * stride[0] + i * dilation[0] - top, h, mode)
            ix = _source_index(xx * stride[1] + j * dilation[1] - left, wd, mode)
            if iy is not None and ix is not None:
                acc += x[b_, g * cig + c, iy, ix] * w[o, c, i, j]
        out[b_, o, y, xx] = acc
    return out


def loop_conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation):
    n, c_in, h, wd = x.shape
    _, cog, kh, kw = w.shape
    c_out = cog * groups
    ho = (h - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kh - 1) + output_padding[0] + 1
    wo = (wd - 1) * stride[1] - 2 * padding[1] + dilation[1] * (kw - 1) + output_padding[1] + 1
    out = np.zeros((n, c_out, ho, wo))
    cig = c_in // groups
    for b_, c, y, xx, o, i, j in itertools.product(range(n), range(c_in), range(h), range(wd),
                                                   range(cog), range(kh), range(kw)):
        oy = y * stride[0] + i * dilation[0] - padding[0]
        ox = xx * stride[1] + j * dilation[1] - padding[1]
        if 0 <= oy < ho and 0 <= ox < wo:
            out[b_, (c // cig) * cog + o, oy, ox] += x[b_, c, y, xx] * w[c, o, i, j]
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out


def loop_max_pool2d(x, k, s, p, d, ceil_mode):
    n, c, h, w = x.shape
    ho = fc.max_pool2d_output_shape(x.shape, k, s, p, d, ceil_mode)[2]
    wo = fc.max_pool2d_output_shape(x.shape, k, s, p, d, ceil_mode)[3]
    out = np.zeros((n, c, ho, wo))
    idx = np.zeros((n, c, ho, wo), dtype=np.int64)
    for b_, ch, y, xx in itertools.product(range(n), range(c), range(ho), range(wo)):
        best, best_i = -math.inf, None
        for i, j in itertools.product(range(k[0]), range(k[1])):
            iy, ix = y * s[0] - p[0] + i * d[0], xx * s[1] - p[1] + j * d[1]
            if 0 <= iy < h and 0 <= ix < w:
                v = x[b_, ch, iy, ix]
                if best_i is None:
                    best_i = iy * w + ix  # ATen starts at the first in-bounds element
                if v > best or math.isnan(v):  # ATen's update rule
                    best, best_i = v, iy * w + ix
        out[b_, ch, y, xx], idx[b_, ch, y, xx] = best, best_i
    return out, idx


def loop_avg_pool2d(x, k, s, p, ceil_mode, count_include_pad, divisor_override):
    n, c, h, w = x.shape
    _, _, ho, wo = fc.avg_pool2d_output_shape(x.shape, k, s, p, ceil_mode)
    out = np.zeros((n, c, ho, wo))
    for b_, ch, y, xx in itertools.product(range(n), range(c), range(ho), range(wo)):
        h0, w0 = y * s[0] - p[0], xx * s[1] - p[1]
        h1, w1 = min(h0 + k[0], h + p[0]), min(w0 + k[1], w + p[1])
        pool = (h1 - h0) * (w1 - w0)
        h0c, w0c, h1c, w1c = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
        total = x[b_, ch, h0c:h1c, w0c:w1c].sum()
        div = divisor_override or (pool if count_include_pad else (h1c - h0c) * (w1c - w0c))
        out[b_, ch, y, xx] = total / div
    return out


def _pads(padding, kh, kw, dilation):
    if padding == "same":
        th, tw = dilation[0] * (kh - 1), dilation[1] * (kw - 1)
        return th // 2, th - th // 2, tw // 2, tw - tw // 2
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    return ph, ph, pw, pw


CONV_LOOP_CASES = [
    ((2, 4, 6, 7), (6, 2, 3, 2), dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)),
    ((1, 3, 7, 6), (2, 3, 4, 4), dict(padding="same")),
    ((1, 2, 6, 6), (2, 2, 3, 3), dict(padding=2, padding_mode="reflect", stride=2)),
    ((1, 2, 5, 6), (3, 2, 3, 3), dict(padding=(1, 2), padding_mode="replicate")),
    ((1, 2, 5, 4), (2, 2, 3, 2), dict(padding=(2, 3), padding_mode="circular", dilation=2)),
    ((1, 3, 5, 5), (3, 1, 3, 3), dict(padding=1, groups=3)),
]


@pytest.mark.parametrize("xs,ws,kw", CONV_LOOP_CASES)
def test_conv2d_reference_equals_loops(xs, ws, kw, rng):
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    stride = kw.get("stride", 1)
    stride = (stride, stride) if isinstance(stride, int) else stride
    dil = kw.get("dilation", 1)
    dil = (dil, dil) if isinstance(dil, int) else dil
    pads = _pads(kw.get("padding", 0), ws[2], ws[3], dil)
    expect = loop_conv2d(x, w, b, stride, pads, dil, kw.get("groups", 1),
                         kw.get("padding_mode", "zeros"))
    assert_close(fc.conv2d(x, w, b, backend="numpy", **kw), expect, "float64")


@pytest.mark.parametrize("xs,ws,kw", [
    ((2, 4, 3, 4), (4, 2, 3, 2), dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2),
                                      groups=2)),
    ((1, 2, 4, 3), (2, 3, 2, 3), dict(dilation=(2, 1), padding=1, output_padding=(1, 0))),
    ((1, 3, 3, 3), (3, 1, 3, 3), dict(groups=3, stride=2)),
])
def test_conv_transpose2d_reference_equals_loops(xs, ws, kw, rng):
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    b = rng.standard_normal(ws[1] * kw.get("groups", 1))
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    expect = loop_conv_transpose2d(x, w, b, pair(kw.get("stride", 1)), pair(kw.get("padding", 0)),
                                   pair(kw.get("output_padding", 0)), kw.get("groups", 1),
                                   pair(kw.get("dilation", 1)))
    assert_close(fc.conv_transpose2d(x, w, b, backend="numpy", **kw), expect, "float64")


@pytest.mark.parametrize("k,s,p,d,ceil", [
    ((3, 3), (2, 2), (1, 1), (1, 1), True), ((2, 3), (3, 2), (1, 1), (2, 1), True),
    ((3, 2), (1, 2), (0, 1), (1, 2), False), ((1, 1), (2, 2), (0, 0), (1, 1), True),
])
def test_max_pool2d_reference_equals_loops(k, s, p, d, ceil, rng):
    x = rng.standard_normal((2, 2, 9, 8))
    x[0, 0, 1, 1:3] = np.nan
    x[1, 1, :3, :3] = -np.inf
    x[1, 0, 4, :] = 0.5  # ties
    out, idx = fc.max_pool2d(x, k, s, p, d, ceil, return_indices=True, backend="numpy")
    expect, expect_idx = loop_max_pool2d(x, k, s, p, d, ceil)
    assert_exact(out, expect, "values")
    assert_exact(idx, expect_idx, "indices")


@pytest.mark.parametrize("k,s,p,ceil,cip,div", [
    ((3, 3), (2, 2), (1, 1), True, True, None), ((3, 3), (2, 2), (1, 1), True, False, None),
    ((4, 3), (3, 2), (2, 1), True, True, None), ((2, 2), (2, 2), (1, 0), False, True, 3),
])
def test_avg_pool2d_reference_equals_loops(k, s, p, ceil, cip, div, rng):
    x = rng.standard_normal((2, 2, 9, 8))
    out = fc.avg_pool2d(x, k, s, p, ceil, cip, div, backend="numpy")
    assert_close(out, loop_avg_pool2d(x, k, s, p, ceil, cip, div), "float64")


# --------------------------------------------------------------------------
# adjoint identity: <conv2d(x, w), y> == <x, conv_transpose2d(y, w)>
# --------------------------------------------------------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_adjoint_identity(data):
    g = data.draw(st.integers(1, 3), "groups")
    cig, cog = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    kh, kw = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    sh, sw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    dh, dw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    ph, pw = data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3))
    lo_h = max(1, dh * (kh - 1) + 1 - 2 * ph)  # smallest input with an output
    lo_w = max(1, dw * (kw - 1) + 1 - 2 * pw)
    h, w = data.draw(st.integers(lo_h, lo_h + 8)), data.draw(st.integers(lo_w, lo_w + 8))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), "seed"))
    x = rng.standard_normal((2, g * cig, h, w))
    weight = rng.standard_normal((g * cog, cig, kh, kw))
    y_shape = fc.conv2d_output_shape(x.shape, weight.shape, (sh, sw), (ph, pw), (dh, dw), g)
    y = rng.standard_normal(y_shape)
    # conv_transpose2d(y) must have x's shape: recover the rows/columns the stride dropped
    op_h = h - conv_transpose_output_size(y_shape[2], kh, sh, ph, 0, dh)
    op_w = w - conv_transpose_output_size(y_shape[3], kw, sw, pw, 0, dw)
    if not (op_h < max(sh, dh) and op_w < max(sw, dw)):
        return  # x has rows no output reads and output_padding cannot express them
    lhs = np.vdot(fc.conv2d(x, weight, None, (sh, sw), (ph, pw), (dh, dw), g, backend="numpy"), y)
    xt = fc.conv_transpose2d(y, weight, None, (sh, sw), (ph, pw), (op_h, op_w), g, (dh, dw),
                             backend="numpy")
    assert xt.shape == x.shape
    rhs = np.vdot(x, xt)
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


# --------------------------------------------------------------------------
# worked examples of the seed notes
# --------------------------------------------------------------------------
BINARY_IMAGE = np.array([[1, 1, 1, 0, 0],
                         [0, 1, 1, 1, 0],
                         [0, 0, 1, 1, 1],
                         [0, 0, 1, 1, 0],
                         [0, 1, 1, 0, 0]], dtype=np.float64)
BINARY_FILTER = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], dtype=np.float64)


def test_seed_binary_image_convolved_feature():
    """000_52b30ff491a7e0e6.txt / 004: the 5x5 image and 3x3 filter; first outputs 4, 3."""
    out = fc.conv2d(BINARY_IMAGE[None, None], BINARY_FILTER[None, None], backend="numpy")
    assert out.shape == (1, 1, 3, 3)
    assert out[0, 0, 0, 0] == 4 and out[0, 0, 0, 1] == 3
    # the whole feature map of the classic example
    np.testing.assert_array_equal(out[0, 0], [[4, 3, 4], [2, 4, 3], [2, 3, 4]])


def test_seed_stride_example_15_17():
    """004: the 7x7 image with the 3x3 filter; stride 1 gives 15 first, stride 2 gives 15, 17."""
    image = np.array([[1, 2, 3, 0, 1, 2, 3], [0, 1, 2, 3, 0, 1, 2], [3, 0, 1, 2, 3, 0, 1],
                      [2, 3, 0, 1, 2, 3, 0], [1, 2, 3, 0, 1, 2, 3], [0, 1, 2, 3, 0, 1, 2],
                      [3, 0, 1, 2, 3, 0, 1]], dtype=np.float64)
    kernel = np.array([[2, 0, 1], [0, 1, 2], [1, 0, 2]], dtype=np.float64)[None, None]
    s1 = fc.conv2d(image[None, None], kernel, backend="numpy")
    s2 = fc.conv2d(image[None, None], kernel, stride=2, backend="numpy")
    assert s1.shape == (1, 1, 5, 5) and s1[0, 0, 0, 0] == 15
    assert s2.shape == (1, 1, 3, 3) and tuple(s2[0, 0, 0, :2]) == (15, 17)


@pytest.mark.parametrize("stride,size", [(1, 5), (2, 3), (4, 2)])
def test_seed_output_size_table(stride, size):
    """004/000: N=7, F=3 gives (7-3)/S+1 = 5, 3, 2 for S = 1, 2, 4."""
    assert fc.conv2d_output_shape((1, 1, 7, 7), (1, 1, 3, 3), stride=stride) == (1, 1, size, size)


def test_seed_stride_3_does_not_fit_and_floors_like_pytorch():
    """The notes mark S=3 on N=7, F=3 as invalid (2.33); PyTorch floors it to 2."""
    assert fc.conv2d_output_shape((1, 1, 7, 7), (1, 1, 3, 3), stride=3) == (1, 1, 2, 2)


def test_seed_32x32x3_ten_5x5_filters():
    """002: 32x32x3 input, ten 5x5 filters, stride 1, pad 2 -> 32x32x10 and 760 parameters."""
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32))
    w = np.zeros((10, 3, 5, 5))
    b = np.zeros(10)
    assert fc.conv2d(x, w, b, stride=1, padding=2, backend="numpy").shape == (1, 10, 32, 32)
    assert w.size + b.size == 760


@pytest.mark.parametrize("k,p", [(3, 1), (5, 2), (7, 3)])
def test_seed_same_padding(k, p):
    """004: on a 7x7 image at stride 1, P = ((7-1)*1 - (7-F))/2 keeps the size: 1, 2, 3."""
    assert ((7 - 1) * 1 - (7 - k)) // 2 == p
    assert fc.conv2d_output_shape((1, 1, 7, 7), (1, 1, k, k), padding=p) == (1, 1, 7, 7)
    x = np.random.default_rng(k).standard_normal((1, 1, 7, 7))
    w = np.random.default_rng(k + 1).standard_normal((1, 1, k, k))
    np.testing.assert_array_equal(fc.conv2d(x, w, padding="same", backend="numpy"),
                                  fc.conv2d(x, w, padding=p, backend="numpy"))


def test_seed_translation_equivariance(rng):
    """004: f(g(x)) = g(f(x)) for a translation g, away from the borders."""
    x = rng.standard_normal((1, 2, 16, 16))
    w = rng.standard_normal((3, 2, 3, 3))
    dy, dx = 2, 3
    shifted = np.roll(x, (dy, dx), axis=(2, 3))
    a = fc.conv2d(shifted, w, backend="numpy")
    b = np.roll(fc.conv2d(x, w, backend="numpy"), (dy, dx), axis=(2, 3))
    # compare where neither the roll's wrap-around nor the border reaches
    np.testing.assert_allclose(a[..., dy + 2:, dx + 2:], b[..., dy + 2:, dx + 2:], rtol=1e-12,
                               atol=1e-12)


def test_seed_max_pool_invariance_to_small_shift():
    """004: max pooling's output is unchanged when the input moves by one pixel inside windows."""
    x = np.zeros((1, 1, 8, 8))
    x[0, 0, 1, 1] = 5.0  # one strong feature in the top-left 4x4 window
    x[0, 0, 5, 6] = 3.0  # and one in the bottom-right window
    moved = np.roll(x, (1, 1), axis=(2, 3))  # features stay inside their windows
    a = fc.max_pool2d(x, 4, backend="numpy")
    b = fc.max_pool2d(moved, 4, backend="numpy")
    np.testing.assert_array_equal(a, b)
    assert a[0, 0, 0, 0] == 5.0 and a[0, 0, 1, 1] == 3.0


# --------------------------------------------------------------------------
# PyTorch itself, where installed
# --------------------------------------------------------------------------
try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - torch is in the test extra
    torch = None


needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


@needs_torch
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_conv2d_reference_equals_pytorch(data):
    g = data.draw(st.integers(1, 3))
    cig, cog = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    kh, kw = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    stride = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    dil = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    mode = data.draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    padding = data.draw(st.sampled_from(["int", "same", "valid"]))
    h, w = data.draw(st.integers(4, 9)), data.draw(st.integers(4, 9))
    if padding == "same":
        stride, pad = (1, 1), "same"
    elif padding == "valid":
        pad = "valid"
    else:
        pad = (data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((2, g * cig, h, w))
    wt = rng.standard_normal((g * cog, cig, kh, kw))
    b = rng.standard_normal(g * cog)
    try:
        mod = torch.nn.Conv2d(g * cig, g * cog, (kh, kw), stride, pad, dil, g, True, mode,
                              dtype=torch.float64)
        with torch.no_grad():
            mod.weight.copy_(torch.from_numpy(wt))
            mod.bias.copy_(torch.from_numpy(b))
            expect = mod(torch.from_numpy(x)).numpy()
    except (RuntimeError, ValueError) as exc:
        with pytest.raises(ValueError):
            fc.conv2d(x, wt, b, stride, pad, dil, g, padding_mode=mode, backend="numpy")
        return
    out = fc.conv2d(x, wt, b, stride, pad, dil, g, padding_mode=mode, backend="numpy")
    assert_close(out, expect, "float64")


@needs_torch
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_pooling_reference_equals_pytorch(data):
    k = (data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4)))
    s = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    p = (data.draw(st.integers(0, k[0] // 2)), data.draw(st.integers(0, k[1] // 2)))
    d = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    ceil = data.draw(st.booleans())
    cip = data.draw(st.booleans())
    div = data.draw(st.sampled_from([None, 1, 3, -2]))
    h, w = data.draw(st.integers(1, 10)), data.draw(st.integers(1, 10))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((2, 2, h, w)).round(1)  # rounding makes ties likely
    x.reshape(-1)[rng.choice(x.size, x.size // 10, replace=False)] = np.nan
    xt = torch.from_numpy(x)
    try:
        ev, ei = F.max_pool2d(xt, k, s, p, d, ceil, return_indices=True)
    except RuntimeError:
        with pytest.raises(ValueError):
            fc.max_pool2d(x, k, s, p, d, ceil, backend="numpy")
    else:
        v, i = fc.max_pool2d(x, k, s, p, d, ceil, return_indices=True, backend="numpy")
        assert_exact(v, ev.numpy(), "max values")
        assert_exact(i, ei.numpy(), "max indices")
    x = np.nan_to_num(x)
    try:
        ea = F.avg_pool2d(torch.from_numpy(x), k, s, p, ceil, cip, div).numpy()
    except RuntimeError:
        with pytest.raises(ValueError):
            fc.avg_pool2d(x, k, s, p, ceil, cip, div, backend="numpy")
    else:
        assert_close(fc.avg_pool2d(x, k, s, p, ceil, cip, div, backend="numpy"), ea, "float64")


@needs_torch
@pytest.mark.parametrize("shape,kw", [
    ((1, 1, 2, 3), dict(kernel_size=2, stride=1, padding=1, dilation=3)),
    ((1, 2, 1, 1), dict(kernel_size=2, stride=1, padding=1, dilation=2)),
])
def test_max_pool_windows_with_no_tap_inside_match_pytorch(shape, kw, rng):
    """A dilated window can miss the input entirely: -inf, and ATen's initial index."""
    x = rng.standard_normal(shape)
    ev, ei = F.max_pool2d(torch.from_numpy(x), return_indices=True, **kw)
    v, i = fc.max_pool2d(x, return_indices=True, backend="numpy", **kw)
    assert np.isneginf(ev.numpy()).any()
    assert_exact(v, ev.numpy(), "values")
    assert_exact(i, ei.numpy(), "indices")


@needs_torch
@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), oh=st.integers(1, 14),
       ow=st.integers(1, 14), seed=st.integers(0, 2**32 - 1))
def test_adaptive_reference_equals_pytorch(h, w, oh, ow, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, 2, h, w)).round(1)
    x.reshape(-1)[rng.choice(x.size, x.size // 8, replace=False)] = np.nan
    ev, ei = F.adaptive_max_pool2d(torch.from_numpy(x), (oh, ow), True)
    v, i = fc.adaptive_max_pool2d(x, (oh, ow), True, backend="numpy")
    assert_exact(v, ev.numpy(), "values")
    assert_exact(i, ei.numpy(), "indices")
    x = np.nan_to_num(x)
    assert_close(fc.adaptive_avg_pool2d(x, (oh, ow), backend="numpy"),
                 F.adaptive_avg_pool2d(torch.from_numpy(x), (oh, ow)).numpy(), "float64")


@needs_torch
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_conv_transpose2d_reference_equals_pytorch(data):
    g = data.draw(st.integers(1, 3))
    cig, cog = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    kh, kw = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    s = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    d = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    p = (data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2)))
    op = (data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2)))
    h, w = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((2, g * cig, h, w))
    wt = rng.standard_normal((g * cig, cog, kh, kw))
    b = rng.standard_normal(g * cog)
    try:
        expect = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(wt),
                                    torch.from_numpy(b), s, p, op, g, d).numpy()
    except RuntimeError:
        with pytest.raises(ValueError):
            fc.conv_transpose2d(x, wt, b, s, p, op, g, d, backend="numpy")
        return
    assert_close(fc.conv_transpose2d(x, wt, b, s, p, op, g, d, backend="numpy"), expect,
                 "float64")
