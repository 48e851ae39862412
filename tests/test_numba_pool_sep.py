"""Pooling kernel version 2 (kernels/cpu_pool.py): the separable max / avg / adaptive-max
kernels called directly, on what the shared tests do not reach:

* every task split (one or several chunks, planes cut into row blocks),
* both working index types (int32 and the int64 used for planes of 2**31 elements),
* windows of 1 to 13 rows (the column fold's 4 + 3 + 3 ... passes and their ping-pong
  parity), with NaN, -inf and ties placed densely so the order-free max rule is exercised,
* the test that routes dilated windows missing the input to version 1.

Values and indices must equal the NumPy reference exactly; averages within float tolerance.
"""
import numpy as np
import pytest

import fastconv as fc
from fastconv.testing import assert_close, assert_exact

pytest.importorskip("numba")
nb = pytest.importorskip("fastconv.wrappers.numba_backend")

SENTINELS = [np.int32(2**31 - 1), np.int64(1 << 62)]
SPLITS = [(1, 1), (3, 1), (2, 3), (4, 7)]  # (chunks, row blocks per plane)


def _odd_values(rng, shape, dtype):
    """Normal values with NaN, -inf, +inf and long runs of ties."""
    x = rng.standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    picks = rng.choice(flat.size, size=max(3, flat.size // 12), replace=False)
    third = len(picks) // 3
    flat[picks[:third]] = np.nan
    flat[picks[third:2 * third]] = -np.inf
    flat[picks[2 * third:2 * third + 2]] = np.inf
    flat[3::4] = flat[1]  # ties
    x[0, 0, :2, :] = -np.inf  # all -inf windows at the top
    return x


def _kernels():
    return nb._pool()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_max_pool2d_sep_exact_for_every_split(seed, dtype):
    k = _kernels()
    r = np.random.default_rng(100 + seed)
    done = 0
    while done < 6:
        kh, kw = int(r.integers(1, 6)), int(r.integers(1, 5))
        sh, sw = int(r.integers(1, 4)), int(r.integers(1, 4))
        dh, dw = int(r.integers(1, 3)), int(r.integers(1, 3))
        ph = int(r.integers(0, (dh * (kh - 1) + 1) // 2 + 1))
        pw = int(r.integers(0, (dw * (kw - 1) + 1) // 2 + 1))
        h = int(r.integers(dh * (kh - 1) + 1, 17))
        w = int(r.integers(dw * (kw - 1) + 1, 40))
        kwargs = dict(kernel_size=(kh, kw), stride=(sh, sw), padding=(ph, pw),
                      dilation=(dh, dw), ceil_mode=bool(r.integers(0, 2)))
        x = _odd_values(r, (2, 3, h, w), dtype)
        try:
            ref, ref_idx = fc.max_pool2d(x, return_indices=True, backend="numpy", **kwargs)
        except ValueError:  # output below 1
            continue
        ho, wo = ref.shape[2:]
        if (dh > 1 and k.axis_has_empty_window(h, kh, sh, ph, dh, ho)) or \
                (dw > 1 and k.axis_has_empty_window(w, kw, sw, pw, dw, wo)):
            continue  # version 1's case
        for nchunk, nrb in SPLITS:
            out = np.full(ref.shape, 7.0, dtype=dtype)
            k.max_pool2d_sep(x, out, kh, kw, sh, sw, ph, pw, dh, dw, nchunk, nrb)
            assert_exact(out, ref, f"values {kwargs} split {nchunk, nrb}")
            for big in SENTINELS:
                out = np.full(ref.shape, 7.0, dtype=dtype)
                idx = np.full(ref.shape, -5, dtype=np.int64)
                k.max_pool2d_sep_idx(x, out, idx, kh, kw, sh, sw, ph, pw, dh, dw, nchunk, nrb,
                                     big)
                assert_exact(out, ref, f"values+idx {kwargs} split {nchunk, nrb} {big.dtype}")
                assert_exact(idx, ref_idx, f"indices {kwargs} split {nchunk, nrb} {big.dtype}")
        done += 1


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 4), (7, 7), (13, 9), (3, 20)])
def test_adaptive_max_pool2d_sep_exact(dtype, size):
    """Window heights 1..13 (including those that overlap), every split, both index types."""
    k = _kernels()
    r = np.random.default_rng(7)
    for h, w in [(13, 11), (26, 19), (9, 40), (12, 32)]:
        x = _odd_values(r, (2, 2, h, w), dtype)
        ref, ref_idx = fc.adaptive_max_pool2d(x, size, return_indices=True, backend="numpy")
        for nchunk, nrb in SPLITS:
            out = np.full(ref.shape, 7.0, dtype=dtype)
            k.adaptive_max_pool2d_sep(x, out, nchunk, nrb)
            assert_exact(out, ref, f"values {h, w}->{size} split {nchunk, nrb}")
            for big in SENTINELS:
                out = np.full(ref.shape, 7.0, dtype=dtype)
                idx = np.full(ref.shape, -5, dtype=np.int64)
                k.adaptive_max_pool2d_sep_idx(x, out, idx, nchunk, nrb, big)
                assert_exact(out, ref, f"values+idx {h, w}->{size} {big.dtype}")
                assert_exact(idx, ref_idx, f"indices {h, w}->{size} {big.dtype}")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_avg_pool2d_sep_for_every_split(seed, dtype):
    k = _kernels()
    r = np.random.default_rng(200 + seed)
    done = 0
    while done < 6:
        kh, kw = int(r.integers(1, 7)), int(r.integers(1, 5))
        sh, sw = int(r.integers(1, 4)), int(r.integers(1, 4))
        ph, pw = int(r.integers(0, kh // 2 + 1)), int(r.integers(0, kw // 2 + 1))
        h, w = int(r.integers(kh, 17)), int(r.integers(kw, 40))
        kwargs = dict(kernel_size=(kh, kw), stride=(sh, sw), padding=(ph, pw),
                      ceil_mode=bool(r.integers(0, 2)),
                      count_include_pad=bool(r.integers(0, 2)))
        x = r.standard_normal((2, 3, h, w)).astype(dtype)
        try:
            ref = fc.avg_pool2d(x, backend="numpy", **kwargs)
        except ValueError:
            continue
        p, _ = fc.plan("avg_pool2d", x, backend="numpy", **kwargs)
        divisor = np.ascontiguousarray(nb.reference.avg_divisors(p), dtype=dtype)
        for nchunk, nrb in SPLITS:
            out = np.full(ref.shape, 7.0, dtype=dtype)
            k.avg_pool2d_sep(x, out, divisor, kh, kw, sh, sw, ph, pw, nchunk, nrb)
            assert_close(out, ref, dtype, f"{kwargs} split {nchunk, nrb}")
        done += 1


def test_axis_has_empty_window_matches_brute_force():
    k = _kernels()
    r = np.random.default_rng(3)
    for _ in range(400):
        kk, s, d = int(r.integers(1, 5)), int(r.integers(1, 5)), int(r.integers(1, 5))
        p = int(r.integers(0, (d * (kk - 1) + 1) // 2 + 1))
        n = int(r.integers(1, 12))
        n_out = (n + 2 * p - d * (kk - 1) - 1) // s + 1
        if n_out < 1:
            continue
        brute = any(all(not (0 <= o * s - p + j * d < n) for j in range(kk))
                    for o in range(n_out))
        assert k.axis_has_empty_window(n, kk, s, p, d, n_out) == brute, (n, kk, s, p, d)
