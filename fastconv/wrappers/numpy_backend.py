"""Backend "numpy": the float64 reference (the oracle) and a plain im2col + matmul.

The "direct" algorithm is :mod:`fastconv.reference`.  The "im2col" algorithm
is what a newcomer writes with NumPy (unfold the windows, one ``matmul`` per
group); it is registered so benchmarks can compare the hand-written kernels
with it, and it computes in the input dtype.
"""
from __future__ import annotations

import numpy as np

from .. import reference
from ..registry import Backend, register, register_backend, register_chooser

register_backend(Backend(
    name="numpy", device="cpu", native="numpy",
    description="NumPy reference (float64 accumulation); the oracle for every backend",
    probe=lambda: None, dtypes=("float16", "float32", "float64")))

_REF = "NumPy reference: one window view, float64 accumulation"

register("conv2d", "numpy", "direct", _REF)(reference.conv2d)
register("conv_transpose2d", "numpy", "direct", "NumPy reference: tap-by-tap scatter "
         "(the adjoint of conv2d), float64 accumulation")(reference.conv_transpose2d)
register("max_pool2d", "numpy", "direct", _REF)(reference.max_pool2d)
register("avg_pool2d", "numpy", "direct", _REF)(reference.avg_pool2d)
register("adaptive_avg_pool2d", "numpy", "direct", _REF)(reference.adaptive_avg_pool2d)
register("adaptive_max_pool2d", "numpy", "direct", _REF)(reference.adaptive_max_pool2d)


@register("conv2d", "numpy", "im2col",
          "plain NumPy im2col (window view copied to columns) + one matmul per group")
def conv2d_im2col(x, weight, bias, p):
    xp = reference.pad2d(x, p.padding, p.padding_mode)
    win = reference.windows(xp, (p.kh, p.kw), p.stride, p.dilation)[:, :, :p.h_out, :p.w_out]
    g, cig, cog = p.groups, p.c_in // p.groups, p.c_out // p.groups
    # cols: (N, G, Ho*Wo, C_in/G*kh*kw)
    cols = win.reshape(p.n, g, cig, p.h_out, p.w_out, p.kh, p.kw)
    cols = cols.transpose(0, 1, 3, 4, 2, 5, 6).reshape(p.n, g, p.h_out * p.w_out,
                                                          cig * p.kh * p.kw)
    # w: (G, C_in/G*kh*kw, C_out/G)
    w = weight.reshape(g, cog, cig * p.kh * p.kw).transpose(0, 2, 1)
    out = np.matmul(cols, w)  # (N, G, Ho*Wo, C_out/G)
    out = out.transpose(0, 1, 3, 2).reshape(p.n, p.c_out, p.h_out, p.w_out)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return np.ascontiguousarray(out, dtype=x.dtype)


@register_chooser("conv2d", "numpy")
def _choose_conv2d(p):
    return "direct"  # the reference is the point of this backend
