"""Array kinds in and out: NumPy, CuPy, Numba device arrays, PyTorch tensors.

fastconv returns the kind of array it was given, on the same device.  This
module recognises an array's kind without importing its library, moves it
to the kind a backend computes on (zero-copy between device kinds through
``__cuda_array_interface__``), and moves the result back.

Kinds: ``"numpy"``, ``"torch-cpu"``, ``"dlpack-cpu"`` (host), ``"cupy"``,
``"numba"``, ``"torch-cuda"``, ``"dlpack-cuda"`` (device).  The DLPack kinds
cover any other array library that exports ``__dlpack__`` (JAX, for one) and
can import a DLPack capsule back (``jax.numpy.from_dlpack``, or a
``from_dlpack`` function at the top of the library's package).
"""
from __future__ import annotations

import sys

import numpy as np

__all__ = ["kind_of", "is_device_kind", "dtype_of", "shape_of", "to_native", "from_native",
           "add_batch_axis", "dtypes_of",
           "dlpack_importer"]

HOST_KINDS = ("numpy", "torch-cpu", "dlpack-cpu")
DEVICE_KINDS = ("cupy", "numba", "torch-cuda", "dlpack-cuda")

_DLPACK_CPU, _DLPACK_CUDA = 1, 2  # DLDeviceType codes (kDLCPU, kDLCUDA)


def dlpack_importer(like):
    """The function that turns a DLPack exporter back into ``like``'s array type, or None."""
    top = (type(like).__module__ or "").split(".")[0]
    if top in ("jax", "jaxlib"):
        import jax.numpy as jnp
        return jnp.from_dlpack
    return getattr(sys.modules.get(top), "from_dlpack", None)


def kind_of(x, op: str = "fastconv", name: str = "input") -> str:
    """The array kind of ``x``, or TypeError naming the argument."""
    if isinstance(x, np.ndarray):
        return "numpy"
    mod = type(x).__module__ or ""
    if mod.startswith("torch") and hasattr(x, "is_cuda"):
        return "torch-cuda" if x.is_cuda else "torch-cpu"
    if mod.startswith("cupy") and hasattr(x, "__cuda_array_interface__"):
        return "cupy"
    if mod.startswith("numba") and hasattr(x, "copy_to_host"):
        return "numba"
    if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        device = x.__dlpack_device__()[0]
        if device in (_DLPACK_CPU, _DLPACK_CUDA) and dlpack_importer(x) is not None:
            return "dlpack-cpu" if device == _DLPACK_CPU else "dlpack-cuda"
    raise TypeError(f"{op}: {name} must be a NumPy, CuPy, Numba device, PyTorch or DLPack "
                    f"(e.g. JAX) array on the CPU or a CUDA device, got "
                    f"{type(x).__module__}.{type(x).__name__}")


def is_device_kind(kind: str) -> bool:
    return kind in DEVICE_KINDS


def dtype_of(x, kind: str) -> np.dtype:
    """The NumPy dtype of ``x`` (TypeError for dtypes NumPy cannot name)."""
    if kind.startswith("dlpack"):
        try:
            return np.dtype(x.dtype)
        except TypeError:
            return np.dtype("V")  # a dtype NumPy cannot name: rejected as unsupported
    if kind.startswith("torch"):
        name = str(x.dtype).replace("torch.", "")
        try:
            return np.dtype(name)
        except TypeError:
            return np.dtype("V")  # e.g. bfloat16: rejected by check_dtypes as unsupported
    return np.dtype(x.dtype)


def shape_of(x) -> tuple[int, ...] | None:
    """The shape as Python ints (None for None, e.g. an absent bias)."""
    return None if x is None else tuple(int(s) for s in x.shape)


def dtypes_of(**named) -> dict:
    """``{name: dtype}`` for named arrays of any kind (None stays None), for check_dtypes."""
    return {name: None if a is None else dtype_of(a, kind_of(a, name=name))
            for name, a in named.items()}


