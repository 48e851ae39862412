"""Bounded memory: workspaces stay under their caps; impossible allocations are clear errors.

* The numba backend's im2col / transposed-GEMM workspace is capped by the
  module variable ``fastconv.wrappers.numba_backend.IM2COL_WORKSPACE_BYTES``
  (64 MiB by default).  A large convolution must allocate at most its output
  plus that cap (plus small index maps), measured with ``tracemalloc``, which
  sees NumPy's allocations.  Each measurement runs in a fresh thread, because
  workspaces are cached per thread and reused: a fresh thread must allocate
  them again inside the measured window.

  Sizes: the issue suggests 1x64x2048x2048 float32 (1 GiB in, 1 GiB out,
  300 GFLOP, tens of seconds on 2 busy cores).  The default run uses
  1x32x512x512 with the cap lowered to 8 MiB (full im2col would need
  302 MiB: 38 times the cap) and 1x64x256x256 at the default 64 MiB cap
  (full im2col 151 MiB); ``FASTCONV_MEMORY_LARGE=1`` adds the issue's size.
* The dense baseline refuses matrices above ``fastconv.dense.MEMORY_LIMIT``
  before allocating anything.
* Allocations that cannot succeed raise ``MemoryError`` (never crash):
  ``fastconv.memory.allocate`` names what, shape, dtype and bytes; every CPU
  backend is run on an impossible size in a child process.
"""
import os
import subprocess
import sys
import textwrap
import threading
import tracemalloc

import numpy as np
import pytest

import fastconv as fc
import fastconv.dense  # noqa: F401  (registers the dense baseline)
from fastconv import memory, registry
from fastconv.arguments import parse_conv2d, parse_conv_transpose2d

MiB = 1 << 20
#: Allowance for small allocations beside output and workspace (index maps,
#: the augmented weight matrix, Python objects): 1 MiB + 1 % of the output.
SLACK = MiB


def _numba_backend():
    if not registry.has_backend("numba"):
        pytest.skip("backend numba is not registered")
    reason = registry.get_backend("numba").unavailable_reason()
    if reason:
        pytest.skip(f"backend numba: {reason}")
    from fastconv.wrappers import numba_backend
    if not hasattr(numba_backend, "IM2COL_WORKSPACE_BYTES"):
        pytest.skip("numba backend has no IM2COL_WORKSPACE_BYTES cap")
    return numba_backend


def traced_peak(fn):
    """(result, peak bytes traced while ``fn`` ran), run in a fresh thread."""
    box = {}

    def run():
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            box["out"] = fn()
            box["peak"] = tracemalloc.get_traced_memory()[1] - base
        except BaseException as exc:  # re-raised in the caller
            box["exc"] = exc
        finally:
            tracemalloc.stop()

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "exc" in box:
        raise box["exc"]
    return box["out"], box["peak"]


def _warm(op, algorithm, x, w, **kw):
    """Compile the kernels on a small slice first (compilation allocates Python objects)."""
    getattr(fc, op)(np.ascontiguousarray(x[:, :, :12, :12]), w, backend="numba",
                    algorithm=algorithm, **kw)


SIZES = [
    # (input shape, C_out, cap in bytes or None for the module default)
    ((1, 32, 512, 512), 32, 8 * MiB),
    ((1, 64, 256, 256), 64, None),
]
if os.environ.get("FASTCONV_MEMORY_LARGE"):
    SIZES.append(((1, 64, 2048, 2048), 64, None))


