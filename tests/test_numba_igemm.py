"""The register-blocked direct convolution of the "numba" backend (kernels/cpu_igemm.py).

The shared backend tests cover it as ``algorithm="implicit-gemm"`` (conv2d)
and ``algorithm="direct"`` (conv_transpose2d); these add
the cases that steer its internal choices: both register blocks, float64
(4-wide vectors), reductions split into chunks, several images per task,
row bands, stride phases with dilation, image chunks under a small workspace
cap, the no-workspace fallback, and the guard that stops the raw-pointer
microkernel from ever reading past its buffers.
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
    """The NumPy reference (float64)."""
    return fc.conv2d(x.astype(np.float64), w.astype(np.float64),
                     None if b is None else b.astype(np.float64), backend="numpy", **kw)


def _run(x, w, b, **kw):
    before = nb.PATH_COUNTS["conv2d/implicit-gemm"]
    out = fc.conv2d(x, w, b, backend="numba", algorithm="implicit-gemm", **kw)
    assert nb.PATH_COUNTS["conv2d/implicit-gemm"] == before + 1, "igemm path not taken"
    return out


CASES = [
    # (input, weight, kwargs): what each exercises
    ((2, 6, 14, 14), (16, 6, 5, 5), {}),                                   # 4x3 block, LeNet C3
    ((2, 3, 11, 13), (6, 3, 3, 3), {"padding": 1}),                        # 6x2 block, exact
    ((1, 5, 9, 10), (7, 5, 3, 3), {"padding": (2, 1)}),                    # padded channels
    ((3, 4, 17, 15), (5, 4, 3, 3), {"stride": 2, "padding": 1}),           # 4 phases
    ((1, 3, 23, 29), (4, 3, 5, 3), {"stride": (3, 2), "dilation": (2, 3), "padding": 2}),
    ((2, 6, 12, 11), (9, 2, 3, 3), {"groups": 3, "padding": 1,
                                    "padding_mode": "reflect"}),
    ((1, 4, 8, 9), (4, 4, 3, 2), {"padding": (1, 2), "padding_mode": "replicate"}),
    ((2, 2, 7, 7), (6, 2, 3, 3), {"padding": 2, "padding_mode": "circular"}),
    ((1, 64, 20, 21), (10, 64, 3, 3), {"padding": 1}),                     # several K chunks
    ((1, 2, 60, 70), (8, 2, 3, 3), {"padding": 1}),                        # row bands
    ((40, 3, 6, 5), (8, 3, 2, 2), {}),                                     # images per task
    ((1, 3, 30, 31), (9, 3, 11, 11), {"stride": 4, "padding": 2}),         # AlexNet-like
    ((2, 3, 1, 1), (5, 3, 1, 1), {"padding": 1}),                          # 1x1 input, padded
    ((1, 2, 5, 40), (4, 2, 1, 7), {"padding": "same"}),
    ((1, 1, 4, 4), (8, 1, 4, 4), {}),                                      # one output pixel
    ((3, 1, 3, 3), (4, 1, 3, 3), {}),          # tiny unpadded images: tiles span > 1 image
    ((4, 2, 2, 3), (5, 2, 2, 2), {}),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("xs, ws, kw", CASES)
def test_igemm_matches_reference(rng, dtype, xs, ws, kw):
    x = random_array(rng, xs, dtype)
    w = random_array(rng, ws, dtype)
    b = random_array(rng, (ws[0],), dtype)
    assert_close(_run(x, w, b, **kw), _ref(x, w, b, **kw), dtype, f"{xs} {ws} {kw}")
    assert_close(_run(x, w, None, **kw), _ref(x, w, None, **kw), dtype, "no bias")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_packed_tiles_match_reference(rng, monkeypatch, dtype):
    """Exact ("packed") tiles, forced on every case: tiles spanning rows and images."""
    monkeypatch.setattr(numba_igemm, "PACKED", "always")
    for xs, ws, kw in CASES + [((3, 8, 7, 7), (13, 8, 3, 3), {"padding": 1})]:
        x = random_array(rng, xs, dtype)
        w = random_array(rng, ws, dtype)
        b = random_array(rng, (ws[0],), dtype)
        before = nb.PATH_COUNTS["conv2d/implicit-gemm/packed"]
        assert_close(_run(x, w, b, **kw), _ref(x, w, b, **kw), dtype, f"{xs} {ws} {kw}")
        assert nb.PATH_COUNTS["conv2d/implicit-gemm/packed"] == before + 1


def test_packed_tiles_in_several_reduction_chunks_and_bands(rng, monkeypatch):
    monkeypatch.setattr(numba_igemm, "PACKED", "always")
    monkeypatch.setattr(numba_igemm, "PACK_L1_BYTES", 40 * 4 * 24)    # kc = 40 taps
    monkeypatch.setattr(numba_igemm, "C_PACKED_BYTES", 4 * 16 * 60)   # bands of rows
    x = random_array(rng, (2, 9, 13, 12), "float32")
    w = random_array(rng, (16, 9, 3, 3), "float32")
    p = parse_conv2d(x.shape, w.shape, padding=1)
    pl = nb.igemm_plan(p, 4)
    assert pl.packed and pl.kc < 81 and pl.band_rows < p.h_out
    assert_close(_run(x, w, None, padding=1), _ref(x, w, None, padding=1), "float32", "chunks")


def test_auto_takes_packed_tiles_only_where_wide_tiles_waste_much():
    wide_waste = parse_conv2d((8, 512, 7, 7), (512, 512, 3, 3), padding=1)   # 72 per 49
    small_waste = parse_conv2d((1, 256, 56, 56), (256, 256, 3, 3), padding=1)
    few_channels = parse_conv2d((256, 6, 14, 14), (16, 6, 5, 5))             # LeNet-5 C3
    assert numba_igemm.plan(wide_waste, 4, 2, 1 << 26).packed
    assert not numba_igemm.plan(small_waste, 4, 2, 1 << 26).packed
    assert not numba_igemm.plan(few_channels, 4, 2, 1 << 26).packed
    assert nb.choose_conv2d(wide_waste) == "implicit-gemm"


def test_igemm_image_chunks_under_a_small_cap(rng, monkeypatch):
    x = random_array(rng, (7, 3, 9, 8), "float32")
    w = random_array(rng, (5, 3, 3, 3), "float32")
    p = parse_conv2d(x.shape, w.shape, padding=1)
    one_image = numba_igemm.plan(p, 4, 2, 1 << 30).blen * 4
    monkeypatch.setattr(nb, "IM2COL_WORKSPACE_BYTES", 2 * one_image + 8)
    assert nb.igemm_plan(p, 4).images_per_chunk == 2
    assert_close(_run(x, w, None, padding=1), _ref(x, w, None, padding=1), "float32", "chunks")


def test_fallback_without_workspace_when_one_image_exceeds_the_cap(rng, monkeypatch):
    monkeypatch.setattr(nb, "IM2COL_WORKSPACE_BYTES", 256)
    x = random_array(rng, (2, 3, 12, 12), "float32")
    w = random_array(rng, (5, 3, 3, 3), "float32")
    before = nb.PATH_COUNTS["conv2d/direct"]
    out = fc.conv2d(x, w, None, padding=1, backend="numba", algorithm="implicit-gemm")
    assert nb.PATH_COUNTS["conv2d/direct"] == before + 1
    assert_close(out, _ref(x, w, None, padding=1), "float32", "fallback")


@pytest.mark.parametrize("xs, ws, kw", CASES[:6])
def test_plan_is_consistent(xs, ws, kw):
    p = parse_conv2d(xs, ws, **kw)
    for threads in (1, 2, 7):
        pl = numba_igemm.plan(p, 4, threads, 1 << 26)
        assert pl.kc >= 1 and pl.mc % pl.mr == 0 and pl.ldc % pl.tile == 0
        assert pl.ldc >= pl.band_rows * pl.wq
        assert pl.imgs_per_task == 1 or pl.band_rows == p.h_out
        # every read of every tap stays inside an image's buffer
        last = (p.groups - 1) * pl.gstride + int(pl.offs.max()) + \
            -(-p.h_out * pl.wq // pl.tile) * pl.tile
        assert last <= pl.blen


def test_conv_tiles_refuses_a_short_buffer(rng):
    """The microkernel reads raw pointers: a buffer too short must raise, not be read past."""
    k = nb._igemm()
    x = random_array(rng, (1, 3, 10, 10), "float32")
    w = random_array(rng, (4, 3, 3, 3), "float32")
    p = parse_conv2d(x.shape, w.shape, padding=1)
    pl = numba_igemm.plan(p, 4, 1, 1 << 26)
    apack = numba_igemm.pack_weights(k, w, 1, pl.nblk, pl.mr)
    out = np.empty(p.output_shape, np.float32)
    bias = np.zeros(4, np.float32)
    short = np.zeros((1, pl.blen - pl.tile), np.float32)
    scratch = np.zeros((1, pl.scratch_len()), np.float32)
    geometry = (p.h_out, p.w_out, 0, 0, 1, 1)
    with pytest.raises(IndexError):
        k.conv_tiles(short, 1, 0, pl.offs, apack, bias, out, 1, pl.gstride, pl.wq, *geometry,
                     pl.imgs_per_task, pl.band_rows, pl.kc, pl.mc, pl.shape_id, 1, scratch)
    full = np.zeros((1, pl.blen), np.float32)
    with pytest.raises(IndexError):
        k.conv_tiles(full, 1, 0, pl.offs, apack, bias, out, 1, pl.gstride, pl.wq, *geometry,
                     pl.imgs_per_task, pl.band_rows, pl.kc, pl.mc, pl.shape_id, 1,
                     scratch[:, :-1])
    with pytest.raises(IndexError):  # an output phase reaching past the output
        k.conv_tiles(full, 1, 0, pl.offs, apack, bias, out, 1, pl.gstride, pl.wq, p.h_out,
                     p.w_out, 1, 0, 1, 1, pl.imgs_per_task, pl.band_rows, pl.kc, pl.mc,
                     pl.shape_id, 1, scratch)


def test_conv_tiles_packed_refuses_short_buffers(rng, monkeypatch):
    monkeypatch.setattr(numba_igemm, "PACKED", "always")
    k = nb._igemm()
    x = random_array(rng, (2, 3, 10, 10), "float32")
    w = random_array(rng, (4, 3, 3, 3), "float32")
    p = parse_conv2d(x.shape, w.shape, padding=1)
    pl = numba_igemm.plan(p, 4, 1, 1 << 26)
    assert pl.packed
    apack = numba_igemm.pack_weights(k, w, 1, pl.nblk, pl.mr)
    out = np.empty(p.output_shape, np.float32)
    bias = np.zeros(4, np.float32)
    scratch = np.zeros((1, pl.scratch_len()), np.float32)
    full = np.zeros((2, pl.blen), np.float32)

    def call(buf, scr, offs=pl.offs, nb_=2):
        k.conv_tiles_packed(buf, nb_, 0, offs, apack, bias, out, 1, pl.gstride, p.h_out,
                            p.w_out, pl.wq, pl.imgs_per_task, pl.band_rows, pl.kc, pl.mc,
                            pl.shape_id, 1, scr)

    call(full, scratch)                                # the right sizes run
    short = np.zeros((2, pl.blen // 2), np.float32)
    for bad in (lambda: call(short, scratch),                                 # short image
                lambda: call(full[:1], scratch),                          # too few images
                lambda: call(full, scratch[:, :-1]),                      # short scratch
                lambda: call(full, scratch, offs=pl.offs - 10 ** 6)):     # negative offset
        with pytest.raises(IndexError):
            bad()


def test_non_finite_values_propagate(rng):
    x = random_array(rng, (1, 3, 8, 8), "float32")
    w = random_array(rng, (5, 3, 3, 3), "float32")
    x[0, 1, 4, 4] = np.nan
    x[0, 2, 0, 0] = np.inf
    got = _run(x, w, None, padding=1)
    want = _ref(x, w, None, padding=1)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(np.isinf(got), np.isinf(want))


# --------------------------------------------------------------------------
# conv_transpose2d through one register-blocked convolution per output phase
# --------------------------------------------------------------------------
def _ref_t(x, w, b, **kw):
    return fc.conv_transpose2d(x.astype(np.float64), w.astype(np.float64),
                               None if b is None else b.astype(np.float64), backend="numpy",
                               **kw)


T_CASES = [
    ((2, 8, 7, 9), (8, 6, 4, 4), {"stride": 2, "padding": 1}),            # DCGAN-like
    ((2, 8, 5, 4), (8, 5, 2, 2), {"stride": 2}),                          # one tap per phase
    ((1, 4, 5, 6), (4, 5, 3, 3), {"padding": 1}),                         # stride 1
    ((1, 4, 5, 6), (4, 5, 3, 3), {"stride": 3, "padding": 2, "output_padding": 1}),
    ((1, 8, 5, 6), (8, 3, 3, 3), {"stride": 2, "padding": 1, "output_padding": 1,
                                  "dilation": 2, "groups": 2}),
    ((1, 4, 4, 4), (4, 5, 1, 1), {"stride": 3}),                          # phases with no tap
    ((2, 8, 3, 5), (8, 2, 5, 5), {"stride": 2, "padding": 3, "output_padding": 1,
                                  "groups": 2}),
    ((1, 4, 1, 1), (4, 6, 3, 3), {"stride": 2}),
    ((3, 5, 6, 7), (5, 7, 3, 2), {"stride": (2, 3), "padding": (1, 0),
                                  "dilation": (1, 2)}),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("xs, ws, kw", T_CASES)
def test_transposed_igemm_matches_reference(rng, dtype, xs, ws, kw):
    x = random_array(rng, xs, dtype)
    w = random_array(rng, ws, dtype)
    b = random_array(rng, (ws[1] * kw.get("groups", 1),), dtype)
    for bias in (b, None):
        before = nb.PATH_COUNTS["conv_transpose2d/direct/igemm"]
        got = fc.conv_transpose2d(x, w, bias, backend="numba", algorithm="direct", **kw)
        assert nb.PATH_COUNTS["conv_transpose2d/direct/igemm"] == before + 1
        assert_close(got, _ref_t(x, w, bias, **kw), dtype, f"{xs} {ws} {kw}")


def test_transposed_plan_phases_cover_every_tap_once():
    """Every (output phase, tap) pair of PyTorch's rule appears in exactly one phase."""
    from fastconv.arguments import parse_conv_transpose2d
    for xs, ws, kw in T_CASES:
        p = parse_conv_transpose2d(xs, ws, **kw)
        tp = numba_igemm.plan_transposed(p, 4, 2, 1 << 26)
        seen = set()
        for ry, rx, rows, cols, offs, ti, tj, _ in tp.phases:
            assert rows == len(range(ry, p.h_out, p.stride[0]))
            assert cols == len(range(rx, p.w_out, p.stride[1]))
            for i in ti:
                assert (ry + p.padding[0] - i * p.dilation[0]) % p.stride[0] == 0
            for j in tj:
                assert (rx + p.padding[1] - j * p.dilation[1]) % p.stride[1] == 0
            seen |= {(ry, i) for i in ti} | {(rx + 1000, j) for j in tj}
        for i in range(p.kh):   # each tap row belongs to the phase its residue picks
            r = (i * p.dilation[0] - p.padding[0]) % p.stride[0]
            assert (r, i) in seen or r >= p.h_out


def test_plans_are_memoized_per_setting(monkeypatch):
    p = parse_conv2d((2, 8, 7, 7), (16, 8, 3, 3), padding=1)
    first = numba_igemm.plan(p, 4, 2, 1 << 26)
    assert numba_igemm.plan(p, 4, 2, 1 << 26) is first
    assert numba_igemm.plan(p, 8, 2, 1 << 26) is not first
    monkeypatch.setattr(numba_igemm, "PACKED", "always" if not first.packed else "never")
    assert numba_igemm.plan(p, 4, 2, 1 << 26).packed != first.packed
