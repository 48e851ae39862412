"""One comparison helper and one tolerance table, shared by tests, benchmarks and fuzzing.

Accuracy contract (``shared/docs/contract.md``): against the float64 NumPy
reference, ``||out - ref|| / ||ref||`` stays under the tolerance of the
output dtype; max-pooling values and all indices are exact.
"""
from __future__ import annotations

import numpy as np

from . import arrays

__all__ = ["TOLERANCE", "relative_error", "assert_close", "assert_exact", "to_numpy",
           "random_array"]

#: Relative L2 error allowed per dtype, with the reason.
TOLERANCE = {
    # float16: 10-bit mantissa (eps 9.8e-4); kernels accumulate in float32, so the
    # error is dominated by rounding inputs and the result once each (~2 eps).
    "float16": 4e-3,
    # float32: eps 1.2e-7; a sum of K products in float32 grows its error like
    # sqrt(K)*eps for random data (K up to ~5000 in the suites: 8.5e-6 worst case).
    "float32": 1e-5,
    # float64: eps 2.2e-16; the contract's 1e-12 leaves room for K up to ~1e7.
    "float64": 1e-12,
}


def to_numpy(x) -> np.ndarray:
    """Any supported array kind as a NumPy array (copies device arrays to the host)."""
    if isinstance(x, np.ndarray):
        return x
    return arrays.to_native(x, arrays.kind_of(x, "to_numpy", "x"), "numpy")


def relative_error(out, ref) -> float:
    """||out - ref|| / ||ref|| in float64, NaNs compared as equal positions."""
    out = to_numpy(out).astype(np.float64)
    ref = to_numpy(ref).astype(np.float64)
    if out.shape != ref.shape:
        raise AssertionError(f"shape {out.shape} != reference shape {ref.shape}")
    nan_out, nan_ref = np.isnan(out), np.isnan(ref)
    if not np.array_equal(nan_out, nan_ref):
        raise AssertionError(f"NaN positions differ: {int(nan_out.sum())} NaNs in output, "
                             f"{int(nan_ref.sum())} in reference")
    inf = np.isinf(ref)
    if not np.array_equal(out[inf], ref[inf]):
        raise AssertionError("infinite values differ from the reference")
    keep = ~(nan_ref | inf)
    # scale first: squares of values near 1e154 and above overflow float64 in the norms
    scale = float(np.abs(ref[keep]).max(initial=0.0))
    if scale > 0:
        out, ref = out / scale, ref / scale
    diff = np.linalg.norm(out[keep] - ref[keep])
    norm = np.linalg.norm(ref[keep])
    return float(diff / norm) if norm > 0 else float(diff) * scale


def assert_close(out, ref, dtype=None, what: str = "") -> float:
    """Raise AssertionError unless ``out`` matches ``ref`` within the dtype's tolerance."""
    dtype = np.dtype(dtype or to_numpy(out).dtype).name
    err = relative_error(out, ref)
    tol = TOLERANCE[dtype]
    if not err <= tol:
        raise AssertionError(f"{what}: relative error {err:.3e} > {tol:.0e} ({dtype})")
    return err


def assert_exact(out, ref, what: str = ""):
    """Bit-exact equality (max pooling values and indices), NaN == NaN."""
    out, ref = to_numpy(out), to_numpy(ref)
    if out.shape != ref.shape or not np.array_equal(out, ref, equal_nan=out.dtype.kind == "f"):
        bad = np.argwhere(~((out == ref) | (np.isnan(out) & np.isnan(ref))
                            if out.dtype.kind == "f" else out == ref)) if out.shape == ref.shape \
            else "shape"
        raise AssertionError(f"{what}: not exactly equal to the reference (first mismatches: "
                             f"{bad[:5].tolist() if not isinstance(bad, str) else bad})")


def random_array(rng: np.random.Generator, shape, dtype="float32", layout="C") -> np.ndarray:
    """Standard-normal values in ``dtype`` with the given memory layout.

    ``layout``: "C", "F" (Fortran order), "strided" (a non-contiguous view)
    or "negative" (negative strides along the last axis).
    """
    shape = tuple(shape)
    if layout == "strided":
        big = rng.standard_normal(shape[:-1] + (2 * shape[-1],)).astype(dtype)
        return big[..., ::2]
    a = rng.standard_normal(shape).astype(dtype)
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "negative":
        return a[..., ::-1]
    return a
