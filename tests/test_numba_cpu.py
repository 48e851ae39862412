"""Tests specific to the "numba" CPU backend (the shared ones are in test_backends.py).

* the im2col / col2im workspace cap is honoured (chunking computed and used),
  and results still match the reference when the cap forces tiny chunks;
* the "auto" rules pick what their docstrings say;
* the 1x1 stride-1 fast path really skips im2col;
* concurrent calls from Python threads give the sequential results;
* transposed convolution is deterministic (bitwise-equal repeats);
* a random sweep over stride/dilation/groups/padding modes on both algorithms;
* the shared backend tests pass again with NUMBA_BOUNDSCHECK=1 (a separate
  process with its own Numba cache, so bounds-checked builds stay out of the
  normal cache).
"""
import os
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastconv as fc
from fastconv import registry
from fastconv.testing import assert_close, assert_exact, random_array

numba = pytest.importorskip("numba")
nb = pytest.importorskip("fastconv.wrappers.numba_backend")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ref_conv(x, w, b=None, **kw):
    return fc.conv2d(x.astype(np.float64), w.astype(np.float64),
                     None if b is None else b.astype(np.float64), backend="numpy", **kw)


def _in_fresh_thread(fn):
    """Run ``fn`` in a new thread (fresh thread-local workspaces); return (result, buffers)."""
    box = {}

    def target():
        box["result"] = fn()
        box["bufs"] = dict(getattr(nb._tls, "bufs", {}))
    t = threading.Thread(target=target)
    t.start()
    t.join()
    return box["result"], box["bufs"]


# --------------------------------------------------------------------------
# workspace cap
# --------------------------------------------------------------------------
CAP_CASES = [
    # (input, weight, kwargs): several images per chunk, row chunks, column chunks
    ((6, 3, 9, 10), (4, 3, 3, 3), {"padding": 1}),
    ((2, 4, 17, 23), (6, 2, 3, 2), {"padding": (1, 2), "groups": 2, "stride": (2, 1)}),
    ((1, 3, 12, 40), (5, 3, 3, 3), {"padding": 2, "dilation": 2,
                                    "padding_mode": "reflect"}),
    ((1, 2, 8, 30), (3, 2, 5, 5), {"padding": 2, "padding_mode": "circular"}),
]