def add_batch_axis(x, native: str):
    """View ``x`` with a leading axis of length 1, keeping its strides (any layout).

    numba-cuda 0.30's ``DeviceNDArray.reshape`` gives a non-C-contiguous array
    C strides over its data, so a strided unbatched input would be scrambled:
    build the view from the same device memory with the old strides instead.
    """
    shape = (1,) + tuple(x.shape)
    if native == "numba" and hasattr(x, "gpu_data") and not x.is_c_contiguous():
        from numba.cuda.cudadrv.devicearray import DeviceNDArray
        return DeviceNDArray(shape=shape, strides=(x.strides[0],) + tuple(x.strides),
                             dtype=x.dtype, gpu_data=x.gpu_data)
    return x.reshape(shape)


# --------------------------------------------------------------------------
# conversion to a backend's native kind and back
# --------------------------------------------------------------------------
def _to_numpy(x, kind):
    if kind == "numpy":
        return x
    if kind == "torch-cpu":
        return x.detach().resolve_conj().numpy()
    if kind == "cupy":
        return x.get()
    if kind == "numba":
        return x.copy_to_host()
    if kind == "torch-cuda":
        return x.detach().cpu().numpy()
    if kind == "dlpack-cpu":
        return np.from_dlpack(x)  # zero-copy
    if kind == "dlpack-cuda":
        import cupy
        return cupy.from_dlpack(x).get()
    raise AssertionError(kind)


def _to_cupy(x, kind):
    import cupy
    if kind == "cupy":
        return x
    if kind in HOST_KINDS:
        return cupy.asarray(_to_numpy(x, kind))
    if kind == "torch-cuda":
        x = x.detach()
    if kind == "dlpack-cuda":
        return cupy.from_dlpack(x)  # no copy
    return cupy.asarray(x)  # __cuda_array_interface__: no copy


def _to_numba(x, kind):
    from numba import cuda
    if kind == "numba":
        return x
    if kind in HOST_KINDS:
        return cuda.to_device(np.ascontiguousarray(_to_numpy(x, kind)))
    if kind == "torch-cuda":
        x = x.detach()
    if kind == "dlpack-cuda":
        return cuda.as_cuda_array(_to_cupy(x, kind))
    return cuda.as_cuda_array(x)


def to_native(x, kind: str, native: str):
    """Convert ``x`` (of ``kind``) to the backend's ``native`` kind."""
    if x is None:
        return None
    if native == "numpy":
        return _to_numpy(x, kind)
    if native == "cupy":
        return _to_cupy(x, kind)
    if native == "numba":
        return _to_numba(x, kind)
    raise ValueError(f"unknown native array kind {native!r}")


def from_native(y, native: str, kind: str, like=None):
    """Convert a backend result ``y`` back to the caller's ``kind``."""
    if y is None:
        return None
    if native == "numpy" and kind == "numpy":
        return y
    if kind == "numpy":
        return y.get() if native == "cupy" else y.copy_to_host()
    if kind == "torch-cpu":
        import torch
        host = y if native == "numpy" else from_native(y, native, "numpy")
        return torch.from_numpy(np.ascontiguousarray(host))
    if kind == "cupy":
        import cupy
        if native == "numpy":
            return cupy.asarray(y)
        return y if native == "cupy" else cupy.asarray(y)
    if kind == "numba":
        from numba import cuda
        if native == "numpy":
            return cuda.to_device(y)
        return y if native == "numba" else cuda.as_cuda_array(y)
    if kind in ("dlpack-cpu", "dlpack-cuda"):
        side = "numpy" if kind == "dlpack-cpu" else "cupy"
        native_side = y if native == side else from_native(y, native, side)
        return dlpack_importer(like)(np.ascontiguousarray(native_side) if side == "numpy"
                                     else native_side)
    if kind == "torch-cuda":
        import torch
        device = like.device if like is not None else "cuda"
        if native == "numpy":
            return torch.from_numpy(np.ascontiguousarray(y)).to(device)
        return torch.as_tensor(y, device=device)  # __cuda_array_interface__: no copy
    raise ValueError(f"unknown array kind {kind!r}")
