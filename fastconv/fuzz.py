"""Differential fuzzing: every registered backend and algorithm against the NumPy reference.

One generator of configurations serves two drivers:

* the tests (``tests/test_fuzz.py``) draw through Hypothesis
  (:func:`cases`, :func:`invalid_cases`: strategies with shrinking);
* the long run, ``python -m fastconv.fuzz --minutes N [--backend B] [--op OP]``,
  draws from a seeded NumPy generator, one seed per case, and prints every
  wrong case with its seed and a one-line replay command
  (``python -m fastconv.fuzz --replay SEED``).

A :class:`Case` covers the whole contract: every op; shapes (batched,
unbatched, empty batch); stride, dilation, groups, bias; conv padding as an
int, a pair, ``"same"`` or ``"valid"`` with the modes zeros / reflect /
replicate / circular; transposed ``output_padding``; pooling ``ceil_mode``,
``count_include_pad``, ``divisor_override``, ``return_indices``; adaptive
sizes with ``None``; dtypes float32 / float64; memory layouts C, Fortran,
non-contiguous, negative strides, transposed and read-only; values normal,
small integers (ties, exact sums), or sprinkled with NaN / +-Inf.

:func:`check` runs one case on one implementation and compares with the
float64 reference (backend ``"numpy"``, algorithm ``"direct"``) using
:func:`fastconv.testing.assert_close`, or bit-exactly with
:func:`fastconv.testing.assert_exact` for max-pooling values and indices.
:func:`check_invalid` checks that a broken configuration raises the
contract's ``TypeError``/``ValueError`` naming the argument.

Hypothesis is a test dependency only: it is imported inside
:func:`cases`/:func:`invalid_cases`, and ``import fastconv`` never imports
this module.
"""
from __future__ import annotations

import argparse
import fnmatch
import sys
import time
import traceback
import zlib
from collections import Counter
from dataclasses import dataclass, field, replace  # noqa: F401  (replace: for users)

import numpy as np

from . import api, registry
from .arguments import (parse_adaptive_pool2d, parse_conv2d, parse_conv_transpose2d,
                        parse_pool2d)
from .shapes import conv_transpose_output_size, pool_output_size, same_padding
from .testing import assert_close, assert_exact

__all__ = ["Case", "InvalidCase", "RandomSource", "draw_case", "draw_invalid", "make_arrays",
           "check", "check_invalid", "call", "cases", "invalid_cases", "case_from_seed",
           "invalid_from_seed", "selected_implementations", "native_gpu", "main",
           "LAYOUTS", "VALUES", "DTYPES", "POOL_OPS", "KNOWN_ISSUES", "known_issue",
           "Unsupported", "KnownIssue"]

OPS = registry.OPS
POOL_OPS = ("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d")
DTYPES = ("float32", "float64")
#: Memory layouts an input may arrive in (all must give the same result).
LAYOUTS = ("C", "F", "strided", "negative", "transposed", "readonly")
#: Value families: standard normal; small integers (ties, exact sums, zeros);
#: normal values with NaN and +-Inf sprinkled in.
VALUES = ("normal", "integers", "special")


# --------------------------------------------------------------------------
# sources of randomness: one interface, two implementations
# --------------------------------------------------------------------------
class RandomSource:
    """Draws from a seeded NumPy generator (the long-run driver)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def int(self, lo: int, hi: int) -> int:
        """Uniform in ``[lo, hi]`` (inclusive)."""
        return int(self.rng.integers(lo, hi + 1))

    def choice(self, options):
        return options[int(self.rng.integers(len(options)))]

    def bool(self, p: float = 0.5) -> bool:
        return bool(self.rng.random() < p)


class _HypothesisSource:
    """The same interface over Hypothesis' ``draw`` (shrinks toward the first option/low)."""

    def __init__(self, draw):
        from hypothesis import strategies as st
        self._draw, self._st = draw, st

    def int(self, lo, hi):
        return self._draw(self._st.integers(lo, hi))

    def choice(self, options):
        return self._draw(self._st.sampled_from(list(options)))

    def bool(self, p=0.5):
        # Hypothesis has no biased booleans: approximate p with 1 chance in round(1/p).
        if p >= 0.5:
            return self._draw(self._st.booleans())
        return self._draw(self._st.integers(0, max(1, round(1 / p)) - 1)) == 0


