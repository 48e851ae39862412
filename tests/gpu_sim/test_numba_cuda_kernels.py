"""numba-cuda kernels beyond the shared grid: the GPU tile constants, multi-stage
channel loops, batch chunking of im2col, grid-stride loops, every padding
mode with stride and dilation, strided device arrays, and pooling corner
cases.  Small shapes: the CUDA simulator costs ~1 ms per simulated thread.

Collected by every pytest run, but skipped unless the numba-cuda backend is
available: under the simulator (``NUMBA_ENABLE_CUDASIM=1`` set before Numba
is imported, which ``tests/test_numba_cuda_sim.py`` does in a subprocess) or
on a GPU.  (No conftest.py here: ``tests/test_backends.py`` imports the top
``conftest`` by name.)
"""
import numpy as np
import pytest

import fastconv as fc
from fastconv import registry
from fastconv.testing import assert_close, assert_exact, random_array
from fastconv.wrappers import numba_cuda_backend as ncb

B = "numba-cuda"
_REASON = registry.get_backend(B).unavailable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None,
                                reason=f"numba-cuda unavailable: {_REASON} "
                                       f"(run with NUMBA_ENABLE_CUDASIM=1)")


def _ref_conv(x, w, b=None, **kw):
    return fc.conv2d(x.astype(np.float64), w.astype(np.float64),
                     None if b is None else b.astype(np.float64), backend="numpy", **kw)


# --------------------------------------------------------------------------
# the GPU tile constants (the simulator run otherwise uses SIM_TILES)
# --------------------------------------------------------------------------
@pytest.fixture
def gpu_tiles(monkeypatch):
    monkeypatch.setattr(ncb, "TILES", ncb.GPU_TILES)


@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gpu_tiles_conv2d(gpu_tiles, algorithm, dtype, rng):
    x = random_array(rng, (1, 3, 9, 11), dtype)
    w = random_array(rng, (5, 3, 3, 3), dtype)
    b = random_array(rng, (5,), dtype)
    out = fc.conv2d(x, w, b, padding=1, backend=B, algorithm=algorithm)
    assert_close(out, _ref_conv(x, w, b, padding=1), dtype, f"{algorithm} GPU tiles")


def test_gpu_tiles_conv_transpose2d(gpu_tiles, rng):
    x = random_array(rng, (1, 2, 4, 5), "float32")
    w = random_array(rng, (2, 5, 3, 3), "float32")
    out = fc.conv_transpose2d(x, w, stride=2, padding=1, backend=B)
    ref = fc.conv_transpose2d(x.astype(np.float64), w.astype(np.float64), stride=2,
                              padding=1, backend="numpy")
    assert_close(out, ref, "float32", "conv_transpose2d GPU tiles")


def test_gpu_tiles_pooling(gpu_tiles, rng):
    x = random_array(rng, (1, 2, 9, 8), "float32")
    out, idx = fc.max_pool2d(x, 3, 2, 1, return_indices=True, backend=B)
    ref, ref_idx = fc.max_pool2d(x, 3, 2, 1, return_indices=True, backend="numpy")
    assert_exact(out, ref, "max values")
    assert_exact(idx, ref_idx, "max indices")
    assert_close(fc.avg_pool2d(x, 3, 2, 1, backend=B),
                 fc.avg_pool2d(x, 3, 2, 1, backend="numpy"), "float32", "avg")


# --------------------------------------------------------------------------
# every padding mode with stride and dilation, both conv2d algorithms
# --------------------------------------------------------------------------
GEOMETRIES = [
    dict(stride=1, dilation=1, padding=(2, 2)),
    dict(stride=2, dilation=1, padding=(1, 2)),
    dict(stride=1, dilation=2, padding=(2, 1)),
    dict(stride=(2, 3), dilation=(2, 1), padding=(3, 2)),
]


@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "-".join(map(str, g.values())))
def test_padding_modes_stride_dilation(algorithm, mode, geometry, rng):
    x = random_array(rng, (1, 2, 7, 8), "float32")
    w = random_array(rng, (3, 2, 3, 3), "float32")
    kw = dict(geometry, padding_mode=mode)
    out = fc.conv2d(x, w, backend=B, algorithm=algorithm, **kw)
    assert_close(out, _ref_conv(x, w, **kw), "float32", f"{algorithm} {kw}")


