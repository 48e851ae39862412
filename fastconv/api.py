"""The public ops: drop-in equivalents of ``torch.nn.functional``.

Every op follows the same three steps:

1. check and normalize the arguments (:mod:`fastconv.arguments`), raising
   ``TypeError``/``ValueError`` before any kernel runs;
2. resolve the backend and algorithm through :mod:`fastconv.registry`;
3. move the arrays to the backend's kind, run it, and return the result as
   the kind of array that came in (unbatched in, unbatched out).
"""
from __future__ import annotations

import inspect

import numpy as np

from . import arrays, registry
from .arguments import (check_dtypes, parse_adaptive_pool2d, parse_conv2d,
                        parse_conv_transpose2d, parse_pool2d)
from .registry import BackendUnavailableError

__all__ = ["conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
           "adaptive_max_pool2d", "plan"]

#: The order "auto" tries GPU backends in for device arrays.
GPU_PREFERENCE = ("cupy", "numba-cuda")
#: The order "auto" tries CPU backends in for host arrays.
CPU_PREFERENCE = ("numba", "numpy")


# --------------------------------------------------------------------------
# backend / algorithm resolution
# --------------------------------------------------------------------------
def _resolve(op: str, params, kind: str, backend, algorithm) -> registry.Implementation:
    if not isinstance(backend, str):
        raise TypeError(f"{op}: backend must be a string, got {backend!r}")
    if not isinstance(algorithm, str):
        raise TypeError(f"{op}: algorithm must be a string, got {algorithm!r}")
    dtype = params.dtype.name if params.dtype is not None else None
    if backend == "auto":
        order = GPU_PREFERENCE if arrays.is_device_kind(kind) else CPU_PREFERENCE
        reasons = []
        for name in order:
            if not registry.has_backend(name):
                reasons.append(f"{name}: not part of this installation")
                continue
            be = registry.get_backend(name)
            why = be.unavailable_reason()
            if why is None and dtype not in be.dtypes:
                why = f"no {dtype} kernels"
            if why is None:
                try:
                    return _pick(op, be.name, params, algorithm)
                except (BackendUnavailableError, ValueError) as exc:
                    why = str(exc)
            reasons.append(f"{name}: {why}")
        raise BackendUnavailableError(f"{op}: no backend can run this case for a {kind} "
                                      f"array ({'; '.join(reasons)})")
    be = registry.get_backend(backend)
    why = be.unavailable_reason()
    if why is not None:
        usable = [b.name for b in registry.all_backends() if b.available]
        raise BackendUnavailableError(f"{op}: backend {backend!r} is not available here: "
                                      f"{why}. Available backends: {usable}")
    if dtype not in be.dtypes:
        raise TypeError(f"{op}: backend {backend!r} has no {dtype} kernels; it supports "
                        f"{', '.join(be.dtypes)}")
    return _pick(op, be.name, params, algorithm)


def _pick(op: str, backend: str, params, algorithm: str) -> registry.Implementation:
    if algorithm == "auto":
        return registry.choose_algorithm(op, backend, params)
    impl = registry.lookup(op, backend, algorithm)
    why = impl.unsupported_reason(params)
    if why is not None:
        raise BackendUnavailableError(f"{op}: algorithm {algorithm!r} of backend {backend!r} "
                                      f"cannot run this case: {why}")
    return impl


def _kinds(op: str, first, first_name: str = "input", **others) -> str:
    """Kind of ``first``; the other arrays must live on the same side (host/device)."""
    kind = arrays.kind_of(first, op, first_name)
    for name, value in others.items():
        if value is None:
            continue
        other = arrays.kind_of(value, op, name)
        if arrays.is_device_kind(other) != arrays.is_device_kind(kind):
            where = "the GPU" if arrays.is_device_kind(kind) else "the host"
            raise TypeError(f"{op}: {name} is a {other} array but {first_name} is a {kind} "
                            f"array on {where}; pass both on the same device")
    return kind


def _run(op: str, impl: registry.Implementation, params, kind: str, input, *weights):
    """Convert, add the batch axis if unbatched, run, convert back."""
    be = registry.get_backend(impl.backend)
    x = arrays.to_native(input, kind, be.native)
    rest = [arrays.to_native(a, arrays.kind_of(a), be.native) if a is not None else None
            for a in weights]
    if params.unbatched:
        x = arrays.add_batch_axis(x, be.native)
    result = impl.fn(x, *rest, params)
    outs = result if isinstance(result, tuple) else (result,)
    outs = tuple(arrays.from_native(o, be.native, kind, like=input) for o in outs)
    if params.unbatched:
        outs = tuple(o.reshape(tuple(o.shape)[1:]) for o in outs)
    return outs if isinstance(result, tuple) else outs[0]