@pytest.mark.parametrize("cap", [400, 2000, 30000])
@pytest.mark.parametrize("case", CAP_CASES, ids=lambda c: str(c[0]))
@pytest.mark.parametrize("bias", [False, True])
def test_im2col_workspace_cap(monkeypatch, rng, case, cap, bias):
    xs, ws, kw = case
    monkeypatch.setattr(nb, "IM2COL_WORKSPACE_BYTES", cap)
    x = random_array(rng, xs, "float32")
    w = random_array(rng, ws, "float32")
    b = random_array(rng, (ws[0],), "float32") if bias else None
    p, impl = fc.plan("conv2d", x, w, b, backend="numba", algorithm="im2col", **kw)
    images, rows, cols = nb.im2col_chunk(p, 4)
    kk = (p.c_in // p.groups) * p.kh * p.kw + (1 if bias else 0)
    og = p.c_out // p.groups
    need = kk * images * rows * cols * 4 + (og * images * rows * cols * 4 if images > 1 else 0)
    assert need <= cap or (images, rows, cols) == (1, 1, 1)
    assert images == 1 or (rows, cols) == (p.h_out, p.w_out)
    assert rows == 1 or cols == p.w_out
    out, bufs = _in_fresh_thread(
        lambda: fc.conv2d(x, w, b, backend="numba", algorithm="im2col", **kw))
    assert_close(out, _ref_conv(x, w, b, **kw), "float32", f"cap {cap}")
    used = sum(buf.nbytes for (name, _dt), buf in bufs.items() if name.startswith("im2col"))
    assert 0 < used <= max(cap, kk * 4)
    if nb.wide_im2col_images(p, 4):
        rows = nb.wide_rows_per_block(p, 4)
        wp = p.w + p.padding[2] + p.padding[3]
        assert rows == p.h_out or (kk + og) * rows * wp * 4 <= cap


@pytest.mark.parametrize("block", [1, 3000, 1 << 24])
def test_wide_im2col_row_blocks(monkeypatch, rng, block):
    """The stride-1 "wide" path, cut into row blocks of any size, still matches."""
    monkeypatch.setattr(nb, "WIDE_BLOCK_BYTES", block)
    x = random_array(rng, (1, 3, 11, 9), "float64")
    w = random_array(rng, (4, 3, 3, 2), "float64")
    b = random_array(rng, (4,), "float64")
    kw = {"padding": (1, 2), "dilation": (2, 1), "padding_mode": "replicate"}
    p, _ = fc.plan("conv2d", x, w, b, backend="numba", **kw)
    assert nb.wide_im2col_images(p, 8) == 1
    before = nb.PATH_COUNTS["conv2d/im2col/wide"]
    out = fc.conv2d(x, w, b, backend="numba", algorithm="im2col", **kw)
    assert nb.PATH_COUNTS["conv2d/im2col/wide"] == before + 1
    assert_close(out, _ref_conv(x, w, b, **kw), "float64", f"block {block}")


def test_im2col_chunks_follow_the_cap_and_batch_small_images():
    p, _ = fc.plan("conv2d", np.zeros((8, 64, 14, 14), np.float32),
                   np.zeros((64, 64, 3, 3), np.float32), padding=1, backend="numba")
    images, rows, cols = nb.im2col_chunk(p, 4, cap=64 << 20)
    assert (images, rows, cols) == (8, 14, 14)  # small images are batched into one GEMM
    images, rows, cols = nb.im2col_chunk(p, 4, cap=577 * 4 * 14 * 3)
    assert (images, rows, cols) == (1, 3, 14)
    images, rows, cols = nb.im2col_chunk(p, 4, cap=576 * 4 * 5)
    assert (images, rows, cols) == (1, 1, 5)


def test_conv_transpose2d_gemm_workspace_cap(monkeypatch, rng):
    x = random_array(rng, (2, 4, 9, 7), "float32")
    w = random_array(rng, (4, 3, 3, 3), "float32")
    b = random_array(rng, (3,), "float32")
    kw = {"stride": 2, "padding": 1, "output_padding": 1}
    monkeypatch.setattr(nb, "IM2COL_WORKSPACE_BYTES", 3 * 9 * 7 * 4 * 2)  # two input rows
    out, bufs = _in_fresh_thread(lambda: fc.conv_transpose2d(x, w, b, backend="numba",
                                                             algorithm="gemm", **kw))
    ref = fc.conv_transpose2d(x.astype(np.float64), w.astype(np.float64),
                              b.astype(np.float64), backend="numpy", **kw)
    assert_close(out, ref, "float32", "capped col2im")
    assert bufs[("col2im", np.dtype(np.float32).str)].nbytes <= nb.IM2COL_WORKSPACE_BYTES


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("xs, ws, kw", [
    ((2, 64, 28, 28), (64, 32, 4, 4), {"stride": 2, "padding": 1}),          # DCGAN-like
    ((2, 6, 7, 9), (6, 4, 3, 3), {"stride": 2, "padding": 1, "output_padding": 1}),
    ((2, 6, 7, 9), (6, 2, 3, 3), {"stride": (3, 2), "padding": (0, 2), "output_padding": (1, 0),
                                  "dilation": (2, 1), "groups": 2}),
    ((1, 4, 5, 5), (4, 3, 5, 5), {"stride": 3, "padding": 2, "output_padding": 2,
                                  "dilation": 2, "groups": 2}),
    ((3, 3, 1, 1), (3, 3, 2, 2), {"stride": 2}),                             # 1x1 input
    ((2, 4, 6, 5), (4, 4, 1, 1), {"stride": 2, "output_padding": 1}),        # 1x1 kernel
    ((1, 2, 4, 4), (2, 2, 2, 2), {"stride": 4, "padding": 3}),               # stride > kernel
    ((2, 5, 3, 11), (5, 3, 4, 2), {"stride": (1, 3), "padding": (1, 0)}),    # stride 1 rows
    ((2, 3, 5, 6), (3, 2, 3, 3), {"stride": 2}),                             # odd Wo = 13
    ((1, 3, 4, 7), (3, 2, 3, 2), {"stride": (2, 2), "padding": (2, 1), "dilation": 2,
                                  "output_padding": 1}),                       # odd Wo, dilated
])
@pytest.mark.parametrize("with_bias", [True, False])
def test_conv_transpose2d_phase_col2im(rng, dtype, xs, ws, kw, with_bias):
    """Stride > 1: the GEMM path's col2im runs through stride-phase planes (kernel v8)."""
    x = random_array(rng, xs, dtype)
    w = random_array(rng, ws, dtype)
    g = kw.get("groups", 1)
    b = random_array(rng, (ws[1] * g,), dtype) if with_bias else None
    before = nb.PATH_COUNTS["conv_transpose2d/gemm/phase"]
    out = fc.conv_transpose2d(x, w, b, backend="numba", algorithm="gemm", **kw)
    assert nb.PATH_COUNTS["conv_transpose2d/gemm/phase"] == before + 1
    ref = fc.conv_transpose2d(x.astype(np.float64), w.astype(np.float64),
                              None if b is None else b.astype(np.float64), backend="numpy", **kw)
    assert out.dtype == np.dtype(dtype)
    assert_close(out, ref, dtype, f"phase col2im {xs} {ws} {kw}")


def test_conv_transpose2d_phase_col2im_chunks_and_stride1(monkeypatch, rng):
    """One image per step (3 steps, reused workspaces) matches; stride 1 keeps version 4."""
    x = random_array(rng, (3, 8, 9, 10), "float32")
    w = random_array(rng, (8, 5, 4, 4), "float32")
    b = random_array(rng, (5,), "float32")
    kw = {"stride": 2, "padding": 1}
    monkeypatch.setattr(nb, "CONVT_PHASE_BLOCK_BYTES", 1)
    before = nb.PATH_COUNTS["conv_transpose2d/gemm/phase"]
    out = fc.conv_transpose2d(x, w, b, backend="numba", algorithm="gemm", **kw)
    assert nb.PATH_COUNTS["conv_transpose2d/gemm/phase"] == before + 1
    ref = fc.conv_transpose2d(x.astype(np.float64), w.astype(np.float64),
                              b.astype(np.float64), backend="numpy", **kw)
    assert_close(out, ref, "float32", "phase col2im, one image per step")
    before = nb.PATH_COUNTS["conv_transpose2d/gemm/phase"]
    fc.conv_transpose2d(x, w, b, padding=1, backend="numba", algorithm="gemm")
    assert nb.PATH_COUNTS["conv_transpose2d/gemm/phase"] == before


# --------------------------------------------------------------------------
# auto rules and fast paths
# --------------------------------------------------------------------------
@pytest.mark.parametrize("xs, ws, kw, want", [
    ((16, 32, 112, 112), (32, 1, 3, 3), {"padding": 1, "groups": 32}, "direct"),  # depthwise
    ((1, 1, 1024, 1024), (1, 1, 5, 5), {"padding": "same"}, "direct"),   # image filter
    ((256, 1, 32, 32), (6, 1, 5, 5), {}, "implicit-gemm"),               # LeNet C1
    ((256, 6, 14, 14), (16, 6, 5, 5), {}, "implicit-gemm"),              # LeNet C3
    ((8, 64, 56, 56), (64, 64, 3, 3), {"padding": 1}, "winograd"),
    ((1, 256, 56, 56), (256, 256, 3, 3), {"padding": 1}, "winograd"),     # VGG-16 conv3_2
    ((8, 16, 56, 56), (16, 16, 3, 3), {"padding": 1}, "implicit-gemm"),   # too few channels
    ((1, 3, 224, 224), (64, 3, 3, 3), {"padding": 1}, "implicit-gemm"),
    ((8, 64, 56, 56), (64, 64, 3, 3), {"padding": 1, "dilation": 2}, "implicit-gemm"),
    ((8, 128, 56, 56), (128, 128, 3, 3), {"padding": 1, "stride": 2}, "implicit-gemm"),
    ((8, 256, 56, 56), (64, 256, 1, 1), {}, "im2col"),
    ((8, 512, 7, 7), (512, 512, 3, 3), {"padding": 1}, "implicit-gemm"),  # packed tiles
])
def test_conv2d_auto_rule(xs, ws, kw, want):
    _, impl = fc.plan("conv2d", np.empty(xs, np.float32), np.empty(ws, np.float32),
                      backend="numba", **kw)
    assert impl.algorithm == want


def test_conv_transpose2d_auto_rule():
    _, impl = fc.plan("conv_transpose2d", np.empty((16, 64, 28, 28), np.float32),
                      np.empty((64, 32, 4, 4), np.float32), stride=2, padding=1,
                      backend="numba")
    assert impl.algorithm == "direct"
    _, impl = fc.plan("conv_transpose2d", np.empty((16, 256, 14, 14), np.float32),
                      np.empty((256, 128, 2, 2), np.float32), stride=2, backend="numba")
    assert impl.algorithm == "gemm"
    _, impl = fc.plan("conv_transpose2d", np.empty((1, 8, 8, 8), np.float32),
                      np.empty((8, 1, 3, 3), np.float32), groups=8, backend="numba")
    assert impl.algorithm == "direct"


@pytest.mark.parametrize("xs, ws, kw, path", [
    ((2, 3, 9, 9), (3, 1, 3, 3), {"padding": 1, "groups": 3}, "conv2d/direct/plane"),
    ((1, 1, 200, 300), (1, 1, 5, 5), {"padding": 2}, "conv2d/direct/plane"),
    ((2, 2, 9, 9), (6, 1, 3, 3), {"padding": 1, "groups": 2}, "conv2d/direct/plane"),
    ((3, 1, 12, 12), (6, 1, 5, 5), {}, "conv2d/direct/plane"),
    ((2, 4, 10, 9), (6, 2, 3, 3), {"padding": 1, "groups": 2,
                                   "padding_mode": "circular"}, "conv2d/direct"),
    ((1, 3, 10, 12), (5, 3, 3, 3), {"stride": 2, "padding": 1}, "conv2d/direct"),
])
def test_direct_paths(rng, xs, ws, kw, path):
    x = random_array(rng, xs, "float32")
    w = random_array(rng, ws, "float32")
    b = random_array(rng, (ws[0],), "float32")
    before = nb.PATH_COUNTS[path]
    out = fc.conv2d(x, w, b, backend="numba", algorithm="direct", **kw)
    assert nb.PATH_COUNTS[path] == before + 1
    assert_close(out, _ref_conv(x, w, b, **kw), "float32", path)


def test_pointwise_fast_path_is_taken(rng):
    x = random_array(rng, (2, 6, 5, 7), "float32")
    w = random_array(rng, (4, 3, 1, 1), "float32")
    b = random_array(rng, (4,), "float32")
    before = dict(nb.PATH_COUNTS)
    out = fc.conv2d(x, w, b, groups=2, backend="numba", algorithm="im2col")
    assert nb.PATH_COUNTS["conv2d/im2col/1x1"] == before.get("conv2d/im2col/1x1", 0) + 1
    assert nb.PATH_COUNTS["conv2d/im2col/gemm"] == before.get("conv2d/im2col/gemm", 0)
    assert_close(out, _ref_conv(x, w, b, groups=2), "float32", "1x1")
    # a strided or padded 1x1 convolution is not pointwise: it goes through im2col
    fc.conv2d(x, w, b, groups=2, stride=2, backend="numba", algorithm="im2col")
    assert nb.PATH_COUNTS["conv2d/im2col/gemm"] == before.get("conv2d/im2col/gemm", 0) + 1


# --------------------------------------------------------------------------
# thread safety and determinism
# --------------------------------------------------------------------------
def _thread_calls(rng):
    x = random_array(rng, (3, 8, 21, 19), "float32")
    w = random_array(rng, (6, 8, 3, 3), "float32")
    wd = random_array(rng, (8, 1, 3, 3), "float32")
    wt = random_array(rng, (8, 4, 4, 4), "float32")
    return [
        lambda: fc.conv2d(x, w, padding=1, backend="numba", algorithm="direct"),
        lambda: fc.conv2d(x, w, padding=1, backend="numba", algorithm="implicit-gemm"),
        lambda: fc.conv2d(x, w, padding=1, backend="numba", algorithm="im2col"),
        lambda: fc.conv2d(x, wd, padding=1, groups=8, backend="numba"),
        lambda: fc.conv_transpose2d(x, wt, stride=2, padding=1, backend="numba",
                                    algorithm="gemm"),
        lambda: fc.conv_transpose2d(x, wt, stride=2, padding=1, backend="numba",
                                    algorithm="direct"),
        lambda: fc.max_pool2d(x, 3, 2, 1, return_indices=True, backend="numba"),
        lambda: fc.avg_pool2d(x, 3, 2, 1, backend="numba"),
        lambda: fc.adaptive_max_pool2d(x, (5, 4), True, backend="numba"),
        lambda: fc.adaptive_avg_pool2d(x, (5, 4), backend="numba"),
    ]


def _as_tuple(r):
    return r if isinstance(r, tuple) else (r,)


def test_concurrent_calls_from_threads(rng, monkeypatch):
    monkeypatch.setattr(nb, "IM2COL_WORKSPACE_BYTES", 8192)  # many chunks, shared buffers
    calls = _thread_calls(rng)
    expected = [_as_tuple(f()) for f in calls]
    jobs = [i for i in range(len(calls)) for _ in range(6)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda i: (i, _as_tuple(calls[i]())), jobs))
    for i, got in results:
        for a, b in zip(got, expected[i]):
            assert_exact(a, b, f"call {i} from a thread")


