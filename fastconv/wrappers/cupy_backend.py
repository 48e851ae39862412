"""Backend "cupy": hand-written CUDA C kernels (``kernels/*.cu``) compiled by CuPy (NVRTC).

Kernels are templated over the dtype (``float``, ``double``), the padding mode and
tile sizes; each source file is compiled once per (device, file, dtype, algorithm
group) as one ``cupy.RawModule`` whose ``name_expressions`` instantiate every
specialization the host code can launch, and kernels are fetched by their full name
(``conv2d_direct<float, 1, 16, 8, 2, 4, 4096>``).  Launches go on CuPy's current
stream.  Offsets inside the kernels are 64-bit; sizes the kernels keep in 32-bit
registers (one plane, ``K = C/G*kh*kw``, grid dimensions) are checked here and
rejected with a clear error before any launch.

Algorithms: conv2d "direct" (shared-memory tiles, register blocking), "im2col"
(im2col kernel + tiled GEMM, workspace capped by :data:`IM2COL_WORKSPACE_BYTES`,
chunked over the batch), "implicit-gemm" (the GEMM gathering im2col entries on
the fly, no workspace); conv_transpose2d "direct" (gather form, deterministic);
pooling "direct".

Emulation: with ``FASTCONV_CUPY_EMULATE=1`` the very same host code runs the very
same ``.cu`` sources on the CPU through :mod:`fastconv.cudaemu` (for tests on
machines without a GPU): only the module class (``cudaemu.RawModule`` instead of
``cupy.RawModule``) and the array module (NumPy instead of CuPy) change.  The
implementations then take and return NumPy arrays, and the backend registers
with ``native="numpy"`` (decided when this module is first imported).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

from ..registry import (Backend, BackendUnavailableError, register, register_backend,
                        register_chooser)

EMULATE_ENV = "FASTCONV_CUPY_EMULATE"
#: Cap on the im2col workspace (bytes); the batch is processed in chunks that fit.
#: Override with the environment variable FASTCONV_CUPY_IM2COL_WORKSPACE (bytes) or by
#: assigning this attribute.  A single image whose columns exceed it is refused
#: by "im2col" ("auto" then picks "implicit-gemm", which needs no workspace).
IM2COL_WORKSPACE_BYTES = int(os.environ.get("FASTCONV_CUPY_IM2COL_WORKSPACE", 256 * 2**20))
#: Options given to NVRTC (CuPy adds -arch for the current device).
NVRTC_OPTIONS = ("-std=c++17",)

_INT32_MAX = 2**31 - 1
_CTYPE = {"float32": "float", "float64": "double"}
_VEC = {"float32": 4, "float64": 2}           # elements per 16-byte vector load
_PAD_MODES = {"zeros": 0, "reflect": 1, "replicate": 2, "circular": 3}
# direct conv tile: (BX, BY) threads, RW columns per thread, COB channels per thread
# (RW = 1 when the RW = 2 patch of a large stride/dilation does not fit shared memory)
_DIRECT_BX, _DIRECT_BY = 16, 8
_DIRECT_RWS = (2, 1)
_DIRECT_COBS = (4, 1)
_DIRECT_PATCH_CAP = {"float32": 4096, "float64": 2048}   # 16 KB of shared memory
_DIRECT_WCAP = 128                                        # FC_DIRECT_WCAP in conv2d.cu
_GEMM_BM = _GEMM_BN = 64
_GEMM_THREADS = 256
_ELEMWISE_THREADS = 256


def emulated() -> bool:
    """True when FASTCONV_CUPY_EMULATE=1: run the .cu kernels on the CPU emulator."""
    return os.environ.get(EMULATE_ENV) == "1"


def _probe():
    if emulated():
        from .. import cudaemu
        return cudaemu.unavailable_reason()
    return _gpu_unavailable_reason()


@functools.lru_cache(maxsize=None)
def _gpu_unavailable_reason():
    """None if CuPy sees a CUDA device, else why not (never raises, never hangs)."""
    try:
        import cupy
    except Exception as exc:  # noqa: BLE001 (any import failure means "not here")
        return f"CuPy is not installed ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 (no driver, wrong driver, no device)
        return f"no usable CUDA device or driver ({type(exc).__name__}: {exc})"
    if count < 1:
        return "no CUDA device found"
    return None


BACKEND = register_backend(Backend(
    name="cupy", device="cuda", native="numpy" if emulated() else "cupy",
    description="CUDA C kernels (kernels/*.cu) compiled at run time by CuPy/NVRTC"
                + (" [EMULATED on the CPU: FASTCONV_CUPY_EMULATE=1]" if emulated() else ""),
    probe=_probe, dtypes=("float32", "float64")))


# --------------------------------------------------------------------------
# runtime: CuPy on a GPU, or the CPU emulator
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class _Runtime:
    xp: object            # cupy or numpy
    module_class: type    # cupy.RawModule or cudaemu.RawModule
    device_key: tuple     # memoization key of compiled modules

    def ptr(self, a) -> int:
        return int(a.data.ptr) if self.xp is not np else int(a.ctypes.data)


def _runtime() -> _Runtime:
    if emulated():
        from .. import cudaemu
        why = cudaemu.unavailable_reason()
        if why is not None:
            raise BackendUnavailableError(f"cupy (emulated): {why}")
        return _Runtime(np, cudaemu.RawModule,
                        ("emulator", cudaemu.sanitizer_mode(),
                         os.environ.get("FASTCONV_CUDAEMU_THREADS")))
    why = _gpu_unavailable_reason()
    if why is not None:
        raise BackendUnavailableError(f"backend 'cupy' is not available here: {why} (set "
                                      f"{EMULATE_ENV}=1 to run its kernels on the CPU "
                                      f"emulator)")
    import cupy
    return _Runtime(cupy, cupy.RawModule, ("cuda", cupy.cuda.Device().id))


# --------------------------------------------------------------------------
# sources, specializations, memoized modules
# --------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def kernel_source(filename: str) -> str:
    """The .cu file with its local includes inlined (so every cache key covers them)."""
    from ..kernels import source_path

    def expand(name, seen):
        path = source_path(name)
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        out = [f'#line 1 "{name}"']
        for no, line in enumerate(lines, 1):
            stripped = line.strip()
            if stripped.startswith('#include "'):
                inc = stripped.split('"')[1]
                if inc not in seen:
                    seen.add(inc)
                    out.append(expand(inc, seen))
                out.append(f'#line {no + 1} "{name}"')
            elif stripped == "#pragma once":
                out.append("")
            else:
                out.append(line)
        return "\n".join(out)
    return expand(filename, {filename}) + "\n"


def direct_name(t, pad, rw, cob):
    return (f"conv2d_direct<{t}, {pad}, {_DIRECT_BX}, {_DIRECT_BY}, {rw}, {cob}, "
            f"{_DIRECT_PATCH_CAP['float32' if t == 'float' else 'float64']}>")


def im2col_name(t, pad):
    return f"conv2d_im2col<{t}, {pad}>"


def gemm_name(t, veca, vecb):
    return f"conv2d_gemm<{t}, {veca}, {vecb}>"


def implicit_gemm_name(t, pad, veca):
    return f"conv2d_implicit_gemm<{t}, {pad}, {veca}>"


#: Kernels compiled together (one RawModule per file, dtype and group), so a first call
#: compiles only its algorithm's specializations.
MODULE_GROUPS = {"conv2d_direct": "direct", "conv2d_im2col": "im2col", "conv2d_gemm": "im2col",
                 "conv2d_implicit_gemm": "implicit-gemm"}


def module_group(name: str) -> str:
    return MODULE_GROUPS.get(name.split("<", 1)[0], "all")


def specializations(filename: str, dtype: str, group: str | None = None) -> list[str]:
    """Every name expression the host code may launch from ``filename`` for ``dtype``
    (only those of module ``group`` if given)."""
    names = _all_specializations(filename, dtype)
    return names if group is None else [n for n in names if module_group(n) == group]


def _all_specializations(filename: str, dtype: str) -> list[str]:
    t, v = _CTYPE[dtype], _VEC[dtype]
    if filename == "conv2d.cu":
        names = []
        for pad in range(4):
            names += [direct_name(t, pad, rw, cob) for rw in _DIRECT_RWS
                      for cob in _DIRECT_COBS]
            names.append(im2col_name(t, pad))
            names += [implicit_gemm_name(t, pad, va) for va in (1, v)]
        names += [gemm_name(t, va, vb) for va in (1, v) for vb in (1, v)]
        return names
    if filename == "conv_transpose2d.cu":
        return [f"conv_transpose2d_gather<{t}, {cob}>" for cob in (4, 1)]
    if filename == "pool2d.cu":
        return ([f"max_pool2d<{t}, {i}>" for i in (0, 1)] + [f"avg_pool2d<{t}>",
                f"adaptive_avg_pool2d<{t}>"] + [f"adaptive_max_pool2d<{t}, {i}>" for i in (0, 1)])
    raise ValueError(f"unknown kernel source {filename!r}")


SOURCES = ("conv2d.cu", "conv_transpose2d.cu", "pool2d.cu")


@functools.lru_cache(maxsize=None)
def _module(device_key, module_class, filename: str, dtype: str, group: str):
    return module_class(code=kernel_source(filename), options=NVRTC_OPTIONS,
                        name_expressions=specializations(filename, dtype, group))


def _kernel(rt: _Runtime, filename: str, dtype: str, name: str):
    """Memoized per device (and emulator flavour): compile once, fetch by name."""
    return _module(rt.device_key, rt.module_class, filename, dtype,
                   module_group(name)).get_function(name)


# --------------------------------------------------------------------------
# launch helpers
# --------------------------------------------------------------------------
def _i32(*values):
    return tuple(np.int32(v) for v in values)


def _require_int32(op: str, **sizes):
    for name, value in sizes.items():
        if value > _INT32_MAX:
            raise ValueError(f"{op}: {name}={value} exceeds the 32-bit range the cupy kernels "
                             f"keep it in (2^31-1)")


def _grid_1d(total: int) -> tuple:
    return (max(1, min(-(-total // _ELEMWISE_THREADS), 65535 * 32)), 1, 1)


def _check_grid(op: str, grid):
    if grid[0] > _INT32_MAX or grid[1] > 65535 or grid[2] > 65535:
        raise ValueError(f"{op}: launch grid {grid} exceeds CUDA's limits "
                         f"(x < 2^31, y and z <= 65535)")


def _prepare(rt, *arrays):
    return [None if a is None else rt.xp.ascontiguousarray(a) for a in arrays]


def _aligned(rt, a, vec) -> bool:
    return rt.ptr(a) % (vec * a.dtype.itemsize) == 0


def _conv_ints(p):
    pt, _pb, pl, _pr = p.padding
    return (p.n, p.c_in, p.h, p.w, p.c_out, p.kh, p.kw, p.h_out, p.w_out, p.stride[0],
            p.stride[1], pt, pl, p.dilation[0], p.dilation[1], p.groups)


def _check_conv_sizes(op, p):
    _require_int32(op, plane=p.h * p.w, output_plane=p.h_out * p.w_out,
                   K=(p.c_in // p.groups) * p.kh * p.kw)


def _int32_reason(p):
    """Why sizes the kernels keep in 32 bits do not fit, or None (a ``supports`` rule,
    so plan() and "auto" refuse such cases before any array is copied to the device)."""
    sizes = {"input plane": p.h * p.w, "output plane": p.h_out * p.w_out}
    if p.op in ("conv2d", "conv_transpose2d"):
        sizes["reduction length C/G*kh*kw"] = (p.c_in // p.groups) * p.kh * p.kw
    for name, value in sizes.items():
        if value > _INT32_MAX:
            return (f"one {name} has {value} elements, past the 32-bit range (2^31-1) the "
                    f"cupy kernels keep it in")
    return None


def _gemm_grid_reason(p):
    cog = p.c_out // p.groups
    grid = (-(-(p.n * p.h_out * p.w_out) // _GEMM_BN), -(-cog // _GEMM_BM), p.groups)
    if grid[0] > _INT32_MAX or grid[1] > 65535 or grid[2] > 65535:
        return f"the GEMM launch grid {grid} exceeds CUDA's limits (x < 2^31, y, z <= 65535)"
    return None


def _all_of(*rules):
    """A ``supports`` rule: the first reason any of ``rules`` gives, else None."""
    def supports(p):
        for rule in rules:
            reason = rule(p)
            if reason is not None:
                return reason
        return None
    return supports


# --------------------------------------------------------------------------
# conv2d
# --------------------------------------------------------------------------
def _direct_geometry(p, rw):
    patch_h = (_DIRECT_BY - 1) * p.stride[0] + (p.kh - 1) * p.dilation[0] + 1
    patch_w = (_DIRECT_BX * rw - 1) * p.stride[1] + (p.kw - 1) * p.dilation[1] + 1
    return patch_h, patch_w


def _direct_rw(p):
    """Columns per thread of the direct kernel: the widest whose patch fits, else None."""
    cap = _DIRECT_PATCH_CAP.get(p.dtype.name if p.dtype is not None else "float64",
                                _DIRECT_PATCH_CAP["float64"])
    for rw in _DIRECT_RWS:
        patch_h, patch_w = _direct_geometry(p, rw)
        if patch_h * patch_w <= cap:
            return rw
    return None


def _direct_supports(p):
    reason = _int32_reason(p)
    if reason is not None:
        return reason
    if _direct_rw(p) is None:
        patch_h, patch_w = _direct_geometry(p, _DIRECT_RWS[-1])
        cap = _DIRECT_PATCH_CAP.get(p.dtype.name if p.dtype is not None else "float64",
                                    _DIRECT_PATCH_CAP["float64"])
        return (f"the input patch of one tile ({patch_h}x{patch_w}) exceeds the "
                f"{cap}-element shared-memory tile (large stride or dilated kernel)")
    if p.kh * p.kw > _DIRECT_WCAP:
        return f"kernel {p.kh}x{p.kw} has more than {_DIRECT_WCAP} taps"
    rw, cog = _direct_rw(p), p.c_out // p.groups
    blocks = (-(-p.w_out // (_DIRECT_BX * rw)) * -(-p.h_out // _DIRECT_BY) * p.groups
              * -(-cog // (4 if cog >= 4 else 1)))
    if blocks > _INT32_MAX:
        return f"{blocks} thread blocks exceed CUDA's grid limit (2^31-1)"
    return None


@register("conv2d", "cupy", "direct",
          "CUDA C: shared-memory input patch per tile, up to 4 channels x 2 columns per "
          "thread",
          supports=_direct_supports)
def conv2d_direct(x, weight, bias, p):
    rt = _runtime()
    x, weight, bias = _prepare(rt, x, weight, bias)
    _check_conv_sizes("conv2d", p)
    dtype = x.dtype.name
    y = rt.xp.empty(p.output_shape, dtype=x.dtype)
    cog = p.c_out // p.groups
    cob = 4 if cog >= 4 else 1
    rw = _direct_rw(p)
    if rw is None or p.kh * p.kw > _DIRECT_WCAP:
        raise BackendUnavailableError(f"conv2d: algorithm 'direct' cannot run this case: "
                                      f"{_direct_supports(p)}")
    patch_h, patch_w = _direct_geometry(p, rw)
    tiles_w = -(-p.w_out // (_DIRECT_BX * rw))
    tiles_h = -(-p.h_out // _DIRECT_BY)
    grid = (tiles_w * tiles_h * p.groups * -(-cog // cob), min(p.n, 65535), 1)
    _check_grid("conv2d", grid)
    kern = _kernel(rt, "conv2d.cu", dtype,
                   direct_name(_CTYPE[dtype], _PAD_MODES[p.padding_mode], rw, cob))
    kern(grid, (_DIRECT_BX, _DIRECT_BY, 1),
         (x, weight, weight if bias is None else bias, y, *_i32(*_conv_ints(p)),
          np.int32(bias is not None), *_i32(tiles_w, tiles_h, patch_h, patch_w)))
    return y


def im2col_workspace_bytes(p, images: int = 1) -> int:
    """Bytes of the im2col workspace for ``images`` images: G * K * images*Ho*Wo."""
    k = (p.c_in // p.groups) * p.kh * p.kw
    return p.groups * k * images * p.h_out * p.w_out * np.dtype(p.dtype or "float64").itemsize


def _im2col_supports(p):
    reason = _int32_reason(p) or _gemm_grid_reason(p)
    if reason is not None:
        return reason
    need = im2col_workspace_bytes(p)
    if need > IM2COL_WORKSPACE_BYTES:
        return (f"one image needs a {need / 2**20:.1f} MiB im2col workspace, above the "
                f"{IM2COL_WORKSPACE_BYTES / 2**20:.1f} MiB limit "
                f"(cupy_backend.IM2COL_WORKSPACE_BYTES)")
    return None


def _gemm_grid(op, ncols, p):
    grid = (-(-ncols // _GEMM_BN), -(-(p.c_out // p.groups) // _GEMM_BM), p.groups)
    _check_grid(op, grid)
    return grid


@register("conv2d", "cupy", "im2col",
          "CUDA C: im2col kernel + 64x64 register-blocked GEMM (capped workspace, batch "
          "chunks)", supports=_im2col_supports)
def conv2d_im2col(x, weight, bias, p):
    rt = _runtime()
    x, weight, bias = _prepare(rt, x, weight, bias)
    _check_conv_sizes("conv2d", p)
    reason = _im2col_supports(p)
    if reason is not None:
        raise BackendUnavailableError(f"conv2d: algorithm 'im2col' cannot run this case: "
                                      f"{reason}")
    dtype, t, v = x.dtype.name, _CTYPE[x.dtype.name], _VEC[x.dtype.name]
    y = rt.xp.empty(p.output_shape, dtype=x.dtype)
    k = (p.c_in // p.groups) * p.kh * p.kw
    plane = p.h_out * p.w_out
    chunk = max(1, min(p.n, IM2COL_WORKSPACE_BYTES // im2col_workspace_bytes(p)))
    cols = rt.xp.empty(p.groups * k * chunk * plane, dtype=x.dtype)  # (G, K, chunk*P)
    veca = v if k % v == 0 and _aligned(rt, weight, v) else 1
    im2col = _kernel(rt, "conv2d.cu", dtype, im2col_name(t, _PAD_MODES[p.padding_mode]))
    pt, _pb, pl, _pr = p.padding
    for n0 in range(0, p.n, chunk):
        nb = min(chunk, p.n - n0)
        xs, ys = x[n0:n0 + nb], y[n0:n0 + nb]   # contiguous slices of the batch
        ncols = nb * plane
        im2col(_grid_1d(p.groups * k * ncols), (_ELEMWISE_THREADS, 1, 1),
               (xs, cols, *_i32(nb, p.c_in, p.h, p.w, p.kh, p.kw, p.h_out, p.w_out,
                                p.stride[0], p.stride[1], pt, pl, p.dilation[0],
                                p.dilation[1], p.groups)))
        vecb = v if ncols % v == 0 and _aligned(rt, cols, v) else 1
        gemm = _kernel(rt, "conv2d.cu", dtype, gemm_name(t, veca, vecb))
        gemm(_gemm_grid("conv2d", ncols, p), (_GEMM_THREADS, 1, 1),
             (weight, cols, weight if bias is None else bias, ys,
              *_i32(p.c_out, p.groups, k, p.h_out, p.w_out, nb, bias is not None)))
    return y


@register("conv2d", "cupy", "implicit-gemm",
          "CUDA C: implicit GEMM (im2col gathered inside the GEMM's tile loads), no "
          "workspace", supports=_all_of(_int32_reason, _gemm_grid_reason))
def conv2d_implicit_gemm(x, weight, bias, p):
    rt = _runtime()
    x, weight, bias = _prepare(rt, x, weight, bias)
    _check_conv_sizes("conv2d", p)
    dtype, t, v = x.dtype.name, _CTYPE[x.dtype.name], _VEC[x.dtype.name]
    y = rt.xp.empty(p.output_shape, dtype=x.dtype)
    k = (p.c_in // p.groups) * p.kh * p.kw
    veca = v if k % v == 0 and _aligned(rt, weight, v) else 1
    kern = _kernel(rt, "conv2d.cu", dtype,
                   implicit_gemm_name(t, _PAD_MODES[p.padding_mode], veca))
    kern(_gemm_grid("conv2d", p.n * p.h_out * p.w_out, p), (_GEMM_THREADS, 1, 1),
         (x, weight, weight if bias is None else bias, y, *_i32(*_conv_ints(p)),
          np.int32(bias is not None)))
    return y


@register_chooser("conv2d", "cupy")
def _choose_conv2d(p):
    # Untuned (no GPU measurement yet): the GEMMs pay off once both the output
    # channels per group and the reduction length fill a 64x64x16 tile; depthwise and
    # small layers stay on the direct kernel.
    cog, k = p.c_out // p.groups, (p.c_in // p.groups) * p.kh * p.kw
    if cog >= 32 and k >= 64:
        return "implicit-gemm"
    return "direct" if _direct_supports(p) is None else "implicit-gemm"


# --------------------------------------------------------------------------
# conv_transpose2d
# --------------------------------------------------------------------------
@register("conv_transpose2d", "cupy", "direct",
          "CUDA C: gather form (each output sums its own taps: deterministic, no atomics)",
          supports=_int32_reason)
def conv_transpose2d_direct(x, weight, bias, p):
    rt = _runtime()
    x, weight, bias = _prepare(rt, x, weight, bias)
    _require_int32("conv_transpose2d", plane=p.h * p.w, output_plane=p.h_out * p.w_out)
    dtype = x.dtype.name
    y = rt.xp.empty(p.output_shape, dtype=x.dtype)
    cog = p.c_out // p.groups
    cob = 4 if cog >= 4 else 1
    total = p.n * p.groups * -(-cog // cob) * p.h_out * p.w_out
    kern = _kernel(rt, "conv_transpose2d.cu", dtype,
                   f"conv_transpose2d_gather<{_CTYPE[dtype]}, {cob}>")
    kern(_grid_1d(total), (_ELEMWISE_THREADS, 1, 1),
         (x, weight, weight if bias is None else bias, y,
          *_i32(p.n, p.c_in, p.h, p.w, p.c_out, p.kh, p.kw, p.h_out, p.w_out, p.stride[0],
                p.stride[1], p.padding[0], p.padding[1], p.dilation[0], p.dilation[1],
                p.groups, bias is not None)))
    return y


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------
def _pool_outputs(rt, p, x):
    y = rt.xp.empty(p.output_shape, dtype=x.dtype)
    idx = rt.xp.empty(p.output_shape if p.return_indices else (1,), dtype=np.int64)
    return y, idx


@register("max_pool2d", "cupy", "direct",
          "CUDA C: one thread per output, PyTorch's NaN/tie/index rule",
          supports=_int32_reason)
def max_pool2d(x, p):
    rt = _runtime()
    (x,) = _prepare(rt, x)
    _require_int32("max_pool2d", plane=p.h * p.w, output_plane=p.h_out * p.w_out)
    y, idx = _pool_outputs(rt, p, x)
    kern = _kernel(rt, "pool2d.cu", x.dtype.name,
                   f"max_pool2d<{_CTYPE[x.dtype.name]}, {int(p.return_indices)}>")
    kern(_grid_1d(p.n * p.c * p.h_out * p.w_out), (_ELEMWISE_THREADS, 1, 1),
         (x, y, idx, np.int64(p.n * p.c),
          *_i32(p.h, p.w, p.h_out, p.w_out, *p.kernel, *p.stride, *p.padding, *p.dilation)))
    return (y, idx) if p.return_indices else y


@register("avg_pool2d", "cupy", "direct",
          "CUDA C: one thread per output, ATen's divisor rule, double accumulation",
          supports=_int32_reason)
def avg_pool2d(x, p):
    rt = _runtime()
    (x,) = _prepare(rt, x)
    _require_int32("avg_pool2d", plane=p.h * p.w, output_plane=p.h_out * p.w_out)
    y = rt.xp.empty(p.output_shape, dtype=x.dtype)
    kern = _kernel(rt, "pool2d.cu", x.dtype.name, f"avg_pool2d<{_CTYPE[x.dtype.name]}>")
    kern(_grid_1d(p.n * p.c * p.h_out * p.w_out), (_ELEMWISE_THREADS, 1, 1),
         (x, y, np.int64(p.n * p.c),
          *_i32(p.h, p.w, p.h_out, p.w_out, *p.kernel, *p.stride, *p.padding,
                p.count_include_pad, p.divisor_override or 0)))
    return y


@register("adaptive_avg_pool2d", "cupy", "direct",
          "CUDA C: one thread per output window, double accumulation",
          supports=_int32_reason)
def adaptive_avg_pool2d(x, p):
    rt = _runtime()
    (x,) = _prepare(rt, x)
    _require_int32("adaptive_avg_pool2d", plane=p.h * p.w, output_plane=p.h_out * p.w_out)
    y = rt.xp.empty(p.output_shape, dtype=x.dtype)
    kern = _kernel(rt, "pool2d.cu", x.dtype.name,
                   f"adaptive_avg_pool2d<{_CTYPE[x.dtype.name]}>")
    kern(_grid_1d(p.n * p.c * p.h_out * p.w_out), (_ELEMWISE_THREADS, 1, 1),
         (x, y, np.int64(p.n * p.c), *_i32(p.h, p.w, p.h_out, p.w_out)))
    return y


@register("adaptive_max_pool2d", "cupy", "direct",
          "CUDA C: one thread per output window, PyTorch's NaN/tie/index rule",
          supports=_int32_reason)
def adaptive_max_pool2d(x, p):
    rt = _runtime()
    (x,) = _prepare(rt, x)
    _require_int32("adaptive_max_pool2d", plane=p.h * p.w, output_plane=p.h_out * p.w_out)
    y, idx = _pool_outputs(rt, p, x)
    kern = _kernel(rt, "pool2d.cu", x.dtype.name,
                   f"adaptive_max_pool2d<{_CTYPE[x.dtype.name]}, {int(p.return_indices)}>")
    kern(_grid_1d(p.n * p.c * p.h_out * p.w_out), (_ELEMWISE_THREADS, 1, 1),
         (x, y, idx, np.int64(p.n * p.c), *_i32(p.h, p.w, p.h_out, p.w_out)))
    return (y, idx) if p.return_indices else y
