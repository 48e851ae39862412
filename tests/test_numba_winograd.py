"""Winograd F(2x2, 3x3) of the "numba" backend (``cpu_igemm.winograd_tiles``).

The shared backend tests cover it as ``algorithm="winograd"`` on their 3x3
stride-1 cases; these add the cases that steer its internal choices: rows of
at least one vector of tiles (the LLVM-IR transforms) and their scalar tails,
odd output sizes (partial tiles), blocks of tiles spanning images, several
reduction chunks and output-channel groups, both register blocks, groups,
every padding mode, image chunks under a small workspace cap, the fallback for
NaN/Inf, the weight transform, and the guards in front of the raw-pointer code.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc
from fastconv.arguments import parse_conv2d
from fastconv.testing import assert_close, random_array

pytest.importorskip("numba")

from fastconv.wrappers import numba_backend as nb  # noqa: E402
from fastconv.wrappers import numba_igemm  # noqa: E402


def _ref(x, w, b, **kw):
    return fc.conv2d(x.astype(np.float64), w.astype(np.float64),
                     None if b is None else b.astype(np.float64), backend="numpy", **kw)


def _run(x, w, b, **kw):
    before = nb.PATH_COUNTS["conv2d/winograd"]
    out = fc.conv2d(x, w, b, backend="numba", algorithm="winograd", **kw)
    assert nb.PATH_COUNTS["conv2d/winograd"] == before + 1, "winograd path not taken"
    return out


CASES = [
    # (input, weight, kwargs): what each exercises
    ((2, 3, 9, 11), (5, 3, 3, 3), {"padding": 1}),          # odd Ho, Wo: partial tiles
    ((1, 8, 7, 6), (12, 8, 3, 3), {}),                       # unpadded, 5x4 outputs
    ((3, 5, 37, 41), (9, 5, 3, 3), {"padding": 1}),          # vector transforms + tails
    ((2, 4, 20, 35), (8, 4, 3, 3), {}),                      # 17 tiles a row, odd Wo
    ((2, 4, 10, 10), (6, 2, 3, 3), {"padding": (1, 2), "groups": 2}),
    ((1, 5, 13, 8), (7, 5, 3, 3), {"padding": 1, "padding_mode": "reflect"}),
    ((1, 3, 40, 18), (4, 3, 3, 3), {"padding": 2, "padding_mode": "circular"}),
    ((2, 2, 19, 33), (3, 2, 3, 3), {"padding": (0, 1), "padding_mode": "replicate"}),
    ((1, 6, 20, 21), (6, 6, 3, 3), {"padding": "same"}),
    ((9, 4, 3, 3), (6, 4, 3, 3), {"padding": 1}),             # 4 tiles an image: blocks span images
    ((2, 3, 3, 3), (4, 3, 3, 3), {}),                         # one output pixel
    ((1, 2, 1, 1), (5, 2, 3, 3), {"padding": 1}),             # 1x1 input
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("xs,ws,kw", CASES)
def test_winograd_matches_reference(rng, dtype, xs, ws, kw):
    x = random_array(rng, xs, dtype)
    w = random_array(rng, ws, dtype)
    b = random_array(rng, (ws[0],), dtype)
    assert_close(_run(x, w, b, **kw), _ref(x, w, b, **kw), dtype, f"winograd {xs} {ws} {kw}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_winograd_chunks_groups_and_small_blocks(rng, monkeypatch, dtype):
    """Several reduction chunks (kc < Cg), several output-channel groups (mc < Og) and
    one microkernel tile per task (many tasks, blocks across images and rows)."""
    monkeypatch.setattr(numba_igemm, "WINO_B_L1_BYTES", 256)
    monkeypatch.setattr(numba_igemm, "WINO_MC", 8)
    monkeypatch.setattr(numba_igemm, "WINO_MAX_TILES", 1)
    x = random_array(rng, (3, 20, 13, 27), dtype)
    w = random_array(rng, (22, 20, 3, 3), dtype)
    b = random_array(rng, (22,), dtype)
    p = parse_conv2d(x.shape, w.shape, b.shape, padding=1)
    plan = numba_igemm.plan_winograd(p, x.dtype.itemsize, 2, 1 << 30)
    assert plan.kc < 20 and plan.mc < 22 and plan.ptiles == plan.tile
    assert_close(_run(x, w, b, padding=1), _ref(x, w, b, padding=1), dtype, "chunked")


@pytest.mark.parametrize("og", [8, 12, 6])
def test_winograd_both_register_blocks(rng, og):
    x = random_array(rng, (2, 7, 17, 30), "float32")
    w = random_array(rng, (og, 7, 3, 3), "float32")
    p = parse_conv2d(x.shape, w.shape, None, padding=1)
    plan = numba_igemm.plan_winograd(p, 4, 2, 1 << 30)
    assert plan.mr in (4, 6)
    assert_close(_run(x, w, None, padding=1), _ref(x, w, None, padding=1), "float32", f"{og}")


def test_winograd_image_chunks_and_no_workspace_fallback(rng, monkeypatch):
    x = random_array(rng, (5, 3, 16, 16), "float32")
    w = random_array(rng, (4, 3, 3, 3), "float32")
    ref = _ref(x, w, None, padding=1)
    p = parse_conv2d(x.shape, w.shape, None, padding=1)
    one = numba_igemm.plan_winograd(p, 4, 2, 1 << 30).blen * 4
    monkeypatch.setattr(nb, "IM2COL_WORKSPACE_BYTES", 2 * one)   # 2 images per chunk
    assert numba_igemm.plan_winograd(p, 4, 2, 2 * one).images_per_chunk == 2
    assert_close(_run(x, w, None, padding=1), ref, "float32", "image chunks")
    monkeypatch.setattr(nb, "IM2COL_WORKSPACE_BYTES", one - 4)   # not even one image
    out = fc.conv2d(x, w, padding=1, backend="numba", algorithm="winograd")
    assert_close(out, ref, "float32", "no-workspace fallback")


def test_non_finite_values_land_where_the_direct_form_puts_them(rng):
    """F(2x2, 3x3) spreads a NaN or Inf over its whole tile; such results are recomputed."""
    x = random_array(rng, (2, 3, 12, 13), "float32")
    w = random_array(rng, (5, 3, 3, 3), "float32")
    x[0, 1, 4, 5] = np.nan
    x[1, 2, 7, 0] = np.inf
    before = nb.PATH_COUNTS["conv2d/winograd/nonfinite"]
    out = fc.conv2d(x, w, padding=1, backend="numba", algorithm="winograd")
    assert nb.PATH_COUNTS["conv2d/winograd/nonfinite"] == before + 1
    want = fc.conv2d(x, w, padding=1, backend="numba", algorithm="implicit-gemm")
    np.testing.assert_array_equal(np.isnan(out), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(want))
    assert np.isnan(out).sum() < out.size // 4   # not the whole output
    x = np.where(np.isfinite(x), x, 0).astype(np.float32)
    w[2, 0, 1, 1] = np.inf
    out = fc.conv2d(x, w, padding=1, backend="numba", algorithm="winograd")
    want = fc.conv2d(x, w, padding=1, backend="numba", algorithm="implicit-gemm")
    np.testing.assert_array_equal(np.isnan(out), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(want))
    # finite inputs: no recomputation
    w[2, 0, 1, 1] = 0.5
    before = nb.PATH_COUNTS["conv2d/winograd/nonfinite"]
    fc.conv2d(x, w, padding=1, backend="numba", algorithm="winograd")
    assert nb.PATH_COUNTS["conv2d/winograd/nonfinite"] == before


def test_weight_transform_is_g_w_gt(rng):
    """packed[g, e, b, c, m] = (G w G^T)[e // 4, e % 4] of channel b*MR + m (zeros past Og)."""
    k = nb._igemm()
    w = random_array(rng, (2, 5, 3, 3, 3), "float64")   # (G, Og, Cg, 3, 3)
    nblk, mr = 2, 4
    packed = np.full((2, 16, nblk, 3, mr), np.nan)
    k.winograd_weights(w, nblk, mr, packed)
    G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    u = np.einsum("ij,gocjk,lk->gocil", G, w, G).reshape(2, 5, 3, 16)
    want = np.zeros((2, nblk * mr, 3, 16))
    want[:, :5] = u
    got = packed.transpose(0, 2, 4, 3, 1).reshape(2, nblk * mr, 3, 16)
    np.testing.assert_allclose(got, want, rtol=1e-15, atol=1e-15)


def test_winograd_tiles_refuses_short_buffers(rng):
    """The microkernel and the LLVM-IR transforms read raw pointers: sizes are checked first."""
    k = nb._igemm()
    x = random_array(rng, (1, 4, 10, 10), "float32")
    w = random_array(rng, (4, 4, 3, 3), "float32")
    p = parse_conv2d(x.shape, w.shape, None, padding=1)
    wp = numba_igemm.plan_winograd(p, 4, 1, 1 << 30)
    upack = np.zeros((1, 16, wp.nblk, 4, wp.mr), np.float32)
    buf = np.zeros((1, wp.blen), np.float32)
    out = np.empty((1, 4, 10, 10), np.float32)
    bias = np.zeros(4, np.float32)
    good = np.zeros((1, wp.scratch_len(4, 4)), np.float32)
    chk = np.zeros(8, np.float32)
    phases = np.array([[0, 0, 10, 10, 0, 0]], dtype=np.int64)
    args = [buf, 1, 0, wp.hb, wp.wb, wp.pstride, phases, upack[None], bias, out, 1, 1, 1, 5, 5,
            wp.ptiles, wp.kc, wp.mc, wp.shape_id, 1, good, chk, False]
    k.winograd_tiles(*args)    # the right sizes run
    bad_phases = [np.array([row], dtype=np.int64) for row in
                  ([0, 0, 11, 10, 0, 0], [0, 0, 10, 11, 0, 0], [1, 0, 10, 10, 0, 0],
                   [0, 0, 10, 10, 1, 0], [0, 0, 10, 10, 0, 1], [0, 0, 0, 10, 0, 0])]
    for i, bad in ([(20, good[:, :-1]), (0, buf[:, :-1]), (7, upack[None, :, :15]),
                    (21, chk[:4]), (3, wp.hb - 1), (15, wp.ptiles + 1), (11, 2), (13, 4),
                    (6, np.zeros((2, 6), np.int64)), (22, True)]
                   + [(6, ph) for ph in bad_phases]):
        wrong = list(args)
        wrong[i] = bad
        with pytest.raises(IndexError):
            k.winograd_tiles(*wrong)
            print("argument", i, "was not refused")


def test_winograd_refuses_other_kernels_clearly():
    impl = fc.registry.lookup("conv2d", "numba", "winograd")
    assert impl.unsupported_reason(parse_conv2d((1, 2, 8, 8), (3, 2, 3, 3), padding=1)) is None
    for kw, ws in [({"stride": 2}, (3, 2, 3, 3)), ({"dilation": 2}, (3, 2, 3, 3)),
                   ({}, (3, 2, 5, 5)), ({}, (3, 2, 3, 1))]:
        reason = impl.unsupported_reason(parse_conv2d((1, 2, 8, 8), ws, **kw))
        assert reason is not None and "3x3" in reason
    x = np.ones((1, 2, 8, 8), np.float32)
    with pytest.raises(fc.BackendUnavailableError, match="winograd"):
        fc.conv2d(x, np.ones((3, 2, 3, 3), np.float32), stride=2, backend="numba",
                  algorithm="winograd")


# --------------------------------------------------------------------------
# conv_transpose2d: each output phase by F(2x2, 2x2)
# --------------------------------------------------------------------------
def _ref_t(x, w, b, **kw):
    return fc.conv_transpose2d(x.astype(np.float64), w.astype(np.float64),
                               None if b is None else b.astype(np.float64), backend="numpy",
                               **kw)


TRANSPOSED = [
    ((2, 5, 7, 9), (5, 6, 4, 4), {"stride": 2, "padding": 1}),          # DCGAN-like, odd sizes
    ((1, 4, 6, 5), (4, 3, 4, 4), {"stride": 2}),
    ((2, 3, 5, 6), (3, 4, 6, 6), {"stride": 3, "padding": 2}),          # 9 phases
    ((2, 4, 9, 8), (4, 2, 4, 4), {"stride": 2, "padding": 1, "groups": 2}),
    ((1, 3, 5, 7), (3, 2, 4, 6), {"stride": (2, 3), "padding": (1, 2), "output_padding": (1, 0)}),
    ((3, 6, 20, 21), (6, 9, 4, 4), {"stride": 2, "padding": 1}),        # vector input transform
    ((2, 16, 3, 3), (16, 8, 4, 4), {"stride": 2, "padding": 1}),        # blocks span images
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("xs,ws,kw", TRANSPOSED)
def test_transposed_winograd_matches_reference(rng, dtype, xs, ws, kw):
    x = random_array(rng, xs, dtype)
    w = random_array(rng, ws, dtype)
    b = random_array(rng, (ws[1] * kw.get("groups", 1),), dtype)
    before = nb.PATH_COUNTS["conv_transpose2d/winograd"]
    out = fc.conv_transpose2d(x, w, b, backend="numba", algorithm="winograd", **kw)
    assert nb.PATH_COUNTS["conv_transpose2d/winograd"] == before + 1
    assert_close(out, _ref_t(x, w, b, **kw), dtype, f"winograd transposed {xs} {ws} {kw}")


def test_transposed_winograd_chunks(rng, monkeypatch):
    """Reduction chunks, output-channel groups, one microkernel tile per task, image chunks."""
    monkeypatch.setattr(numba_igemm, "WINO_B_L1_BYTES", 256)
    monkeypatch.setattr(numba_igemm, "WINO_MC", 4)
    monkeypatch.setattr(numba_igemm, "WINO_MAX_TILES", 1)
    x = random_array(rng, (3, 12, 9, 10), "float32")
    w = random_array(rng, (12, 10, 4, 4), "float32")
    kw = {"stride": 2, "padding": 1}
    ref = _ref_t(x, w, None, **kw)
    p = fc.plan("conv_transpose2d", x, w, backend="numpy", **kw)[0]
    one = numba_igemm.plan_winograd_transposed(p, 4, 2, 1 << 30).blen * 4
    monkeypatch.setattr(nb, "IM2COL_WORKSPACE_BYTES", 2 * one)
    assert numba_igemm.plan_winograd_transposed(p, 4, 2, 2 * one).images_per_chunk == 2
    out = fc.conv_transpose2d(x, w, backend="numba", algorithm="winograd", **kw)
    assert_close(out, ref, "float32", "chunked transposed winograd")


def test_transposed_winograd_non_finite_and_refusals(rng):
    x = random_array(rng, (2, 4, 6, 7), "float32")
    w = random_array(rng, (4, 3, 4, 4), "float32")
    x[1, 2, 3, 3] = np.inf
    kw = {"stride": 2, "padding": 1}
    before = nb.PATH_COUNTS["conv_transpose2d/winograd/nonfinite"]
    out = fc.conv_transpose2d(x, w, backend="numba", algorithm="winograd", **kw)
    assert nb.PATH_COUNTS["conv_transpose2d/winograd/nonfinite"] == before + 1
    want = fc.conv_transpose2d(x, w, backend="numba", algorithm="direct", **kw)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(want))
    impl = fc.registry.lookup("conv_transpose2d", "numba", "winograd")
    for ws, kw in [((4, 3, 3, 3), {"stride": 2}), ((4, 3, 2, 2), {"stride": 2}),
                   ((4, 3, 4, 4), {"stride": 2, "dilation": 2}), ((4, 3, 4, 4), {"stride": 1})]:
        p = fc.plan("conv_transpose2d", x, np.ones(ws, np.float32), backend="numpy", **kw)[0]
        reason = impl.unsupported_reason(p)
        assert reason is not None and "2x2 taps" in reason, (ws, kw)


@pytest.mark.parametrize("xs,ws,kw", [TRANSPOSED[0], TRANSPOSED[5], TRANSPOSED[3]])
def test_transposed_winograd_column_pairs_store_what_single_phases_store(rng, monkeypatch, xs,
                                                                         ws, kw):
    """Stride 2: column phases stored together (vector path and element tails) or one by one."""
    x = random_array(rng, xs, "float32")
    w = random_array(rng, ws, "float32")
    p = fc.plan("conv_transpose2d", x, w, backend="numpy", **kw)[0]
    assert numba_igemm.plan_winograd_transposed(p, 4, 2, 1 << 30).pair
    paired = fc.conv_transpose2d(x, w, backend="numba", algorithm="winograd", **kw)
    monkeypatch.setattr(numba_igemm, "WINO_PAIR_PHASES", False)
    assert not numba_igemm.plan_winograd_transposed(p, 4, 2, 1 << 30).pair
    single = fc.conv_transpose2d(x, w, backend="numba", algorithm="winograd", **kw)
    np.testing.assert_array_equal(paired, single)
