"""The public API: array kinds in and out, unbatched and empty inputs, backends(), plan()."""
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv as fc
from fastconv import registry
from fastconv.testing import assert_close

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


def test_import_needs_only_numpy():
    # importing fastconv and loading every backend's registrations (not probing them)
    code = ("import sys, fastconv; fastconv.registry.implementations(); "
            "bad = [m for m in ('numba', 'cupy', 'torch') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_backends_lists_each_with_reason():
    rows = fc.backends()
    names = [r["name"] for r in rows]
    assert names[:1] == ["numpy"] and len(set(names)) == len(names)
    for row in rows:
        assert row["available"] == (row["reason"] is None)
        assert row["device"] in ("cpu", "cuda")
        if not row["available"]:
            assert isinstance(row["reason"], str) and row["reason"]
    numpy_row = rows[0]
    assert numpy_row["available"] and "conv2d" in numpy_row["ops"]


def test_unavailable_backend_raises_clear_error_not_hang():
    x, w = np.zeros((1, 1, 4, 4), np.float32), np.zeros((1, 1, 3, 3), np.float32)
    for be in registry.all_backends():
        if be.available:
            continue
        with pytest.raises(fc.BackendUnavailableError, match=be.name):
            fc.conv2d(x, w, backend=be.name)


def test_unbatched_in_unbatched_out(rng):
    x = rng.standard_normal((3, 8, 8))
    w = rng.standard_normal((4, 3, 3, 3))
    out = fc.conv2d(x, w, padding=1, backend="numpy")
    assert out.shape == (4, 8, 8)
    np.testing.assert_array_equal(out, fc.conv2d(x[None], w, padding=1, backend="numpy")[0])
    v, i = fc.max_pool2d(x, 2, return_indices=True, backend="numpy")
    assert v.shape == i.shape == (3, 4, 4)


def test_empty_batch_and_zero_channels(rng):
    w = rng.standard_normal((4, 0, 3, 3))
    b = rng.standard_normal(4)
    out = fc.conv2d(np.zeros((2, 0, 5, 5)), w, b, backend="numpy")
    assert out.shape == (2, 4, 3, 3)
    np.testing.assert_array_equal(out, np.broadcast_to(b.reshape(1, 4, 1, 1), out.shape))
    assert fc.conv2d(np.zeros((0, 3, 5, 5)), np.zeros((2, 3, 3, 3))).shape == (0, 2, 3, 3)
    assert fc.max_pool2d(np.zeros((0, 3, 5, 5)), 2).shape == (0, 3, 2, 2)
    v, i = fc.adaptive_max_pool2d(np.zeros((1, 2, 5, 5)), 0, return_indices=True)
    assert v.shape == i.shape == (1, 2, 0, 0)
    assert fc.adaptive_avg_pool2d(np.zeros((1, 0, 5, 5)), 2).shape == (1, 0, 2, 2)


def test_float16_on_the_reference(rng):
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float16)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float16)
    out = fc.conv2d(x, w, backend="numpy")
    assert out.dtype == np.float16
    assert_close(out, fc.conv2d(x.astype(np.float64), w.astype(np.float64), backend="numpy"),
                 "float16")


def test_plan_reports_the_implementation(rng):
    x = rng.standard_normal((1, 2, 6, 6))
    w = rng.standard_normal((3, 2, 3, 3))
    params, impl = fc.plan("conv2d", x, w, padding=1, backend="numpy", algorithm="im2col")
    assert (impl.backend, impl.algorithm) == ("numpy", "im2col")
    assert params.output_shape == (1, 3, 6, 6) and params.flops == 2 * 3 * 36 * 18
    params, impl = fc.plan("avg_pool2d", x, 2, backend="numpy")
    assert params.output_shape == (1, 2, 3, 3)
    with pytest.raises(ValueError, match="unknown op"):
        fc.plan("conv3d", x, w)


def test_auto_backend_for_host_arrays_is_a_cpu_backend(rng):
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    _, impl = fc.plan("conv2d", x, w)
    assert registry.get_backend(impl.backend).device == "cpu"