def test_conv_transpose2d_is_deterministic(rng):
    x = random_array(rng, (2, 16, 13, 11), "float32")
    w = random_array(rng, (16, 8, 4, 4), "float32")
    for alg in ("direct", "gemm"):
        first = fc.conv_transpose2d(x, w, stride=2, padding=1, backend="numba", algorithm=alg)
        for _ in range(3):
            again = fc.conv_transpose2d(x, w, stride=2, padding=1, backend="numba",
                                        algorithm=alg)
            assert np.array_equal(first, again)


# --------------------------------------------------------------------------
# a random sweep over the conv2d arguments
# --------------------------------------------------------------------------
def _random_conv_case(r):
    groups = int(r.choice([1, 1, 2, 3]))
    cg, og = int(r.integers(1, 4)), int(r.integers(1, 6))
    kh, kw = int(r.integers(1, 6)), int(r.integers(1, 6))
    sh, sw = int(r.integers(1, 4)), int(r.integers(1, 4))
    dh, dw = int(r.integers(1, 3)), int(r.integers(1, 3))
    mode = str(r.choice(["zeros", "reflect", "replicate", "circular"]))
    h, w = int(r.integers(dh * (kh - 1) + 1, 20)), int(r.integers(dw * (kw - 1) + 1, 20))
    ph = int(r.integers(0, min(h, 4))) if mode != "zeros" else int(r.integers(0, 4))
    pw = int(r.integers(0, min(w, 4))) if mode != "zeros" else int(r.integers(0, 4))
    if mode == "reflect":
        ph, pw = min(ph, h - 1), min(pw, w - 1)
    return ((int(r.integers(1, 4)), groups * cg, h, w), (groups * og, cg, kh, kw),
            {"stride": (sh, sw), "dilation": (dh, dw), "padding": (ph, pw), "groups": groups,
             "padding_mode": mode})


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conv2d_random_sweep(seed, dtype, rng):
    xs, ws, kw = _random_conv_case(np.random.default_rng(seed))
    x = random_array(rng, xs, dtype)
    w = random_array(rng, ws, dtype)
    b = random_array(rng, (ws[0],), dtype)
    ref = _ref_conv(x, w, b, **kw)
    params, _ = fc.plan("conv2d", x, w, b, backend="numpy", **kw)
    for alg in registry.algorithms("conv2d", "numba"):
        if registry.lookup("conv2d", "numba", alg).unsupported_reason(params) is not None:
            continue  # e.g. winograd: 3x3 stride 1 only (its own tests cover it)
        out = fc.conv2d(x, w, b, backend="numba", algorithm=alg, **kw)
        assert_close(out, ref, dtype, f"{alg} {xs} {ws} {kw}")