def test_reflect_and_circular_at_their_widest_padding(rng):
    x = random_array(rng, (1, 1, 4, 5), "float64")
    w = random_array(rng, (2, 1, 3, 3), "float64")
    for mode, pad in (("reflect", 3), ("circular", 4), ("replicate", 5)):
        kw = dict(padding=(min(pad, 3), pad), padding_mode=mode)
        for algorithm in ("direct", "im2col"):
            out = fc.conv2d(x, w, backend=B, algorithm=algorithm, **kw)
            assert_close(out, _ref_conv(x, w, **kw), "float64", f"{algorithm} {kw}")


# --------------------------------------------------------------------------
# host-side plans: channel stages, workspace chunks, refusals, grid limits
# --------------------------------------------------------------------------
def test_direct_stages_input_channels(monkeypatch, rng):
    monkeypatch.setattr(ncb, "DIRECT_SHARED_BUDGET", 1)  # one channel per stage
    x = random_array(rng, (1, 5, 6, 6), "float32")
    w = random_array(rng, (3, 5, 3, 3), "float32")
    b = random_array(rng, (3,), "float32")
    params, impl = fc.plan("conv2d", x, w, b, padding=1, backend=B, algorithm="direct")
    assert ncb._direct_plan(params, ncb.tiles())[0] == 1
    out = fc.conv2d(x, w, b, padding=1, backend=B, algorithm="direct")
    assert_close(out, _ref_conv(x, w, b, padding=1), "float32", "direct ck=1")


def test_im2col_chunks_the_batch(monkeypatch, rng):
    x = random_array(rng, (5, 2, 5, 6), "float32")
    w = random_array(rng, (3, 2, 3, 3), "float32")
    params, _ = fc.plan("conv2d", x, w, padding=1, backend=B, algorithm="im2col")
    per_image = ncb._im2col_bytes_per_image(params)
    monkeypatch.setattr(ncb, "WORKSPACE_LIMIT_BYTES", 2 * per_image)  # chunks of 2, 2, 1
    out = fc.conv2d(x, w, padding=1, backend=B, algorithm="im2col")
    assert_close(out, _ref_conv(x, w, padding=1), "float32", "im2col chunked")
    monkeypatch.setattr(ncb, "WORKSPACE_LIMIT_BYTES", per_image - 1)
    with pytest.raises(fc.BackendUnavailableError, match="workspace cap"):
        fc.conv2d(x, w, padding=1, backend=B, algorithm="im2col")
    _, impl = fc.plan("conv2d", x, w, padding=1, backend=B)
    assert impl.algorithm == "direct"


def test_direct_refuses_tiles_beyond_shared_memory():
    x = np.zeros((1, 1, 140, 140), np.float32)
    w = np.zeros((1, 1, 120, 120), np.float32)
    with pytest.raises(fc.BackendUnavailableError, match="shared memory"):
        fc.plan("conv2d", x, w, backend=B, algorithm="direct")
    _, impl = fc.plan("conv2d", x, w, backend=B)
    assert impl.algorithm == "im2col"


def test_grid_stride_loops(monkeypatch, rng):
    """Grids smaller than the work (as past 65535 blocks on a GPU) still cover it."""
    monkeypatch.setattr(ncb, "_GRID_YZ", 2)
    monkeypatch.setattr(ncb, "_GRID_X_1D", 2)
    x = random_array(rng, (2, 6, 5, 5), "float32")
    w = random_array(rng, (6, 2, 3, 3), "float32")
    for algorithm in ("direct", "im2col"):
        out = fc.conv2d(x, w, padding=1, groups=3, backend=B, algorithm=algorithm)
        assert_close(out, _ref_conv(x, w, padding=1, groups=3), "float32", algorithm)
    wt = random_array(rng, (6, 2, 3, 3), "float32")
    out = fc.conv_transpose2d(x, wt, stride=2, groups=3, backend=B)
    ref = fc.conv_transpose2d(x.astype(np.float64), wt.astype(np.float64), stride=2,
                              groups=3, backend="numpy")
    assert_close(out, ref, "float32", "conv_transpose2d")
    out, idx = fc.max_pool2d(x, 2, return_indices=True, backend=B)
    ref, ref_idx = fc.max_pool2d(x, 2, return_indices=True, backend="numpy")
    assert_exact(out, ref, "max")
    assert_exact(idx, ref_idx, "max idx")
    assert_close(fc.adaptive_avg_pool2d(x, 3, backend=B),
                 fc.adaptive_avg_pool2d(x, 3, backend="numpy"), "float32", "adaptive")