# --------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One fully determined call: shapes, keyword arguments, data recipe.

    ``repr(case)`` is valid Python (``from fastconv.fuzz import Case``) and
    :func:`make_arrays` rebuilds the same arrays from ``data_seed``.
    ``args`` are the positional arguments after the arrays (pooling
    ``kernel_size`` / adaptive ``output_size``).
    """
    op: str
    input_shape: tuple
    weight_shape: tuple | None = None
    bias: bool = False
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    dtype: str = "float32"
    layout: str = "C"
    weight_layout: str = "C"
    values: str = "normal"
    data_seed: int = 0

    def call_repr(self, backend="numpy", algorithm=None) -> str:
        arrays = "x, w" + (", b" if self.bias else "") if self.weight_shape else "x"
        extra = "".join(f", {a!r}" for a in self.args)
        kw = "".join(f", {k}={v!r}" for k, v in self.kwargs.items())
        alg = f", algorithm={algorithm!r}" if algorithm else ""
        return f"fastconv.{self.op}({arrays}{extra}{kw}, backend={backend!r}{alg})"


@dataclass(frozen=True)
class InvalidCase:
    """A valid case broken in one way; it must raise ``error`` naming ``word``."""
    base: Case
    what: str
    error: type
    word: str
    # replacements for the arrays/arguments: shapes or dtypes, set by the mutation
    input_shape: tuple | None = None
    weight_shape: tuple | None = None
    bias_shape: tuple | None = None
    input_dtype: str | None = None
    weight_dtype: str | None = None
    input_as_list: bool = False
    args: tuple | None = None
    kwargs: dict = field(default_factory=dict)


def _pair_or_int(src, lo, hi, p_pair=0.3):
    """An int, or a pair as a tuple (or list) of two ints."""
    if src.bool(p_pair):
        a, b = src.int(lo, hi), src.int(lo, hi)
        return [a, b] if src.bool(0.2) else (a, b)
    return src.int(lo, hi)


def _pair(v):
    return (v[0], v[1]) if isinstance(v, (tuple, list)) else (v, v)


def _batch(src, max_batch):
    """The leading part of the input shape: () for unbatched, else (N,) with N >= 0."""
    if src.bool(0.15):
        return ()
    if src.bool(0.08):
        return (0,)
    return (src.int(1, max_batch),)


def _data(src, layouts):
    return dict(dtype=src.choice(DTYPES), layout=src.choice(layouts),
                values=src.choice(VALUES), data_seed=src.int(0, 2**31 - 1))


def _draw_conv2d(src, size, max_batch, layouts):
    g = src.choice((1, 1, 1, 2, 3))
    cig, cog = src.int(1, 3), src.int(1, 3)
    kh, kw = src.int(1, 4), src.int(1, 4)
    mode = src.choice(("zeros", "zeros", "reflect", "replicate", "circular"))
    kwargs = {}
    form = src.choice(("int", "pair", "same", "valid", "default"))
    stride = _pair_or_int(src, 1, 3) if form != "same" else 1
    dilation = _pair_or_int(src, 1, 3, 0.3) if src.bool(0.4) else 1
    if form == "int":
        padding = src.int(0, 3)
    elif form == "pair":
        padding = (src.int(0, 3), src.int(0, 3))
    elif form in ("same", "valid"):
        padding = form
    else:
        padding = 0
    dh, dw = _pair(dilation)
    if padding == "same":
        pads = same_padding(kh, dh) + same_padding(kw, dw)
    elif padding == "valid":
        pads = (0, 0, 0, 0)
    else:
        ph, pw = _pair(padding)
        pads = (ph, ph, pw, pw)

    def fit(size_drawn, k, d, lo, hi):
        need = d * (k - 1) + 1 - lo - hi          # padded input >= dilated kernel
        if mode == "reflect":
            need = max(need, max(lo, hi) + 1)     # reflect: padding < size
        if mode == "circular":
            need = max(need, max(lo, hi))         # circular: wraps at most once
        return max(size_drawn, need, 1)

    h = fit(src.int(1, size), kh, dh, pads[0], pads[1])
    w = fit(src.int(1, size), kw, dw, pads[2], pads[3])
    if stride != 1:
        kwargs["stride"] = stride
    if padding != 0 or src.bool(0.1):
        kwargs["padding"] = padding
    if dilation != 1:
        kwargs["dilation"] = dilation
    if g != 1:
        kwargs["groups"] = g
    if mode != "zeros" or src.bool(0.1):
        kwargs["padding_mode"] = mode
    return Case(op="conv2d", input_shape=_batch(src, max_batch) + (g * cig, h, w),
                weight_shape=(g * cog, cig, kh, kw), bias=src.bool(),
                kwargs=kwargs, weight_layout=src.choice(layouts), **_data(src, layouts))


def _draw_conv_transpose2d(src, size, max_batch, layouts):
    g = src.choice((1, 1, 1, 2, 3))
    cig, cog = src.int(1, 3), src.int(1, 3)
    kh, kw = src.int(1, 4), src.int(1, 4)
    stride = _pair_or_int(src, 1, 3)
    dilation = _pair_or_int(src, 1, 3) if src.bool(0.4) else 1
    padding = _pair_or_int(src, 0, 2) if src.bool(0.6) else 0
    (sh, sw), (dh, dw), (ph, pw) = _pair(stride), _pair(dilation), _pair(padding)
    if src.bool(0.4):
        output_padding = (src.int(0, max(sh, dh) - 1), src.int(0, max(sw, dw) - 1))
    else:
        output_padding = 0
    oph, opw = _pair(output_padding)

    def fit(n, s, k, p, op, d):
        while conv_transpose_output_size(n, k, s, p, op, d) < 1:
            n += 1
        return n

    h = fit(src.int(1, max(1, size - 2)), sh, kh, ph, oph, dh)
    w = fit(src.int(1, max(1, size - 2)), sw, kw, pw, opw, dw)
    kwargs = {"stride": stride}
    if padding != 0:
        kwargs["padding"] = padding
    if output_padding != 0:
        kwargs["output_padding"] = output_padding
    if g != 1:
        kwargs["groups"] = g
    if dilation != 1:
        kwargs["dilation"] = dilation
    return Case(op="conv_transpose2d", input_shape=_batch(src, max_batch) + (g * cig, h, w),
                weight_shape=(g * cig, cog, kh, kw), bias=src.bool(), kwargs=kwargs,
                weight_layout=src.choice(layouts), **_data(src, layouts))


def _draw_pool(src, op, size, max_batch, layouts):
    kernel = _pair_or_int(src, 1, 4)
    kh, kw = _pair(kernel)
    stride = None if src.bool(0.3) else _pair_or_int(src, 1, 4)
    padding = (src.int(0, kh // 2), src.int(0, kw // 2))
    if padding[0] == padding[1] and src.bool():
        padding = padding[0]
    ceil_mode = src.bool()
    kwargs = {}
    dilation = 1
    if op == "max_pool2d" and src.bool(0.4):
        dilation = _pair_or_int(src, 1, 3)
    (dh, dw) = _pair(dilation)
    (sh, sw) = _pair(stride if stride is not None else kernel)
    (ph, pw) = _pair(padding)

    def fit(n, k, s, p, d):
        while pool_output_size(n, k, s, p, d, ceil_mode) < 1:
            n += 1
        return n

    h = fit(src.int(1, size), kh, sh, ph, dh)
    w = fit(src.int(1, size), kw, sw, pw, dw)
    if stride is not None:
        kwargs["stride"] = stride
    if padding != 0:
        kwargs["padding"] = padding
    if dilation != 1:
        kwargs["dilation"] = dilation
    if ceil_mode:
        kwargs["ceil_mode"] = True
    if op == "max_pool2d":
        if src.bool():
            kwargs["return_indices"] = True
    else:
        if src.bool(0.3):
            kwargs["count_include_pad"] = False
        if src.bool(0.25):
            kwargs["divisor_override"] = src.choice((1, 2, 3, 5, 7, -2))
    shape = _batch(src, max_batch) + (src.int(1, 3), h, w)
    return Case(op=op, input_shape=shape, args=(kernel,), kwargs=kwargs, **_data(src, layouts))


def _draw_adaptive(src, op, size, max_batch, layouts):
    h, w = src.int(1, size), src.int(1, size)

    def one(n):
        if src.bool(0.15):
            return None                          # keep this dimension
        return src.int(0 if src.bool(0.05) else 1, n + 3)
    if src.bool(0.3):
        out = src.int(1, max(h, w) + 2)
    else:
        out = (one(h), one(w))
    kwargs = {}
    if op == "adaptive_max_pool2d" and src.bool():
        kwargs["return_indices"] = True
    shape = _batch(src, max_batch) + (src.int(1, 3), h, w)
    return Case(op=op, input_shape=shape, args=(out,), kwargs=kwargs, **_data(src, layouts))


def draw_case(src, op: str | None = None, size: int = 9, max_batch: int = 3,
              layouts=LAYOUTS) -> Case:
    """A valid configuration of ``op`` (drawn if None); spatial sizes about ``size``.

    ``layouts``: the memory layouts to draw from (each new layout may cost a
    compiled specialization in a JIT backend: read-only arrays do in Numba).
    """
    op = op or src.choice(OPS)
    if op == "conv2d":
        case = _draw_conv2d(src, size, max_batch, layouts)
    elif op == "conv_transpose2d":
        case = _draw_conv_transpose2d(src, size, max_batch, layouts)
    elif op in ("max_pool2d", "avg_pool2d"):
        case = _draw_pool(src, op, size, max_batch, layouts)
    else:
        case = _draw_adaptive(src, op, size, max_batch, layouts)
    parse_case(case)  # a generator bug, not a backend bug, if this raises
    return case


def parse_case(case: Case, dtype=None):
    """The ``*Params`` record of a case (raises if the case is not valid)."""
    op, kw = case.op, dict(case.kwargs)
    dtype = np.dtype(dtype or case.dtype)
    if op == "conv2d":
        return parse_conv2d(case.input_shape, case.weight_shape,
                            (case.weight_shape[0],) if case.bias else None, dtype=dtype, **kw)
    if op == "conv_transpose2d":
        c_out = case.weight_shape[1] * kw.get("groups", 1)
        return parse_conv_transpose2d(case.input_shape, case.weight_shape,
                                      (c_out,) if case.bias else None, dtype=dtype, **kw)
    if op in ("max_pool2d", "avg_pool2d"):
        kind = op[:3]
        if kind == "avg":
            kw["dilation"] = 1
        return parse_pool2d(kind, case.input_shape, case.args[0], dtype=dtype, **kw)
    return parse_adaptive_pool2d(op.split("_")[1], case.input_shape, case.args[0],
                                 dtype=dtype, **kw)


# --------------------------------------------------------------------------
# arrays
# --------------------------------------------------------------------------
def _values(rng, shape, dtype, values):
    if values == "integers":
        a = rng.integers(-3, 4, size=shape).astype(dtype)
    else:
        a = rng.standard_normal(shape).astype(dtype)
    if values == "special" and a.size:
        flat = a.reshape(-1)
        k = max(1, flat.size // 25)
        picks = rng.choice(flat.size, size=min(flat.size, k), replace=False)
        flat[picks] = rng.choice(np.array([np.nan, np.inf, -np.inf], dtype=dtype),
                                 size=picks.size)
    return a


def _layout(rng, a, layout):
    """``a``'s values in the given memory layout (same values, different strides)."""
    if layout == "C":
        return np.ascontiguousarray(a)
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided":
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1] + 1,), a.dtype)
        big[..., 1::2] = a
        return big[..., 1::2]
    if layout == "negative":
        flip = tuple(slice(None, None, -1) if i >= a.ndim - 2 else slice(None)
                     for i in range(a.ndim))
        return np.ascontiguousarray(a[flip])[flip]
    if layout == "transposed":
        perm = tuple(range(a.ndim))[::-1]
        inv = np.argsort(perm)
        return np.ascontiguousarray(a.transpose(perm)).transpose(inv)
    if layout == "readonly":
        a = np.array(a)
        a.flags.writeable = False
        return a
    raise ValueError(layout)


