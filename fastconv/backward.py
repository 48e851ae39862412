"""Backward passes of every op, built from the forward kernels of the chosen backend.

Users of these ops train networks, so each op has its gradient:

* ``conv2d_backward``: the input gradient is a transposed convolution of the
  output gradient, ``dL/dx = conv_transpose2d(dL/dy, w)`` (plus, for
  reflect/replicate/circular padding, the padded border folded back onto the
  pixels it copied); the weight gradient is a correlation of the input with
  the output gradient, itself a conv2d with stride and dilation swapped::

      dL/dw[o, c, i, j] = sum_{n,y,x} dL/dy[n, o, y, x] * xp[n, c, y*s + i*d, x*s + j*d]
                        = conv2d(xp^T, dy^T, stride=d, dilation=s)[c, o, i, j]

  (``^T`` swaps the batch and channel axes, one group at a time);
* ``conv_transpose2d_backward``: the adjoint the other way round
  (``dL/dx = conv2d(dL/dy, w)``, the weight gradient as above with the roles
  of input and output gradient exchanged);
* pooling: max pooling scatters the gradient to the saved indices; average
  pooling spreads ``dL/dy / divisor`` over each window; adaptive pooling does
  the same over its variable windows.

Everything is deterministic: no floating-point atomics anywhere (scatters are
tap-by-tap adds or ``bincount``, which sums in a fixed order).  Because the
gradients are compositions of the forward ops, every backend that implements
the forward ops has backward passes, at the forward kernels' speed.

Arrays: the same kinds as the forward ops (NumPy, PyTorch CPU tensors; CuPy,
Numba and PyTorch CUDA arrays through CuPy).  Results come back as the kind
of ``grad_output``.
"""
from __future__ import annotations

import numpy as np

from . import api, arrays
from .arguments import check_dtypes, parse_adaptive_pool2d, parse_conv2d, parse_conv_transpose2d, \
    parse_pool2d
from .reference import avg_divisors
from .shapes import adaptive_window, pad_source_index

__all__ = ["conv2d_backward", "conv_transpose2d_backward", "max_pool2d_backward",
           "avg_pool2d_backward", "adaptive_avg_pool2d_backward",
           "adaptive_max_pool2d_backward"]


# --------------------------------------------------------------------------
# array plumbing: compute with NumPy on the host, CuPy on the device
# --------------------------------------------------------------------------
class _Arrays:
    """Converts the caller's arrays to one working kind (numpy or cupy) and back."""

    def __init__(self, op, grad_output, **others):
        self.kind = api._kinds(op, grad_output, "grad_output", **others)
        self.work = "cupy" if arrays.is_device_kind(self.kind) else "numpy"
        self.like = grad_output
        if self.work == "cupy":
            import cupy as xp
        else:
            xp = np
        self.xp = xp

    def get(self, a):
        return None if a is None else arrays.to_native(a, arrays.kind_of(a), self.work)

    def back(self, a):
        return None if a is None else arrays.from_native(a, self.work, self.kind, like=self.like)


def _check_grad_shape(op, grad_output, params):
    expect = params.output_shape[1:] if params.unbatched else params.output_shape
    got = arrays.shape_of(grad_output)
    if got != tuple(expect):
        raise ValueError(f"{op}: grad_output has shape {got}, but the forward output has "
                         f"shape {tuple(expect)}")


def _batched(a, unbatched):
    return a.reshape((1,) + tuple(a.shape)) if unbatched else a


def _unbatched(a, unbatched):
    return None if a is None else (a.reshape(tuple(a.shape)[1:]) if unbatched else a)


def _fold_padding(xp, gp, pads, size_h, size_w, mode):
    """Adjoint of padding: add each padded border pixel's gradient to the pixel it copied."""
    top, bottom, left, right = pads
    g = gp[:, :, top: top + size_h].copy()
    for i in list(range(-top, 0)) + list(range(size_h, size_h + bottom)):
        src = pad_source_index(i, size_h, mode)
        if src is not None:
            g[:, :, src] += gp[:, :, i + top]
    out = g[..., left: left + size_w].copy()
    for j in list(range(-left, 0)) + list(range(size_w, size_w + right)):
        src = pad_source_index(j, size_w, mode)
        if src is not None:
            out[..., src] += g[..., j + left]
    return out


def _pad(xp, x, pads, mode):
    top, bottom, left, right = pads
    if not any(pads):
        return x
    np_mode = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
               "circular": "wrap"}[mode]
    return xp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), mode=np_mode)


#: Largest im2col block (bytes) the host weight gradient materializes at once.
WEIGHT_GRAD_WORKSPACE_BYTES = 64 * 2**20


