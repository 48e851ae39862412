"""Public output-shape helpers: the shape an op would return, with the op's own checks.

They take shapes (tuples), not arrays, and raise exactly what the op would
raise for those shapes and arguments.
"""
from __future__ import annotations

from .arguments import (parse_adaptive_pool2d, parse_conv2d, parse_conv_transpose2d,
                        parse_pool2d)

__all__ = ["conv2d_output_shape", "conv_transpose2d_output_shape", "max_pool2d_output_shape",
           "avg_pool2d_output_shape", "adaptive_pool2d_output_shape"]


def _unbatch(p):
    return p.output_shape[1:] if p.unbatched else p.output_shape


def conv2d_output_shape(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1,
                        padding_mode="zeros") -> tuple[int, ...]:
    """Shape of ``conv2d(input, weight, ...)``.

    >>> conv2d_output_shape((1, 3, 32, 32), (10, 3, 5, 5), padding=2)
    (1, 10, 32, 32)
    """
    return _unbatch(parse_conv2d(input_shape, weight_shape, None, stride, padding, dilation,
                                 groups, padding_mode))


def conv_transpose2d_output_shape(input_shape, weight_shape, stride=1, padding=0,
                                  output_padding=0, groups=1, dilation=1) -> tuple[int, ...]:
    """Shape of ``conv_transpose2d(input, weight, ...)``."""
    return _unbatch(parse_conv_transpose2d(input_shape, weight_shape, None, stride, padding,
                                           output_padding, groups, dilation))


def max_pool2d_output_shape(input_shape, kernel_size, stride=None, padding=0, dilation=1,
                            ceil_mode=False) -> tuple[int, ...]:
    """Shape of ``max_pool2d(input, ...)`` (PyTorch's ceil_mode rule included)."""
    return _unbatch(parse_pool2d("max", input_shape, kernel_size, stride, padding, dilation,
                                 ceil_mode))


def avg_pool2d_output_shape(input_shape, kernel_size, stride=None, padding=0,
                            ceil_mode=False) -> tuple[int, ...]:
    """Shape of ``avg_pool2d(input, ...)``."""
    return _unbatch(parse_pool2d("avg", input_shape, kernel_size, stride, padding, 1,
                                 ceil_mode))


def adaptive_pool2d_output_shape(input_shape, output_size) -> tuple[int, ...]:
    """Shape of ``adaptive_avg_pool2d`` / ``adaptive_max_pool2d`` (None keeps a dim)."""
    return _unbatch(parse_adaptive_pool2d("avg", input_shape, output_size))