@pytest.mark.parametrize("algorithm", ["im2col", "direct", "implicit-gemm"])
@pytest.mark.parametrize("shape,c_out,cap", SIZES, ids=lambda v: str(v).replace(" ", ""))
def test_conv2d_allocates_at_most_output_plus_cap(algorithm, shape, c_out, cap, monkeypatch):
    nb = _numba_backend()
    if cap is not None:
        monkeypatch.setattr(nb, "IM2COL_WORKSPACE_BYTES", cap)
    cap = nb.IM2COL_WORKSPACE_BYTES
    if algorithm not in registry.algorithms("conv2d", "numba"):
        pytest.skip(f"numba has no conv2d algorithm {algorithm!r}")
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    w = rng.standard_normal((c_out, shape[1], 3, 3), dtype=np.float32) / 24
    _warm("conv2d", algorithm, x, w, padding=1)
    out, peak = traced_peak(lambda: fc.conv2d(x, w, padding=1, backend="numba",
                                              algorithm=algorithm))
    full_im2col = shape[1] * 9 * shape[2] * shape[3] * 4
    # im2col's columns and implicit-gemm's phase planes are capped; direct has no workspace
    budget = out.nbytes + (0 if algorithm == "direct" else cap) + SLACK + out.nbytes // 100
    print(f"{algorithm} {shape}: peak {peak / MiB:.1f} MiB, output {out.nbytes / MiB:.0f} MiB, "
          f"cap {cap / MiB:.0f} MiB, uncapped im2col would be {full_im2col / MiB:.0f} MiB")
    assert peak <= budget, (f"{algorithm}: allocated {peak / MiB:.1f} MiB, more than output "
                            f"{out.nbytes / MiB:.0f} MiB + cap {cap / MiB:.0f} MiB")
    # the result is still right: spot-check rows against the reference
    rows = slice(0, 3)
    ref = fc.conv2d(x[:, :, :4, :].astype(np.float64), w.astype(np.float64), padding=1,
                    backend="numpy")
    np.testing.assert_allclose(out[:, :, rows, :], ref[:, :, rows, :], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("algorithm", ["gemm", "direct"])
def test_conv_transpose2d_allocates_at_most_output_plus_cap(algorithm, monkeypatch):
    nb = _numba_backend()
    if algorithm not in registry.algorithms("conv_transpose2d", "numba"):
        pytest.skip(f"numba has no conv_transpose2d algorithm {algorithm!r}")
    cap = 4 * MiB
    monkeypatch.setattr(nb, "IM2COL_WORKSPACE_BYTES", cap)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 32, 256, 256), dtype=np.float32)
    w = rng.standard_normal((32, 16, 4, 4), dtype=np.float32) / 16
    fc.conv_transpose2d(x[:, :, :8, :8].copy(), w, stride=2, padding=1, backend="numba",
                        algorithm=algorithm)
    out, peak = traced_peak(lambda: fc.conv_transpose2d(x, w, stride=2, padding=1,
                                                        backend="numba", algorithm=algorithm))
    full = 16 * 16 * 256 * 256 * 4  # W^T @ x for the whole image
    budget = out.nbytes + (cap if algorithm == "gemm" else 0) + SLACK + out.nbytes // 100
    print(f"conv_transpose2d {algorithm}: peak {peak / MiB:.1f} MiB, output "
          f"{out.nbytes / MiB:.0f} MiB, cap {cap / MiB:.0f} MiB (uncapped {full / MiB:.0f} MiB)")
    assert peak <= budget


@pytest.mark.parametrize("op,args,kwargs", [
    ("max_pool2d", (3,), {"stride": 2, "padding": 1, "return_indices": True}),
    ("avg_pool2d", (3,), {"stride": 2, "padding": 1}),
    ("adaptive_avg_pool2d", ((7, 7),), {}),
    ("adaptive_max_pool2d", ((7, 7),), {"return_indices": True}),
])
def test_pooling_allocates_only_its_outputs(op, args, kwargs):
    _numba_backend()
    x = np.random.default_rng(2).standard_normal((2, 16, 256, 256), dtype=np.float32)
    getattr(fc, op)(x[:, :, :16, :16].copy(), *args, backend="numba", **kwargs)
    out, peak = traced_peak(lambda: getattr(fc, op)(x, *args, backend="numba", **kwargs))
    outs = out if isinstance(out, tuple) else (out,)
    size = sum(o.nbytes for o in outs)
    assert peak <= size + SLACK, f"{op}: {peak / MiB:.1f} MiB for {size / MiB:.1f} MiB of output"


# --------------------------------------------------------------------------
# the dense baseline's limit
# --------------------------------------------------------------------------
def test_dense_baseline_refuses_before_allocating():
    from fastconv import dense
    x = np.zeros((1, 1, 512, 512), np.float32)
    w = np.ones((1, 1, 3, 3), np.float32)
    p = dense.conv_params(x.shape, w.shape, padding=1)
    assert dense.dense_bytes(p, 4) > dense.MEMORY_LIMIT  # 256 GiB of matrix
    with pytest.raises(fc.BackendUnavailableError, match="bytes"):
        fc.conv2d(x, w, padding=1, backend="numpy", algorithm="dense")
    _, peak = traced_peak(lambda: pytest.raises(MemoryError, dense.dense_matrix, p, w))
    assert peak < 4 * MiB
    with pytest.raises(MemoryError, match=r"bytes"):
        dense.dense_matrix(p, w)


# --------------------------------------------------------------------------
# fastconv.memory
# --------------------------------------------------------------------------
def test_allocate_ok():
    a = memory.allocate((3, 4), np.float32, "test")
    assert a.shape == (3, 4) and a.dtype == np.float32 and a.flags.c_contiguous
    z = memory.allocate((2, 5), "float64", "test", zero=True)
    assert not z.any()
    assert memory.allocate((0, 7), np.float32, "empty").size == 0


@pytest.mark.parametrize("shape,words", [
    ((1 << 40, 1 << 30), ["larger than the address space"]),          # 2**70 * 4 bytes
    ((1 << 62, 1 << 62, 4), ["larger than the address space"]),        # overflows int64
    ((1, 64, 1 << 20, 1 << 20), ["available"]),                         # 256 TiB: not here
])
def test_allocate_impossible_is_a_clear_memory_error(shape, words):
    with pytest.raises(MemoryError) as info:
        memory.allocate(shape, np.float32, "conv2d output")
    msg = str(info.value)
    assert msg.startswith("conv2d output: cannot allocate"), msg
    assert "float32" in msg and str(shape) in msg and "bytes" in msg
    for word in words:
        assert word in msg, msg
    err = info.value
    assert isinstance(err, memory.AllocationError) and err.nbytes == memory.nbytes(shape, "f4")