def make_arrays(case: Case, dtype=None):
    """``(input, weight, bias)`` of a case (weight and bias None for pooling)."""
    dtype = np.dtype(dtype or case.dtype)
    rng = np.random.default_rng(case.data_seed)
    x = _layout(rng, _values(rng, case.input_shape, dtype, case.values), case.layout)
    if case.weight_shape is None:
        return x, None, None
    wvalues = "integers" if case.values == "integers" else "normal"
    w = _layout(rng, _values(rng, case.weight_shape, dtype, wvalues), case.weight_layout)
    b = None
    if case.bias:
        c_out = (case.weight_shape[0] if case.op == "conv2d"
                 else case.weight_shape[1] * case.kwargs.get("groups", 1))
        b = _values(rng, (c_out,), dtype, wvalues)
    return x, w, b


def call(case: Case, backend: str, algorithm: str | None = None, arrays=None, impl=None):
    """Run the case through the public API.

    A pooling algorithm the API cannot name (pooling ops take no
    ``algorithm``), or an ``impl`` object that is not the registered one
    (tests of this module), runs through the API's own conversion path
    (``api._run``) after the same argument checks (``api.plan``).
    """
    x, w, b = arrays if arrays is not None else make_arrays(case)
    fn = getattr(api, case.op)
    weights = (w, b) if case.weight_shape is not None else ()
    custom = impl is not None and registry.lookup(case.op, impl.backend,
                                                  impl.algorithm) is not impl
    if not custom:
        if case.weight_shape is not None:
            return fn(x, w, b, *case.args, backend=backend, algorithm=algorithm or "auto",
                      **case.kwargs)
        if algorithm is None or registry.algorithms(case.op, backend) == [algorithm]:
            return fn(x, *case.args, backend=backend, **case.kwargs)
        impl = registry.lookup(case.op, backend, algorithm)
    params, _ = api.plan(case.op, x, *weights, *case.args, backend=impl.backend,
                         **case.kwargs)
    if params.n == 0 or 0 in params.output_shape:
        return fn(x, *weights, *case.args, backend=impl.backend, **case.kwargs)
    return api._run(case.op, impl, params, "numpy", x, *weights)


