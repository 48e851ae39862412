"""Output-size arithmetic shared by every op, backend and test.

These are the lecture notes' ``O = (N - F + 2P) / S + 1`` generalized the way
PyTorch generalizes it (see ``shared/docs/semantics.md``):

* convolution, with dilation ``d`` and separate left/right padding::

      out = floor((size + pad_l + pad_r - d*(k - 1) - 1) / stride) + 1

* transposed convolution (the adjoint of the above)::

      out = (size - 1)*stride - 2*pad + d*(k - 1) + output_padding + 1

* pooling with ``ceil_mode``: round up, then drop the last window if it would
  start in the right padding (ATen ``pooling_output_shape_pad_lr``)::

      out = floor((size + 2*pad - d*(k-1) - 1 + (stride-1 if ceil else 0)) / stride) + 1
      if ceil and (out - 1)*stride >= size + pad: out -= 1

* adaptive pooling window ``i`` of ``out`` over ``size`` inputs::

      start = floor(i*size/out),  end = ceil((i+1)*size/out)

All functions take and return Python ints; no argument checking happens here
(that is :mod:`fastconv.arguments`).
"""
from __future__ import annotations

__all__ = [
    "conv_output_size",
    "conv_transpose_output_size",
    "pool_output_size",
    "adaptive_window",
    "same_padding",
    "pad_source_index",
]


def conv_output_size(size: int, kernel: int, stride: int, pad_l: int, pad_r: int,
                     dilation: int = 1) -> int:
    """Convolution output length along one axis (may be < 1 for invalid cases)."""
    span = dilation * (kernel - 1) + 1
    return (size + pad_l + pad_r - span) // stride + 1


def conv_transpose_output_size(size: int, kernel: int, stride: int, pad: int,
                               output_padding: int = 0, dilation: int = 1) -> int:
    """Transposed-convolution output length along one axis."""
    return (size - 1) * stride - 2 * pad + dilation * (kernel - 1) + output_padding + 1


def pool_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int = 1,
                     ceil_mode: bool = False) -> int:
    """Pooling output length along one axis, PyTorch's ceil_mode rule included."""
    span = dilation * (kernel - 1) + 1
    numerator = size + 2 * pad - span + ((stride - 1) if ceil_mode else 0)
    out = numerator // stride + 1  # Python floor division == ATen div_rtn
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1  # the last window would start in the right padding
    return out


def adaptive_window(i: int, size: int, out: int) -> tuple[int, int]:
    """Half-open input range ``[start, end)`` of adaptive-pooling output ``i``."""
    start = (i * size) // out
    end = -((-(i + 1) * size) // out)  # ceil((i+1)*size/out) in integers
    return start, end


def same_padding(kernel: int, dilation: int = 1) -> tuple[int, int]:
    """(left, right) padding for ``padding="same"`` at stride 1; the odd pixel goes right."""
    total = dilation * (kernel - 1)
    left = total // 2
    return left, total - left


def pad_source_index(i: int, size: int, mode: str):
    """Which input coordinate padded coordinate ``i`` reads (``i`` may be < 0 or >= size).

    Returns None for zero padding outside the input.  Modes as PyTorch's
    ``F.pad``: "reflect" mirrors without repeating the edge, "replicate"
    repeats the edge, "circular" wraps (the padding never exceeds the input
    size, which the argument checks guarantee).
    """
    if 0 <= i < size:
        return i
    if mode == "zeros":
        return None
    if mode == "replicate":
        return min(max(i, 0), size - 1)
    if mode == "circular":
        return i % size
    if mode == "reflect":
        return -i if i < 0 else 2 * (size - 1) - i
    raise ValueError(f"unknown padding mode {mode!r}")