def _weight_grad(xp, xpad, gy, groups, kh, kw, stride, dilation, backend, algorithm):
    """dL/dw[o, c, i, j] = sum_{n,y,x} gy[n, o, y, x] * xpad[n, c, y*s + i*d, x*s + j*d]."""
    if xp is np:
        return _weight_grad_host(xpad, gy, groups, kh, kw, stride, dilation)
    return _weight_grad_as_conv(xp, xpad, gy, groups, kh, kw, stride, dilation, backend,
                                algorithm)


def _weight_grad_host(xpad, gy, groups, kh, kw, stride, dilation):
    """im2col of the forward input (a window view, copied in batch chunks) times dL/dy: a GEMM."""
    from .reference import windows
    n, c_in = xpad.shape[:2]
    c_out, ho, wo = gy.shape[1:]
    cig, cog = c_in // groups, c_out // groups
    win = windows(xpad, (kh, kw), stride, dilation)[:, :, :ho, :wo]  # (N, C, Ho, Wo, kh, kw)
    per_image = c_in * ho * wo * kh * kw * xpad.dtype.itemsize
    chunk = max(1, WEIGHT_GRAD_WORKSPACE_BYTES // max(per_image, 1))
    out = np.zeros((groups, cog, cig, kh, kw), dtype=np.float64 if gy.dtype == np.float16
                   else gy.dtype)
    for n0 in range(0, n, chunk):
        for g in range(groups):
            w_ = win[n0:n0 + chunk, g * cig:(g + 1) * cig]               # (n, cig, Ho, Wo, kh, kw)
            g_ = gy[n0:n0 + chunk, g * cog:(g + 1) * cog]                # (n, cog, Ho, Wo)
            out[g] += np.tensordot(g_, w_, axes=([0, 2, 3], [0, 2, 3]))  # (cog, cig, kh, kw)
    return np.ascontiguousarray(out.reshape(c_out, cig, kh, kw), dtype=gy.dtype)


def _weight_grad_as_conv(xp, xpad, gy, groups, kh, kw, stride, dilation, backend, algorithm):
    """The same correlation as a forward conv2d: conv2d(xpad^T, gy^T, stride=d, dilation=s).

    The batch becomes the reduction channel axis; the result is cropped to (kh, kw).
    Used on the GPU, where it runs on the backend's own kernels.
    """
    n, c_in = xpad.shape[:2]
    c_out = gy.shape[1]
    cig, cog = c_in // groups, c_out // groups
    out = xp.empty((c_out, cig, kh, kw), dtype=gy.dtype)
    for g in range(groups):
        xt = xpad[:, g * cig:(g + 1) * cig].transpose(1, 0, 2, 3)   # (cig, N, Hp, Wp)
        gt = gy[:, g * cog:(g + 1) * cog].transpose(1, 0, 2, 3)     # (cog, N, Ho, Wo)
        corr = api.conv2d(xt, gt, None, dilation, 0, stride, 1, backend=backend,
                          algorithm=algorithm)                       # (cig, cog, >=kh, >=kw)
        out[g * cog:(g + 1) * cog] = corr[:, :, :kh, :kw].transpose(1, 0, 2, 3)
    return out


# --------------------------------------------------------------------------
# convolution
# --------------------------------------------------------------------------
def conv2d_backward(grad_output, input, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    padding_mode="zeros", output_mask=(True, True, True), backend="auto",
                    algorithm="auto"):
    """Gradients of :func:`fastconv.conv2d` with respect to input, weight and bias.

    Args:
        grad_output: dL/dy, shaped like the forward output.
        input, weight, stride, padding, dilation, groups, padding_mode: the
            forward call's arguments.
        output_mask: which of (grad_input, grad_weight, grad_bias) to compute;
            the others are returned as None.
        backend, algorithm: forward kernels used for the transposed
            convolution and the correlation ("auto" as in the forward ops).

    Returns:
        ``(grad_input, grad_weight, grad_bias)``, arrays of grad_output's kind.
    """
    op = "conv2d_backward"
    io = _Arrays(op, grad_output, input=input, weight=weight)
    check_dtypes(op, **arrays.dtypes_of(grad_output=grad_output, input=input, weight=weight))
    p = parse_conv2d(arrays.shape_of(input), arrays.shape_of(weight), None, stride, padding,
                     dilation, groups, padding_mode)
    _check_grad_shape(op, grad_output, p)
    xp = io.xp
    gy = _batched(io.get(grad_output), p.unbatched)
    x = _batched(io.get(input), p.unbatched)
    w = io.get(weight)
    want_x, want_w, want_b = output_mask
    gx = gw = gb = None
    top, bottom, left, right = p.padding
    if want_x:
        if p.n == 0 or p.c_in == 0:
            gx = xp.zeros(p.input_shape, dtype=gy.dtype)
        else:
            hp, wp = p.h + top + bottom, p.w + left + right
            span_h = (p.h_out - 1) * p.stride[0] + p.dilation[0] * (p.kh - 1) + 1
            span_w = (p.w_out - 1) * p.stride[1] + p.dilation[1] * (p.kw - 1) + 1
            if p.padding_mode == "zeros":
                # transposed conv with padding (top, left) crops the same amount at both ends;
                # output_padding restores the rows the stride left unread at the end
                op_h, op_w = p.h + 2 * top - span_h, p.w + 2 * left - span_w
                g = api.conv_transpose2d(gy, w, None, p.stride, (top, left),
                                         (max(op_h, 0), max(op_w, 0)), p.groups, p.dilation,
                                         backend=backend)
                gx = g[:, :, :p.h, :p.w]  # crop the bottom/right padding of an odd "same"
            else:
                g = api.conv_transpose2d(gy, w, None, p.stride, 0, (hp - span_h, wp - span_w),
                                         p.groups, p.dilation, backend=backend)
                gx = _fold_padding(xp, g, p.padding, p.h, p.w, p.padding_mode)
            gx = xp.ascontiguousarray(gx)
    if want_w:
        if p.n == 0 or p.c_in == 0:
            gw = xp.zeros(p.weight_shape, dtype=gy.dtype)
        else:
            xpad = _pad(xp, x, p.padding, p.padding_mode)
            gw = _weight_grad(xp, xpad, gy, p.groups, p.kh, p.kw, p.stride, p.dilation,
                              backend, algorithm)
    if want_b:
        gb = gy.sum(axis=(0, 2, 3))
    return io.back(_unbatched(gx, p.unbatched)), io.back(gw), io.back(gb)


def conv_transpose2d_backward(grad_output, input, weight, stride=1, padding=0,
                              output_padding=0, groups=1, dilation=1, *,
                              output_mask=(True, True, True), backend="auto",
                              algorithm="auto"):
    """Gradients of :func:`fastconv.conv_transpose2d` (input, weight, bias).

    ``dL/dx = conv2d(dL/dy, w)`` (cropped to the input size when
    output_padding >= stride); the weight gradient correlates ``dL/dy`` with
    the input.
    """
    op = "conv_transpose2d_backward"
    io = _Arrays(op, grad_output, input=input, weight=weight)
    check_dtypes(op, **arrays.dtypes_of(grad_output=grad_output, input=input, weight=weight))
    p = parse_conv_transpose2d(arrays.shape_of(input), arrays.shape_of(weight), None, stride,
                               padding, output_padding, groups, dilation)
    _check_grad_shape(op, grad_output, p)
    xp = io.xp
    gy = _batched(io.get(grad_output), p.unbatched)
    x = _batched(io.get(input), p.unbatched)
    w = io.get(weight)
    want_x, want_w, want_b = output_mask
    gx = gw = gb = None
    empty = p.n == 0 or p.c_in == 0
    if want_x:
        if empty:
            gx = xp.zeros(p.input_shape, dtype=gy.dtype)
        else:
            g = api.conv2d(gy, w, None, p.stride, p.padding, p.dilation, p.groups,
                           backend=backend, algorithm=algorithm)
            gx = xp.ascontiguousarray(g[:, :, :p.h, :p.w])
    if want_w:
        if empty:
            gw = xp.zeros(p.weight_shape, dtype=gy.dtype)
        else:
            # conv2d(gy, W) has >= H rows: extend x with zero rows to that size
            ph, pw = p.padding
            rows = (p.h_out + 2 * ph - p.dilation[0] * (p.kh - 1) - 1) // p.stride[0] + 1
            cols = (p.w_out + 2 * pw - p.dilation[1] * (p.kw - 1) - 1) // p.stride[1] + 1
            x_ext = x
            if (rows, cols) != (p.h, p.w):
                x_ext = xp.zeros((p.n, p.c_in, rows, cols), dtype=x.dtype)
                x_ext[:, :, :p.h, :p.w] = x
            gpad = _pad(xp, gy, (ph, ph, pw, pw), "zeros")
            gw = _weight_grad(xp, gpad, x_ext, p.groups, p.kh, p.kw, p.stride, p.dilation,
                              backend, algorithm)
    if want_b:
        gb = gy.sum(axis=(0, 2, 3))
    return io.back(_unbatched(gx, p.unbatched)), io.back(gw), io.back(gb)


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------
def _scatter_indices(xp, gy, indices, n, c, h, w):
    """grad_input[n, c].flat[indices[n, c, ...]] += grad_output[n, c, ...], in a fixed order."""
    plane = xp.arange(n * c, dtype=xp.int64).reshape(n, c, 1, 1) * (h * w)
    flat = (indices.astype(xp.int64) + plane).ravel()
    acc = xp.bincount(flat, weights=gy.astype(xp.float64).ravel(), minlength=n * c * h * w)
    return acc.astype(gy.dtype).reshape(n, c, h, w)


def _check_indices(op, xp, indices, params):
    if tuple(indices.shape) != tuple(params.output_shape):
        raise ValueError(f"{op}: indices have shape {tuple(indices.shape)}, expected "
                         f"{tuple(params.output_shape)} (the forward output's)")
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= params.h * params.w):
        raise ValueError(f"{op}: indices must lie in [0, {params.h * params.w}) (flat positions "
                         f"in each {params.h}x{params.w} input plane)")