def reference(case: Case, arrays=None):
    """The oracle's answer: float64 arithmetic (max pooling: exact, in the case's dtype)."""
    x, w, b = arrays if arrays is not None else make_arrays(case)
    if case.op in ("max_pool2d", "adaptive_max_pool2d"):
        return call(case, "numpy", "direct", (x, w, b))
    f64 = [None if a is None else a.astype(np.float64) for a in (x, w, b)]
    return call(case, "numpy", "direct", f64)


class Unsupported(Exception):
    """The implementation declares it does not run this case (not a failure)."""


class KnownIssue(Unsupported):
    """The case hits a bug already reported (see :data:`KNOWN_ISSUES`); not rerun."""


#: Reported bugs, so the fuzz stays useful until they are fixed:
#: implementation key pattern (fnmatch) -> (predicate on a Case, what goes wrong).
#: Each has a strict-xfail reproducer in the tests, which fails (XPASS) once
#: the bug is fixed, as a reminder to delete the entry here.
KNOWN_ISSUES = {
}


def known_issue(case: Case, impl):
    """The description of a known bug this case would hit on ``impl``, or None."""
    for pattern, (predicate, text) in KNOWN_ISSUES.items():
        if fnmatch.fnmatchcase(impl.key, pattern) and predicate(case):
            return text
    return None


