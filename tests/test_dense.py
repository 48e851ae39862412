"""The dense-matrix baseline: the matrix equals conv2d, its limits, and the book's counts."""
import numpy as np
import pytest

import fastconv as fc
from fastconv import dense, registry
from fastconv.testing import assert_close, random_array

PADDING_MODES = ["zeros", "reflect", "replicate", "circular"]


def _random_config(rng):
    """A random valid conv2d configuration: every argument, every padding form."""
    while True:
        groups = int(rng.choice([1, 1, 2, 3]))
        c_in = groups * int(rng.integers(1, 3))
        c_out = groups * int(rng.integers(1, 3))
        kh, kw = (int(v) for v in rng.integers(1, 4, size=2))
        h, w = (int(v) for v in rng.integers(1, 9, size=2))
        n = int(rng.integers(1, 3))
        kwargs = {"stride": tuple(int(v) for v in rng.integers(1, 3, size=2)),
                  "dilation": tuple(int(v) for v in rng.integers(1, 3, size=2)),
                  "groups": groups,
                  "padding_mode": str(rng.choice(PADDING_MODES))}
        form = rng.integers(0, 3)
        if form == 0:
            kwargs["padding"] = tuple(int(v) for v in rng.integers(0, 3, size=2))
        elif form == 1:
            kwargs["padding"] = "same"
            kwargs["stride"] = 1
        else:
            kwargs["padding"] = "valid"
        try:
            fc.conv2d_output_shape((n, c_in, h, w), (c_out, c_in // groups, kh, kw), **kwargs)
        except ValueError:
            continue  # e.g. padding larger than a reflect input, kernel over the input
        return (n, c_in, h, w), (c_out, c_in // groups, kh, kw), kwargs


@pytest.mark.parametrize("trial", range(40))
def test_dense_and_sparse_equal_conv2d(trial, rng):
    xs, ws, kwargs = _random_config(rng)
    x = random_array(rng, xs, "float64")
    w = random_array(rng, ws, "float64")
    b = random_array(rng, (ws[0],), "float64") if trial % 2 else None
    ref = fc.conv2d(x, w, b, backend="numpy", **kwargs)
    params, _ = fc.plan("conv2d", x, w, b, backend="numpy", **kwargs)
    what = f"{xs} {ws} {kwargs}"
    m = dense.dense_matrix(params, w)
    assert m.shape == (params.c_out * params.h_out * params.w_out, np.prod(xs[1:]))
    assert_close(dense.apply(m, x, params, b), ref, "float64", "dense " + what)
    for use_scipy in (None, False):
        s = dense.sparse_matrix(params, w, use_scipy=use_scipy)
        assert_close(dense.apply(s, x, params, b), ref, "float64", f"sparse {use_scipy} " + what)
        np.testing.assert_allclose(s.toarray(), m, rtol=1e-12, atol=1e-12)
    # structural non-zeros: exactly the entries some tap reaches (random weights never cancel
    # except by chance where reflect folds two taps onto one entry)
    assert np.count_nonzero(m) <= dense.counts(params)["nonzeros"]
    if kwargs["padding_mode"] == "zeros":
        assert np.count_nonzero(m) == dense.counts(params)["nonzeros"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_registered_dense_algorithm(dtype, rng):
    impl = registry.lookup("conv2d", "numpy", "dense")
    x = random_array(rng, (2, 4, 9, 8), dtype)
    w = random_array(rng, (6, 2, 3, 3), dtype)
    b = random_array(rng, (6,), dtype)
    kw = {"groups": 2, "padding": 1, "stride": (1, 2)}
    ref = fc.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                    backend="numpy", **kw)
    out = fc.conv2d(x, w, b, backend="numpy", algorithm="dense", **kw)
    assert out.dtype == x.dtype and out.flags.c_contiguous
    assert_close(out, ref, dtype, impl.key)
    # a different weight must not reuse the cached matrix of the previous one
    w2 = random_array(rng, w.shape, dtype)
    ref2 = fc.conv2d(x.astype(np.float64), w2.astype(np.float64), None, backend="numpy", **kw)
    assert_close(fc.conv2d(x, w2, None, backend="numpy", algorithm="dense", **kw), ref2, dtype)
    dense.clear_cache()


def test_matrix_is_doubly_block_toeplitz():
    """Zero padding: blocks (output row, input row) depend only on their difference."""
    p = dense.conv_params((1, 1, 5, 6), (1, 1, 2, 3), dtype="float64")
    w = np.arange(1.0, 7.0).reshape(1, 1, 2, 3)
    m = dense.dense_matrix(p, w).reshape(p.h_out, p.w_out, p.h, p.w)
    for y in range(p.h_out):
        for h in range(p.h):
            block = m[y, :, h, :]
            i = h - y
            if 0 <= i < 2:
                for x in range(p.w_out):  # Toeplitz: row x holds w[i] starting at column x
                    expect = np.zeros(p.w)
                    expect[x:x + 3] = w[0, 0, i]
                    np.testing.assert_array_equal(block[x], expect)
            else:
                assert not block.any()


def test_memory_limit_refusal_names_bytes():
    p = dense.edge_detection_params()
    need = 89_320 * 89_600 * 4
    with pytest.raises(MemoryError, match=f"needs {need:,} bytes"):
        dense.dense_matrix(p, dense.EDGE_KERNEL)
    with pytest.raises(ValueError, match="over the memory limit of 1,000 bytes"):
        dense.dense_matrix(dense.edge_detection_params(8, 4), dense.EDGE_KERNEL,
                           memory_limit=1000)
    small = dense.edge_detection_params(8, 4)
    m = dense.dense_matrix(small, dense.EDGE_KERNEL, memory_limit=28 * 32 * 4)
    assert m.shape == (28, 32) and m.dtype == np.float32
    with pytest.raises(dense.DenseMatrixTooLarge, match="sparse"):
        dense.sparse_matrix(p, dense.EDGE_KERNEL, memory_limit=1000)


def test_dense_supports_refuses_over_limit(monkeypatch):
    impl = registry.lookup("conv2d", "numpy", "dense")
    big, _ = fc.plan("conv2d", np.zeros((1, 1, 280, 320), np.float32),
                     np.zeros((1, 1, 1, 2), np.float32), backend="numpy")
    reason = impl.unsupported_reason(big)
    assert reason is not None and "32,012,288,000 bytes" in reason
    with pytest.raises(fc.BackendUnavailableError, match="32,012,288,000 bytes"):
        fc.conv2d(np.zeros((1, 1, 280, 320), np.float32), np.zeros((1, 1, 1, 2), np.float32),
                  backend="numpy", algorithm="dense")
    monkeypatch.setattr(dense, "MEMORY_LIMIT", 40 * 10**9)
    assert impl.unsupported_reason(big) is None  # the module-level limit is read per call


def test_edge_detection_counts_from_formulas():
    c = dense.edge_detection_counts(320, 280)
    out_w, out_h = 320 - 2 + 1, 280
    outputs = out_w * out_h
    assert (c["out_width"], c["out_height"]) == (319, 280)
    assert c["conv_flops"] == outputs * 3 == 267_960          # 2 multiplies + 1 add
    assert c["conv_flops_fma2"] == outputs * 2 * 2 == 357_280  # 2 flops per multiply-add
    assert c["rows"] == outputs == 89_320
    assert c["cols"] == 320 * 280 == 89_600
    assert c["entries"] == 89_320 * 89_600 == 8_003_072_000
    assert c["dense_bytes"] == 32_012_288_000                  # "32 GB" in float32
    assert c["nonzeros"] == 2 * outputs == 178_640
    assert c["dense_flops"] == 2 * c["entries"] == 16_006_144_000  # not the seed's 16,000,000
    assert round(c["ratio_dense_to_conv"], -3) == 60_000
    assert c["dense_flops"] > 1000 * 16_000_000


def test_counts_match_built_matrix(rng):
    p = dense.edge_detection_params(13, 11)
    m = dense.dense_matrix(p, dense.EDGE_KERNEL)
    c = dense.counts(p)
    assert m.size == c["entries"] and m.nbytes == c["dense_bytes"]
    assert np.count_nonzero(m) == c["nonzeros"]
    # [-1, 1]: every row holds -1 at its pixel and +1 at its right neighbour
    assert (m.sum(axis=1) == 0).all()
    x = random_array(rng, (1, 1, 11, 13), "float32")
    np.testing.assert_allclose((m @ x.ravel()).reshape(11, 12), x[0, 0, :, 1:] - x[0, 0, :, :-1],
                               rtol=1e-6, atol=1e-6)


def test_numpy_csr_without_scipy(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name.startswith("scipy"):
            raise ImportError("no scipy here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    p = dense.edge_detection_params(6, 5)
    s = dense.sparse_matrix(p, dense.EDGE_KERNEL)
    assert isinstance(s, dense.CSRMatrix) and s.nnz == 50
    with pytest.raises(ImportError, match="needs SciPy"):
        dense.sparse_matrix(p, dense.EDGE_KERNEL, use_scipy=True)
