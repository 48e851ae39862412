"""What a benchmark runs: every registered implementation and every installed peer.

A :class:`Runner` turns a :class:`~fastconv.perf.suite.Case` into a
zero-argument callable that computes the case once (GPU work synchronized
inside it).  Registered implementations come from
``fastconv.registry.implementations(op)``, so a new kernel is benchmarked by
being registered; peers are the libraries users compare us with: PyTorch
(oneDNN on the CPU, cuDNN on the GPU with TF32 off), SciPy
(``ndimage.correlate``, ``signal.correlate2d``, ``signal.fftconvolve``),
OpenCV ``filter2D`` and CuPy's ``cupyx.scipy.ndimage.correlate``.  A peer
that is not installed, or cannot compute a case, raises :class:`Skip`
with the reason (a note in the report, never an error).

:func:`prepare` checks the first result against the float64 NumPy reference
(``fastconv.testing``), which doubles as the warm-up (compilation excluded
from the timing), then :func:`run_case` times it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

import fastconv as fc
from fastconv import arrays, registry
from fastconv.testing import assert_close, assert_exact

from .suite import Case
from .timing import gpu_sync

__all__ = ["Skip", "Runner", "CaseData", "case_data", "case_params", "registry_runners",
           "peer_runners", "runners", "prepare", "auto_choice", "ROLE"]

#: The role of each registered NumPy implementation in the reports.
ROLE = {"numpy/direct": "reference", "numpy/im2col": "peer", "numpy/dense": "baseline"}


class Skip(Exception):
    """This runner cannot run this case here; the message says why."""


@dataclass(frozen=True)
class Runner:
    """One way of computing a case: a registered implementation or a peer library.

    ``make(case_data)`` returns a zero-argument callable or raises :class:`Skip`.
    """
    label: str
    role: str          # "fastconv", "reference", "baseline" or "peer"
    device: str        # "cpu" or "cuda"
    make: Callable
    backend: Optional[str] = None
    algorithm: Optional[str] = None
    description: str = ""


# --------------------------------------------------------------------------
# inputs and the reference
# --------------------------------------------------------------------------
@dataclass
class CaseData:
    """Host inputs (float32 unless asked), the checked params and the lazily computed reference."""
    case: Case
    x: np.ndarray
    w: Optional[np.ndarray]
    params: object
    dtype: str
    _ref: object = None

    @property
    def kwargs(self) -> dict:
        return self.case.kwargs

    def reference(self):
        """The float64 NumPy reference (float32 input for max pooling, whose values are exact)."""
        if self._ref is None:
            op = self.case.op
            if "max" in op:
                self._ref = _call_op(op, self.x, self.w, self.kwargs, backend="numpy")
            else:
                w = None if self.w is None else self.w.astype(np.float64)
                self._ref = _call_op(op, self.x.astype(np.float64), w, self.kwargs,
                                     backend="numpy")
        return self._ref


def _call_op(op, x, w, kwargs, **extra):
    fn = getattr(fc, op)
    return fn(x, w, **kwargs, **extra) if w is not None else fn(x, **kwargs, **extra)


def case_params(case: Case, dtype: str = "float32"):
    """The ``*Params`` record of a case (shapes only, nothing allocated)."""
    x = np.lib.stride_tricks.as_strided(np.zeros(1, dtype), case.input_shape,
                                        (0,) * len(case.input_shape))
    w = (None if case.weight_shape is None else
         np.lib.stride_tricks.as_strided(np.zeros(1, dtype), case.weight_shape,
                                         (0,) * len(case.weight_shape)))
    params, _ = fc.plan(case.op, *((x, w) if w is not None else (x,)), backend="numpy",
                        **case.kwargs)
    return params


def case_data(case: Case, dtype: str = "float32", seed: int = 0) -> CaseData:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case.input_shape, dtype=np.float64).astype(dtype)
    w = (None if case.weight_shape is None else
         rng.standard_normal(case.weight_shape, dtype=np.float64).astype(dtype))
    return CaseData(case, x, w, case_params(case, dtype), dtype)


def auto_choice(case: Case, data: Optional[CaseData] = None, device: str = "cpu") -> str:
    """The implementation ``backend="auto", algorithm="auto"`` picks (``fastconv.plan``)."""
    data = data or case_data(case)
    try:
        x, w = data.x, data.w
        if device == "cuda":
            import cupy
            x = cupy.asarray(x)
            w = None if w is None else cupy.asarray(w)
        _params, impl = fc.plan(case.op, *((x, w) if w is not None else (x,)), **case.kwargs)
        return impl.key.split("/", 1)[1]
    except Exception as exc:  # noqa: BLE001 - reported, never fatal
        return f"none ({type(exc).__name__}: {exc})"


# --------------------------------------------------------------------------
# registered implementations
# --------------------------------------------------------------------------
def _registry_make(impl, be, data: CaseData):
    why = be.unavailable_reason()
    if why is not None:
        raise Skip(f"backend {be.name} unavailable: {why}")
    if data.dtype not in be.dtypes:
        raise Skip(f"backend {be.name} has no {data.dtype} kernels")
    why = impl.unsupported_reason(data.params)
    if why is not None:
        raise Skip(why)
    p = data.params
    x = arrays.to_native(data.x, "numpy", be.native)
    w = None if data.w is None else arrays.to_native(data.w, "numpy", be.native)
    fn = impl.fn
    if be.device == "cuda":
        if w is None:
            return lambda: (fn(x, p), gpu_sync())[0]
        return lambda: (fn(x, w, None, p), gpu_sync())[0]
    if w is None:
        return lambda: fn(x, p)
    return lambda: fn(x, w, None, p)


def registry_runners(op: str, devices=("cpu", "cuda")) -> list[Runner]:
    """A runner per registered implementation of ``op`` on those devices (available or not)."""
    out = []
    for impl in registry.implementations(op):
        be = registry.get_backend(impl.backend)
        if be.device not in devices:
            continue
        label = f"{impl.backend}/{impl.algorithm}"
        out.append(Runner(label, ROLE.get(label, "fastconv"), be.device,
                          functools.partial(_registry_make, impl, be), impl.backend,
                          impl.algorithm, impl.description))
    return out


# --------------------------------------------------------------------------
# peers
# --------------------------------------------------------------------------
def _import(name: str, what: str):
    import importlib
    try:
        return importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - ImportError or a broken install
        raise Skip(f"{what} not installed ({type(exc).__name__})") from None


def _single_channel_2d(data: CaseData):
    """(image, kernel, params) for a 1-image, 1-channel, stride-1, zero-padded conv2d."""
    p = data.params
    if data.case.op != "conv2d":
        raise Skip("single-channel image filters only (conv2d)")
    if (p.n, p.c_in, p.c_out, p.groups) != (1, 1, 1, 1):
        raise Skip("single-channel image filters only (N = C_in = C_out = 1)")
    if p.stride != (1, 1) or p.dilation != (1, 1) or p.padding_mode != "zeros":
        raise Skip("stride 1, dilation 1, zero padding only")
    return data.x[0, 0], data.w[0, 0], p


def _ndimage_origin(p):
    """Origins aligning ndimage's centred window with conv2d's top padding.

    ndimage reads ``in[y + i - (k//2 + origin)]``; conv2d reads
    ``in[y + i - pad_top]``, so ``origin = pad_top - k//2`` (semantics.md:
    origin=-1 for PyTorch's 'same' with k=4).  Output rows past
    ``H_out`` are cut off; the origin must lie in ``[-(k//2), (k-1)//2]``.
    """
    top, bottom, left, right = p.padding
    if p.h_out > p.h or p.w_out > p.w or top > p.kh - 1 or left > p.kw - 1:
        raise Skip("output larger than the input or padding beyond the kernel: "
                   "ndimage keeps the input size")
    return (top - p.kh // 2, left - p.kw // 2)


def _scipy_ndimage(data: CaseData):
    img, k, p = _single_channel_2d(data)
    ndimage = _import("scipy.ndimage", "SciPy")
    origin = _ndimage_origin(p)
    out = np.empty_like(img)

    def run():
        ndimage.correlate(img, k, output=out, mode="constant", cval=0.0, origin=origin)
        return out[None, None, :p.h_out, :p.w_out]
    return run


def _full_slice(p):
    top, _b, left, _r = p.padding
    return (slice(p.kh - 1 - top, p.kh - 1 - top + p.h_out),
            slice(p.kw - 1 - left, p.kw - 1 - left + p.w_out))


def _scipy_correlate2d(data: CaseData):
    img, k, p = _single_channel_2d(data)
    signal = _import("scipy.signal", "SciPy")
    if p.padding == (0, 0, 0, 0):
        return lambda: signal.correlate2d(img, k, mode="valid")[None, None]
    sl = _full_slice(p)  # 'full' then cut: exact for any padding ('same' centres differ)
    return lambda: signal.correlate2d(img, k, mode="full")[sl][None, None]


def _scipy_fftconvolve(data: CaseData):
    img, k, p = _single_channel_2d(data)
    signal = _import("scipy.signal", "SciPy")
    flipped = np.ascontiguousarray(k[::-1, ::-1])  # convolution flips: flip back to correlate
    if p.padding == (0, 0, 0, 0):
        return lambda: signal.fftconvolve(img, flipped, mode="valid")[None, None]
    sl = _full_slice(p)
    return lambda: signal.fftconvolve(img, flipped, mode="full")[sl][None, None]


def _opencv_filter2d(data: CaseData):
    img, k, p = _single_channel_2d(data)
    cv2 = _import("cv2", "OpenCV")
    top, _b, left, _r = p.padding
    if top > p.kh - 1 or left > p.kw - 1 or p.h_out > p.h or p.w_out > p.w:
        raise Skip("padding beyond the kernel: filter2D keeps the input size")
    if img.dtype not in (np.float32, np.float64):
        raise Skip(f"no {img.dtype} filter2D")
    out = np.empty_like(img)
    # filter2D correlates: dst(y, x) = sum src(y + i - ay, x + j - ax) k(i, j) -> anchor = pads
    anchor = (left, top)

    def run():
        cv2.filter2D(img, -1, k, dst=out, anchor=anchor, delta=0,
                     borderType=cv2.BORDER_CONSTANT)
        return out[None, None, :p.h_out, :p.w_out]
    return run


def _cupy_ndimage(data: CaseData):
    _img, _k, p = _single_channel_2d(data)
    cupy = _import("cupy", "CuPy")
    ndi = _import("cupyx.scipy.ndimage", "CuPy")
    try:
        img = cupy.asarray(data.x[0, 0])
        k = cupy.asarray(data.w[0, 0])
    except Exception as exc:  # noqa: BLE001
        raise Skip(f"no GPU usable by CuPy ({type(exc).__name__})") from None
    origin = _ndimage_origin(p)
    out = cupy.empty_like(img)

    def run():
        ndi.correlate(img, k, output=out, mode="constant", cval=0.0, origin=origin)
        gpu_sync()
        return out[None, None, :p.h_out, :p.w_out]
    return run


def _torch_fn(data: CaseData, torch, F, x, w):
    op, kw = data.case.op, dict(data.kwargs)
    if op == "conv2d":
        mode = kw.pop("padding_mode", "zeros")
        if mode != "zeros":
            raise Skip("the suite's torch call covers zero padding only")
        return lambda: F.conv2d(x, w, **kw)
    if op == "conv_transpose2d":
        return lambda: F.conv_transpose2d(x, w, **kw)
    return lambda: getattr(F, op)(x, **kw)


def _torch_cpu(data: CaseData):
    torch = _import("torch", "PyTorch")
    import torch.nn.functional as F
    x = torch.from_numpy(data.x)
    w = None if data.w is None else torch.from_numpy(data.w)
    fn = _torch_fn(data, torch, F, x, w)

    def run():
        with torch.no_grad():
            return fn().numpy()
    return run


def _torch_cuda(data: CaseData):
    torch = _import("torch", "PyTorch")
    if not torch.cuda.is_available():
        raise Skip("PyTorch has no CUDA device here")
    import torch.nn.functional as F
    torch.backends.cudnn.allow_tf32 = False  # fp32 against fp32 kernels
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    x = torch.from_numpy(data.x).cuda()
    w = None if data.w is None else torch.from_numpy(data.w).cuda()
    fn = _torch_fn(data, torch, F, x, w)

    def run():
        with torch.no_grad():
            y = fn()
        torch.cuda.synchronize()
        return y
    return run


PEERS = (
    Runner("torch", "peer", "cpu", _torch_cpu,
           description="PyTorch CPU (oneDNN) torch.nn.functional"),
    Runner("scipy.ndimage.correlate", "peer", "cpu", _scipy_ndimage,
           description="SciPy ndimage.correlate, mode='constant', origin aligned to the padding"),
    Runner("scipy.signal.correlate2d", "peer", "cpu", _scipy_correlate2d,
           description="SciPy signal.correlate2d ('valid', or 'full' then cut)"),
    Runner("scipy.signal.fftconvolve", "peer", "cpu", _scipy_fftconvolve,
           description="SciPy signal.fftconvolve with the flipped kernel"),
    Runner("opencv.filter2D", "peer", "cpu", _opencv_filter2d,
           description="OpenCV filter2D (correlation), BORDER_CONSTANT, anchor at the padding"),
    Runner("torch-cuda", "peer", "cuda", _torch_cuda,
           description="PyTorch CUDA (cuDNN, TF32 off)"),
    Runner("cupyx.ndimage.correlate", "peer", "cuda", _cupy_ndimage,
           description="CuPy cupyx.scipy.ndimage.correlate, mode='constant'"),
)


def peer_runners(devices=("cpu", "cuda")) -> list[Runner]:
    return [r for r in PEERS if r.device in devices]


def runners(op: str, devices=("cpu", "cuda"), peers: bool = True) -> list[Runner]:
    """Every registered implementation of ``op``, then every peer (for any op)."""
    return registry_runners(op, devices) + (peer_runners(devices) if peers else [])


# --------------------------------------------------------------------------
# check once, then hand back the timed callable
# --------------------------------------------------------------------------
def prepare(runner: Runner, data: CaseData):
    """The runner's callable for this case, checked against the reference.

    Returns ``(fn, relative_error)``; raises :class:`Skip` if the runner cannot
    run the case, AssertionError if its result is wrong.  The check is also the
    warm-up call: compilation happens here, outside any timing; a second call
    follows so first-touch effects stay out too.
    """
    fn = runner.make(data)
    out = fn()
    out = out[0] if isinstance(out, tuple) else out
    ref = data.reference()
    what = f"{runner.label} on {data.case.id}"
    if "max" in data.case.op:
        assert_exact(out, ref, what)
        err = 0.0
    else:
        err = assert_close(out, ref, data.dtype, what)
    fn()
    return fn, err