def check(case: Case, impl, arrays=None, ref=None, known: bool = False):
    """Run ``case`` on ``impl`` and compare with the reference; AssertionError if wrong.

    Raises :class:`Unsupported` when the implementation declines the case
    through its ``supports`` rule or its backend's dtype list, and
    :class:`KnownIssue` for a reported bug (unless ``known=True``: run it anyway).
    """
    if not known:
        issue = known_issue(case, impl)
        if issue is not None:
            raise KnownIssue(f"{impl.key}: known issue: {issue}")
    be = registry.get_backend(impl.backend)
    if case.dtype not in be.dtypes:
        raise Unsupported(f"backend {be.name} has no {case.dtype} kernels")
    params = parse_case(case)
    reason = impl.unsupported_reason(params)
    if reason is not None:
        raise Unsupported(reason)
    arrays = arrays if arrays is not None else make_arrays(case)
    x = arrays[0]
    x_before = x.copy()
    w_before = None if arrays[1] is None else arrays[1].copy()
    ref = ref if ref is not None else reference(case, arrays)
    out = call(case, impl.backend, impl.algorithm, arrays, impl)
    what = f"{impl.key} {case!r}"
    # the call must not write into its inputs
    assert_exact(x, x_before, f"{what}: input modified")
    if w_before is not None:
        assert_exact(arrays[1], w_before, f"{what}: weight modified")
    want_indices = case.kwargs.get("return_indices", False)
    if want_indices:
        if not (isinstance(out, tuple) and len(out) == 2):
            raise AssertionError(f"{what}: return_indices=True must return (values, indices)")
        out, idx = out
        ref, ref_idx = ref
        if not isinstance(idx, np.ndarray) or idx.dtype != np.int64:
            raise AssertionError(f"{what}: indices must be an int64 NumPy array, got "
                                 f"{type(idx).__name__} {getattr(idx, 'dtype', None)}")
        assert_exact(idx, ref_idx, f"{what}: indices")
    if not isinstance(out, np.ndarray):
        raise AssertionError(f"{what}: returned {type(out).__name__}, not a NumPy array")
    if out.shape != ref.shape:
        raise AssertionError(f"{what}: shape {out.shape} != reference {ref.shape}")
    if out.dtype != x.dtype:
        raise AssertionError(f"{what}: dtype {out.dtype} != input dtype {x.dtype}")
    if not out.flags.c_contiguous:
        raise AssertionError(f"{what}: result is not C-contiguous")
    try:
        if case.op in ("max_pool2d", "adaptive_max_pool2d"):
            assert_exact(out, ref, f"{what}: values")
        else:
            assert_close(out, ref, case.dtype, what)
    except AssertionError as exc:
        if what in str(exc):
            raise
        raise AssertionError(f"{what}: {exc}") from None  # NaN/Inf/shape messages


# --------------------------------------------------------------------------
# invalid configurations
# --------------------------------------------------------------------------
def _conv2d_mutations(case: Case):
    h, w = case.input_shape[-2:]
    co, cig, kh, kw = case.weight_shape
    g = case.kwargs.get("groups", 1)
    cin = cig * g
    lead = case.input_shape[:-3]
    return [
        ("stride 0", ValueError, "stride", dict(kwargs={"stride": 0})),
        ("negative stride", ValueError, "stride", dict(kwargs={"stride": (1, -2)})),
        ("float stride", TypeError, "stride", dict(kwargs={"stride": 1.5})),
        ("stride triple", ValueError, "stride", dict(kwargs={"stride": (1, 1, 1)})),
        ("dilation 0", ValueError, "dilation", dict(kwargs={"dilation": 0})),
        ("negative padding", ValueError, "padding", dict(kwargs={"padding": (0, -1)})),
        ("unknown padding string", ValueError, "padding", dict(kwargs={"padding": "full"})),
        ("same with stride 2", ValueError, "same",
         dict(kwargs={"padding": "same", "stride": 2})),
        ("groups 0", ValueError, "groups", dict(kwargs={"groups": 0})),
        ("bool groups", TypeError, "groups", dict(kwargs={"groups": True})),
        ("groups not dividing C_in", ValueError, "groups",
         dict(input_shape=lead + (cin * (co + 1) + 1, h, w), weight_shape=(co * (co + 1), cig,
                                                                           kh, kw),
              kwargs={"groups": co + 1})),
        ("weight channels mismatch", ValueError, "weight",
         dict(weight_shape=(co, cig + 1, kh, kw))),
        ("bias wrong shape", ValueError, "bias", dict(bias_shape=(co + 1,))),
        ("bias 2-D", ValueError, "bias", dict(bias_shape=(co, 1))),
        ("input 2-D", ValueError, "input", dict(input_shape=(h, w))),
        ("input 5-D", ValueError, "input", dict(input_shape=(1, 1, cin, h, w))),
        ("weight 3-D", ValueError, "weight", dict(weight_shape=(co, cig, kh))),
        ("padding_mode unknown", ValueError, "padding_mode",
         dict(kwargs={"padding_mode": "mirror"})),
        ("reflect padding >= size", ValueError, "reflect",
         dict(kwargs={"padding": max(h, w), "padding_mode": "reflect"})),
        ("circular padding > size", ValueError, "circular",
         dict(kwargs={"padding": max(h, w) + 1, "padding_mode": "circular"})),
        ("kernel larger than padded input", ValueError, "kernel",
         dict(weight_shape=(co, cig, h + 3, w + 3),
              kwargs={"padding": 1, "padding_mode": "zeros"})),
        ("empty spatial size", ValueError, "input", dict(input_shape=lead + (cin, 0, w))),
        ("zero output channels", ValueError, "weight", dict(weight_shape=(0, cig, kh, kw))),
        ("weight dtype differs", TypeError, "dtype",
         dict(weight_dtype="float64" if case.dtype == "float32" else "float32")),
        ("int32 input", TypeError, "int32", dict(input_dtype="int32", weight_dtype="int32")),
        ("complex input", TypeError, "complex64", dict(input_dtype="complex64")),
        ("list input", TypeError, "input", dict(input_as_list=True)),
    ]