def _empty_result(params, kind, like, bias=None, indices=False):
    """Results with no work to do (empty batch, zero input channels), built on the host."""
    out = np.zeros(params.output_shape, dtype=params.dtype)
    if bias is not None and out.size:
        out += arrays.to_native(bias, arrays.kind_of(bias), "numpy").reshape(1, -1, 1, 1)
    outs = [out] + ([np.zeros(params.output_shape, dtype=np.int64)] if indices else [])
    outs = [arrays.from_native(o, "numpy", kind, like=like) for o in outs]
    if params.unbatched:
        outs = [o.reshape(tuple(o.shape)[1:]) for o in outs]
    return tuple(outs) if indices else outs[0]


# --------------------------------------------------------------------------
# the ops
# --------------------------------------------------------------------------
def _conv2d_setup(input, weight, bias, stride, padding, dilation, groups, padding_mode,
                  backend, algorithm):
    op = "conv2d"
    kind = _kinds(op, input, weight=weight, bias=bias)
    dtype = check_dtypes(op, **arrays.dtypes_of(input=input, weight=weight, bias=bias))
    params = parse_conv2d(arrays.shape_of(input), arrays.shape_of(weight),
                          arrays.shape_of(bias), stride, padding, dilation, groups,
                          padding_mode, dtype)
    impl = _resolve(op, params, kind, backend, algorithm)
    return kind, params, impl


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode="zeros", backend="auto", algorithm="auto"):
    """2-D cross-correlation, as ``torch.nn.functional.conv2d``.

    ``out[n, o, y, x] = bias[o] + sum_{c, i, j} input[n, g*C/G + c, y*sh + i*dh - pt,
    x*sw + j*dw - pl] * weight[o, c, i, j]`` with ``g = o // (C_out/G)``.

    Args:
        input: ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)`` array.
        weight: ``(C_out, C_in // groups, kH, kW)``.
        bias: ``(C_out,)`` or None.
        stride, dilation: int or pair.
        padding: int, pair, ``"valid"`` or ``"same"`` (stride 1 only; an odd
            total puts the extra pixel bottom/right, as PyTorch does).
        groups: input and output channels are split into this many groups.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
        backend: ``"auto"``, ``"numpy"``, ``"numba"``, ``"numba-cuda"`` or ``"cupy"``.
        algorithm: ``"auto"``, ``"direct"``, ``"im2col"``, ... (see ``fastconv.backends()``).

    Returns:
        ``(N, C_out, H_out, W_out)`` (or unbatched) array of the input's kind,
        with ``H_out = floor((H + 2*pad - dil*(kH-1) - 1)/stride) + 1``.
    """
    kind, params, impl = _conv2d_setup(input, weight, bias, stride, padding, dilation, groups,
                                       padding_mode, backend, algorithm)
    if params.n == 0 or params.c_in == 0:
        return _empty_result(params, kind, input, bias)
    return _run("conv2d", impl, params, kind, input, weight, bias)


def _conv_transpose2d_setup(input, weight, bias, stride, padding, output_padding, groups,
                            dilation, backend, algorithm):
    op = "conv_transpose2d"
    kind = _kinds(op, input, weight=weight, bias=bias)
    dtype = check_dtypes(op, **arrays.dtypes_of(input=input, weight=weight, bias=bias))
    params = parse_conv_transpose2d(arrays.shape_of(input), arrays.shape_of(weight),
                                    arrays.shape_of(bias), stride, padding, output_padding,
                                    groups, dilation, dtype)
    impl = _resolve(op, params, kind, backend, algorithm)
    return kind, params, impl


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1, *, backend="auto", algorithm="auto"):
    """2-D transposed convolution, as ``torch.nn.functional.conv_transpose2d``.

    The adjoint of :func:`conv2d` with respect to its input:
    ``<conv2d(x, w), y> == <x, conv_transpose2d(y, w)>``.

    Args:
        input: ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)``.
        weight: ``(C_in, C_out // groups, kH, kW)``.
        bias: ``(C_out,)`` or None.
        output_padding: extra rows/columns at the bottom/right; must be smaller
            than stride or dilation.

    Returns:
        ``H_out = (H-1)*stride - 2*pad + dil*(kH-1) + output_padding + 1``.
    """
    kind, params, impl = _conv_transpose2d_setup(input, weight, bias, stride, padding,
                                                 output_padding, groups, dilation, backend,
                                                 algorithm)
    if params.n == 0 or params.c_in == 0:
        return _empty_result(params, kind, input, bias)
    return _run("conv_transpose2d", impl, params, kind, input, weight, bias)


