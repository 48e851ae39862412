"""Semantics under odd values, on every registered implementation.

* NaN and +-Inf propagate as in PyTorch (torch CPU is the oracle here):
  max pooling (values and indices exact: NaN wins, the last NaN's index, the
  first of equal maxima, all -inf windows), adaptive max pooling, and the
  arithmetic ops (conv, transposed conv, average pooling) where NaN and Inf
  spread through sums and products: same NaN positions, same infinities,
  the finite rest within the dtype's tolerance.
* Denormal inputs or weights and huge values (1e30 in float32, 1e300 in
  float64, results still finite) change nothing beyond the tolerance: a
  kernel that flushes denormals to zero or overflows an intermediate fails.
"""
import warnings

import numpy as np
import pytest

import fastconv as fc
import fastconv.dense  # noqa: F401  (registers the dense baseline)
from fastconv import fuzz, registry
from fastconv.testing import assert_close, assert_exact

from conftest import implementation_params

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _run(impl, x, *rest, args=(), **kwargs):
    """Call ``impl`` (any algorithm, pooling ones included) on explicit arrays."""
    op = impl.op
    weights = rest if op in ("conv2d", "conv_transpose2d") else ()
    case = fuzz.Case(op=op, input_shape=x.shape,
                     weight_shape=weights[0].shape if weights else None,
                     bias=len(weights) > 1 and weights[1] is not None, args=args,
                     kwargs=kwargs, dtype=x.dtype.name)
    params = fuzz.parse_case(case)
    reason = impl.unsupported_reason(params)
    if reason is not None:
        pytest.skip(f"{impl.key}: {reason}")
    if x.dtype.name not in registry.get_backend(impl.backend).dtypes:
        pytest.skip(f"{impl.backend} has no {x.dtype} kernels")
    arrays = (x, weights[0], weights[1] if len(weights) > 1 else None) if weights else \
        (x, None, None)
    return fuzz.call(case, impl.backend, impl.algorithm, arrays, impl)


def _t(a):
    return None if a is None else torch.from_numpy(np.ascontiguousarray(a))


#: Reported deviations from PyTorch: (implementation key, test variant) -> what.
#: Marked strict xfail: once fixed, the XPASS fails and the entry must go.
KNOWN = {
}


def _known(request, impl, variant):
    reason = KNOWN.get((impl.key, variant))
    if reason:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"known issue: {reason}"))


