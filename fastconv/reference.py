"""The NumPy reference: small, readable and exact.  It is the oracle.

Every op is built on one primitive, :func:`windows`: a strided view of the
padded input holding, for every output pixel, the (dilated) window it reads::

    windows(xp, k, s, d)[n, c, y, x, i, j] == xp[n, c, y*s + i*d, x*s + j*d]

* conv2d is a contraction of the windows with the weight, per group;
* conv_transpose2d is the adjoint of conv2d: every input pixel scatters
  ``x * w`` into the output, tap by tap;
* pooling reduces the windows (max with PyTorch's NaN/index rule, mean with
  PyTorch's divisor rule); adaptive pooling loops over its variable windows.

Arithmetic is float64 whatever the input dtype; results are cast back to the
input dtype and returned C-contiguous.  Inputs may have any memory layout.
Functions take 4-D arrays and the ``*Params`` record of
:mod:`fastconv.arguments` (arguments are assumed checked).
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .shapes import adaptive_window

__all__ = ["pad2d", "windows", "conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d",
           "adaptive_avg_pool2d", "adaptive_max_pool2d", "max_with_indices"]

_NUMPY_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
                   "circular": "wrap"}


def pad2d(x: np.ndarray, pads, mode: str = "zeros", value: float = 0.0) -> np.ndarray:
    """Pad the last two axes by ``pads = (top, bottom, left, right)``.

    Modes as PyTorch's ``F.pad``: zeros (or ``value``), reflect (mirror without
    repeating the edge), replicate (repeat the edge pixel), circular (wrap).
    """
    top, bottom, left, right = pads
    width = [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)]
    if mode == "zeros":
        return np.pad(x, width, mode="constant", constant_values=value)
    return np.pad(x, width, mode=_NUMPY_PAD_MODE[mode])


def windows(xp: np.ndarray, kernel, stride, dilation) -> np.ndarray:
    """View ``(N, C, Ho, Wo, kh, kw)`` of the padded input ``xp`` (no copy)."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    v = sliding_window_view(xp, (span_h, span_w), axis=(2, 3))
    return v[:, :, ::sh, ::sw, ::dh, ::dw]