def _pool_setup(op, input, backend, parse, kind_name, *args):
    kind = _kinds(op, input)
    dtype = check_dtypes(op, **arrays.dtypes_of(input=input))
    params = parse(kind_name, arrays.shape_of(input), *args, dtype=dtype)
    impl = _resolve(op, params, kind, backend, "auto")
    return kind, params, impl


def _max_pool2d_setup(input, kernel_size, stride, padding, dilation, ceil_mode,
                      return_indices, backend):
    return _pool_setup("max_pool2d", input, backend, parse_pool2d, "max", kernel_size, stride,
                       padding, dilation, ceil_mode, return_indices)


def _avg_pool2d_setup(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                      divisor_override, backend):
    return _pool_setup("avg_pool2d", input, backend, parse_pool2d, "avg", kernel_size, stride,
                       padding, 1, ceil_mode, False, count_include_pad, divisor_override)


def _adaptive_avg_pool2d_setup(input, output_size, backend):
    return _pool_setup("adaptive_avg_pool2d", input, backend, parse_adaptive_pool2d, "avg",
                       output_size)


def _adaptive_max_pool2d_setup(input, output_size, return_indices, backend):
    return _pool_setup("adaptive_max_pool2d", input, backend, parse_adaptive_pool2d, "max",
                       output_size, return_indices)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, backend="auto"):
    """2-D max pooling, as ``torch.nn.functional.max_pool2d``.

    NaN propagates (the index is that of the last NaN in the window); among
    equal maxima the first wins; padding counts as -inf.  With
    ``return_indices=True`` also returns int64 flat indices ``h*W + w`` into
    each (n, c) plane of the unpadded input.
    """
    kind, params, impl = _max_pool2d_setup(input, kernel_size, stride, padding, dilation,
                                           ceil_mode, return_indices, backend)
    if params.n == 0:
        return _empty_result(params, kind, input, indices=params.return_indices)
    return _run("max_pool2d", impl, params, kind, input)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None, *, backend="auto"):
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d``.

    The divisor is ``divisor_override`` if given, else the window size clipped
    to the padded input (``count_include_pad=True``; the ceil_mode overhang
    past the padding is not counted) or the number of in-bounds elements.
    """
    kind, params, impl = _avg_pool2d_setup(input, kernel_size, stride, padding, ceil_mode,
                                           count_include_pad, divisor_override, backend)
    if params.n == 0:
        return _empty_result(params, kind, input)
    return _run("avg_pool2d", impl, params, kind, input)


def adaptive_avg_pool2d(input, output_size, *, backend="auto"):
    """Adaptive average pooling to ``output_size`` (int, pair, None keeps a dim).

    Window ``i`` covers ``[floor(i*In/Out), ceil((i+1)*In/Out))``.
    """
    kind, params, impl = _adaptive_avg_pool2d_setup(input, output_size, backend)
    if params.n == 0 or params.c == 0 or params.h_out == 0 or params.w_out == 0:
        return _empty_result(params, kind, input)
    return _run("adaptive_avg_pool2d", impl, params, kind, input)


def adaptive_max_pool2d(input, output_size, return_indices=False, *, backend="auto"):
    """Adaptive max pooling, with max_pool2d's NaN and index rules."""
    kind, params, impl = _adaptive_max_pool2d_setup(input, output_size, return_indices,
                                                    backend)
    if params.n == 0 or params.c == 0 or params.h_out == 0 or params.w_out == 0:
        return _empty_result(params, kind, input, indices=params.return_indices)
    return _run("adaptive_max_pool2d", impl, params, kind, input)


_SETUPS = {
    "conv2d": (conv2d, _conv2d_setup),
    "conv_transpose2d": (conv_transpose2d, _conv_transpose2d_setup),
    "max_pool2d": (max_pool2d, _max_pool2d_setup),
    "avg_pool2d": (avg_pool2d, _avg_pool2d_setup),
    "adaptive_avg_pool2d": (adaptive_avg_pool2d, _adaptive_avg_pool2d_setup),
    "adaptive_max_pool2d": (adaptive_max_pool2d, _adaptive_max_pool2d_setup),
}


def plan(op: str, *args, **kwargs):
    """Check a call and resolve it without running it: ``(params, implementation)``.

    ``fastconv.plan("conv2d", x, w, padding=1)`` returns the ``*Params``
    record and the registry entry (``.backend``, ``.algorithm``,
    ``.description``) that ``fastconv.conv2d(x, w, padding=1)`` would use.
    """
    if op not in _SETUPS:
        raise ValueError(f"plan: unknown op {op!r}; ops are {registry.OPS}")
    fn, setup = _SETUPS[op]
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    _kind, params, impl = setup(**bound.arguments)
    return params, impl