def _special_plane(dtype, h=9, w=10, seed=0):
    """(2, 3, h, w) with NaN, +-Inf, an all-NaN region, an all -inf region and ties."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, h, w)).astype(dtype)
    x[0, 0, 0, 0] = np.nan                 # single NaN in the first window
    x[0, 0, 0, 1] = np.inf                 # Inf beside it: NaN still wins
    x[0, 1, 2:4, 2:4] = np.nan             # an all-NaN block: the last NaN's index
    x[0, 2, :3, :3] = -np.inf              # all -inf windows: -inf, first in-bounds index
    x[1, 0, 4, 5] = np.inf                 # +Inf wins
    x[1, 1, ::2, ::3] = 1.5                # ties: the first maximum wins
    x[1, 2, 5, :] = np.nan                 # a NaN row
    x[1, 2, 6, 3] = -np.inf
    return x


# --------------------------------------------------------------------------
# max pooling: exact against torch
# --------------------------------------------------------------------------
MAX_CONFIGS = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=(2, 3), stride=(1, 2), dilation=2),
    dict(kernel_size=3, stride=1, padding=1, dilation=(1, 2)),
]


@pytest.mark.parametrize("impl", implementation_params("max_pool2d"))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cfg", MAX_CONFIGS, ids=lambda c: "-".join(f"{k}{v}" for k, v in
                                                                     c.items()))
def test_max_pool2d_nan_inf_like_torch(impl, dtype, cfg):
    x = _special_plane(dtype)
    kw = {k: v for k, v in cfg.items() if k != "kernel_size"}
    ref, ref_idx = F.max_pool2d(_t(x), cfg["kernel_size"], return_indices=True, **kw)
    out, idx = _run(impl, x, args=(cfg["kernel_size"],), return_indices=True, **kw)
    assert_exact(out, ref.numpy(), f"{impl.key} values vs torch")
    assert_exact(idx, ref_idx.numpy(), f"{impl.key} indices vs torch")


@pytest.mark.parametrize("impl", implementation_params("max_pool2d"))
def test_max_pool2d_window_with_no_tap_inside_like_torch(impl):
    """Dilation can make a window skip the whole input (H=1, k=2, d=3, pad=1): torch returns
    -inf and the index hstart*W + wstart after stepping past the padding by the dilation."""
    x = np.arange(18, dtype=np.float64).reshape(3, 1, 6) - 9
    kw = dict(stride=3, padding=(1, 0), dilation=3, ceil_mode=True)
    ref, ref_idx = F.max_pool2d(_t(x), 2, return_indices=True, **kw)
    out, idx = _run(impl, x, args=(2,), return_indices=True, **kw)
    assert_exact(out, ref.numpy(), f"{impl.key} values vs torch")
    assert_exact(idx, ref_idx.numpy(), f"{impl.key} indices vs torch")


@pytest.mark.parametrize("impl", implementation_params("adaptive_max_pool2d"))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("size", [(4, 3), (1, 1), (9, 10), (12, 7)])
def test_adaptive_max_pool2d_nan_inf_like_torch(impl, dtype, size):
    x = _special_plane(dtype)
    ref, ref_idx = F.adaptive_max_pool2d(_t(x), size, return_indices=True)
    out, idx = _run(impl, x, args=(size,), return_indices=True)
    assert_exact(out, ref.numpy(), f"{impl.key} values vs torch")
    assert_exact(idx, ref_idx.numpy(), f"{impl.key} indices vs torch")


# --------------------------------------------------------------------------
# arithmetic ops: NaN/Inf spread like in torch
# --------------------------------------------------------------------------
def _compare_special(out, ref, dtype, what):
    """Same NaN positions and infinities as torch, the rest within tolerance."""
    ref = ref.numpy()
    assert out.shape == ref.shape, what
    nan_out, nan_ref = np.isnan(out), np.isnan(ref)
    assert np.array_equal(nan_out, nan_ref), (
        f"{what}: NaN at {np.argwhere(nan_out != nan_ref)[:5].tolist()} differs from torch "
        f"({int(nan_out.sum())} NaNs vs {int(nan_ref.sum())})")
    inf = np.isinf(ref)
    assert np.array_equal(out[inf], ref[inf]) and not np.isinf(out[~inf]).any(), \
        f"{what}: infinities differ from torch"
    assert_close(out, ref.astype(np.float64), dtype, what)


@pytest.mark.parametrize("impl", implementation_params("avg_pool2d"))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cfg", [dict(kernel_size=2),
                                 dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                                 dict(kernel_size=3, stride=2, padding=1,
                                      count_include_pad=False, divisor_override=4)],
                         ids=["k2", "k3s2p1ceil", "k3s2p1-nopad-div4"])
def test_avg_pool2d_nan_inf_like_torch(impl, dtype, cfg, request):
    _known(request, impl, dtype)
    x = _special_plane(dtype)
    kw = {k: v for k, v in cfg.items() if k != "kernel_size"}
    ref = F.avg_pool2d(_t(x), cfg["kernel_size"], **kw)
    out = _run(impl, x, args=(cfg["kernel_size"],), **kw)
    _compare_special(out, ref, dtype, f"{impl.key} vs torch")


@pytest.mark.parametrize("impl", implementation_params("adaptive_avg_pool2d"))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_adaptive_avg_pool2d_nan_inf_like_torch(impl, dtype):
    x = _special_plane(dtype)
    for size in [(4, 3), (1, 1), (12, 7)]:
        ref = F.adaptive_avg_pool2d(_t(x), size)
        out = _run(impl, x, args=(size,))
        _compare_special(out, ref, dtype, f"{impl.key} {size} vs torch")


@pytest.mark.parametrize("impl", implementation_params("conv2d"))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("where", ["input", "weight", "bias"])
def test_conv2d_nan_inf_like_torch(impl, dtype, where, request):
    _known(request, impl, where)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 9, 8)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    if where == "input":
        x[0, 0, 0, 0], x[0, 1, 4, 4], x[1, 2, 8, 7], x[1, 3, 3, 2] = np.nan, np.inf, -np.inf, \
            np.inf
        x[1, 3, 3, 3] = -np.inf              # +inf and -inf in one window: NaN
    elif where == "weight":
        w[1, 0, 1, 1], w[4, 1, 0, 2] = np.nan, np.inf
    else:
        b[2], b[5] = np.nan, -np.inf
    ref = F.conv2d(_t(x), _t(w), _t(b), stride=1, padding=1, groups=2)
    out = _run(impl, x, w, b, padding=1, groups=2)
    _compare_special(out, ref, dtype, f"{impl.key} ({where}) vs torch")


@pytest.mark.parametrize("impl", implementation_params("conv_transpose2d"))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("where", ["input", "weight", "bias"])
def test_conv_transpose2d_nan_inf_like_torch(impl, dtype, where):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 6, 5)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    if where == "input":
        x[0, 0, 0, 0], x[0, 3, 2, 2], x[1, 1, 5, 4] = np.nan, np.inf, -np.inf
        x[1, 1, 5, 3] = np.inf
    elif where == "weight":
        w[0, 1, 1, 1], w[3, 2, 0, 2] = np.nan, -np.inf
    else:
        b[0], b[4] = np.inf, np.nan
    ref = F.conv_transpose2d(_t(x), _t(w), _t(b), stride=2, padding=1, groups=2)
    out = _run(impl, x, w, b, stride=2, padding=1, groups=2)
    _compare_special(out, ref, dtype, f"{impl.key} ({where}) vs torch")


# --------------------------------------------------------------------------
# denormals and huge values
# --------------------------------------------------------------------------
#: (dtype, input scale, weight scale): denormal inputs, denormal weights, huge values.
SCALES = [
    ("float32", 1e-39, 1.0), ("float32", 1.0, 1e-39), ("float32", 1e30, 1.0),
    ("float32", 1.0, 1e30),
    ("float64", 1e-309, 1.0), ("float64", 1.0, 1e-309), ("float64", 1e300, 1.0),
]
SCALE_IDS = [f"{d}-x{xs:g}-w{ws:g}" for d, xs, ws in SCALES]


def _scaled(rng, shape, dtype, scale):
    a = (rng.standard_normal(shape) * scale).astype(dtype)
    if scale < 1e-30:
        assert (np.abs(a[a != 0]) < np.finfo(dtype).tiny).mean() > 0.5, "not denormal"
    return a


def _assert_close_scaled(out, ref, dtype, what):
    """assert_close on out/s and ref/s (s = max |ref|): the relative error is the same, but
    fastconv.testing.relative_error squares the values and overflows near 1e300."""
    s = float(np.abs(ref).max())
    assert_close(out.astype(np.float64) / s, ref.astype(np.float64) / s, dtype, what)


def _reference(op, x, *rest, args=(), **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rest64 = [None if r is None else r.astype(np.float64) for r in rest]
        return getattr(fc, op)(x.astype(np.float64), *rest64, *args, backend="numpy", **kwargs)


@pytest.mark.parametrize("impl", implementation_params("conv2d")
                         + implementation_params("conv_transpose2d"))
@pytest.mark.parametrize("dtype,xs,ws", SCALES, ids=SCALE_IDS)
def test_conv_denormal_and_huge_values(impl, dtype, xs, ws):
    rng = np.random.default_rng(3)
    if impl.op == "conv2d":
        x = _scaled(rng, (2, 4, 10, 9), dtype, xs)
        w = _scaled(rng, (6, 4, 3, 3), dtype, ws)
        kw = dict(padding=1)
    else:
        x = _scaled(rng, (2, 4, 6, 5), dtype, xs)
        w = _scaled(rng, (4, 3, 3, 3), dtype, ws)
        kw = dict(stride=2, padding=1)
    out = _run(impl, x, w, None, **kw)
    ref = _reference(impl.op, x, w, None, **kw)
    assert np.isfinite(ref).all()
    assert np.abs(ref).max() > 0 and np.isfinite(out).all(), f"{impl.key}: overflow or NaN"
    _assert_close_scaled(out, ref, dtype, f"{impl.key} scale x{xs:g} w{ws:g}")


@pytest.mark.parametrize("impl", [p for op in fuzz.POOL_OPS for p in implementation_params(op)])
@pytest.mark.parametrize("dtype,scale", [("float32", 1e-39), ("float32", 1e30),
                                         ("float64", 1e-309), ("float64", 1e300)],
                         ids=["f32-denormal", "f32-huge", "f64-denormal", "f64-huge"])
def test_pool_denormal_and_huge_values(impl, dtype, scale):
    rng = np.random.default_rng(4)
    x = _scaled(rng, (2, 3, 9, 8), dtype, scale)
    args = (3,) if impl.op in ("max_pool2d", "avg_pool2d") else ((4, 3),)
    kw = dict(stride=2, padding=1) if impl.op in ("max_pool2d", "avg_pool2d") else {}
    out = _run(impl, x, args=args, **kw)
    if "max" in impl.op:
        ref = getattr(fc, impl.op)(x, *args, backend="numpy", **kw)
        assert_exact(out, ref, f"{impl.key} scale {scale:g}")
        return
    ref = _reference(impl.op, x, args=args, **kw)
    assert np.isfinite(out).all(), f"{impl.key}: overflow at scale {scale:g}"
    assert (out != 0).mean() > 0.9, f"{impl.key}: denormals flushed to zero"
    _assert_close_scaled(out, ref, dtype, f"{impl.key} scale {scale:g}")