# --------------------------------------------------------------------------
# device arrays in, device arrays out; strided device inputs are copied on device
# --------------------------------------------------------------------------
def test_strided_device_arrays(rng):
    from numba import cuda
    xb = random_array(rng, (2, 3, 12, 9), "float32")
    wb = random_array(rng, (4, 3, 3, 6), "float32")
    bb = random_array(rng, (8,), "float32")
    x = cuda.to_device(xb)[:, :, ::2, 1:]           # (2, 3, 6, 8), not contiguous
    w = cuda.to_device(wb)[:, :, :, ::2]            # (4, 3, 3, 3)
    b = cuda.to_device(bb)[::2]                     # (4,)
    assert not x.is_c_contiguous() and not w.is_c_contiguous() and not b.is_c_contiguous()
    ref = _ref_conv(xb[:, :, ::2, 1:], wb[..., ::2], bb[::2], padding=1)
    for algorithm in ("direct", "im2col"):
        out = fc.conv2d(x, w, b, padding=1, backend=B, algorithm=algorithm)
        assert fc.arrays.kind_of(out) == "numba" and out.is_c_contiguous()
        assert_close(out.copy_to_host(), ref, "float32", f"strided {algorithm}")
    out = fc.avg_pool2d(x, 2, backend=B)
    assert_close(out.copy_to_host(), fc.avg_pool2d(xb[:, :, ::2, 1:], 2, backend="numpy"),
                 "float32", "strided avg")


# --------------------------------------------------------------------------
# pooling corner cases
# --------------------------------------------------------------------------
def test_max_pool_all_nan_all_neginf_and_ties():
    x = np.zeros((1, 2, 6, 6), np.float32)
    x[0, 0, :3, :3] = -np.inf                 # a window of -inf only
    x[0, 0, 3:, :3] = np.nan                  # a window of NaN only: last NaN's index
    x[0, 0, :3, 3:] = 7.0                     # ties: first maximum
    x[0, 1] = np.arange(36, dtype=np.float32).reshape(6, 6)[::-1]
    x[0, 1, 2, 2] = np.nan
    for kw in (dict(kernel_size=3), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
               dict(kernel_size=2, dilation=2, padding=1),
               dict(kernel_size=3, stride=2, dilation=2, padding=1, ceil_mode=True)):
        out, idx = fc.max_pool2d(x, return_indices=True, backend=B, **kw)
        ref, ref_idx = fc.max_pool2d(x, return_indices=True, backend="numpy", **kw)
        assert_exact(out, ref, f"values {kw}")
        assert_exact(idx, ref_idx, f"indices {kw}")
    out, idx = fc.adaptive_max_pool2d(x, (2, 4), True, backend=B)
    ref, ref_idx = fc.adaptive_max_pool2d(x, (2, 4), True, backend="numpy")
    assert_exact(out, ref, "adaptive values")
    assert_exact(idx, ref_idx, "adaptive indices")


@pytest.mark.parametrize("kw", [
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, divisor_override=-3),
    dict(kernel_size=(2, 3), stride=(3, 2), padding=(1, 1), ceil_mode=True,
         count_include_pad=False),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=True),
], ids=["negative-override", "exclude-pad-ceil", "include-pad-ceil"])
def test_avg_pool_divisor_rules(kw, rng):
    x = random_array(rng, (1, 2, 8, 7), "float64")
    assert_close(fc.avg_pool2d(x, backend=B, **kw), fc.avg_pool2d(x, backend="numpy", **kw),
                 "float64", str(kw))


def test_registered_entries():
    algos = {(i.op, i.algorithm) for i in registry.implementations(backend=B)}
    assert {("conv2d", "direct"), ("conv2d", "im2col"), ("conv_transpose2d", "direct"),
            ("max_pool2d", "direct"), ("avg_pool2d", "direct"),
            ("adaptive_avg_pool2d", "direct"), ("adaptive_max_pool2d", "direct")} <= algos


def test_max_pool_window_with_no_tap_inside_matches_torch(rng):
    """Dilated windows that skip over the whole input: PyTorch returns -inf and the index
    hstart*W + wstart after stepping past the padding (it may lie outside the plane);
    the NumPy reference returns -1 there (a known issue), so compare with PyTorch."""
    torch = pytest.importorskip("torch")
    x = random_array(rng, (1, 2, 2, 7), "float32")
    for kw in (dict(kernel_size=2, dilation=3, padding=1),
               dict(kernel_size=(2, 3), dilation=(3, 2), padding=1, stride=2)):
        ref, ref_idx = torch.nn.functional.max_pool2d(torch.from_numpy(x), return_indices=True,
                                                      **kw)
        out, idx = fc.max_pool2d(x, return_indices=True, backend=B, **kw)
        assert_exact(out, ref.numpy(), f"values {kw}")
        assert_exact(idx, ref_idx.numpy(), f"indices {kw}")
