"""The dense-matrix baseline: a conv2d as one matrix (doubly block Toeplitz) product.

Every conv2d is linear in its input, so for one sample it is a matrix ``M``
of shape ``(C_out*H_out*W_out, C_in*H*W)`` applied to the flattened input::

    y[n].ravel() = M @ x[n].ravel()            (bias added separately)
    M[(o, y, x), (c, h, w)] = sum of weight[o, c - g*C_in/G, i, j]
        over the taps (i, j) whose padded source pixel of output (y, x)
        is input pixel (h, w); g = o // (C_out/G), c in group g

For zero padding each (row, column) gets at most one tap, and ``M`` is a
block matrix of Toeplitz blocks (rows of blocks per output row, Toeplitz
blocks along the width).  Reflect/replicate/circular padding fold padded
pixels back onto the input, so several taps may add up in one entry.

This is the baseline the lecture notes (Goodfellow et al., ch. 9) compare
convolution against: ``M`` has ``rows*cols`` entries of which only about
``rows*K`` (``K = C_in/G*kH*kW`` taps) are non-zero.  :func:`counts` gives
those numbers exactly; :func:`edge_detection_counts` the book's example.

Memory: the dense matrix needs ``rows*cols*itemsize`` bytes.  Matrices over
``memory_limit`` (module default :data:`MEMORY_LIMIT`, 1 GiB, or the
``FASTCONV_DENSE_LIMIT`` environment variable in bytes; per call
``memory_limit=``) are refused with :class:`DenseMatrixTooLarge`, a
``MemoryError`` that is also a ``ValueError``, whose message names the bytes.

The dense algorithm is registered as ``conv2d`` / backend ``"numpy"`` /
algorithm ``"dense"`` (host arrays; CuPy arrays work with :func:`apply`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .arguments import Conv2dParams, parse_conv2d
from .registry import register
from .wrappers import numpy_backend as _numpy_backend  # noqa: F401  (registers "numpy" first)

__all__ = ["MEMORY_LIMIT", "DenseMatrixTooLarge", "CSRMatrix", "conv_params", "counts",
           "dense_bytes", "sparse_bytes", "check_memory", "axis_sources", "dense_matrix",
           "sparse_matrix", "apply", "conv2d_dense", "conv2d_sparse", "edge_detection_counts",
           "clear_cache", "format_bytes"]


def _default_limit() -> int:
    env = os.environ.get("FASTCONV_DENSE_LIMIT")
    return int(float(env)) if env else 1 << 30


#: Largest matrix (bytes) built unless a call passes ``memory_limit``.
MEMORY_LIMIT: int = _default_limit()


class DenseMatrixTooLarge(MemoryError, ValueError):
    """The matrix of this convolution would exceed the memory limit."""


def format_bytes(n: int) -> str:
    """``8003072000*4`` -> ``'32,012,288,000 bytes (29.8 GiB)'``."""
    units = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]
    for name, size in units:
        if n >= size:
            return f"{n:,} bytes ({n / size:.1f} {name})"
    return f"{n:,} bytes"


# --------------------------------------------------------------------------
# sizes and exact counts
# --------------------------------------------------------------------------
def conv_params(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1,
                padding_mode="zeros", dtype="float32", bias=False) -> Conv2dParams:
    """The checked :class:`Conv2dParams` of a conv2d call, from shapes."""
    bias_shape = (weight_shape[0],) if bias else None
    return parse_conv2d(input_shape, weight_shape, bias_shape, stride, padding, dilation,
                        groups, padding_mode, np.dtype(dtype))


def _itemsize(p: Conv2dParams, itemsize=None) -> int:
    if itemsize is not None:
        return int(itemsize)
    return np.dtype(p.dtype).itemsize if p.dtype is not None else 4


def _shape(p: Conv2dParams) -> tuple[int, int]:
    return p.c_out * p.h_out * p.w_out, p.c_in * p.h * p.w


def axis_sources(out_size: int, kernel: int, stride: int, dilation: int, pad_before: int,
                 size: int, mode: str = "zeros") -> np.ndarray:
    """``(out_size, kernel)`` input index read by output ``y`` at tap ``i``; -1 for a zero.

    The padded position ``y*stride + i*dilation - pad_before`` mapped back onto
    the input by the padding mode, as PyTorch's ``F.pad`` does (reflect
    mirrors without repeating the edge, replicate repeats it, circular wraps).
    """
    pos = (np.arange(out_size)[:, None] * stride + np.arange(kernel)[None, :] * dilation
           - pad_before)
    if mode == "zeros":
        return np.where((pos >= 0) & (pos < size), pos, -1)
    if mode == "replicate":
        return np.clip(pos, 0, size - 1)
    if mode == "circular":
        return pos % size
    if mode == "reflect":
        if size == 1:
            return np.zeros_like(pos)
        period = 2 * (size - 1)
        pos = np.abs(pos) % period
        return np.where(pos >= size, period - pos, pos)
    raise ValueError(f"unknown padding_mode {mode!r}")


def _sources(p: Conv2dParams):
    hs = axis_sources(p.h_out, p.kh, p.stride[0], p.dilation[0], p.padding[0], p.h,
                      p.padding_mode)
    ws = axis_sources(p.w_out, p.kw, p.stride[1], p.dilation[1], p.padding[2], p.w,
                      p.padding_mode)
    return hs, ws


def _distinct_pairs(src: np.ndarray) -> int:
    """Number of distinct (output index, input index) pairs along one axis."""
    rows = np.repeat(np.arange(src.shape[0]), src.shape[1])
    cols = src.ravel()
    keep = cols >= 0
    return int(np.unique(rows[keep] * (int(cols.max()) + 2) + cols[keep]).size)


def counts(p: Conv2dParams, itemsize=None) -> dict:
    """Exact sizes and operation counts of the convolution and of its matrix, per sample.

    Returns a dict of Python ints (the batch multiplies every count by ``p.n``):

    * ``rows``, ``cols``, ``entries``: the matrix is ``rows x cols``;
    * ``dense_bytes``: ``entries * itemsize``;
    * ``nonzeros``: structural non-zeros (entries reached by at least one tap;
      separable, so counted per axis: ``C_out*C_in/G*|pairs_h|*|pairs_w|``);
    * ``taps``: multiply-adds of the convolution (``rows * C_in/G*kH*kW``);
    * ``conv_flops``: ``K`` multiplies and ``K-1`` adds per output (the
      notes' count, 3 per pixel for the kernel ``[-1, 1]``), plus 1 with bias;
    * ``conv_flops_fma2``: 2 flops per multiply-add (+1 with bias);
    * ``dense_flops``: 2 flops per matrix entry (a multiply-add each);
    * ``sparse_flops``: 2 per structural non-zero.
    """
    rows, cols = _shape(p)
    k = (p.c_in // p.groups) * p.kh * p.kw
    hs, ws = _sources(p)
    nnz = p.c_out * (p.c_in // p.groups) * _distinct_pairs(hs) * _distinct_pairs(ws)
    bias = rows if p.has_bias else 0
    size = _itemsize(p, itemsize)
    return {"rows": rows, "cols": cols, "entries": rows * cols,
            "dense_bytes": rows * cols * size, "itemsize": size, "nonzeros": nnz,
            "taps": rows * k, "conv_flops": rows * (2 * k - 1) + bias,
            "conv_flops_fma2": 2 * rows * k + bias, "dense_flops": 2 * rows * cols,
            "sparse_flops": 2 * nnz}


def dense_bytes(p: Conv2dParams, itemsize=None) -> int:
    """Bytes of the dense matrix of one sample."""
    rows, cols = _shape(p)
    return rows * cols * _itemsize(p, itemsize)


def sparse_bytes(p: Conv2dParams, itemsize=None) -> int:
    """Upper bound of the CSR bytes: a value and an int64 column per tap, plus indptr."""
    rows, _ = _shape(p)
    taps = rows * (p.c_in // p.groups) * p.kh * p.kw
    return taps * (_itemsize(p, itemsize) + 8) + (rows + 1) * 8


def _limit(memory_limit) -> int:
    return MEMORY_LIMIT if memory_limit is None else int(memory_limit)


def check_memory(p: Conv2dParams, memory_limit=None, itemsize=None, sparse=False):
    """Raise :class:`DenseMatrixTooLarge` if the matrix would exceed the limit."""
    limit = _limit(memory_limit)
    need = sparse_bytes(p, itemsize) if sparse else dense_bytes(p, itemsize)
    if need > limit:
        rows, cols = _shape(p)
        what = "sparse (CSR) matrix" if sparse else "dense matrix"
        raise DenseMatrixTooLarge(
            f"conv2d: the {what} of this convolution ({rows:,} x {cols:,} for input "
            f"{p.input_shape[1:]} and weight {p.weight_shape}) needs {format_bytes(need)}, "
            f"over the memory limit of {format_bytes(limit)}; pass memory_limit= or set "
            f"fastconv.dense.MEMORY_LIMIT to allow it")


# --------------------------------------------------------------------------
# building the matrices
# --------------------------------------------------------------------------
def _tap_indices(p: Conv2dParams):
    """Per tap (c, i, j) of a group: output rows and input columns, vectorized over (o, y, x).

    Yields ``(c, i, j, rows, o, cols)``: 1-D arrays over the outputs of every
    output channel whose tap reads an input pixel (not a zero of the
    padding): matrix row, output channel ``o`` (to pick ``weight[o, c, i, j]``)
    and matrix column.  Within one tap the rows are distinct, so
    ``M[rows, cols] += w`` never collides.
    """
    hs, ws = _sources(p)
    cig, cog = p.c_in // p.groups, p.c_out // p.groups
    plane_out, plane_in = p.h_out * p.w_out, p.h * p.w
    o = np.arange(p.c_out)
    group_first_channel = (o // cog) * cig  # first input channel of o's group
    yx_out = np.arange(plane_out).reshape(p.h_out, p.w_out)
    for i in range(p.kh):
        for j in range(p.kw):
            src_h, src_w = hs[:, i], ws[:, j]
            valid = (src_h[:, None] >= 0) & (src_w[None, :] >= 0)  # (Ho, Wo)
            out_pix = yx_out[valid]
            in_pix = (src_h[:, None] * p.w + src_w[None, :])[valid]
            for c in range(cig):
                rows = (o[:, None] * plane_out + out_pix[None, :]).ravel()
                cols = ((group_first_channel[:, None] + c) * plane_in + in_pix[None, :]).ravel()
                yield c, i, j, rows, np.broadcast_to(np.arange(p.c_out)[:, None],
                                                     (p.c_out, out_pix.size)).ravel(), cols


def dense_matrix(p: Conv2dParams, weight, memory_limit=None, dtype=None) -> np.ndarray:
    """The ``(C_out*H_out*W_out, C_in*H*W)`` dense matrix of the convolution, on the host.

    ``weight`` is ``(C_out, C_in/G, kH, kW)`` (NumPy, or anything ``np.asarray``
    takes); the matrix has ``dtype`` (default the weight's).
    """
    weight = np.asarray(weight)
    dtype = np.dtype(dtype or weight.dtype)
    check_memory(p, memory_limit, dtype.itemsize)
    rows, cols = _shape(p)
    m = np.zeros((rows, cols), dtype=dtype)
    flat = m.reshape(-1)
    for c, i, j, r, o, col in _tap_indices(p):
        # within one tap every row is distinct: no collisions in this scatter
        flat[r * cols + col] += weight[o, c, i, j].astype(dtype)
    return m


@dataclass
class CSRMatrix:
    """A compressed sparse row matrix built and applied with NumPy alone.

    Used when SciPy is not installed; ``m @ x`` takes a vector ``(cols,)`` or
    a matrix ``(cols, k)`` and accumulates in float64.
    """
    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    shape: tuple[int, int]

    @property
    def nnz(self) -> int:
        return int(self.data.size)

    @property
    def dtype(self):
        return self.data.dtype

    def _row_of_entry(self):
        return np.repeat(np.arange(self.shape[0]), np.diff(self.indptr))

    def __matmul__(self, x):
        x = np.asarray(x)
        rows = self._row_of_entry()
        if x.ndim == 1:
            out = np.bincount(rows, weights=self.data * x[self.indices],
                              minlength=self.shape[0])
        else:
            out = np.zeros((self.shape[0],) + x.shape[1:])
            np.add.at(out, rows, self.data[:, None] * x[self.indices])
        return out.astype(np.result_type(self.data, x), copy=False)

    def toarray(self) -> np.ndarray:
        out = np.zeros(self.shape, dtype=self.data.dtype)
        out[self._row_of_entry(), self.indices] = self.data
        return out


def _coo(p: Conv2dParams, weight):
    rs, cs, vs = [], [], []
    for c, i, j, r, o, col in _tap_indices(p):
        rs.append(r)
        cs.append(col)
        vs.append(weight[o, c, i, j])
    if not rs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, weight.dtype)
    return np.concatenate(rs), np.concatenate(cs), np.concatenate(vs)


def sparse_matrix(p: Conv2dParams, weight, memory_limit=None, dtype=None, use_scipy=None):
    """The convolution's matrix in CSR form (duplicates summed).

    ``use_scipy``: None picks ``scipy.sparse.csr_matrix`` when SciPy is
    installed, else :class:`CSRMatrix`; True requires SciPy (ImportError
    with a clear message otherwise); False always builds :class:`CSRMatrix`.
    """
    weight = np.asarray(weight)
    dtype = np.dtype(dtype or weight.dtype)
    check_memory(p, memory_limit, dtype.itemsize, sparse=True)
    rows, cols = _shape(p)
    r, c, v = _coo(p, weight)
    v = v.astype(dtype, copy=False)
    if use_scipy is None or use_scipy:
        try:
            import scipy.sparse as sp
        except ImportError:
            if use_scipy:
                raise ImportError("fastconv.dense.sparse_matrix(use_scipy=True) needs SciPy: "
                                  "pip install scipy") from None
        else:
            m = sp.coo_matrix((v, (r, c)), shape=(rows, cols)).tocsr()
            m.sum_duplicates()
            return m
    order = np.lexsort((c, r))
    r, c, v = r[order], c[order], v[order]
    key = r * cols + c
    first = np.ones(key.size, bool)
    first[1:] = key[1:] != key[:-1]
    starts = np.flatnonzero(first)
    data = np.add.reduceat(v, starts) if v.size else v
    r, c = r[starts], c[starts]
    indptr = np.zeros(rows + 1, np.int64)
    np.cumsum(np.bincount(r, minlength=rows), out=indptr[1:])
    return CSRMatrix(data.astype(dtype, copy=False), c.astype(np.int64), indptr, (rows, cols))


# --------------------------------------------------------------------------
# applying them
# --------------------------------------------------------------------------
def _array_module(x):
    if type(x).__module__.startswith("cupy"):
        import cupy
        return cupy
    return np


def to_device(m, like):
    """The matrix moved to ``like``'s device (CuPy) or left on the host."""
    xp = _array_module(like)
    if xp is np:
        return m
    if isinstance(m, np.ndarray):
        return xp.asarray(m)
    import cupyx.scipy.sparse as csp
    if isinstance(m, CSRMatrix):
        return csp.csr_matrix((xp.asarray(m.data), xp.asarray(m.indices),
                               xp.asarray(m.indptr)), shape=m.shape)
    return csp.csr_matrix(m)


def apply(m, x, p: Conv2dParams, bias=None):
    """``conv2d`` through the matrix: ``(N, C_in, H, W)`` -> ``(N, C_out, H_out, W_out)``.

    ``x`` may be NumPy or CuPy (the matrix is moved to its device); the
    product is ``M @ X`` with ``X = x.reshape(N, -1).T``.
    """
    xp = _array_module(x)
    m = to_device(m, x)
    cols = x.reshape(x.shape[0], -1).T  # (C_in*H*W, N)
    if cols.shape[1] == 1:
        out = (m @ cols[:, 0])[:, None]
    else:
        out = m @ cols
    out = xp.asarray(out).T.reshape(x.shape[0], p.c_out, p.h_out, p.w_out)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return xp.ascontiguousarray(out.astype(x.dtype, copy=False))


# One matrix per weight and configuration is kept, so repeated calls on the
# same layer time the product alone (as the lecture notes count it).
_cache: dict = {}


def clear_cache():
    """Drop the cached matrix (it may hold up to ``MEMORY_LIMIT`` bytes)."""
    _cache.clear()


def _cached_matrix(p: Conv2dParams, weight, sparse: bool, memory_limit, dtype):
    w = np.ascontiguousarray(weight)
    key = (sparse, dataclass_key(p), w.dtype.str, w.shape, hash(w.tobytes()), np.dtype(dtype).str)
    hit = _cache.get(key)
    if hit is None:
        _cache.clear()
        build = sparse_matrix if sparse else dense_matrix
        hit = _cache[key] = build(p, w, memory_limit, dtype)
    return hit


def dataclass_key(p: Conv2dParams) -> tuple:
    """The parts of the params that define the matrix (not the batch size)."""
    return (p.c_in, p.h, p.w, p.c_out, p.kh, p.kw, p.stride, p.padding, p.dilation, p.groups,
            p.padding_mode)


def _compute_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def conv2d_dense(x, weight, bias, p: Conv2dParams, memory_limit=None):
    """conv2d as one dense matrix product (the registered "dense" algorithm).

    A dense product multiplies every input pixel by every matrix entry, zeros
    included, so one Inf or NaN pixel would turn a whole image to NaN
    (0 * Inf = NaN) where the convolution touches only its windows; and an
    Inf weight never meets the zero padding it multiplies in the convolution
    (0 * Inf = NaN there).  Calls with non-finite inputs or weights are
    therefore computed by the reference, so the algorithm never returns a
    different answer; benchmarks time finite data only.
    """
    xp = _array_module(x)
    if not (bool(xp.isfinite(x).all()) and bool(xp.isfinite(weight).all())):
        from . import reference
        return xp.asarray(reference.conv2d(_host(x), _host(weight),
                                           None if bias is None else _host(bias), p))
    m = _cached_matrix(p, _host(weight), False, memory_limit, _compute_dtype(x.dtype))
    return apply(m, x, p, bias)


def conv2d_sparse(x, weight, bias, p: Conv2dParams, memory_limit=None):
    """conv2d as one sparse (CSR) matrix product."""
    m = _cached_matrix(p, _host(weight), True, memory_limit, _compute_dtype(x.dtype))
    return apply(m, x, p, bias)


def _host(a):
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def _supports_dense(p: Conv2dParams):
    try:
        check_memory(p, None, _compute_dtype(p.dtype or np.float32).itemsize)
    except DenseMatrixTooLarge as exc:
        return str(exc)
    return None


register("conv2d", "numpy", "dense",
         "the whole convolution as one dense (doubly block Toeplitz) matrix product; the "
         "baseline, only for small inputs (matrix cached per weight)",
         supports=_supports_dense)(conv2d_dense)


# --------------------------------------------------------------------------
# the lecture notes' example
# --------------------------------------------------------------------------
EDGE_KERNEL = np.array([[[[-1.0, 1.0]]]], dtype=np.float32)


def edge_detection_params(width: int = 320, height: int = 280, dtype="float32") -> Conv2dParams:
    """The edge-detection case: a ``height x width`` image, kernel ``[-1, 1]``, no padding."""
    return conv_params((1, 1, height, width), (1, 1, 1, 2), dtype=dtype)


def edge_detection_counts(width: int = 320, height: int = 280, itemsize: int = 4) -> dict:
    """Exact counts of the lecture notes' example (Goodfellow et al., ch. 9).

    For 320 x 280: 267,960 flops (3 per output pixel), 357,280 at 2 per
    multiply-add; the matrix has 8,003,072,000 entries (32 GB in float32)
    of which 178,640 are non-zero, and its product takes 16,006,144,000
    flops, about 60,000 times the convolution.
    """
    p = edge_detection_params(width, height)
    out = counts(p, itemsize)
    out.update(width=width, height=height, out_width=p.w_out, out_height=p.h_out,
               ratio_dense_to_conv=out["dense_flops"] / out["conv_flops"],
               ratio_dense_to_conv_fma2=out["dense_flops"] / out["conv_flops_fma2"])
    return out