# --------------------------------------------------------------------------
# bounds-checked run of the shared tests
# --------------------------------------------------------------------------
@pytest.mark.skipif(os.environ.get("NUMBA_BOUNDSCHECK") == "1",
                    reason="already running bounds-checked")
def test_shared_tests_pass_with_numba_boundscheck():
    """Every numba CPU kernel, on the shared shape grid, with Numba's bounds checks on.

    An out-of-bounds index raises IndexError inside the kernel, failing the
    run.  Separate process: the flag is read when Numba is imported; a
    temporary NUMBA_CACHE_DIR keeps the checked builds out of the real cache.
    """
    import background  # started at collection time by conftest when this test is selected
    rc, text, _waited = background.result("boundscheck",
                                          lambda: background.boundscheck_spec(REPO))
    tail = text[-3000:]
    assert rc == 0, tail
    assert " passed" in text and "failed" not in text, tail


# --------------------------------------------------------------------------
# max pooling: random sweep (fused kernel-row passes and edge handling)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_max_pool2d_random_sweep_exact(seed, rng):
    r = np.random.default_rng(seed)
    done = 0
    while done < 15:
        kh, kw = int(r.integers(1, 4)), int(r.integers(1, 4))
        sh, sw = int(r.integers(1, 4)), int(r.integers(1, 3))
        dh, dw = int(r.integers(1, 3)), int(r.integers(1, 3))
        ph = int(r.integers(0, (dh * (kh - 1) + 1) // 2 + 1))
        pw = int(r.integers(0, (dw * (kw - 1) + 1) // 2 + 1))
        h, w = int(r.integers(dh * (kh - 1) + 1, 14)), int(r.integers(dw * (kw - 1) + 1, 30))
        kw_ = dict(kernel_size=(kh, kw), stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw),
                   ceil_mode=bool(r.integers(0, 2)))
        x = random_array(rng, (1, 2, h, w), "float32")
        flat = x.reshape(-1)
        picks = rng.choice(flat.size, size=max(1, flat.size // 20), replace=False)
        flat[picks[: len(picks) // 2]] = np.nan
        flat[picks[len(picks) // 2:]] = -np.inf
        flat[1::5] = flat[0]  # ties
        try:
            ref, ref_idx = fc.max_pool2d(x, return_indices=True, backend="numpy", **kw_)
        except ValueError:  # e.g. output size below 1
            continue
        out, idx = fc.max_pool2d(x, return_indices=True, backend="numba", **kw_)
        assert_exact(out, ref, f"values {kw_}")
        assert_exact(idx, ref_idx, f"indices {kw_}")
        assert_exact(fc.max_pool2d(x, backend="numba", **kw_), ref, f"no indices {kw_}")
        done += 1


def test_read_only_arrays_reuse_the_compiled_kernels(rng):
    """Read-only inputs, weights and biases are copied, not compiled for again (20-60 s each)."""
    x = random_array(rng, (1, 2, 6, 6), "float32")
    w = random_array(rng, (3, 2, 3, 3), "float32")
    b = random_array(rng, (3,), "float32")
    want_pool = fc.max_pool2d(x, 2, backend="numba")
    want_conv = fc.conv2d(x, w, b, padding=1, backend="numba", algorithm="implicit-gemm")
    kernels = [nb._pool().max_pool2d_sep, nb._igemm().phase_planes, nb._igemm().conv_tiles]
    before = [len(k.signatures) for k in kernels]
    xr, wr, br = x.copy(), w.copy(), b.copy()
    for a in (xr, wr, br):
        a.flags.writeable = False
    assert_exact(fc.max_pool2d(xr, 2, backend="numba"), want_pool, "read-only pooling")
    assert_exact(fc.conv2d(xr, wr, br, padding=1, backend="numba", algorithm="implicit-gemm"),
                 want_conv, "read-only conv2d")
    assert [len(k.signatures) for k in kernels] == before