@needs_torch
def test_torch_tensors_in_torch_tensors_out(rng):
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    out = fc.conv2d(x, w, padding=1)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    assert_close(out.numpy(), F.conv2d(x.detach(), w, padding=1).numpy(), "float64")
    v, i = fc.max_pool2d(x, 3, 2, 1, return_indices=True)
    ev, ei = F.max_pool2d(x.detach(), 3, 2, 1, return_indices=True)
    assert torch.equal(v, ev) and torch.equal(i, ei)


@needs_torch
def test_mixed_array_kinds_on_the_host_are_accepted(rng):
    x = rng.standard_normal((1, 2, 5, 5))
    w = torch.from_numpy(rng.standard_normal((1, 2, 3, 3)))
    out = fc.conv2d(x, w, backend="numpy")
    assert isinstance(out, np.ndarray)


@settings(max_examples=200, deadline=None)
@given(h=st.integers(1, 40), k=st.integers(1, 7), s=st.integers(1, 5), p=st.integers(0, 4),
       d=st.integers(1, 3))
def test_shape_helper_matches_what_the_op_returns(h, k, s, p, d):
    eff = d * (k - 1) + 1
    if h + 2 * p < eff:
        with pytest.raises(ValueError, match="kernel"):
            fc.conv2d_output_shape((1, 1, h, h), (1, 1, k, k), s, p, d)
        return
    shape = fc.conv2d_output_shape((1, 1, h, h), (1, 1, k, k), s, p, d)
    assert shape[2] == (h + 2 * p - eff) // s + 1  # the notes' (N - F + 2P)/S + 1, floored
    small = np.zeros((1, 1, h, h))
    assert fc.conv2d(small, np.zeros((1, 1, k, k)), None, s, p, d, backend="numpy").shape == shape


@needs_torch
@settings(max_examples=300, deadline=None)
@given(h=st.integers(1, 40), k=st.integers(1, 6), s=st.integers(1, 5), p=st.integers(0, 3),
       d=st.integers(1, 3), ceil=st.booleans())
def test_pool_shape_helper_matches_pytorch(h, k, s, p, d, ceil):
    x = torch.zeros(1, 1, h, h + 1)
    try:
        expect = tuple(F.max_pool2d(x, k, s, p, d, ceil).shape)
    except RuntimeError:
        with pytest.raises(ValueError):
            fc.max_pool2d_output_shape((1, 1, h, h + 1), k, s, p, d, ceil)
        return
    assert fc.max_pool2d_output_shape((1, 1, h, h + 1), k, s, p, d, ceil) == expect


@needs_torch
@settings(max_examples=200, deadline=None)
@given(h=st.integers(1, 12), k=st.integers(1, 5), s=st.integers(1, 4), p=st.integers(0, 3),
       op=st.integers(0, 3), d=st.integers(1, 3))
def test_conv_transpose_shape_helper_matches_pytorch(h, k, s, p, op, d):
    try:
        expect = tuple(F.conv_transpose2d(torch.zeros(1, 1, h, h), torch.zeros(1, 1, k, k), None,
                                          s, p, op, 1, d).shape)
    except RuntimeError:
        expect = None
    if expect is None or 0 in expect:
        # PyTorch's CPU path returns an empty tensor for some 1x1 inputs whose output size
        # is 0 (and raises "Output size is too small" for others): fastconv always raises
        with pytest.raises(ValueError):
            fc.conv_transpose2d_output_shape((1, 1, h, h), (1, 1, k, k), s, p, op, 1, d)
        return
    assert fc.conv_transpose2d_output_shape((1, 1, h, h), (1, 1, k, k), s, p, op, 1, d) == expect


def test_documented_ceil_mode_trap():
    """pytorch#57178: k=1, s=2, ceil_mode on 32 gives 16 (the docs' formula says 17)."""
    assert fc.max_pool2d_output_shape((1, 1, 32, 32), 1, 2, ceil_mode=True) == (1, 1, 16, 16)


def test_adaptive_shape_helper_keeps_none_dims():
    assert fc.adaptive_pool2d_output_shape((2, 3, 10, 7), (None, 4)) == (2, 3, 10, 4)
    assert fc.adaptive_pool2d_output_shape((3, 10, 7), 5) == (3, 5, 5)