def _conv_transpose2d_mutations(case: Case):
    h, w = case.input_shape[-2:]
    cin, cog, kh, kw = case.weight_shape
    g = case.kwargs.get("groups", 1)
    lead = case.input_shape[:-3]
    return [
        ("output_padding >= stride and dilation", ValueError, "output_padding",
         dict(kwargs={"stride": 2, "dilation": 1, "output_padding": 2})),
        ("weight dim 0 mismatch", ValueError, "weight",
         dict(weight_shape=(cin + 1, cog, kh, kw))),
        ("groups not dividing C_in", ValueError, "groups",
         dict(input_shape=lead + (cin * (cin + 1) + 1, h, w),
              weight_shape=(cin * (cin + 1) + 1, cog, kh, kw), kwargs={"groups": cin + 1})),
        ("string padding", ValueError, "padding", dict(kwargs={"padding": "same"})),
        ("stride 0", ValueError, "stride", dict(kwargs={"stride": 0})),
        ("negative padding", ValueError, "padding", dict(kwargs={"padding": -1})),
        ("output too small", ValueError, "output size",
         dict(input_shape=lead + (cin, 1, 1), weight_shape=(cin, cog, 1, 1),
              kwargs={"padding": 1, "stride": 1, "output_padding": 0, "dilation": 1})),
        ("bias wrong shape", ValueError, "bias", dict(bias_shape=(cog * g + 1,))),
        ("input 2-D", ValueError, "input", dict(input_shape=(h, w))),
        ("weight dtype differs", TypeError, "dtype",
         dict(weight_dtype="float64" if case.dtype == "float32" else "float32")),
        ("int64 input", TypeError, "int64", dict(input_dtype="int64", weight_dtype="int64")),
    ]


