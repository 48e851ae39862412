"""The same tests for every registered (op, backend, algorithm), errors included.

A new kernel is tested here just by being registered.  Each check draws
fresh random inputs and compares with the float64 NumPy reference
(``backend="numpy"``) within ``fastconv.testing.TOLERANCE``; max-pooling
values and indices must be exact.
"""
import numpy as np
import pytest

import fastconv as fc
from fastconv import registry
from fastconv.testing import assert_close, assert_exact, random_array

from cases import ADAPTIVE, AVG_POOL2D, CONV2D, CONV_TRANSPOSE2D, MAX_POOL2D
from conftest import backend_params, implementation_params

DTYPES = ["float32", "float64"]


def _dtypes(impl):
    be = registry.get_backend(impl.backend)
    return [d for d in ("float16",) + tuple(DTYPES) if d in be.dtypes]


def _skip_unsupported(op, impl, *args, **kwargs):
    params, _ = fc.plan(op, *args, backend="numpy", **kwargs)
    reason = impl.unsupported_reason(params)
    if reason is not None:
        pytest.skip(f"{impl.key} does not run this case: {reason}")


def _case_id(case):
    return "-".join(str(c).replace(" ", "") for c in case)


# --------------------------------------------------------------------------
# convolution
# --------------------------------------------------------------------------
@pytest.mark.parametrize("impl", implementation_params("conv2d"))
@pytest.mark.parametrize("case", CONV2D, ids=_case_id)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_conv2d_matches_reference(impl, case, bias, rng):
    xs, ws, kw = case
    for dtype in _dtypes(impl):
        x = random_array(rng, xs, dtype)
        w = random_array(rng, ws, dtype)
        b = random_array(rng, (ws[0],), dtype) if bias else None
        _skip_unsupported("conv2d", impl, x, w, b, **kw)
        ref = fc.conv2d(x.astype(np.float64), w.astype(np.float64),
                        None if b is None else b.astype(np.float64), backend="numpy", **kw)
        out = fc.conv2d(x, w, b, backend=impl.backend, algorithm=impl.algorithm, **kw)
        assert isinstance(out, np.ndarray) and out.dtype == x.dtype
        assert out.flags.c_contiguous
        assert_close(out, ref, dtype, f"{impl.key} {case} {dtype}")


@pytest.mark.parametrize("impl", implementation_params("conv_transpose2d"))
@pytest.mark.parametrize("case", CONV_TRANSPOSE2D, ids=_case_id)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_conv_transpose2d_matches_reference(impl, case, bias, rng):
    xs, ws, kw = case
    c_out = ws[1] * kw.get("groups", 1)
    for dtype in _dtypes(impl):
        x = random_array(rng, xs, dtype)
        w = random_array(rng, ws, dtype)
        b = random_array(rng, (c_out,), dtype) if bias else None
        _skip_unsupported("conv_transpose2d", impl, x, w, b, **kw)
        ref = fc.conv_transpose2d(x.astype(np.float64), w.astype(np.float64),
                                  None if b is None else b.astype(np.float64),
                                  backend="numpy", **kw)
        out = fc.conv_transpose2d(x, w, b, backend=impl.backend, algorithm=impl.algorithm,
                                  **kw)
        assert out.dtype == x.dtype and out.flags.c_contiguous
        assert_close(out, ref, dtype, f"{impl.key} {case} {dtype}")


@pytest.mark.parametrize("impl", implementation_params("conv2d"))
@pytest.mark.parametrize("layout", ["F", "strided", "negative"])
def test_conv2d_any_layout(impl, layout, rng):
    x = random_array(rng, (2, 3, 9, 8), "float32", layout)
    w = random_array(rng, (4, 3, 3, 3), "float32", layout)
    _skip_unsupported("conv2d", impl, x, w, padding=1)
    ref = fc.conv2d(x.astype(np.float64), w.astype(np.float64), padding=1, backend="numpy")
    out = fc.conv2d(x, w, padding=1, backend=impl.backend, algorithm=impl.algorithm)
    assert out.flags.c_contiguous
    assert_close(out, ref, "float32", f"{impl.key} layout {layout}")


