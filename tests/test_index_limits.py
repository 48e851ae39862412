"""Safe indexing: no silent 32-bit overflow; tensors past 2^31 elements work or are refused.

Without tens of gigabytes:

* Argument logic on shapes only: the parsers and ``*Params`` records compute
  output sizes, FLOPs and byte counts with Python integers, exact far past
  2^31 and 2^63.
* ``fastconv.plan`` on zero-stride views (``np.broadcast_to``: any shape for
  a few bytes) resolves every backend/algorithm for tensors past 2^31
  elements, or refuses with a clear reason.
* Real kernels past 2^31 elements: the input is a memory map of a *sparse*
  file of 2^31 + 2^17 float32 (8.6 GB that occupy a few pages on disk and in
  memory).  A 1x1 convolution / pooling with strides of 2^15..2^16 reads
  only four pixels, two of them past flat index 2^31; their values are
  planted, so a kernel that wraps its index at 32 bits reads the wrong pixel
  and the test fails.  Max pooling also returns an index past 2^31 (int64).
  The NumPy reference converts its input to float64 (17 GB), so it is not run
  at this size: its indexing is NumPy's own (64-bit).
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastconv as fc
import fastconv.dense  # noqa: F401  (registers the dense baseline)
from fastconv import registry
from fastconv.arguments import parse_adaptive_pool2d, parse_conv2d, parse_conv_transpose2d, \
    parse_pool2d

from conftest import implementation_params

INT32 = 2**31


# --------------------------------------------------------------------------
# shapes only
# --------------------------------------------------------------------------
def test_params_are_exact_past_int32_and_int64():
    p = parse_conv2d((16, 256, 2**20, 2**20), (512, 256, 3, 3), (512,), padding=1,
                     dtype=np.dtype("float32"))
    assert (p.h_out, p.w_out) == (2**20, 2**20)
    assert p.macs == 16 * 512 * 2**40 * 256 * 9                # 9 * 2^61: past int64
    assert p.flops == 2 * p.macs + 16 * 512 * 2**40
    assert p.min_bytes() == 4 * (16 * 256 * 2**40 + 512 * 256 * 9 + 512 + 16 * 512 * 2**40)
    assert isinstance(p.macs, int) and p.macs > 2**63

    t = parse_conv_transpose2d((1, 8, 2**31, 3), (8, 4, 3, 3), stride=2, padding=1)
    assert t.h_out == (2**31 - 1) * 2 - 2 + 3 and t.macs == 8 * 2**31 * 3 * 4 * 9

    m = parse_pool2d("max", (1, 1, 2**33 + 1, 5), 3, 2, 1, ceil_mode=True, return_indices=True)
    assert m.h_out == 2**32 + 1 and m.min_bytes(4) > 2**35
    a = parse_adaptive_pool2d("avg", (2, 3, 2**32, 7), (2**31 + 3, None))
    assert (a.h_out, a.w_out) == (2**31 + 3, 7)
    assert fc.conv2d_output_shape((1, 1, 3 * 2**31, 5), (1, 1, 2, 2), stride=(2, 1)) == \
        (1, 1, 3 * 2**30, 4)


def _huge_views(op, elements_past=INT32):
    """Zero-stride input (and weights) of ``op`` with more than 2^31 elements."""
    x = np.broadcast_to(np.float32(1), (2, 3, 2**15, 2**14 + 1))
    assert x.size > elements_past
    if op == "conv2d":
        return (x, np.ones((4, 3, 3, 3), np.float32)), {"padding": 1}
    if op == "conv_transpose2d":
        return (x, np.ones((3, 2, 2, 2), np.float32)), {"stride": 2}
    if op in ("max_pool2d", "avg_pool2d"):
        return (x, 2), {}
    return (x, (7, 7)), {}


@pytest.mark.parametrize("op", registry.OPS)
def test_plan_past_int32_elements_resolves_or_refuses_clearly(op):
    """Every registered backend/algorithm either accepts a > 2^31-element case (its
    ``supports`` rule says nothing) or refuses it with a reason naming the size."""
    args, kw = _huge_views(op)
    report = {}
    for impl in registry.implementations(op):
        be = registry.get_backend(impl.backend)
        params, _ = fc.plan(op, *args, backend="numpy", **kw)
        reason = impl.unsupported_reason(params)
        report[impl.key] = reason or ("accepted" + ("" if be.available else
                                                    f" (backend unavailable here: "
                                                    f"{be.unavailable_reason()})"))
        if reason is not None:
            assert isinstance(reason, str) and len(reason) > 10, f"{impl.key}: {reason!r}"
            if not be.available:
                continue
            with pytest.raises(fc.BackendUnavailableError):
                fc.plan(op, *args, backend=impl.backend,
                        **({"algorithm": impl.algorithm} if "conv" in op else {}), **kw)
    print(op, report)


# --------------------------------------------------------------------------
# real kernels past 2^31 elements, on a sparse memory map
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sparse_input(tmp_path_factory):
    """(1, 2, 32769, 32769) float32 memory map of a sparse file: 2^31 + 2^17 + 2 elements.

    Planted values at the four pixels a stride-32768 1x1 window reads, per channel.
    """
    shape = (1, 2, 32769, 32769)
    n = int(np.prod(shape))
    assert n > INT32
    path = tmp_path_factory.mktemp("sparse") / "x.f32"
    with open(path, "wb") as f:
        f.truncate(n * 4)
    if os.stat(path).st_blocks * 512 > 1 << 20:
        pytest.skip("this filesystem does not keep sparse files sparse")
    x = np.memmap(path, dtype=np.float32, mode="r+", shape=shape)
    for c in range(2):
        for i, h in enumerate((0, 32768)):
            for j, w in enumerate((0, 32768)):
                x[0, c, h, w] = 1 + c * 10 + 2 * i + j   # 1, 2, 3, 4 / 11, 12, 13, 14
    flat_last = np.ravel_multi_index((0, 1, 32768, 32768), shape)
    assert flat_last > INT32                                 # the last planted pixel
    yield x
    del x


def _cpu_scale_impls(ops):
    out = []
    for op in ops:
        for param in implementation_params(op):
            impl = param.values[0]
            be = registry.get_backend(impl.backend)
            marks = list(param.marks)
            if be.device != "cpu":
                marks.append(pytest.mark.skip(reason=f"{be.name}: a GPU backend would copy "
                                                     f"the 8.6 GB input to the device"))
            elif impl.backend == "numpy":
                marks.append(pytest.mark.skip(reason="the NumPy backend copies the input to "
                                                     "float64 (17 GB); NumPy indexing is "
                                                     "64-bit"))
            out.append(pytest.param(impl, id=impl.key, marks=marks))
    return out


# expected outputs: planted values at (h, w) in {0, 32768}^2 of each channel
PLANTED = np.array([[[1, 2], [3, 4]], [[11, 12], [13, 14]]], np.float32)


@pytest.mark.parametrize("impl", _cpu_scale_impls(["conv2d"]))
def test_conv2d_reads_past_int32_offsets(impl, sparse_input):
    w = np.array([1.0, 100.0], np.float32).reshape(1, 2, 1, 1)
    params, _ = fc.plan("conv2d", sparse_input, w, stride=32768, backend="numpy")
    reason = impl.unsupported_reason(params)
    if reason is not None:
        pytest.skip(f"{impl.key} refuses: {reason}")
    out = fc.conv2d(sparse_input, w, stride=32768, backend=impl.backend,
                    algorithm=impl.algorithm)
    np.testing.assert_array_equal(out[0, 0], PLANTED[0] + 100 * PLANTED[1])


@pytest.mark.parametrize("impl", _cpu_scale_impls(["max_pool2d", "avg_pool2d"]))
def test_pooling_reads_and_indexes_past_int32(impl, sparse_input):
    if impl.op == "max_pool2d":
        out, idx = fc.max_pool2d(sparse_input, 1, stride=32768, return_indices=True,
                                 backend=impl.backend)
        np.testing.assert_array_equal(out[0], PLANTED)
        rows = np.array([0, 32768])
        plane_idx = (rows[:, None] * 32769 + rows[None, :]).astype(np.int64)
        np.testing.assert_array_equal(idx[0, 0], plane_idx)
        # a window whose argmax lies past 2^31 in the flattened plane: a taller input
        assert idx.dtype == np.int64
    else:
        out = fc.avg_pool2d(sparse_input, 1, stride=32768, backend=impl.backend)
        np.testing.assert_array_equal(out[0], PLANTED)


@pytest.fixture(scope="module")
def sparse_plane(tmp_path_factory):
    """(1, 1, 65537, 32769) float32: one plane of 2^31 + 98305 elements (index > 2^31)."""
    shape = (1, 1, 65537, 32769)
    path = tmp_path_factory.mktemp("sparse_plane") / "x.f32"
    with open(path, "wb") as f:
        f.truncate(int(np.prod(shape)) * 4)
    if os.stat(path).st_blocks * 512 > 1 << 20:
        pytest.skip("this filesystem does not keep sparse files sparse")
    x = np.memmap(path, dtype=np.float32, mode="r+", shape=shape)
    x[0, 0, 65536, 32768] = 7.0     # flat index 65536*32769 + 32768 = 2^31 + 2^16 + 2^15
    x[0, 0, 65536, 0] = -3.0
    yield x
    del x


@pytest.mark.parametrize("impl", _cpu_scale_impls(["max_pool2d", "conv2d"]))
def test_single_plane_past_int32(impl, sparse_plane):
    """One (n, c) plane larger than 2^31: the max-pool index itself needs 64 bits."""
    if impl.op == "max_pool2d":
        out, idx = fc.max_pool2d(sparse_plane, (1, 2), stride=(65536, 16384),
                                 return_indices=True, backend=impl.backend)
        # windows: rows {0, 65536} x column pairs starting at {0, 16384, 32768 - 1?}
        assert out.shape == (1, 1, 2, 2)
        assert out[0, 0, 1, 1] == 0.0 and out[0, 0, 1, 0] == 0.0
        # the window at row 65536, columns 16384..16385 is all zeros: first index wins
        assert idx[0, 0, 1, 1] == 65536 * 32769 + 16384 > INT32
        out2, idx2 = fc.max_pool2d(sparse_plane, 1, stride=32768, return_indices=True,
                                   backend=impl.backend)
        assert out2[0, 0, 2, 1] == 7.0 and idx2[0, 0, 2, 1] == 65536 * 32769 + 32768
        assert out2[0, 0, 2, 0] == -3.0 and idx2[0, 0, 2, 0] == 65536 * 32769
    else:
        w = np.full((1, 1, 1, 1), 2.0, np.float32)
        params, _ = fc.plan("conv2d", sparse_plane, w, stride=32768, backend="numpy")
        reason = impl.unsupported_reason(params)
        if reason is not None:
            pytest.skip(f"{impl.key} refuses: {reason}")
        out = fc.conv2d(sparse_plane, w, stride=32768, backend=impl.backend,
                        algorithm=impl.algorithm)
        np.testing.assert_array_equal(out[0, 0, 2], [-6.0, 14.0])


# --------------------------------------------------------------------------
# GPU backends on this machine: the cupy kernels keep one plane in 32 bits
# --------------------------------------------------------------------------
CUPY_CHILD = textwrap.dedent("""
    import resource, sys
    # a copy of the 8.6 GB view would fail fast instead of filling the machine
    resource.setrlimit(resource.RLIMIT_DATA, (3 << 30, 3 << 30))
    import numpy as np, fastconv as fc
    x = np.broadcast_to(np.float32(0), (1, 1, 65537, 32769))   # one plane > 2^31
    w = np.ones((1, 1, 1, 1), np.float32)
    calls = {
        "conv2d": lambda: fc.conv2d(x, w, stride=32768, backend="cupy"),
        "max_pool2d": lambda: fc.max_pool2d(x, 1, stride=32768, backend="cupy"),
        "avg_pool2d": lambda: fc.avg_pool2d(x, 1, stride=32768, backend="cupy"),
        "adaptive_avg_pool2d": lambda: fc.adaptive_avg_pool2d(x, 2, backend="cupy"),
    }
    for op, call in calls.items():
        try:
            plan_ok = True
            try:
                fc.plan(op, x, *((w,) if op == "conv2d" else (1,) if "adaptive" not in op
                                 else (2,)), backend="cupy",
                        **({"stride": 32768} if "adaptive" not in op else {}))
            except fc.BackendUnavailableError:
                plan_ok = False
            call()
            print(op, "| ran", flush=True)
        except BaseException as exc:
            print(op, "|", "plan accepted" if plan_ok else "plan refused", "|",
                  type(exc).__name__, "|", str(exc).splitlines()[0][:300], flush=True)
""")


def test_cupy_refuses_planes_past_int32_before_copying():
    """Emulated cupy backend (FASTCONV_CUPY_EMULATE=1, the same host code): a plane of more
    than 2^31 elements must be refused by the ``supports`` rule, before any copy."""
    if not registry.has_backend("cupy"):
        pytest.skip("backend cupy is not registered")
    env = dict(os.environ, FASTCONV_CUPY_EMULATE="1")
    run = subprocess.run([sys.executable, "-c", CUPY_CHILD], capture_output=True, text=True,
                         timeout=300, env=env)
    lines = [line for line in run.stdout.splitlines() if "|" in line]
    assert lines, run.stdout + run.stderr[-2000:]
    print("\n".join(lines))
    for line in lines:
        op, plan, *rest = [part.strip() for part in line.split("|")]
        assert plan == "plan refused", f"{op}: plan() accepted a plane past 2^31 ({line})"
        assert rest[0] in ("BackendUnavailableError", "ValueError"), line
        assert "32-bit" in rest[1] or "2^31" in rest[1], line
