"""Argument checking and normalization for every op and every backend.

Each public op calls one ``parse_*`` function here before anything else.  It
checks the arguments against the contract (``shared/docs/contract.md``),
raises ``TypeError``/``ValueError`` with a message that names the argument
and its value, and returns a frozen ``*Params`` record holding every integer
a kernel needs (always the batched 4-D view, with explicit per-side padding
and the output size).  Backends receive that record and never re-check.

The parsers work on shapes, not arrays, so the output-shape helpers
(``fastconv.conv2d_output_shape`` ...) share exactly the same checks.
"""
from __future__ import annotations

import numbers
import operator
from dataclasses import dataclass, field

import numpy as np

from .shapes import (adaptive_window, conv_output_size, conv_transpose_output_size,
                     pool_output_size, same_padding)

__all__ = [
    "Conv2dParams", "ConvTranspose2dParams", "Pool2dParams", "AdaptivePool2dParams",
    "parse_conv2d", "parse_conv_transpose2d", "parse_pool2d", "parse_adaptive_pool2d",
    "check_dtypes", "PADDING_MODES", "SUPPORTED_DTYPES",
]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
SUPPORTED_DTYPES = ("float16", "float32", "float64")


# --------------------------------------------------------------------------
# small parsers for scalars and pairs
# --------------------------------------------------------------------------
def _as_int(op: str, name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    return operator.index(value)


def _pair(op: str, name: str, value) -> tuple[int, int]:
    """An int or a length-2 sequence of ints -> (h, w)."""
    if isinstance(value, (tuple, list)):
        if len(value) == 1:
            value = (value[0], value[0])
        if len(value) != 2:
            raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
        return _as_int(op, name, value[0]), _as_int(op, name, value[1])
    if isinstance(value, np.ndarray) and value.ndim == 1:
        return _pair(op, name, value.tolist())
    v = _as_int(op, name, value)
    return v, v


def _positive_pair(op: str, name: str, value) -> tuple[int, int]:
    pair = _pair(op, name, value)
    if min(pair) <= 0:
        raise ValueError(f"{op}: {name} must be positive, got {name}={_show(value)}")
    return pair


def _nonnegative_pair(op: str, name: str, value) -> tuple[int, int]:
    pair = _pair(op, name, value)
    if min(pair) < 0:
        raise ValueError(f"{op}: {name} must be non-negative, got {name}={_show(value)}")
    return pair


def _show(value) -> str:
    return repr(tuple(value)) if isinstance(value, (list, tuple)) else repr(value)


def _bool(op: str, name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool, got {value!r}")
    return bool(value)


def _shape(op: str, name: str, shape, ranks: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in ranks:
        want = " or ".join(f"{r}-D" for r in ranks)
        kinds = {3: "(C, H, W) unbatched", 4: "(N, C, H, W) batched"}
        hint = ", ".join(kinds[r] for r in ranks if r in kinds)
        raise ValueError(f"{op}: {name} must be {want}{' (' + hint + ')' if hint else ''}, "
                         f"got shape {shape}")
    return shape


def _batched(op: str, shape) -> tuple[tuple[int, int, int, int], bool]:
    shape = _shape(op, "input", shape, (3, 4))
    if len(shape) == 3:
        return (1,) + shape, True
    return shape, False


# --------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------
def check_dtypes(op: str, **dtypes) -> np.dtype:
    """All named dtypes must be one supported float dtype; returns it.

    ``dtypes`` maps argument names to dtypes (or None for absent arguments).
    Mixing dtypes is an error, never a silent cast.
    """
    first_name, first = None, None
    for name, dt in dtypes.items():
        if dt is None:
            continue
        dt = np.dtype(dt)
        if dt.name not in SUPPORTED_DTYPES:
            raise TypeError(f"{op}: {name} has dtype {dt.name}; fastconv supports "
                            f"{', '.join(SUPPORTED_DTYPES)}")
        if first is None:
            first_name, first = name, dt
        elif dt != first:
            raise TypeError(f"{op}: {name} has dtype {dt.name} but {first_name} has dtype "
                            f"{first.name}; all arrays must share one dtype (no silent casts)")
    return first


# --------------------------------------------------------------------------
# parameter records
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Conv2dParams:
    """Everything a conv2d kernel needs; the input is always viewed as 4-D.

    ``padding`` is (top, bottom, left, right).  When ``padding_mode`` is not
    "zeros", padded pixels are taken from the input by that mode.
    """
    n: int
    c_in: int
    h: int
    w: int
    c_out: int
    kh: int
    kw: int
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    dilation: tuple[int, int]
    groups: int
    padding_mode: str
    h_out: int
    w_out: int
    has_bias: bool
    dtype: np.dtype | None = None
    unbatched: bool = False
    op: str = field(default="conv2d", init=False)

    @property
    def input_shape(self):
        return (self.n, self.c_in, self.h, self.w)

    @property
    def weight_shape(self):
        return (self.c_out, self.c_in // self.groups, self.kh, self.kw)

    @property
    def output_shape(self):
        return (self.n, self.c_out, self.h_out, self.w_out)

    @property
    def macs(self) -> int:
        """Multiply-adds: one per output element per weight tap of its group."""
        return (self.n * self.c_out * self.h_out * self.w_out
                * (self.c_in // self.groups) * self.kh * self.kw)

    @property
    def flops(self) -> int:
        """2 flops per multiply-add (+1 per output for the bias)."""
        return 2 * self.macs + (self.n * self.c_out * self.h_out * self.w_out
                                if self.has_bias else 0)

    def min_bytes(self, itemsize: int | None = None) -> int:
        """Bytes that must move at least once: input, weight, bias, output."""
        itemsize = itemsize or self.dtype.itemsize
        elems = (self.n * self.c_in * self.h * self.w
                 + self.c_out * (self.c_in // self.groups) * self.kh * self.kw
                 + (self.c_out if self.has_bias else 0)
                 + self.n * self.c_out * self.h_out * self.w_out)
        return elems * itemsize


@dataclass(frozen=True)
class ConvTranspose2dParams:
    """Everything a conv_transpose2d kernel needs; the input is viewed as 4-D.

    Weight layout is (c_in, c_out // groups, kh, kw) as in PyTorch.
    """
    n: int
    c_in: int
    h: int
    w: int
    c_out: int
    kh: int
    kw: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    output_padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    h_out: int
    w_out: int
    has_bias: bool
    dtype: np.dtype | None = None
    unbatched: bool = False
    op: str = field(default="conv_transpose2d", init=False)

    @property
    def input_shape(self):
        return (self.n, self.c_in, self.h, self.w)

    @property
    def weight_shape(self):
        return (self.c_in, self.c_out // self.groups, self.kh, self.kw)

    @property
    def output_shape(self):
        return (self.n, self.c_out, self.h_out, self.w_out)

    @property
    def macs(self) -> int:
        """Multiply-adds of the scatter form: every input pixel times every tap."""
        return (self.n * self.c_in * self.h * self.w
                * (self.c_out // self.groups) * self.kh * self.kw)

    @property
    def flops(self) -> int:
        return 2 * self.macs + (self.n * self.c_out * self.h_out * self.w_out
                                if self.has_bias else 0)

    def min_bytes(self, itemsize: int | None = None) -> int:
        itemsize = itemsize or self.dtype.itemsize
        elems = (self.n * self.c_in * self.h * self.w
                 + self.c_in * (self.c_out // self.groups) * self.kh * self.kw
                 + (self.c_out if self.has_bias else 0)
                 + self.n * self.c_out * self.h_out * self.w_out)
        return elems * itemsize


@dataclass(frozen=True)
class Pool2dParams:
    """max_pool2d / avg_pool2d parameters; ``kind`` is "max" or "avg"."""
    kind: str
    n: int
    c: int
    h: int
    w: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    ceil_mode: bool
    h_out: int
    w_out: int
    return_indices: bool = False
    count_include_pad: bool = True
    divisor_override: int | None = None
    dtype: np.dtype | None = None
    unbatched: bool = False

    @property
    def op(self) -> str:
        return f"{self.kind}_pool2d"

    @property
    def input_shape(self):
        return (self.n, self.c, self.h, self.w)

    @property
    def output_shape(self):
        return (self.n, self.c, self.h_out, self.w_out)

    @property
    def flops(self) -> int:
        """One compare or add per window tap."""
        return self.n * self.c * self.h_out * self.w_out * self.kernel[0] * self.kernel[1]

    def min_bytes(self, itemsize: int | None = None) -> int:
        itemsize = itemsize or self.dtype.itemsize
        out = self.n * self.c * self.h_out * self.w_out
        return ((self.n * self.c * self.h * self.w + out) * itemsize
                + (out * 8 if self.return_indices else 0))

    def window_h(self, oh: int) -> tuple[int, int]:
        """Unclipped start and end (exclusive, dilated span) of row window ``oh``."""
        start = oh * self.stride[0] - self.padding[0]
        return start, start + self.dilation[0] * (self.kernel[0] - 1) + 1

    def window_w(self, ow: int) -> tuple[int, int]:
        start = ow * self.stride[1] - self.padding[1]
        return start, start + self.dilation[1] * (self.kernel[1] - 1) + 1


@dataclass(frozen=True)
class AdaptivePool2dParams:
    """adaptive_{avg,max}_pool2d parameters; ``kind`` is "max" or "avg"."""
    kind: str
    n: int
    c: int
    h: int
    w: int
    h_out: int
    w_out: int
    return_indices: bool = False
    dtype: np.dtype | None = None
    unbatched: bool = False

    @property
    def op(self) -> str:
        return f"adaptive_{self.kind}_pool2d"

    @property
    def input_shape(self):
        return (self.n, self.c, self.h, self.w)

    @property
    def output_shape(self):
        return (self.n, self.c, self.h_out, self.w_out)

    @property
    def flops(self) -> int:
        total = 0
        for i in range(self.h_out):
            a, b = adaptive_window(i, self.h, self.h_out)
            for j in range(self.w_out):
                c, d = adaptive_window(j, self.w, self.w_out)
                total += (b - a) * (d - c)
        return self.n * self.c * total

    def min_bytes(self, itemsize: int | None = None) -> int:
        itemsize = itemsize or self.dtype.itemsize
        out = self.n * self.c * self.h_out * self.w_out
        return ((self.n * self.c * self.h * self.w + out) * itemsize
                + (out * 8 if self.return_indices else 0))


# --------------------------------------------------------------------------
# conv2d
# --------------------------------------------------------------------------
def _groups(op: str, groups) -> int:
    if isinstance(groups, (bool, np.bool_)) or not isinstance(groups, numbers.Integral):
        raise TypeError(f"{op}: groups must be an int, got {groups!r}")
    groups = int(groups)
    if groups <= 0:
        raise ValueError(f"{op}: groups must be positive, got groups={groups}")
    return groups


def _bias_shape(op: str, bias_shape, channels: int) -> bool:
    if bias_shape is None:
        return False
    bias_shape = tuple(int(s) for s in bias_shape)
    if bias_shape != (channels,):
        raise ValueError(f"{op}: bias must have shape ({channels},) (one value per output "
                         f"channel), got shape {bias_shape}")
    return True


def parse_conv2d(input_shape, weight_shape, bias_shape=None, stride=1, padding=0,
                 dilation=1, groups=1, padding_mode="zeros", dtype=None) -> Conv2dParams:
    """Check conv2d arguments (shapes, not arrays) and return its parameters."""
    op = "conv2d"
    (n, c_in, h, w), unbatched = _batched(op, input_shape)
    weight_shape = _shape(op, "weight", weight_shape, (4,))
    c_out, c_in_g, kh, kw = weight_shape
    stride = _positive_pair(op, "stride", stride)
    dilation = _positive_pair(op, "dilation", dilation)
    groups = _groups(op, groups)
    if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
        raise ValueError(f"{op}: padding_mode must be one of {PADDING_MODES}, "
                         f"got padding_mode={padding_mode!r}")
    if c_out == 0:
        raise ValueError(f"{op}: weight must have at least one output channel, got weight "
                         f"shape {weight_shape}")
    if kh <= 0 or kw <= 0:
        raise ValueError(f"{op}: kernel size must be positive, got weight shape {weight_shape}")
    if c_in % groups:
        raise ValueError(f"{op}: groups={groups} must divide the {c_in} input channels")
    if c_out % groups:
        raise ValueError(f"{op}: groups={groups} must divide the {c_out} output channels "
                         f"(weight shape {weight_shape})")
    if c_in_g * groups != c_in:
        raise ValueError(f"{op}: weight has {c_in_g} input channels per group, but input has "
                         f"{c_in} channels and groups={groups}")
    has_bias = _bias_shape(op, bias_shape, c_out)

    if isinstance(padding, str):
        if padding == "valid":
            pads = (0, 0, 0, 0)
        elif padding == "same":
            if stride != (1, 1):
                raise ValueError(f"{op}: padding='same' is not supported for strided "
                                 f"convolutions, got stride={stride}")
            top, bottom = same_padding(kh, dilation[0])
            left, right = same_padding(kw, dilation[1])
            pads = (top, bottom, left, right)
        else:
            raise ValueError(f"{op}: padding must be an int, a pair, 'valid' or 'same', "
                             f"got padding={padding!r}")
    else:
        ph, pw = _nonnegative_pair(op, "padding", padding)
        pads = (ph, ph, pw, pw)

    if h == 0 or w == 0:
        raise ValueError(f"{op}: input has an empty spatial size {h}x{w} "
                         f"(input shape {tuple(input_shape)})")
    if padding_mode != "zeros":
        top, bottom, left, right = pads
        if padding_mode == "reflect" and (max(top, bottom) >= h or max(left, right) >= w):
            raise ValueError(f"{op}: padding={pads[::2]} with padding_mode='reflect' must be "
                             f"smaller than the input size {h}x{w}")
        if padding_mode == "circular" and (max(top, bottom) > h or max(left, right) > w):
            raise ValueError(f"{op}: padding={pads[::2]} with padding_mode='circular' must not "
                             f"exceed the input size {h}x{w} (it would wrap more than once)")
    h_out = conv_output_size(h, kh, stride[0], pads[0], pads[1], dilation[0])
    w_out = conv_output_size(w, kw, stride[1], pads[2], pads[3], dilation[1])
    if h_out < 1 or w_out < 1:
        eff = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
        raise ValueError(f"{op}: padded input size {h + pads[0] + pads[1]}x"
                         f"{w + pads[2] + pads[3]} is smaller than the (dilated) kernel size "
                         f"{eff[0]}x{eff[1]}; the output would be {h_out}x{w_out}")
    return Conv2dParams(n=n, c_in=c_in, h=h, w=w, c_out=c_out, kh=kh, kw=kw, stride=stride,
                        padding=pads, dilation=dilation, groups=groups,
                        padding_mode=padding_mode, h_out=h_out, w_out=w_out,
                        has_bias=has_bias, dtype=dtype, unbatched=unbatched)


# --------------------------------------------------------------------------
# conv_transpose2d
# --------------------------------------------------------------------------
def parse_conv_transpose2d(input_shape, weight_shape, bias_shape=None, stride=1, padding=0,
                           output_padding=0, groups=1, dilation=1,
                           dtype=None) -> ConvTranspose2dParams:
    """Check conv_transpose2d arguments and return its parameters."""
    op = "conv_transpose2d"
    (n, c_in, h, w), unbatched = _batched(op, input_shape)
    weight_shape = _shape(op, "weight", weight_shape, (4,))
    w_cin, c_out_g, kh, kw = weight_shape
    stride = _positive_pair(op, "stride", stride)
    dilation = _positive_pair(op, "dilation", dilation)
    if isinstance(padding, str):
        raise ValueError(f"{op}: padding must be an int or a pair, got padding={padding!r}")
    padding = _nonnegative_pair(op, "padding", padding)
    output_padding = _nonnegative_pair(op, "output_padding", output_padding)
    groups = _groups(op, groups)
    if kh <= 0 or kw <= 0:
        raise ValueError(f"{op}: kernel size must be positive, got weight shape {weight_shape}")
    if w_cin != c_in:
        raise ValueError(f"{op}: weight has {w_cin} input channels (dim 0), but input has "
                         f"{c_in} channels")
    if c_in % groups:
        raise ValueError(f"{op}: groups={groups} must divide the {c_in} input channels")
    if c_out_g == 0:
        raise ValueError(f"{op}: weight must have at least one output channel per group, got "
                         f"weight shape {weight_shape}")
    c_out = c_out_g * groups
    for axis in (0, 1):
        if not (output_padding[axis] < stride[axis] or output_padding[axis] < dilation[axis]):
            raise ValueError(f"{op}: output_padding must be smaller than either stride or "
                             f"dilation, got output_padding={output_padding}, stride={stride}, "
                             f"dilation={dilation}")
    has_bias = _bias_shape(op, bias_shape, c_out)
    if h == 0 or w == 0:
        raise ValueError(f"{op}: input has an empty spatial size {h}x{w}")
    h_out = conv_transpose_output_size(h, kh, stride[0], padding[0], output_padding[0],
                                       dilation[0])
    w_out = conv_transpose_output_size(w, kw, stride[1], padding[1], output_padding[1],
                                       dilation[1])
    if h_out < 1 or w_out < 1:
        raise ValueError(f"{op}: output size {h_out}x{w_out} is too small for input size "
                         f"{h}x{w} with padding={padding}, stride={stride}, "
                         f"dilation={dilation}, kernel {kh}x{kw}")
    return ConvTranspose2dParams(n=n, c_in=c_in, h=h, w=w, c_out=c_out, kh=kh, kw=kw,
                                 stride=stride, padding=padding,
                                 output_padding=output_padding, dilation=dilation,
                                 groups=groups, h_out=h_out, w_out=w_out, has_bias=has_bias,
                                 dtype=dtype, unbatched=unbatched)


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------
def _pool_input(op: str, input_shape):
    (n, c, h, w), unbatched = _batched(op, input_shape)
    if c == 0 or h == 0 or w == 0:
        raise ValueError(f"{op}: input must have non-zero channels, height and width (only the "
                         f"batch may be empty), got shape {tuple(input_shape)}")
    return (n, c, h, w), unbatched


def parse_pool2d(kind: str, input_shape, kernel_size, stride=None, padding=0, dilation=1,
                 ceil_mode=False, return_indices=False, count_include_pad=True,
                 divisor_override=None, dtype=None) -> Pool2dParams:
    """Check max_pool2d (kind="max") or avg_pool2d (kind="avg") arguments."""
    op = f"{kind}_pool2d"
    (n, c, h, w), unbatched = _pool_input(op, input_shape)
    kernel = _positive_pair(op, "kernel_size", kernel_size)
    if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
        stride = kernel
    else:
        stride = _positive_pair(op, "stride", stride)
    padding = _nonnegative_pair(op, "padding", padding)
    dilation = _positive_pair(op, "dilation", dilation)
    ceil_mode = _bool(op, "ceil_mode", ceil_mode)
    return_indices = _bool(op, "return_indices", return_indices)
    count_include_pad = _bool(op, "count_include_pad", count_include_pad)
    if divisor_override is not None:
        if isinstance(divisor_override, (bool, np.bool_)) or not isinstance(
                divisor_override, numbers.Integral):
            raise TypeError(f"{op}: divisor_override must be an int or None, "
                            f"got {divisor_override!r}")
        divisor_override = int(divisor_override)
        if divisor_override == 0:
            raise ValueError(f"{op}: divisor_override must not be zero")
    for axis in (0, 1):
        # ATen checks both kernel/2 >= pad and ((k-1)*d+1)/2 >= pad; the first implies the second.
        if padding[axis] > kernel[axis] // 2:
            raise ValueError(f"{op}: padding={padding} must be at most half of "
                             f"kernel_size={kernel}")
    h_out = pool_output_size(h, kernel[0], stride[0], padding[0], dilation[0], ceil_mode)
    w_out = pool_output_size(w, kernel[1], stride[1], padding[1], dilation[1], ceil_mode)
    if h_out < 1 or w_out < 1:
        raise ValueError(f"{op}: output size {h_out}x{w_out} is too small for input size "
                         f"{h}x{w} with kernel_size={kernel}, stride={stride}, "
                         f"padding={padding}, dilation={dilation}")
    return Pool2dParams(kind=kind, n=n, c=c, h=h, w=w, kernel=kernel, stride=stride,
                        padding=padding, dilation=dilation, ceil_mode=ceil_mode,
                        h_out=h_out, w_out=w_out, return_indices=return_indices,
                        count_include_pad=count_include_pad,
                        divisor_override=divisor_override, dtype=dtype, unbatched=unbatched)


def parse_adaptive_pool2d(kind: str, input_shape, output_size, return_indices=False,
                          dtype=None) -> AdaptivePool2dParams:
    """Check adaptive_{avg,max}_pool2d arguments; ``None`` keeps that dimension."""
    op = f"adaptive_{kind}_pool2d"
    (n, c, h, w), unbatched = _batched(op, input_shape)
    if h == 0 or w == 0:
        raise ValueError(f"{op}: input must have non-zero height and width, got shape "
                         f"{tuple(input_shape)}")
    if isinstance(output_size, (list, tuple)):
        if len(output_size) != 2:
            raise ValueError(f"{op}: output_size must be an int or a pair, got {output_size!r}")
        sizes = [h if output_size[0] is None else output_size[0],
                 w if output_size[1] is None else output_size[1]]
    elif output_size is None:
        sizes = [h, w]
    else:
        sizes = [output_size, output_size]
    h_out, w_out = _nonnegative_pair(op, "output_size", tuple(sizes))
    return_indices = _bool(op, "return_indices", return_indices)
    return AdaptivePool2dParams(kind=kind, n=n, c=c, h=h, w=w, h_out=h_out, w_out=w_out,
                                return_indices=return_indices, dtype=dtype,
                                unbatched=unbatched)