def _pool_grad_io(op, grad_output, indices=None):
    io = _Arrays(op, grad_output, indices=indices)
    check_dtypes(op, **arrays.dtypes_of(grad_output=grad_output))
    return io


def max_pool2d_backward(grad_output, indices, input_shape, kernel_size, stride=None, padding=0,
                        dilation=1, ceil_mode=False):
    """Gradient of :func:`fastconv.max_pool2d`: each output's gradient goes to its argmax.

    ``indices`` are the flat per-plane indices the forward returned.
    """
    op = "max_pool2d_backward"
    io = _pool_grad_io(op, grad_output, indices)
    p = parse_pool2d("max", input_shape, kernel_size, stride, padding, dilation, ceil_mode)
    _check_grad_shape(op, grad_output, p)
    xp = io.xp
    gy, idx = _batched(io.get(grad_output), p.unbatched), _batched(io.get(indices), p.unbatched)
    _check_indices(op, xp, idx, p)
    gx = _scatter_indices(xp, gy, idx, p.n, p.c, p.h, p.w)
    return io.back(_unbatched(gx, p.unbatched))


def adaptive_max_pool2d_backward(grad_output, indices, input_shape):
    """Gradient of :func:`fastconv.adaptive_max_pool2d` (scatter to the saved indices)."""
    op = "adaptive_max_pool2d_backward"
    io = _pool_grad_io(op, grad_output, indices)
    p = parse_adaptive_pool2d("max", input_shape, tuple(arrays.shape_of(grad_output)[-2:]))
    xp = io.xp
    gy, idx = _batched(io.get(grad_output), p.unbatched), _batched(io.get(indices), p.unbatched)
    _check_indices(op, xp, idx, p)
    gx = _scatter_indices(xp, gy, idx, p.n, p.c, p.h, p.w)
    return io.back(_unbatched(gx, p.unbatched))