def test_allocate_respects_a_limit():
    with pytest.raises(MemoryError, match=r"im2col workspace: .* over the limit of 1,048,576"):
        memory.allocate((1024, 1024), np.float32, "im2col workspace", limit=MiB)
    assert memory.allocate((512, 512), np.float32, "ok", limit=MiB).nbytes == MiB


def test_allocate_refuses_more_than_available_without_touching_memory():
    avail = memory.available_bytes()
    if avail is None:
        pytest.skip("no /proc/meminfo here")
    n = (avail // 4) * 2  # twice what is available: np.empty alone would "succeed" lazily
    _, peak = traced_peak(lambda: pytest.raises(MemoryError, memory.allocate, (n,),
                                                np.float32, "output"))
    assert peak < MiB
    with pytest.raises(ValueError, match="negative"):
        memory.allocate((-1, 3), np.float32, "bad")


def test_format_bytes():
    assert memory.format_bytes(512) == "512 bytes"
    assert memory.format_bytes(3 << 30) == "3,221,225,472 bytes (3.0 GiB)"


# --------------------------------------------------------------------------
# every CPU backend: an impossible output is a MemoryError, not a crash
# --------------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import sys, numpy as np, fastconv as fc
    import fastconv.dense  # registers numpy/dense
    backend, algorithm, op, k = sys.argv[1:5]
    k = int(k)  # conv2d kernel size: 1, or 3 (padding 1) for 3x3-only algorithms
    # a cheap zero-stride view: 2**40 elements, 4 TiB if anyone makes it contiguous
    x = np.broadcast_to(np.float32(1), (1, 1, 1 << 20, 1 << 20))
    w = np.ones((1, 1, k, k), np.float32)
    try:
        if op == "conv2d":
            fc.conv2d(x, w, padding=k // 2, backend=backend, algorithm=algorithm)
        elif op == "conv_transpose2d":
            # k = 4: stride 2, padding 1 (2x2 taps per output phase, for winograd)
            fc.conv_transpose2d(x, w, stride=1 if k == 1 else 2, padding=k // 4,
                                backend=backend, algorithm=algorithm)
        elif op == "max_pool2d":
            fc.max_pool2d(x, 1, backend=backend)
        elif op == "avg_pool2d":
            fc.avg_pool2d(x, 1, backend=backend)
        elif op == "adaptive_avg_pool2d":
            fc.adaptive_avg_pool2d(x, (1 << 20, 1 << 20), backend=backend)
        elif op == "adaptive_max_pool2d":
            fc.adaptive_max_pool2d(x, (1 << 20, 1 << 20), backend=backend)
    except MemoryError as exc:
        print("MemoryError:", exc)
        sys.exit(0)
    except fc.BackendUnavailableError as exc:
        print("refused:", exc)
        sys.exit(0)
    print("no error")
    sys.exit(3)
""")


def _cpu_impls():
    out = []
    for impl in registry.implementations():
        be = registry.get_backend(impl.backend)
        if be.device != "cpu":
            continue
        marks = ([pytest.mark.skip(reason=f"backend {be.name}: {be.unavailable_reason()}")]
                 if not be.available else [])
        out.append(pytest.param(impl, id=impl.key, marks=marks))
    return out


@pytest.mark.parametrize("impl", _cpu_impls())
def test_impossible_size_is_a_memory_error_not_a_crash(impl):
    """4 TiB of output: refused with MemoryError (or BackendUnavailableError), in a child
    process so that a crash would be seen as one instead of taking pytest down."""
    k = 1
    if impl.op == "conv2d" and impl.unsupported_reason(
            parse_conv2d((1, 1, 1 << 20, 1 << 20), (1, 1, 1, 1))) is not None:
        k = 3  # e.g. winograd: 3x3 only
    if impl.op == "conv_transpose2d" and impl.unsupported_reason(
            parse_conv_transpose2d((1, 1, 1 << 20, 1 << 20), (1, 1, 1, 1))) is not None:
        k = 4  # e.g. winograd: 2x2 taps per output phase
    run = subprocess.run([sys.executable, "-c", CHILD, impl.backend, impl.algorithm, impl.op,
                          str(k)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (f"{impl.key}: exit {run.returncode}\n{run.stdout[-2000:]}"
                                 f"{run.stderr[-2000:]}")
    assert "MemoryError" in run.stdout or "refused" in run.stdout
    msg = run.stdout
    assert any(u in msg for u in ("TiB", "GiB", "bytes")), f"{impl.key}: no size in {msg!r}"
    if impl.backend == "numba":  # allocates through fastconv.memory.allocate: says what
        assert any(f"{impl.op} {what}" in msg for what in ("output", "input", "indices")) \
            or "workspace" in msg, msg