def _pool_mutations(case: Case):
    h, w = case.input_shape[-2:]
    lead = case.input_shape[:-3]
    c = case.input_shape[-3]
    kh, kw = _pair(case.args[0])
    out = [
        ("kernel_size 0", ValueError, "kernel_size", dict(args=(0,))),
        ("float kernel_size", TypeError, "kernel_size", dict(args=(2.0,))),
        ("stride 0", ValueError, "stride", dict(kwargs={"stride": (0, 1)})),
        ("padding above half the kernel", ValueError, "padding",
         dict(kwargs={"padding": kh // 2 + 1})),
        ("negative padding", ValueError, "padding", dict(kwargs={"padding": -1})),
        ("ceil_mode not a bool", TypeError, "ceil_mode", dict(kwargs={"ceil_mode": "yes"})),
        ("zero channels", ValueError, "channels", dict(input_shape=lead + (0, h, w))),
        ("output too small", ValueError, "output size",
         dict(args=((h + 3, w + 3),), kwargs={"padding": 0, "stride": 1, "dilation": 1}
              if case.op == "max_pool2d" else {"padding": 0, "stride": 1})),
        ("input 5-D", ValueError, "input",
         dict(input_shape=(1,) * (5 - len(case.input_shape)) + case.input_shape)),
        ("int32 input", TypeError, "int32", dict(input_dtype="int32")),
    ]
    if case.op == "max_pool2d":
        out += [
            ("dilation 0", ValueError, "dilation", dict(kwargs={"dilation": 0})),
            ("return_indices not a bool", TypeError, "return_indices",
             dict(kwargs={"return_indices": 1})),
        ]
    else:
        out += [
            ("divisor_override 0", ValueError, "divisor_override",
             dict(kwargs={"divisor_override": 0})),
            ("float divisor_override", TypeError, "divisor_override",
             dict(kwargs={"divisor_override": 2.5})),
            ("count_include_pad not a bool", TypeError, "count_include_pad",
             dict(kwargs={"count_include_pad": None})),
        ]
    return out


def _adaptive_mutations(case: Case):
    h, w = case.input_shape[-2:]
    lead = case.input_shape[:-2]
    out = [
        ("negative output_size", ValueError, "output_size", dict(args=(-1,))),
        ("negative output_size entry", ValueError, "output_size", dict(args=((2, -3),))),
        ("output_size triple", ValueError, "output_size", dict(args=((1, 2, 3),))),
        ("float output_size", TypeError, "output_size", dict(args=(2.5,))),
        ("empty height", ValueError, "input", dict(input_shape=lead + (0, w))),
        ("input 2-D", ValueError, "input", dict(input_shape=(h, w))),
        ("complex input", TypeError, "complex128",
         dict(input_dtype="complex128")),
    ]
    if case.op == "adaptive_max_pool2d":
        out.append(("return_indices not a bool", TypeError, "return_indices",
                    dict(kwargs={"return_indices": "no"})))
    return out


def draw_invalid(src, op: str | None = None) -> InvalidCase:
    """A valid case broken in exactly one way (one of the contract's error cases)."""
    case = draw_case(src, op, size=6, max_batch=2)
    if case.op == "conv2d":
        muts = _conv2d_mutations(case)
    elif case.op == "conv_transpose2d":
        muts = _conv_transpose2d_mutations(case)
    elif case.op in ("max_pool2d", "avg_pool2d"):
        muts = _pool_mutations(case)
    else:
        muts = _adaptive_mutations(case)
    what, error, word, change = src.choice(muts)
    kwargs = change.pop("kwargs", {})
    return InvalidCase(base=case, what=what, error=error, word=word, kwargs=kwargs, **change)


def invalid_arrays(inv: InvalidCase):
    case = inv.base
    rng = np.random.default_rng(case.data_seed)

    def arr(shape, dtype):
        return np.asarray(rng.standard_normal(shape)).astype(dtype)

    x = arr(inv.input_shape or case.input_shape, inv.input_dtype or case.dtype)
    if inv.input_as_list:
        x = x.tolist()
    if case.weight_shape is None:
        return x, None, None
    w = arr(inv.weight_shape or case.weight_shape, inv.weight_dtype or case.dtype)
    b = None
    if inv.bias_shape is not None:
        b = arr(inv.bias_shape, case.dtype)
    elif case.bias:
        c_out = (case.weight_shape[0] if case.op == "conv2d"
                 else case.weight_shape[1] * case.kwargs.get("groups", 1))
        if inv.weight_shape is not None:
            ws = inv.weight_shape
            c_out = ws[0] if case.op == "conv2d" else (ws[1] if len(ws) > 1 else 1) * \
                dict(case.kwargs, **inv.kwargs).get("groups", 1)
        b = arr((c_out,), case.dtype)
    return x, w, b


def check_invalid(inv: InvalidCase, backend: str):
    """The call must raise ``inv.error`` whose message starts with the op and names the
    argument; returns the exception."""
    case = inv.base
    x, w, b = invalid_arrays(inv)
    kwargs = dict(case.kwargs, **inv.kwargs)
    args = inv.args if inv.args is not None else case.args
    fn = getattr(api, case.op)
    what = f"{case.op} on {backend}: {inv.what} ({inv!r})"
    try:
        if case.weight_shape is not None:
            fn(x, w, b, *args, backend=backend, **kwargs)
        else:
            fn(x, *args, backend=backend, **kwargs)
    except inv.error as exc:
        msg = str(exc)
        if not msg.startswith(case.op):
            raise AssertionError(f"{what}: message does not start with the op: {msg!r}")
        if inv.word not in msg:
            raise AssertionError(f"{what}: message does not name {inv.word!r}: {msg!r}")
        if isinstance(exc, registry.BackendUnavailableError):
            raise AssertionError(f"{what}: raised BackendUnavailableError before checking "
                                 f"the arguments: {msg!r}")
        return exc
    except Exception as exc:
        raise AssertionError(f"{what}: raised {type(exc).__name__} instead of "
                             f"{inv.error.__name__}: {exc}") from exc
    raise AssertionError(f"{what}: no error raised")


# --------------------------------------------------------------------------
# Hypothesis strategies (tests)
# --------------------------------------------------------------------------
def cases(op: str | None = None, size: int = 9, max_batch: int = 3, layouts=LAYOUTS):
    """Hypothesis strategy of valid :class:`Case` objects."""
    from hypothesis import strategies as st

    @st.composite
    def strategy(draw):
        return draw_case(_HypothesisSource(draw), op, size, max_batch, layouts)
    return strategy()


def invalid_cases(op: str | None = None):
    """Hypothesis strategy of :class:`InvalidCase` objects."""
    from hypothesis import strategies as st

    @st.composite
    def strategy(draw):
        return draw_invalid(_HypothesisSource(draw), op)
    return strategy()


# --------------------------------------------------------------------------
# which implementations to run
# --------------------------------------------------------------------------
def native_gpu() -> bool:
    """True when a real CUDA device is present (not a simulator or CPU emulation)."""
    import os
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return False
    return any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/nvidiactl"))


def selected_implementations(op=None, backend=None, device=None, skipped=None):
    """Available implementations (except the oracle itself); unavailable ones are
    recorded in ``skipped`` (a dict key -> reason) when given."""
    out = []
    for impl in registry.implementations(op, backend):
        be = registry.get_backend(impl.backend)
        if impl.backend == "numpy" and impl.algorithm == "direct" and backend != "numpy":
            continue  # the oracle
        if device is not None and be.device != device:
            continue
        reason = be.unavailable_reason()
        if reason is not None:
            if skipped is not None:
                skipped[impl.key] = reason
            continue
        out.append(impl)
    return out


# --------------------------------------------------------------------------
# the long run
# --------------------------------------------------------------------------
def _case_seed(base: int, i: int) -> int:
    return zlib.crc32(f"{base}:{i}".encode()) | (i % 2**16) << 32


def case_from_seed(seed: int, op=None, size=9, max_batch=3) -> Case:
    return draw_case(RandomSource(seed), op, size, max_batch)


def invalid_from_seed(seed: int, op=None) -> InvalidCase:
    return draw_invalid(RandomSource(seed), op)


def _load_all():
    """Register everything that registers on import (the dense baseline too)."""
    from . import dense  # noqa: F401


def run_one(seed: int, kind: str, impls, backends, op=None, size=9):
    """Run one seeded case on the given implementations; yields (key, status, message)."""
    if kind == "invalid":
        inv = invalid_from_seed(seed, op)
        for be in backends:
            try:
                check_invalid(inv, be)
                yield f"{inv.base.op}/{be}/errors", "ok", ""
            except AssertionError as exc:
                yield f"{inv.base.op}/{be}/errors", "wrong", str(exc)
        return
    case = case_from_seed(seed, op, size)
    arrays = make_arrays(case)
    try:
        ref = reference(case, arrays)
    except Exception as exc:
        yield f"{case.op}/numpy/direct", "wrong", (f"reference failed on {case!r}: "
                                                   f"{type(exc).__name__}: {exc}")
        return
    for impl in impls:
        if impl.op != case.op:
            continue
        try:
            check(case, impl, arrays, ref)
            yield impl.key, "ok", ""
        except KnownIssue as exc:
            yield impl.key, "known", str(exc)
        except Unsupported as exc:
            yield impl.key, "unsupported", str(exc)
        except AssertionError as exc:
            yield impl.key, "wrong", str(exc)
        except Exception as exc:  # a crash inside a backend is a wrong answer too
            yield impl.key, "wrong", (f"{impl.key} {case!r}: raised {type(exc).__name__}: "
                                      f"{exc}\n{traceback.format_exc(limit=4)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fastconv.fuzz", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=1.0, help="how long to run (default 1)")
    ap.add_argument("--cases", type=int, default=None, help="stop after this many cases")
    ap.add_argument("--backend", action="append", default=None,
                    help="only this backend (repeatable); default: every available one")
    ap.add_argument("--op", choices=OPS, default=None, help="only this op")
    ap.add_argument("--cycle-ops", action="store_true",
                    help="take the ops in turn instead of drawing one per case")
    ap.add_argument("--size", type=int, default=9, help="spatial sizes drawn up to about this")
    ap.add_argument("--seed", type=int, default=None, help="base seed (default: random)")
    ap.add_argument("--invalid-share", type=float, default=0.15,
                    help="fraction of cases that are invalid configurations (default 0.15)")
    ap.add_argument("--replay", type=int, default=None, metavar="SEED",
                    help="rerun the one case with this seed (valid unless --invalid)")
    ap.add_argument("--invalid", action="store_true", help="with --replay: an invalid case")
    ap.add_argument("--max-failures", type=int, default=50, help="print at most this many")
    args = ap.parse_args(argv)

    import warnings
    warnings.simplefilter("ignore", RuntimeWarning)  # NaN/Inf arithmetic is on purpose
    _load_all()
    skipped = {}
    impls = []
    for be in args.backend or [None]:
        impls += selected_implementations(args.op, be, skipped=skipped)
    # argument errors come before the backend is resolved: every registered backend,
    # available or not, must raise them
    backends = sorted(args.backend or [b.name for b in registry.all_backends()])
    for name in sorted({k.split("/")[1] for k in skipped}):
        reason = next(r for k, r in skipped.items() if k.split("/")[1] == name)
        print(f"skipped backend {name}: {reason}")
    if not impls:
        print("no available implementation selected", file=sys.stderr)
        return 2
    print("implementations:", ", ".join(i.key for i in impls))

    if args.replay is not None:
        kind = "invalid" if args.invalid else "valid"
        if kind == "valid":
            print(repr(case_from_seed(args.replay, args.op, args.size)))
        else:
            print(repr(invalid_from_seed(args.replay, args.op)))
        bad = 0
        for key, status, msg in run_one(args.replay, kind, impls, backends, args.op,
                                        args.size):
            print(f"{key}: {status}" + (f"\n  {msg}" if msg else ""))
            bad += status == "wrong"
        return 1 if bad else 0

    base = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy
                                                         % 2**31)
    print(f"base seed {base}; running for {args.minutes} min")
    sys.stdout.flush()
    import os
    env = "".join(f"{k}={os.environ[k]} " for k in ("FASTCONV_CUPY_EMULATE",
                                                     "NUMBA_ENABLE_CUDASIM") if k in os.environ)
    start = time.monotonic()
    stop = start + 60 * args.minutes
    counts: dict[str, Counter] = {}
    chooser = np.random.default_rng(base)
    ncases = checks = wrong = printed = 0
    failing_seeds = []
    i = 0
    while time.monotonic() < stop and (args.cases is None or ncases < args.cases):
        seed = _case_seed(base, i)
        i += 1
        kind = "invalid" if chooser.random() < args.invalid_share else "valid"
        op = args.op or (OPS[(i - 1) % len(OPS)] if args.cycle_ops else None)
        ncases += 1
        case_bad = False
        try:
            results = list(run_one(seed, kind, impls, backends, op, args.size))
        except Exception as exc:  # a bug in the generator itself
            results = [("fuzz/generator", "wrong", f"{type(exc).__name__}: {exc}")]
        for key, status, msg in results:
            counts.setdefault(key, Counter())[status] += 1
            if status in ("ok", "wrong"):
                checks += 1
            if status == "wrong":
                wrong += 1
                case_bad = True
                if printed < args.max_failures:
                    printed += 1
                    flag = " --invalid" if kind == "invalid" else ""
                    print(f"WRONG seed={seed} ({kind}) {key}\n  {msg}\n  replay: {env}python "
                          f"-m fastconv.fuzz --replay {seed}{flag}"
                          + (f" --op {op}" if op else "")
                          + (f" --size {args.size}" if args.size != 9 else "")
                          + "".join(f" --backend {b}" for b in args.backend or []))
                    sys.stdout.flush()
        if case_bad:
            failing_seeds.append(seed)
    print(f"\n{ncases} cases ({checks} checks of an implementation) in "
          f"{(time.monotonic() - start) / 60:.1f} min, {wrong} wrong, "
          f"{len(failing_seeds)} failing cases")
    for key in sorted(counts):
        c = counts[key]
        print(f"  {key:45s} ok {c['ok']:6d}  wrong {c['wrong']:5d}  "
              f"unsupported {c['unsupported']:5d}  known-issue {c['known']:5d}")
    for key, (_pred, text) in KNOWN_ISSUES.items():
        print(f"known issue (skipped) {key}: {text}")
    if failing_seeds:
        print("failing seeds:", " ".join(map(str, failing_seeds[:100])))
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
