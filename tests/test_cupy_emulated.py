"""The cupy backend's real .cu sources, run on the CPU through fastconv.cudaemu.

With ``FASTCONV_CUPY_EMULATE=1`` the backend's own launch code (the functions
registered in ``fastconv.wrappers.cupy_backend``) runs the very same CUDA C
sources, compiled by g++ after ``cuda_emu.h``; only the module class and the
array module differ from a GPU run.  The functions are called directly with
NumPy arrays and the ``*Params`` record of ``fastconv.plan`` (so this file does
not depend on how the registry decides the backend's native array kind).

Covered: the shape grids of tests/cases.py for every algorithm and both dtypes,
plus shapes larger than one tile (edge tiles in every direction), the vectorized
GEMM paths, im2col batch chunking under a small workspace cap, determinism of the
transposed convolution, PyTorch's max-pool NaN/tie/index rules, the emulator's own
failure modes, the clear error without a GPU, and ThreadSanitizer and
AddressSanitizer+UBSan runs of the kernels on small shapes, with deliberately
broken kernels proving those runs can fail.
"""
import os
import textwrap

import numpy as np
import pytest

import fastconv as fc
from fastconv import cudaemu
from fastconv.registry import BackendUnavailableError
from fastconv.testing import assert_close, assert_exact, random_array
from fastconv.wrappers import cupy_backend as cb

from cases import ADAPTIVE, AVG_POOL2D, CONV2D, CONV_TRANSPOSE2D, MAX_POOL2D

pytestmark = pytest.mark.skipif(not cudaemu.available(),
                                reason=str(cudaemu.unavailable_reason()))

DTYPES = ("float32", "float64")
CONV_ALGORITHMS = {"direct": cb.conv2d_direct, "im2col": cb.conv2d_im2col,
                   "implicit-gemm": cb.conv2d_implicit_gemm}

# Shapes beyond one tile: direct tiles are 8 rows x 32 (or 16) columns x 4 channels,
# GEMM tiles 64 x 64 x 16; these leave partial tiles in every dimension.
CONV2D_LARGE = [
    ((2, 5, 19, 37), (70, 5, 3, 3), {"padding": 1}),                     # M > 64, K = 45
    ((1, 8, 17, 40), (66, 8, 1, 1), {}),                                  # K = 8: vector A
    ((3, 4, 12, 11), (10, 2, 3, 3), {"groups": 2, "stride": 2, "padding": 2,
                                    "padding_mode": "reflect"}),
    ((1, 3, 21, 70), (5, 3, 5, 5), {"padding": 4, "dilation": 2, "padding_mode": "circular"}),
    ((2, 2, 9, 33), (4, 2, 3, 4), {"padding": (1, 3), "stride": (1, 3),
                                   "padding_mode": "replicate"}),
]


@pytest.fixture(autouse=True)
def emulate(monkeypatch):
    monkeypatch.setenv("FASTCONV_CUPY_EMULATE", "1")
    monkeypatch.delenv("FASTCONV_CUDAEMU_SANITIZE", raising=False)
    cb.BACKEND.reset()   # the probe result depends on the environment
    yield
    cb.BACKEND.reset()


def _batched(a, p):
    return a.reshape((1,) + a.shape) if p.unbatched else a


def _conv_case(op, rng, case, dtype, bias):
    xs, ws, kw = case
    x = random_array(rng, xs, dtype)
    w = random_array(rng, ws, dtype)
    c_out = ws[0] if op == "conv2d" else ws[1] * kw.get("groups", 1)
    b = random_array(rng, (c_out,), dtype) if bias else None
    p, _ = fc.plan(op, x, w, b, backend="numpy", **kw)
    f64 = [None if a is None else a.astype(np.float64) for a in (x, w, b)]
    ref = getattr(fc, op)(*f64, backend="numpy", **kw)
    return _batched(x, p), w, b, p, _batched(ref, p)


def _case_id(case):
    return "-".join(str(c).replace(" ", "") for c in case)


