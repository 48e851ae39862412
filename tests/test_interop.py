"""Array interop beyond NumPy: DLPack exporters (JAX and the like) in and out."""
import sys
import types

import numpy as np
import pytest

import fastconv as fc
from fastconv import arrays
from fastconv.testing import assert_close

# A minimal DLPack-speaking array library, "fakedl", standing in for JAX & co.
fakedl = types.ModuleType("fakedl")


class FakeArray:
    """Exports its buffer through DLPack only (no NumPy, CUDA or torch interfaces)."""

    def __init__(self, data):
        self._data = np.asarray(data)

    def __dlpack__(self, **kwargs):
        return self._data.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._data.__dlpack_device__()

    @property
    def shape(self):
        return self._data.shape

    @property
    def dtype(self):
        return self._data.dtype


FakeArray.__module__ = "fakedl"
fakedl.FakeArray = FakeArray
fakedl.from_dlpack = lambda obj: FakeArray(np.from_dlpack(obj).copy())


@pytest.fixture(autouse=True)
def _register_fakedl(monkeypatch):
    monkeypatch.setitem(sys.modules, "fakedl", fakedl)


def test_dlpack_arrays_in_dlpack_arrays_out(rng):
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    fx, fw = FakeArray(x), FakeArray(w)
    assert arrays.kind_of(fx) == "dlpack-cpu"
    out = fc.conv2d(fx, fw, padding=1)
    assert isinstance(out, FakeArray)
    assert_close(np.from_dlpack(out), fc.conv2d(x, w, padding=1, backend="numpy"), "float32")
    v, i = fc.max_pool2d(fx, 2, return_indices=True)
    assert isinstance(v, FakeArray) and isinstance(i, FakeArray)
    np.testing.assert_array_equal(np.from_dlpack(i), fc.max_pool2d(x, 2, return_indices=True)[1])


def test_dlpack_without_an_importer_is_a_clear_type_error():
    class Orphan(FakeArray):
        pass
    Orphan.__module__ = "no_such_library_here"
    with pytest.raises(TypeError, match="input must be a NumPy, CuPy"):
        fc.conv2d(Orphan(np.zeros((1, 1, 3, 3), np.float32)), np.zeros((1, 1, 1, 1), np.float32))


def test_jax_arrays_round_trip():
    jnp = pytest.importorskip("jax.numpy")
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 2, 6, 6)), dtype=jnp.float32)
    w = jnp.ones((3, 2, 3, 3), dtype=jnp.float32)
    out = fc.conv2d(x, w, padding=1)
    assert type(out).__module__.split(".")[0] in ("jax", "jaxlib")
    assert_close(np.asarray(out), fc.conv2d(np.asarray(x), np.asarray(w), padding=1,
                                            backend="numpy"), "float32")