@pytest.mark.parametrize("impl", implementation_params("conv2d") +
                         implementation_params("conv_transpose2d"))
def test_conv_empty_batch(impl, rng):
    op = getattr(fc, impl.op)
    x = random_array(rng, (0, 2, 5, 5))
    # 3x3 (conv2d) and k4 s2 (transposed): cases every algorithm runs, winograd included
    w = random_array(rng, (2, 2, 3, 3) if impl.op == "conv2d" else (2, 2, 4, 4))
    kw = {} if impl.op == "conv2d" else {"stride": 2, "padding": 1}
    out = op(x, w, backend=impl.backend, algorithm=impl.algorithm, **kw)
    ref = op(x, w, backend="numpy", **kw)
    assert out.shape == ref.shape and out.shape[0] == 0


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------
def _nan_input(rng, shape, dtype):
    x = random_array(rng, shape, dtype)
    flat = x.reshape(-1)
    picks = rng.choice(flat.size, size=max(1, flat.size // 40), replace=False)
    flat[picks[: len(picks) // 2 + 1]] = np.nan
    flat[picks[len(picks) // 2 + 1:]] = -np.inf
    # ties: copy some values so the first-maximum rule is exercised
    flat[1::7] = flat[0]
    return x


@pytest.mark.parametrize("impl", implementation_params("max_pool2d"))
@pytest.mark.parametrize("case", MAX_POOL2D, ids=_case_id)
@pytest.mark.parametrize("special", [False, True], ids=["finite", "nan-inf-ties"])
def test_max_pool2d_exact(impl, case, special, rng):
    shape, kw = case
    for dtype in _dtypes(impl):
        x = _nan_input(rng, shape, dtype) if special else random_array(rng, shape, dtype)
        ref, ref_idx = fc.max_pool2d(x, return_indices=True, backend="numpy", **kw)
        out, idx = fc.max_pool2d(x, return_indices=True, backend=impl.backend, **kw)
        assert idx.dtype == np.int64 and out.dtype == x.dtype
        assert_exact(out, ref, f"{impl.key} values {case}")
        assert_exact(idx, ref_idx, f"{impl.key} indices {case}")
        assert_exact(fc.max_pool2d(x, backend=impl.backend, **kw), ref, f"{impl.key} no-idx")


@pytest.mark.parametrize("impl", implementation_params("avg_pool2d"))
@pytest.mark.parametrize("case", AVG_POOL2D, ids=_case_id)
def test_avg_pool2d_matches_reference(impl, case, rng):
    shape, kw = case
    for dtype in _dtypes(impl):
        x = random_array(rng, shape, dtype)
        ref = fc.avg_pool2d(x.astype(np.float64), backend="numpy", **kw)
        out = fc.avg_pool2d(x, backend=impl.backend, **kw)
        assert out.dtype == x.dtype
        assert_close(out, ref, dtype, f"{impl.key} {case}")


@pytest.mark.parametrize("impl", implementation_params("adaptive_avg_pool2d"))
@pytest.mark.parametrize("case", ADAPTIVE, ids=_case_id)
def test_adaptive_avg_pool2d_matches_reference(impl, case, rng):
    shape, size = case
    for dtype in _dtypes(impl):
        x = random_array(rng, shape, dtype)
        ref = fc.adaptive_avg_pool2d(x.astype(np.float64), size, backend="numpy")
        out = fc.adaptive_avg_pool2d(x, size, backend=impl.backend)
        assert_close(out, ref, dtype, f"{impl.key} {case}")


@pytest.mark.parametrize("impl", implementation_params("adaptive_max_pool2d"))
@pytest.mark.parametrize("case", ADAPTIVE, ids=_case_id)
def test_adaptive_max_pool2d_exact(impl, case, rng):
    shape, size = case
    for dtype in _dtypes(impl):
        x = _nan_input(rng, shape, dtype)
        ref, ref_idx = fc.adaptive_max_pool2d(x, size, True, backend="numpy")
        out, idx = fc.adaptive_max_pool2d(x, size, True, backend=impl.backend)
        assert_exact(out, ref, f"{impl.key} values {case}")
        assert_exact(idx, ref_idx, f"{impl.key} indices {case}")


@pytest.mark.parametrize("impl", implementation_params("max_pool2d") +
                         implementation_params("avg_pool2d"))
@pytest.mark.parametrize("layout", ["F", "strided", "negative"])
def test_pool_any_layout(impl, layout, rng):
    x = random_array(rng, (2, 3, 9, 8), "float32", layout)
    op = getattr(fc, impl.op)
    ref = op(np.ascontiguousarray(x), 3, 2, 1, backend="numpy")
    out = op(x, 3, 2, 1, backend=impl.backend)
    assert out.flags.c_contiguous
    assert_close(out, ref, "float32", f"{impl.key} layout {layout}")


# --------------------------------------------------------------------------
# errors: every backend rejects the same bad arguments the same way
# --------------------------------------------------------------------------
def _f32(*shape):
    return np.zeros(shape, np.float32)


BAD_CALLS = [
    # (op, args, kwargs, exception, words the message must contain)
    ("conv2d", (_f32(1, 4, 5, 5), _f32(2, 3, 3, 3)), {}, ValueError, ["weight", "4"]),
    ("conv2d", (_f32(1, 4, 5, 5), _f32(3, 2, 3, 3)), {"groups": 2}, ValueError, ["groups=2"]),
    ("conv2d", (_f32(1, 3, 5, 5), _f32(2, 1, 3, 3)), {"groups": 3}, ValueError, ["groups=3"]),
    ("conv2d", (_f32(1, 2, 5, 5), _f32(2, 2, 3, 3)), {"stride": 0}, ValueError, ["stride"]),
    ("conv2d", (_f32(1, 2, 5, 5), _f32(2, 2, 3, 3)), {"stride": -1}, ValueError, ["stride"]),
    ("conv2d", (_f32(1, 2, 5, 5), _f32(2, 2, 3, 3)), {"dilation": 0}, ValueError,
     ["dilation"]),
    ("conv2d", (_f32(1, 2, 5, 5), _f32(2, 2, 3, 3)), {"padding": -1}, ValueError,
     ["padding"]),
    ("conv2d", (_f32(1, 2, 5, 5), _f32(2, 2, 3, 3)), {"padding": "full"}, ValueError,
     ["padding", "full"]),
    ("conv2d", (_f32(1, 2, 5, 5), _f32(2, 2, 3, 3)), {"padding": "same", "stride": 2},
     ValueError, ["same", "stride"]),
    ("conv2d", (_f32(1, 2, 2, 2), _f32(2, 2, 3, 3)), {}, ValueError, ["kernel"]),
    ("conv2d", (_f32(1, 2, 5, 5), _f32(2, 2, 3, 3), _f32(3)), {}, ValueError, ["bias"]),
    ("conv2d", (_f32(2, 5, 5), _f32(2, 2, 3)), {}, ValueError, ["weight"]),
    ("conv2d", (_f32(5, 5), _f32(1, 1, 3, 3)), {}, ValueError, ["input"]),
    ("conv2d", (_f32(1, 2, 5, 5), _f32(2, 2, 3, 3)), {"padding_mode": "mirror"}, ValueError,
     ["padding_mode", "mirror"]),
    ("conv2d", (_f32(1, 2, 3, 3), _f32(2, 2, 3, 3)),
     {"padding": 3, "padding_mode": "reflect"}, ValueError, ["reflect"]),
    ("conv2d", (_f32(1, 2, 5, 5), _f32(2, 2, 3, 3)), {"stride": 1.5}, TypeError, ["stride"]),
    ("conv2d", (_f32(1, 2, 5, 5), np.zeros((2, 2, 3, 3), np.float64)), {}, TypeError,
     ["dtype"]),
    ("conv2d", (np.zeros((1, 2, 5, 5), np.int32), np.zeros((2, 2, 3, 3), np.int32)), {},
     TypeError, ["int32"]),
    ("conv2d", (np.zeros((1, 2, 5, 5), np.complex64), _f32(2, 2, 3, 3)), {}, TypeError,
     ["complex64"]),
    ("conv2d", ([[[[1.0]]]], _f32(1, 1, 1, 1)), {}, TypeError, ["input"]),
    ("conv2d", (_f32(1, 2, 5, 5), _f32(0, 2, 3, 3)), {}, ValueError, ["weight"]),
    ("conv_transpose2d", (_f32(1, 2, 5, 5), _f32(2, 2, 3, 3)),
     {"stride": 2, "output_padding": 2}, ValueError, ["output_padding"]),
    ("conv_transpose2d", (_f32(1, 3, 5, 5), _f32(2, 2, 3, 3)), {}, ValueError, ["weight"]),
    ("conv_transpose2d", (_f32(1, 2, 1, 1), _f32(2, 2, 1, 1)), {"padding": 1}, ValueError,
     ["output size"]),
    ("conv_transpose2d", (_f32(1, 3, 5, 5), _f32(3, 2, 3, 3)), {"groups": 2}, ValueError,
     ["groups=2"]),
    ("max_pool2d", (_f32(1, 2, 5, 5), 3), {"padding": 2}, ValueError, ["padding"]),
    ("max_pool2d", (_f32(1, 2, 5, 5), 0), {}, ValueError, ["kernel_size"]),
    ("max_pool2d", (_f32(1, 2, 5, 5), 2), {"stride": 0}, ValueError, ["stride"]),
    ("max_pool2d", (_f32(1, 2, 2, 2), 3), {}, ValueError, ["output size"]),
    ("max_pool2d", (_f32(1, 0, 5, 5), 2), {}, ValueError, ["channels"]),
    ("max_pool2d", (_f32(1, 2, 5, 5), 2), {"ceil_mode": "yes"}, TypeError, ["ceil_mode"]),
    ("avg_pool2d", (_f32(1, 2, 5, 5), 2), {"divisor_override": 0}, ValueError,
     ["divisor_override"]),
    ("avg_pool2d", (_f32(1, 2, 5, 5), 3), {"padding": 2}, ValueError, ["padding"]),
    ("adaptive_avg_pool2d", (_f32(1, 2, 5, 5), -1), {}, ValueError, ["output_size"]),
    ("adaptive_max_pool2d", (_f32(1, 2, 0, 5), 2), {}, ValueError, ["input"]),
    ("adaptive_avg_pool2d", (_f32(1, 2, 5, 5), (1, 2, 3)), {}, ValueError, ["output_size"]),
]


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("call", BAD_CALLS,
                         ids=[f"{c[0]}-{'-'.join(c[4])}-{i}" for i, c in enumerate(BAD_CALLS)])
def test_bad_arguments_raise_before_any_kernel(backend, call):
    op, args, kwargs, exc, words = call
    with pytest.raises(exc) as info:
        getattr(fc, op)(*args, backend=backend, **kwargs)
    message = str(info.value)
    assert message.startswith(op), message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_unknown_backend_and_algorithm_are_clear():
    x, w = _f32(1, 1, 4, 4), _f32(1, 1, 3, 3)
    with pytest.raises(ValueError, match="unknown backend 'cudnn'"):
        fc.conv2d(x, w, backend="cudnn")
    with pytest.raises(ValueError, match="no algorithm 'winograd'"):
        fc.conv2d(x, w, backend="numpy", algorithm="winograd")
    with pytest.raises(TypeError, match="backend must be a string"):
        fc.conv2d(x, w, backend=3)