# --------------------------------------------------------------------------
# convolution
# --------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", sorted(CONV_ALGORITHMS))
@pytest.mark.parametrize("case", CONV2D + CONV2D_LARGE, ids=_case_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_matches_reference(algorithm, case, dtype, rng):
    for bias in (True, False):
        x, w, b, p, ref = _conv_case("conv2d", rng, case, dtype, bias)
        impl = fc.registry.lookup("conv2d", "cupy", algorithm)
        why = impl.unsupported_reason(p)
        if why is not None:
            pytest.skip(why)
        out = CONV_ALGORITHMS[algorithm](x, w, b, p)
        assert isinstance(out, np.ndarray) and out.dtype == x.dtype and out.flags.c_contiguous
        assert_close(out, ref, dtype, f"cupy/{algorithm} {case} bias={bias}")


def _random_conv2d_case(rng):
    """A valid conv2d case with random stride, dilation, groups, padding and mode."""
    while True:
        groups = int(rng.choice([1, 1, 2, 3]))
        kh, kw = (int(v) for v in rng.integers(1, 5, size=2))
        kwargs = {"stride": tuple(int(v) for v in rng.integers(1, 4, size=2)),
                  "dilation": tuple(int(v) for v in rng.integers(1, 3, size=2)),
                  "padding": tuple(int(v) for v in rng.integers(0, 3, size=2)),
                  "groups": groups,
                  "padding_mode": str(rng.choice(["zeros", "reflect", "replicate",
                                                  "circular"]))}
        xs = (int(rng.integers(1, 3)), groups * int(rng.integers(1, 4)),
              int(rng.integers(3, 24)), int(rng.integers(3, 70)))
        ws = (groups * int(rng.integers(1, 7)), xs[1] // groups, kh, kw)
        try:
            fc.plan("conv2d", np.empty(xs, np.float32), np.empty(ws, np.float32),
                    backend="numpy", **kwargs)
        except ValueError:
            continue
        return xs, ws, kwargs


def test_conv2d_random_sweep(rng):
    """Random shapes crossing tile edges, every padding mode, all three algorithms."""
    for trial in range(12):
        case = _random_conv2d_case(rng)
        dtype = DTYPES[trial % 2]
        x, w, b, p, ref = _conv_case("conv2d", rng, case, dtype, bool(trial % 3))
        for algorithm, fn in CONV_ALGORITHMS.items():
            if fc.registry.lookup("conv2d", "cupy", algorithm).unsupported_reason(p):
                continue
            assert_close(fn(x, w, b, p), ref, dtype, f"cupy/{algorithm} {case}")


def _launched(monkeypatch):
    """Names of the kernels the backend launches from now on (one entry per launch)."""
    names = []
    real = cb._kernel

    def spy(rt, filename, dtype, name):
        kernel = real(rt, filename, dtype, name)

        def launch(*args, **kwargs):
            names.append(name)
            return kernel(*args, **kwargs)
        return launch
    monkeypatch.setattr(cb, "_kernel", spy)
    return names


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_vector_paths_are_taken_and_correct(dtype, rng, monkeypatch):
    """K % V == 0 and nb*P % V == 0 select the vector-load GEMM; otherwise scalar."""
    names = _launched(monkeypatch)
    v, t = cb._VEC[dtype], cb._CTYPE[dtype]
    for case, want in [(((2, 8, 6, 6), (20, 8, 1, 1), {}), cb.gemm_name(t, v, v)),
                       (((1, 3, 5, 5), (20, 3, 1, 1), {}), cb.gemm_name(t, 1, 1))]:
        x, w, b, p, ref = _conv_case("conv2d", rng, case, dtype, True)
        names.clear()
        assert_close(cb.conv2d_im2col(x, w, b, p), ref, dtype, f"{case}")
        assert want in names, (want, names)
    x, w, b, p, ref = _conv_case("conv2d", rng, ((1, 4, 7, 7), (9, 4, 1, 1), {}), dtype, False)
    names.clear()
    assert_close(cb.conv2d_implicit_gemm(x, w, b, p), ref, dtype, "implicit vector A")
    assert cb.implicit_gemm_name(t, 0, v) in names


def test_im2col_chunks_the_batch_under_the_workspace_cap(rng, monkeypatch):
    x, w, b, p, ref = _conv_case("conv2d", rng, ((5, 3, 9, 8), (4, 3, 3, 3), {"padding": 1}),
                                 "float32", True)
    one_image = cb.im2col_workspace_bytes(p)
    monkeypatch.setattr(cb, "IM2COL_WORKSPACE_BYTES", 2 * one_image)  # 2 images per chunk
    names = _launched(monkeypatch)
    assert_close(cb.conv2d_im2col(x, w, b, p), ref, "float32", "chunked im2col")
    assert sum(n.startswith("conv2d_im2col") for n in names) == 3      # 2 + 2 + 1 images
    monkeypatch.setattr(cb, "IM2COL_WORKSPACE_BYTES", one_image - 1)
    reason = fc.registry.lookup("conv2d", "cupy", "im2col").unsupported_reason(p)
    assert reason is not None and "workspace" in reason
    with pytest.raises(BackendUnavailableError, match="workspace"):
        cb.conv2d_im2col(x, w, b, p)
    assert fc.registry.choose_algorithm("conv2d", "cupy", p).algorithm != "im2col"


def test_direct_falls_back_to_one_column_per_thread_for_wide_strides(rng, monkeypatch):
    names = _launched(monkeypatch)
    x, w, b, p, ref = _conv_case("conv2d", rng, ((1, 2, 20, 200), (3, 2, 3, 3),
                                                 {"stride": (2, 5)}), "float64", True)
    assert_close(cb.conv2d_direct(x, w, b, p), ref, "float64", "direct rw=1")
    assert any(", 1, 1, 2048>" in n or ", 1, 4, 2048>" in n for n in names), names


@pytest.mark.parametrize("case", CONV_TRANSPOSE2D, ids=_case_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_transpose2d_matches_reference(case, dtype, rng):
    for bias in (True, False):
        x, w, b, p, ref = _conv_case("conv_transpose2d", rng, case, dtype, bias)
        out = cb.conv_transpose2d_direct(x, w, b, p)
        assert out.dtype == x.dtype and out.flags.c_contiguous
        assert_close(out, ref, dtype, f"cupy conv_transpose2d {case} bias={bias}")


def test_conv_transpose2d_is_deterministic_and_tiles_past_256(rng):
    case = ((2, 6, 9, 11), (6, 5, 3, 3), {"stride": 2, "padding": 1, "output_padding": 1,
                                          "groups": 1})
    x, w, b, p, ref = _conv_case("conv_transpose2d", rng, case, "float32", True)
    first = cb.conv_transpose2d_direct(x, w, b, p)
    assert_close(first, ref, "float32", "transposed")
    assert np.array_equal(first, cb.conv_transpose2d_direct(x, w, b, p))


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------
def _nan_input(rng, shape, dtype):
    x = random_array(rng, shape, dtype)
    flat = x.reshape(-1)
    picks = rng.choice(flat.size, size=max(2, flat.size // 20), replace=False)
    flat[picks[: len(picks) // 2]] = np.nan
    flat[picks[len(picks) // 2:]] = -np.inf
    flat[1::5] = flat[0]  # ties: the first maximum must win
    return x


@pytest.mark.parametrize("case", MAX_POOL2D + [((2, 3, 17, 19), {"kernel_size": 3,
                                                                 "stride": 2,
                                                                 "ceil_mode": True})],
                         ids=_case_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d_exact(case, dtype, rng):
    shape, kw = case
    for special in (False, True):
        x = _nan_input(rng, shape, dtype) if special else random_array(rng, shape, dtype)
        ref, ref_idx = fc.max_pool2d(x, return_indices=True, backend="numpy", **kw)
        p, _ = fc.plan("max_pool2d", x, return_indices=True, backend="numpy", **kw)
        out, idx = cb.max_pool2d(_batched(x, p), p)
        assert idx.dtype == np.int64 and out.dtype == x.dtype
        assert_exact(out, _batched(ref, p), f"values {case}")
        assert_exact(idx, _batched(ref_idx, p), f"indices {case}")
        p0, _ = fc.plan("max_pool2d", x, backend="numpy", **kw)
        assert_exact(cb.max_pool2d(_batched(x, p0), p0), _batched(ref, p), "no indices")


@pytest.mark.parametrize("case", AVG_POOL2D, ids=_case_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_avg_pool2d_matches_reference(case, dtype, rng):
    shape, kw = case
    x = random_array(rng, shape, dtype)
    p, _ = fc.plan("avg_pool2d", x, backend="numpy", **kw)
    ref = fc.avg_pool2d(x.astype(np.float64), backend="numpy", **kw)
    assert_close(cb.avg_pool2d(_batched(x, p), p), _batched(ref, p), dtype, f"{case}")


@pytest.mark.parametrize("case", ADAPTIVE, ids=_case_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_adaptive_pools_match_reference(case, dtype, rng):
    shape, size = case
    x = random_array(rng, shape, dtype)
    p, _ = fc.plan("adaptive_avg_pool2d", x, size, backend="numpy")
    ref = fc.adaptive_avg_pool2d(x.astype(np.float64), size, backend="numpy")
    assert_close(cb.adaptive_avg_pool2d(_batched(x, p), p), _batched(ref, p), dtype, "avg")
    x = _nan_input(rng, shape, dtype)
    ref, ref_idx = fc.adaptive_max_pool2d(x, size, True, backend="numpy")
    p, _ = fc.plan("adaptive_max_pool2d", x, size, True, backend="numpy")
    out, idx = cb.adaptive_max_pool2d(_batched(x, p), p)
    assert_exact(out, _batched(ref, p), "adaptive max values")
    assert_exact(idx, _batched(ref_idx, p), "adaptive max indices")


# --------------------------------------------------------------------------
# errors: no GPU, sizes beyond the kernels' 32-bit fields, emulator failure modes
# --------------------------------------------------------------------------
def test_without_gpu_the_backend_raises_a_clear_error(monkeypatch, rng):
    monkeypatch.delenv("FASTCONV_CUPY_EMULATE")
    if cb._gpu_unavailable_reason() is None:
        pytest.skip("a GPU is present")
    x, w, b, p, _ = _conv_case("conv2d", rng, CONV2D[0], "float32", False)
    with pytest.raises(BackendUnavailableError, match="not available here"):
        cb.conv2d_direct(x, w, b, p)


def test_sizes_past_int32_are_refused_by_plan_before_any_copy():
    """The 32-bit limits are ``supports`` rules: plan() and "auto" refuse the case
    before the API copies anything to the device (a zero-stride 8.6 GB view here)."""
    x = np.broadcast_to(np.float32(0), (1, 1, 65537, 32769))
    w = np.ones((1, 1, 1, 1), np.float32)
    calls = [("conv2d", (x, w), {"stride": 32768}),
             ("max_pool2d", (x, 1), {"stride": 32768}),
             ("avg_pool2d", (x, 1), {"stride": 32768}),
             ("adaptive_avg_pool2d", (x, 2), {}),
             ("adaptive_max_pool2d", (x, 2), {})]
    for op, args, kwargs in calls:
        with pytest.raises(BackendUnavailableError, match="32-bit"):
            fc.plan(op, *args, backend="cupy", **kwargs)
    for algorithm in CONV_ALGORITHMS:
        with pytest.raises(BackendUnavailableError, match="32-bit"):
            fc.plan("conv2d", x, w, stride=32768, backend="cupy", algorithm=algorithm)


def test_max_pool_windows_with_no_tap_inside_match_torch(rng):
    """Dilated windows that step over the whole input: PyTorch returns -inf with the
    index hstart*W + wstart after stepping past the padding (the reference differs)."""
    torch = pytest.importorskip("torch")
    x = random_array(rng, (1, 2, 2, 7), "float32")
    for kw in (dict(kernel_size=2, dilation=3, padding=1),
               dict(kernel_size=(2, 3), dilation=(3, 2), padding=1, stride=2)):
        ref, ref_idx = torch.nn.functional.max_pool2d(torch.from_numpy(x),
                                                      return_indices=True, **kw)
        p, _ = fc.plan("max_pool2d", x, return_indices=True, backend="numpy", **kw)
        out, idx = cb.max_pool2d(x, p)
        assert_exact(out, ref.numpy(), f"values {kw}")
        assert_exact(idx, ref_idx.numpy(), f"indices {kw}")


def test_planes_beyond_int32_are_refused_before_launch():
    p, _ = fc.plan("max_pool2d", np.lib.stride_tricks.as_strided(
        np.zeros(1, np.float32), (1, 1, 50000, 50000), (0, 0, 0, 0)), 2, backend="numpy")
    with pytest.raises(ValueError, match="32-bit"):
        cb.max_pool2d(np.zeros((1, 1, 1, 1), np.float32), p)


_TINY = r"""
__global__ void fill(float* y, int n, int stop_early) {
    __shared__ float s[64];
    if (stop_early && threadIdx.x == 3) return;
    s[threadIdx.x] = (float)threadIdx.x;
    __syncthreads();
    if ((int)threadIdx.x < n) y[threadIdx.x] = s[63 - threadIdx.x];
}
"""


def test_emulator_reports_divergent_barriers_bad_launches_and_bad_scalars():
    kern = cudaemu.RawModule(code=_TINY, name_expressions=["fill"]).get_function("fill")
    y = np.zeros(64, np.float32)
    kern((1,), (64,), (y, np.int32(64), np.int32(0)))
    assert np.array_equal(y, np.arange(63, -1, -1, dtype=np.float32))
    with pytest.raises(cudaemu.EmulationError, match="divergent __syncthreads"):
        kern((1,), (64,), (y, np.int32(64), np.int32(1)))
    with pytest.raises(cudaemu.EmulationError, match="invalid block"):
        kern((1,), (2048,), (y, np.int32(64), np.int32(0)))
    with pytest.raises(cudaemu.EmulationError, match="invalid grid"):
        kern((1, 70000), (64,), (y, np.int32(64), np.int32(0)))
    with pytest.raises(TypeError, match="misread"):
        kern((1,), (64,), (y, 64, np.int32(0)))   # a Python int is packed as int64
    with pytest.raises(TypeError, match="takes 3 arguments"):
        kern((1,), (64,), (y, np.int32(64)))


# --------------------------------------------------------------------------
# sanitizers (child processes: the sanitizer runtime is preloaded there)
# --------------------------------------------------------------------------
_SANITIZED_RUN = textwrap.dedent("""
    import numpy as np
    import fastconv as fc
    from fastconv.testing import assert_close, assert_exact
    from fastconv.wrappers import cupy_backend as cb
    rng = np.random.default_rng(7)

    def arr(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    for xs, ws, kw in [((1, 3, 9, 35), (5, 3, 3, 3), {"padding": 1}),
                       ((2, 4, 7, 6), (6, 2, 3, 2), {"groups": 2, "stride": 2, "padding": 1,
                                                     "padding_mode": "reflect"})]:
        x, w, b = arr(*xs), arr(*ws), arr(ws[0])
        p, _ = fc.plan("conv2d", x, w, b, backend="numpy", **kw)
        ref = fc.conv2d(x, w, b, backend="numpy", **kw)
        for fn in (cb.conv2d_direct, cb.conv2d_im2col, cb.conv2d_implicit_gemm):
            assert_close(fn(x, w, b, p), ref, "float32", fn.__name__)
    x, w = arr(1, 4, 5, 6), arr(4, 3, 3, 3)
    p, _ = fc.plan("conv_transpose2d", x, w, stride=2, padding=1, backend="numpy")
    assert_close(cb.conv_transpose2d_direct(x, w, None, p),
                 fc.conv_transpose2d(x, w, stride=2, padding=1, backend="numpy"), "float32", "t")
    x = arr(1, 2, 9, 10)
    x[0, 0, 2, 3] = np.nan
    p, _ = fc.plan("max_pool2d", x, 3, 2, 1, ceil_mode=True, return_indices=True,
                   backend="numpy")
    ref = fc.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True, backend="numpy")
    for got, want in zip(cb.max_pool2d(x, p), ref):
        assert_exact(got, want, "max")
    p, _ = fc.plan("avg_pool2d", x, 3, 2, 1, ceil_mode=True, backend="numpy")
    assert_close(cb.avg_pool2d(x, p), fc.avg_pool2d(x, 3, 2, 1, ceil_mode=True,
                                                     backend="numpy"), "float32", "avg")
    p, _ = fc.plan("adaptive_avg_pool2d", x, (4, 3), backend="numpy")
    assert_close(cb.adaptive_avg_pool2d(x, p), fc.adaptive_avg_pool2d(x, (4, 3),
                                                                      backend="numpy"),
                 "float32", "adaptive avg")
    p, _ = fc.plan("adaptive_max_pool2d", x, (4, 3), True, backend="numpy")
    for got, want in zip(cb.adaptive_max_pool2d(x, p),
                         fc.adaptive_max_pool2d(x, (4, 3), True, backend="numpy")):
        assert_exact(got, want, "adaptive max")
    print("SANITIZED RUN OK")
""")

_BROKEN = textwrap.dedent('''
    import numpy as np
    from fastconv import cudaemu
    src = r"""
    __global__ void no_barrier(const float* x, float* y) {
        __shared__ float s[64];
        s[threadIdx.x] = x[threadIdx.x];
        // missing __syncthreads(): reads a neighbour's write
        y[threadIdx.x] = s[(threadIdx.x + 1) % 64];
    }
    __global__ void shared_overflow(const float* x, float* y) {
        __shared__ float s[64];
        s[threadIdx.x + 1] = x[threadIdx.x];   // thread 63 writes s[64]
        __syncthreads();
        y[threadIdx.x] = s[threadIdx.x];
    }
    """
    mod = cudaemu.RawModule(code=src, name_expressions=["no_barrier", "shared_overflow"])
    x = np.arange(64, dtype=np.float32)
    y = np.zeros_like(x)
    mod.get_function(KERNEL)((1,), (64,), (x, y))
    print("BROKEN RUN DONE")
''')


def _child_env():
    env = dict(os.environ)
    env["FASTCONV_CUPY_EMULATE"] = "1"
    tests = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.pathsep.join([tests, env.get("PYTHONPATH", "")])
    return env


@pytest.mark.parametrize("sanitizer", ["thread", "address"])
def test_kernels_are_clean_under_sanitizers(sanitizer):
    rc, output, findings = cudaemu.run_sanitized(_SANITIZED_RUN, sanitizer, env=_child_env())
    assert not findings, "\n".join(findings[:20]) + "\n" + output[-4000:]
    assert rc == 0 and "SANITIZED RUN OK" in output, output[-4000:]


@pytest.mark.parametrize("sanitizer,kernel,expected", [
    ("thread", "no_barrier", "WARNING: ThreadSanitizer: data race"),
    ("address", "shared_overflow", "AddressSanitizer: global-buffer-overflow"),
])
def test_sanitizers_catch_broken_kernels(sanitizer, kernel, expected):
    rc, output, findings = cudaemu.run_sanitized(_BROKEN.replace("KERNEL", repr(kernel)),
                                                 sanitizer, env=_child_env())
    assert findings and any(expected in line for line in findings), output[-4000:]