def avg_pool2d_backward(grad_output, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None):
    """Gradient of :func:`fastconv.avg_pool2d`: ``dy / divisor`` spread over each window."""
    op = "avg_pool2d_backward"
    io = _pool_grad_io(op, grad_output)
    p = parse_pool2d("avg", input_shape, kernel_size, stride, padding, 1, ceil_mode, False,
                     count_include_pad, divisor_override)
    _check_grad_shape(op, grad_output, p)
    xp = io.xp
    gy = _batched(io.get(grad_output), p.unbatched)
    share = gy.astype(xp.float64) / xp.asarray(avg_divisors(p))
    (kh, kw), (sh, sw), (ph, pw) = p.kernel, p.stride, p.padding
    full_h = max(p.h + 2 * ph, (p.h_out - 1) * sh + kh)
    full_w = max(p.w + 2 * pw, (p.w_out - 1) * sw + kw)
    gfull = xp.zeros((p.n, p.c, full_h, full_w))
    for i in range(kh):  # tap by tap: a fixed summation order, no atomics
        for j in range(kw):
            gfull[:, :, i: i + (p.h_out - 1) * sh + 1: sh, j: j + (p.w_out - 1) * sw + 1: sw] += share
    gx = xp.ascontiguousarray(gfull[:, :, ph: ph + p.h, pw: pw + p.w]).astype(gy.dtype)
    return io.back(_unbatched(gx, p.unbatched))


def adaptive_avg_pool2d_backward(grad_output, input_shape):
    """Gradient of :func:`fastconv.adaptive_avg_pool2d` over its variable windows."""
    op = "adaptive_avg_pool2d_backward"
    io = _pool_grad_io(op, grad_output)
    p = parse_adaptive_pool2d("avg", input_shape, tuple(arrays.shape_of(grad_output)[-2:]))
    xp = io.xp
    gy = _batched(io.get(grad_output), p.unbatched).astype(xp.float64)
    gx = xp.zeros((p.n, p.c, p.h, p.w))
    for i in range(p.h_out):
        h0, h1 = adaptive_window(i, p.h, p.h_out)
        for j in range(p.w_out):
            w0, w1 = adaptive_window(j, p.w, p.w_out)
            gx[:, :, h0:h1, w0:w1] += (gy[:, :, i, j] / ((h1 - h0) * (w1 - w0)))[..., None, None]
    return io.back(_unbatched(gx.astype(io.get(grad_output).dtype), p.unbatched))
