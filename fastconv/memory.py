"""Allocations that fail with a clear MemoryError instead of a crash.

Backends allocate outputs and workspaces through :func:`allocate` (or check a
size first with :func:`check_allocation`), so that an allocation that cannot
succeed comes back as a :class:`AllocationError` (a ``MemoryError``) whose
message says what was being allocated, its shape, dtype and size::

    conv2d output: cannot allocate (1, 64, 65536, 65536) float32 =
    1,099,511,627,776 bytes (1.0 TiB): only 21,474,836,480 bytes (20.0 GiB)
    of memory are available

Three ways an allocation goes wrong, all turned into that error:

* the byte count does not fit in the address space (NumPy raises
  ``ValueError: array is too big``, or the product of the shape overflows);
* NumPy's own ``MemoryError`` (``_ArrayMemoryError``: the allocator said no);
* the request exceeds the memory the system has available.  Linux
  overcommits: ``np.empty`` of 16 GiB on a 24 GiB machine "succeeds" and the
  process is killed later, when the kernel writes the pages.  ``allocate``
  compares the request with ``MemAvailable`` (``/proc/meminfo``) first and
  refuses what cannot fit (``check_available=False`` skips this; the check is
  skipped where ``/proc/meminfo`` does not exist).

``limit=`` refuses anything above a budget (a workspace cap) the same way.
Sizes are computed with Python integers, so no shape can overflow silently.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["AllocationError", "allocate", "check_allocation", "nbytes", "available_bytes",
           "format_bytes", "contiguous"]


class AllocationError(MemoryError):
    """An allocation fastconv refused or the system could not satisfy.

    Attributes: ``what`` (e.g. ``"conv2d output"``), ``shape``, ``dtype``,
    ``nbytes`` (the requested size) and ``reason``.
    """

    def __init__(self, what: str, shape, dtype, nbytes: int, reason: str):
        self.what, self.shape, self.dtype, self.nbytes, self.reason = (
            what, tuple(shape), np.dtype(dtype), nbytes, reason)
        super().__init__(f"{what}: cannot allocate {self.shape} {self.dtype.name} = "
                         f"{format_bytes(nbytes)}: {reason}")


def format_bytes(n: int) -> str:
    """``3 << 30`` -> ``'3,221,225,472 bytes (3.0 GiB)'``."""
    for name, size in (("EiB", 1 << 60), ("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", 1 << 30),
                       ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n:,} bytes ({n / size:.1f} {name})"
    return f"{n:,} bytes"


def nbytes(shape, dtype) -> int:
    """Exact byte count of an array of ``shape`` and ``dtype`` (Python int, no overflow)."""
    return math.prod(int(s) for s in shape) * np.dtype(dtype).itemsize


def available_bytes() -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` in bytes, or None where unknown."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_allocation(shape, dtype, what: str, limit: int | None = None,
                     check_available: bool = True) -> int:
    """Raise :class:`AllocationError` unless ``shape``/``dtype`` can be allocated.

    Returns the byte count.  Negative dimensions are a programming error
    (ValueError).
    """
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"{what}: negative dimension in shape {shape}")
    size = nbytes(shape, dtype)
    if limit is not None and size > limit:
        raise AllocationError(what, shape, dtype, size,
                              f"over the limit of {format_bytes(int(limit))}")
    if size > np.iinfo(np.intp).max:
        raise AllocationError(what, shape, dtype, size, "larger than the address space")
    if check_available and size > (1 << 20):
        avail = available_bytes()
        if avail is not None and size > avail:
            raise AllocationError(what, shape, dtype, size,
                                  f"only {format_bytes(avail)} of memory are available")
    return size


def allocate(shape, dtype, what: str, *, zero: bool = False, limit: int | None = None,
             check_available: bool = True) -> np.ndarray:
    """A C-contiguous array (``np.empty``, or ``np.zeros`` with ``zero=True``).

    Raises :class:`AllocationError` (a ``MemoryError``) naming ``what``, the
    shape, dtype and bytes when the array cannot or must not be allocated.
    """
    shape = tuple(int(s) for s in shape)
    size = check_allocation(shape, dtype, what, limit, check_available)
    try:
        return np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
    except MemoryError as exc:
        raise AllocationError(what, shape, dtype, size, f"the allocator failed ({exc})") \
            from None
    except ValueError as exc:  # "array is too big" and friends
        raise AllocationError(what, shape, dtype, size, str(exc)) from None


def contiguous(a: np.ndarray, what: str) -> np.ndarray:
    """``a`` itself if C-contiguous, else a C-contiguous copy made through :func:`allocate`.

    A strided or zero-stride view (``np.broadcast_to``) can stand for far more
    memory than it holds; copying it then fails with a message naming ``what``.
    """
    if a.flags.c_contiguous:
        return a
    out = allocate(a.shape, a.dtype, what)
    np.copyto(out, a)
    return out