# --------------------------------------------------------------------------
# convolution
# --------------------------------------------------------------------------
def conv2d(x, weight, bias, p):
    """out[n, g, o, y, x] = sum_{c,i,j} win[n, g, c, y, x, i, j] * w[g, o, c, i, j] + b."""
    xp = pad2d(x.astype(np.float64), p.padding, p.padding_mode)
    win = windows(xp, (p.kh, p.kw), p.stride, p.dilation)[:, :, :p.h_out, :p.w_out]
    g = p.groups
    # win: (N, G, C_in/G, Ho, Wo, kh, kw);  w: (G, C_out/G, C_in/G, kh, kw)
    win = win.reshape(p.n, g, p.c_in // g, p.h_out, p.w_out, p.kh, p.kw)
    w = weight.astype(np.float64).reshape(g, p.c_out // g, p.c_in // g, p.kh, p.kw)
    out = np.einsum("ngcyxij,gocij->ngoyx", win, w, optimize=True)
    out = out.reshape(p.n, p.c_out, p.h_out, p.w_out)
    if bias is not None:
        out = out + bias.astype(np.float64).reshape(1, -1, 1, 1)
    return np.ascontiguousarray(out, dtype=x.dtype)


def conv_transpose2d(x, weight, bias, p):
    """Scatter form: out[n, o, y*s + i*d - pad, ...] += x[n, c, y, x] * w[c, o, i, j]."""
    (sh, sw), (dh, dw), (ph, pw) = p.stride, p.dilation, p.padding
    g = p.groups
    # full (uncropped) output: every tap of every input pixel lands inside it
    full_h = (p.h - 1) * sh + dh * (p.kh - 1) + 1 + p.output_padding[0]
    full_w = (p.w - 1) * sw + dw * (p.kw - 1) + 1 + p.output_padding[1]
    full = np.zeros((p.n, g, p.c_out // g, full_h, full_w))
    xg = x.astype(np.float64).reshape(p.n, g, p.c_in // g, p.h, p.w)
    w = weight.astype(np.float64).reshape(g, p.c_in // g, p.c_out // g, p.kh, p.kw)
    for i in range(p.kh):
        for j in range(p.kw):
            contrib = np.einsum("ngcyx,gco->ngoyx", xg, w[..., i, j], optimize=True)
            full[..., i * dh: i * dh + (p.h - 1) * sh + 1: sh,
                 j * dw: j * dw + (p.w - 1) * sw + 1: sw] += contrib
    out = full.reshape(p.n, p.c_out, full_h, full_w)[:, :, ph: ph + p.h_out, pw: pw + p.w_out]
    if bias is not None:
        out = out + bias.astype(np.float64).reshape(1, -1, 1, 1)
    return np.ascontiguousarray(out, dtype=x.dtype)


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------
def max_with_indices(values: np.ndarray, index: np.ndarray):
    """PyTorch's max rule over the last axis (windows in row-major order).

    ``values``: (..., K) float64 with padding as -inf; ``index``: (..., K)
    flat input indices, -1 for padding.  Returns (max, argmax index):
    NaN wins, and the last NaN's index is returned; among equal maxima the
    first wins; an all -inf window returns the first in-bounds index.
    """
    inside = index >= 0
    nan = np.isnan(values)
    best = np.where(nan, -np.inf, values).max(axis=-1)
    first_best = np.argmax((values == best[..., None]) & inside, axis=-1)
    last_nan = values.shape[-1] - 1 - np.argmax(nan[..., ::-1], axis=-1)
    has_nan = nan.any(axis=-1)
    pos = np.where(has_nan, last_nan, first_best)
    out = np.where(has_nan, np.nan, best)
    idx = np.take_along_axis(np.broadcast_to(index, values.shape), pos[..., None], axis=-1)
    return out, idx[..., 0]


def _first_tap(start: int, dilation: int) -> int:
    """First window coordinate >= 0: ``start`` stepped forward by the dilation."""
    return start if start >= 0 else start + (-start + dilation - 1) // dilation * dilation


def _pool_padding(p):
    """(top, bottom, left, right) so every ceil_mode window fits in the padded input."""
    ph, pw = p.padding
    need_h = (p.h_out - 1) * p.stride[0] + p.dilation[0] * (p.kernel[0] - 1) + 1
    need_w = (p.w_out - 1) * p.stride[1] + p.dilation[1] * (p.kernel[1] - 1) + 1
    return ph, max(0, need_h - p.h - ph), pw, max(0, need_w - p.w - pw)


def max_pool2d(x, p):
    pads = _pool_padding(p)
    xp = pad2d(x.astype(np.float64), pads, value=-np.inf)
    flat = np.arange(p.h * p.w, dtype=np.int64).reshape(1, 1, p.h, p.w)
    ip = pad2d(flat, pads, value=-1)
    win = windows(xp, p.kernel, p.stride, p.dilation)[:, :, :p.h_out, :p.w_out]
    iwin = windows(ip, p.kernel, p.stride, p.dilation)[:, :, :p.h_out, :p.w_out]
    k = p.kernel[0] * p.kernel[1]
    iflat = iwin.reshape(iwin.shape[:4] + (k,))
    out, idx = max_with_indices(win.reshape(win.shape[:4] + (k,)), iflat)
    # A dilated window may have no tap inside the input: ATen then keeps its initial index,
    # the first tap at or after (0, 0), h*W + w, even though it lies past the input.
    first_h = [_first_tap(o * p.stride[0] - p.padding[0], p.dilation[0]) for o in range(p.h_out)]
    first_w = [_first_tap(o * p.stride[1] - p.padding[1], p.dilation[1]) for o in range(p.w_out)]
    initial = np.add.outer(np.array(first_h) * p.w, np.array(first_w))
    idx = np.where((iflat >= 0).any(axis=-1), idx, initial)
    out = np.ascontiguousarray(out, dtype=x.dtype)
    return (out, np.ascontiguousarray(idx, dtype=np.int64)) if p.return_indices else out


def avg_divisors(p) -> np.ndarray:
    """(Ho, Wo) divisors by ATen's rule (see ``semantics.md``)."""
    def axis(n_out, size, k, s, pad):
        start = np.arange(n_out) * s - pad
        end = np.minimum(start + k, size + pad)
        pool = end - start  # clipped at size+pad: counts padding, not ceil overhang
        inside = np.minimum(end, size) - np.maximum(start, 0)
        return pool, inside
    pool_h, in_h = axis(p.h_out, p.h, p.kernel[0], p.stride[0], p.padding[0])
    pool_w, in_w = axis(p.w_out, p.w, p.kernel[1], p.stride[1], p.padding[1])
    if p.divisor_override is not None:
        return np.full((p.h_out, p.w_out), float(p.divisor_override))
    if p.count_include_pad:
        return np.outer(pool_h, pool_w).astype(np.float64)
    return np.outer(in_h, in_w).astype(np.float64)


def avg_pool2d(x, p):
    xp = pad2d(x.astype(np.float64), _pool_padding(p))
    win = windows(xp, p.kernel, p.stride, p.dilation)[:, :, :p.h_out, :p.w_out]
    out = win.sum(axis=(-2, -1)) / avg_divisors(p)
    return np.ascontiguousarray(out, dtype=x.dtype)


def adaptive_avg_pool2d(x, p):
    x64 = x.astype(np.float64)
    out = np.empty((p.n, p.c, p.h_out, p.w_out))
    for i in range(p.h_out):
        h0, h1 = adaptive_window(i, p.h, p.h_out)
        for j in range(p.w_out):
            w0, w1 = adaptive_window(j, p.w, p.w_out)
            out[:, :, i, j] = x64[:, :, h0:h1, w0:w1].mean(axis=(-2, -1))
    return out.astype(x.dtype)


def adaptive_max_pool2d(x, p):
    x64 = x.astype(np.float64)
    out = np.empty((p.n, p.c, p.h_out, p.w_out))
    idx = np.empty((p.n, p.c, p.h_out, p.w_out), dtype=np.int64)
    flat = np.arange(p.h * p.w, dtype=np.int64).reshape(p.h, p.w)
    for i in range(p.h_out):
        h0, h1 = adaptive_window(i, p.h, p.h_out)
        for j in range(p.w_out):
            w0, w1 = adaptive_window(j, p.w, p.w_out)
            vals = x64[:, :, h0:h1, w0:w1].reshape(p.n, p.c, -1)
            out[:, :, i, j], idx[:, :, i, j] = max_with_indices(vals, flat[h0:h1, w0:w1].ravel())
    out = out.astype(x.dtype)
    return (out, idx) if p.return_indices else out
