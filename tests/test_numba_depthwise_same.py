"""Edge cases of the numba depthwise / single-channel "same width" kernel (cpu_conv v9).

``conv2d_plane_same`` reads the input in place on flattened planes and recomputes the
columns whose taps wrap into the neighbouring row, so the cases here aim at the seams:
planes narrower than or as wide as the kernel, padding larger than the plane, asymmetric
"same" padding of even kernels, dilation, every padding mode, channel multipliers, tall
planes cut into several row bands, and Inf/NaN weights on padded taps (0 * Inf = NaN,
as the reference computes).  Each case also checks which kernel ran.
"""
import numpy as np
import pytest

import fastconv as fc
from fastconv.testing import assert_close, random_array

pytest.importorskip("numba")
nb = pytest.importorskip("fastconv.wrappers.numba_backend")


def _ref(x, w, b, **kw):
    return fc.conv2d(x.astype(np.float64), w.astype(np.float64),
                     None if b is None else b.astype(np.float64), backend="numpy", **kw)


def _kernel_applies(p):
    """The preconditions of conv2d_plane_same itself (the dispatch rule is narrower)."""
    return p.w_out == p.w and p.w > p.dilation[1] * (p.kw - 1)


@pytest.fixture
def any_kernel(monkeypatch):
    """Route every case the kernel supports to it (5x5, 7x7, wide rows included)."""
    monkeypatch.setattr(nb, "_is_plane_same_case", _kernel_applies)


def _run(x, w, b, **kw):
    """(numba result, whether conv2d_plane_same ran)."""
    before = nb.PATH_COUNTS["conv2d/direct/plane_same"]
    out = fc.conv2d(x, w, b, backend="numba", algorithm="direct", **kw)
    return out, nb.PATH_COUNTS["conv2d/direct/plane_same"] == before + 1


# (input shape, weight shape, kwargs, v9 expected)
CASES = [
    ((2, 3, 9, 8), (3, 1, 3, 3), dict(padding=1, groups=3), True),
    ((1, 2, 7, 10), (6, 1, 3, 3), dict(padding=1, groups=2), True),          # multiplier 3
    ((1, 1, 20, 17), (1, 1, 5, 5), dict(padding=2), True),
    ((1, 2, 20, 17), (2, 1, 5, 5), dict(padding=4, dilation=2, groups=2), True),
    ((1, 2, 11, 13), (2, 1, 3, 3), dict(padding=2, dilation=2, groups=2,
                                        padding_mode="reflect"), True),
    ((1, 2, 11, 13), (2, 1, 3, 3), dict(padding=1, groups=2, padding_mode="circular"), True),
    ((1, 2, 11, 13), (2, 1, 5, 5), dict(padding=2, groups=2, padding_mode="replicate"), True),
    ((1, 2, 9, 9), (2, 1, 4, 4), dict(padding="same", groups=2), True),       # pad 1 | 2
    ((1, 2, 9, 13), (2, 1, 2, 6), dict(padding="same", dilation=(1, 2), groups=2), True),
    ((1, 2, 9, 9), (2, 1, 2, 6), dict(padding="same", dilation=(1, 2), groups=2), False),
    ((1, 2, 6, 7), (2, 1, 3, 5), dict(padding=(1, 2), groups=2), True),
    ((1, 2, 5, 3), (2, 1, 3, 3), dict(padding=(3, 1), groups=2), True),       # rows > plane
    ((1, 3, 30, 4), (3, 1, 3, 3), dict(padding=1, groups=3), True),           # narrow
    ((1, 2, 4, 3), (2, 1, 3, 3), dict(padding=1, groups=2), True),            # W == kw
    ((3, 4, 12, 40), (4, 1, 7, 7), dict(padding=3, groups=4), True),          # generic kw
    ((1, 1, 300, 33), (1, 1, 3, 3), dict(padding=1), True),                   # several bands
    ((1, 1, 70, 300), (1, 1, 5, 5), dict(padding=2), True),
    ((2, 5, 33, 112), (5, 1, 3, 3), dict(padding=1, groups=5), True),
    ((1, 2, 3, 2), (2, 1, 3, 3), dict(padding=1, groups=2), False),           # W < kw
    ((1, 2, 9, 9), (2, 1, 3, 3), dict(padding=0, groups=2), False),           # Wo != W
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("xs, ws, kw, v9", CASES)
def test_plane_same_matches_reference(rng, any_kernel, dtype, xs, ws, kw, v9):
    x = random_array(rng, xs, dtype)
    w = random_array(rng, ws, dtype)
    b = random_array(rng, (ws[0],), dtype)
    out, used = _run(x, w, b, **kw)
    assert used == v9
    assert out.shape == _ref(x, w, b, **kw).shape
    assert_close(out, _ref(x, w, b, **kw), dtype, f"{xs} {ws} {kw}")
    out_nb, _ = _run(x, w, None, **kw)                                        # no bias
    assert_close(out_nb, _ref(x, w, None, **kw), dtype, f"{xs} {ws} {kw} no bias")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_plane_same_band_and_thread_splits(rng, any_kernel, dtype, monkeypatch):
    """Row bands of 1..many rows, cut anywhere in the plane: same result as the reference."""
    x = random_array(rng, (2, 3, 23, 19), dtype)
    w = random_array(rng, (3, 1, 3, 3), dtype)
    b = random_array(rng, (3,), dtype)
    ref = _ref(x, w, b, padding=1, groups=3)
    for elems in (1, 19, 40, 19 * 5, 10 ** 6):
        monkeypatch.setattr(nb, "PLANE_BAND_ELEMS", elems)
        out, used = _run(x, w, b, padding=1, groups=3)
        assert used
        assert_close(out, ref, dtype, f"band of {max(1, elems // 19)} rows")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_plane_same_nan_inf_weights_on_padded_taps(any_kernel, dtype):
    """A padded tap multiplies a zero: an Inf weight gives NaN on the border, as the
    reference (and Inf/-Inf inside)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 6, 9)).astype(dtype)
    w = rng.standard_normal((2, 1, 3, 3)).astype(dtype)
    w[0, 0, 0, 0] = np.inf
    w[1, 0, 2, 1] = np.nan
    out, used = _run(x, w, None, padding=1, groups=2)
    assert used
    ref = _ref(x, w, None, padding=1, groups=2)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(ref))
    fin = np.isfinite(ref)
    np.testing.assert_allclose(out[fin], ref[fin], rtol=1e-4)
    assert np.isnan(out[0, 0, 0, :]).all() and np.isnan(out[0, 0, :, 0]).all()


@pytest.mark.parametrize("xs, ws, kw, v9", [
    ((2, 32, 112, 112), (32, 1, 3, 3), dict(padding=1, groups=32), True),     # MobileNet dw
    ((1, 1, 64, 200), (1, 1, 3, 3), dict(padding="same"), True),
    ((1, 1, 64, 1024), (1, 1, 3, 3), dict(padding="same"), False),          # wide: v5
    ((1, 4, 30, 30), (4, 1, 5, 5), dict(padding=2, groups=4), False),        # 5x5: v5
    ((1, 4, 30, 30), (4, 1, 3, 3), dict(padding=0, groups=4), False),        # Wo != W
])
def test_plane_same_dispatch_rule(rng, xs, ws, kw, v9):
    x = random_array(rng, xs, "float32")
    w = random_array(rng, ws, "float32")
    out, used = _run(x, w, None, **kw)
    assert used == v9
    assert_close(out, _ref(x, w, None, **kw), "float32", f"{xs} {ws} {kw}")
