"""Backend "numba": CPU kernels compiled with Numba ``@njit`` (``kernels/cpu_*.py``).

Imports nothing but NumPy at module level: the kernels (and Numba) are
imported the first time an implementation runs.  Every kernel is
``@njit(cache=True)``: compiled once per dtype (float32, float64) and reused
from Numba's on-disk cache by later processes.

Algorithms
----------
conv2d
    ``direct``  no workspace beyond a few rows per worker
                (``kernels/cpu_conv.py``): depthwise / single-channel at
                stride 1 -> version 9 (3x3 "same", input read in place) or 5
                (ring of padded rows); otherwise version 1 (row-blocked, 2
                output channels x 3 fused taps per inner loop).
    ``implicit-gemm``  the register-blocked direct convolution of
                ``kernels/cpu_igemm.py``: stride-phase planes of the input in
                a workspace capped like im2col's, an LLVM-IR microkernel
                keeping 4x24 / 6x16 outputs in AVX registers over the
                reduction; host side in :mod:`fastconv.wrappers.numba_igemm`.
                When one image's planes exceed the cap: version 1.
    ``im2col``  im2col into a capped workspace + BLAS GEMM (NumPy matmul ->
                OpenBLAS).  At stride 1 the "wide" form (:func:`wide_im2col_images`)
                copies whole padded planes instead of output rows.  1x1
                stride-1 unpadded convolutions skip im2col (the input already
                is the column matrix).  The workspace never exceeds
                :data:`IM2COL_WORKSPACE_BYTES` (chunks over images, output
                rows, then output columns; see :func:`im2col_chunk`).  The
                Numba steps run on the calling thread, OpenBLAS parallelizes
                the GEMM (:data:`GEMM_PATH_SERIAL_FILL`).
    ``auto``    :func:`choose_conv2d`.
conv_transpose2d
    ``direct``  gather form, deterministic: one register-blocked stride-1
                convolution per output phase (sub-pixel decomposition, the
                conv2d direct microkernel); depthwise-like layers and inputs
                past the workspace cap: each output row sums its input rows,
                no workspace (slow: a fallback).
    ``gemm``    W^T @ x (BLAS) into a capped workspace, then a deterministic
                col2im (at column stride >= 2 through stride-phase rows,
                kernel version 8: contiguous adds instead of interleaved ones).
    ``auto``    :func:`choose_conv_transpose2d`.
pooling
    ``direct``  separable kernels (``kernels/cpu_pool.py`` version 2: the
                window's rows folded into one row by vector loops, then the
                row folded per output; version 1 for dilated windows that
                can miss the input).

Padding modes other than zeros never copy the whole padded input: the
kernels read through an index map per axis (``padding_index_map``).

Workspaces are cached per Python thread (``threading.local``) and reused
across calls: fresh large allocations cost a page fault per 4 KiB here.
Calls from several Python threads at once are safe: each thread has its own
workspaces, and Numba's OpenMP/TBB layers accept concurrent parallel regions
(with the ``workqueue`` layer, which does not, calls are serialized by a lock).
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import threading
from collections import Counter

import numpy as np

from .. import reference
from ..memory import allocate, contiguous
from ..registry import Backend, register, register_backend, register_chooser

__all__ = ["IM2COL_WORKSPACE_BYTES", "im2col_chunk", "wide_im2col_images", "wide_rows_per_block", "conv_transpose2d_chunk", "CONVT_PHASE_BLOCK_BYTES", "choose_conv2d", "choose_conv_transpose2d",
           "PATH_COUNTS"]

#: Largest im2col / col2im workspace in bytes (per calling thread).  Set
#: ``FASTCONV_IM2COL_WORKSPACE_MB`` in the environment, or assign this name, to change it.
IM2COL_WORKSPACE_BYTES = int(float(os.environ.get("FASTCONV_IM2COL_WORKSPACE_MB", "64"))
                             * (1 << 20))

#: Target size of one block of columns + GEMM result in the "wide" im2col path
#: (single images are cut into row blocks of about this size so the columns are
#: still in cache when the GEMM reads them).
WIDE_BLOCK_BYTES = int(os.environ.get("FASTCONV_WIDE_BLOCK_KB", "16384")) * 1024

#: Output pixels per image below which im2col batches several images into one
#: GEMM even when that needs an extra transposed copy of the result (strided
#: im2col path only; the stride-1 "wide" path batches whatever fits, as it
#: copies its result out anyway).  Few large steps also matter on a busy
#: machine: every switch between Numba's and OpenBLAS's thread pools can cost
#: a scheduler time slice when the cores are oversubscribed.
IM2COL_BATCH_PIXELS = 1 << 16

#: How often each code path ran (tests check that fast paths are really taken).
PATH_COUNTS: Counter = Counter()


def _probe():
    try:
        import numba  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return f"numba cannot be imported ({type(exc).__name__}: {exc})"
    return None


register_backend(Backend(
    name="numba", device="cpu", native="numpy",
    description="CPU kernels compiled with Numba @njit (parallel, cached): direct, "
                "im2col + OpenBLAS GEMM, row-vectorized pooling",
    probe=_probe))


# --------------------------------------------------------------------------
# lazy kernel modules, workspaces, thread safety
# --------------------------------------------------------------------------
_modules: dict = {}
_tls = threading.local()
_serial_lock = threading.Lock()


def _kernel_module(name: str):
    """``fastconv.kernels.<name>``, also from a source checkout run at the repository root.

    Run from the repository root, ``./fastconv`` shadows the installed package
    (whose ``fastconv.kernels`` maps to ``./kernels``); then the folder is
    loaded by path under the same name.
    """
    mod = _modules.get(name)
    if mod is not None:
        return mod
    full = f"fastconv.kernels.{name}"
    try:
        mod = importlib.import_module(full)
    except ModuleNotFoundError as exc:
        if exc.name not in ("fastconv.kernels", full):
            raise
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        pkg_dir = os.path.join(root, "kernels")
        if "fastconv.kernels" not in sys.modules:
            spec = importlib.util.spec_from_file_location(
                "fastconv.kernels", os.path.join(pkg_dir, "__init__.py"),
                submodule_search_locations=[pkg_dir])
            pkg = importlib.util.module_from_spec(spec)
            sys.modules["fastconv.kernels"] = pkg
            spec.loader.exec_module(pkg)
        mod = importlib.import_module(full)
    _modules[name] = mod
    return mod


def _conv():
    return _kernel_module("cpu_conv")


def _pool():
    return _kernel_module("cpu_pool")


def _threads() -> int:
    import numba
    return numba.get_num_threads()


#: Run the Numba steps of the im2col / GEMM paths on the calling thread only
#: (OpenBLAS parallelizes the GEMMs).  Alternating between Numba's and
#: OpenBLAS's thread pools makes both spin against each other on 2 cores:
#: measured here, 2-thread im2col ran slower than 1-thread im2col.
GEMM_PATH_SERIAL_FILL = os.environ.get("FASTCONV_GEMM_PARALLEL_FILL", "0") != "1"


@contextlib.contextmanager
def _gemm_path_region():
    """A region for the GEMM-based paths: Numba kernels single-threaded (see above)."""
    import numba
    if not GEMM_PATH_SERIAL_FILL:
        with _parallel_region():
            yield
        return
    saved = numba.get_num_threads()
    numba.set_num_threads(1)  # thread-local in Numba: other callers are unaffected
    try:
        with _parallel_region():
            yield
    finally:
        numba.set_num_threads(saved)


@contextlib.contextmanager
def _parallel_region():
    """Serialize kernel launches only under Numba's non-threadsafe workqueue layer."""
    import numba
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet: the layer is not chosen
        layer = None
    if layer in (None, "workqueue"):
        with _serial_lock:
            yield
    else:
        yield


def _workspace(name: str, shape, dtype) -> np.ndarray:
    """A buffer of ``shape`` reused across calls by this Python thread (grown as needed)."""
    size = int(np.prod(shape))
    bufs = getattr(_tls, "bufs", None)
    if bufs is None:
        bufs = _tls.bufs = {}
    key = (name, np.dtype(dtype).str)
    buf = bufs.get(key)
    if buf is None or buf.size < size:
        buf = allocate((max(size, 1),), dtype, f"{name} workspace")
        bufs[key] = buf
    return buf[:size].reshape(shape)


def _bias_or_dummy(bias, n, dtype):
    if bias is None:
        return np.zeros(n, dtype=dtype), False
    return _kernel_array(bias, "bias"), True


def _kernel_array(a, what):
    """``a`` if C-contiguous and writeable, else a copy that is (allocated by name).

    Numba types read-only arrays apart and compiles every kernel once more for
    them (read-only inputs: ``np.broadcast_to`` results, read-only memmaps):
    20-60 s per pooling kernel on first use.  A read-only input costs one copy
    instead; the kernels never write their inputs either way.
    """
    if a.flags.writeable:
        return contiguous(a, f"{what} (C-contiguous copy)")
    out = allocate(a.shape, a.dtype, f"{what} (writeable copy of a read-only array)")
    np.copyto(out, a)
    return out


def _input_and_output(x, p):
    """The C-contiguous, writeable input and a fresh output, allocated by name (validate, allocate)."""
    x = _kernel_array(x, f"{p.op} input")
    return x, allocate(p.output_shape, x.dtype, f"{p.op} output")


def _conv_operands(x, weight, bias, p):
    """(x, w, bias or dummy, has_bias, output) for the convolution kernels."""
    x, out = _input_and_output(x, p)
    w = _kernel_array(weight, f"{p.op} weight")
    b, has_bias = _bias_or_dummy(bias, p.c_out, x.dtype)
    return x, w, b, has_bias, out


def _indices_or_dummy(p):
    """int64 indices shaped like the output, or a 1-element dummy when none are asked for."""
    if p.return_indices:
        return allocate(p.output_shape, np.int64, f"{p.op} indices")
    return np.empty((1, 1, 1, 1), dtype=np.int64)


def _row_blocks(rows: int, tasks_without: int, threads: int) -> int:
    """Output rows per task so that there are at least ~8 tasks per thread."""
    want = max(1, -(-8 * threads // max(1, tasks_without)))
    nblocks = min(rows, want)
    return -(-rows // nblocks)


# --------------------------------------------------------------------------
# conv2d
# --------------------------------------------------------------------------
def _maps(p):
    """(row map, column map) of ``padding_index_map``, memoized: the kernels only read them,
    and building both cost about 20 us per call (a fifth of a call on a 320x280 image)."""
    pt, pb, pl, pr = p.padding
    key = (p.h, p.w, pt, pb, pl, pr, p.padding_mode)
    maps = _MAPS.get(key)
    if maps is None:
        k = _conv()
        maps = (k.padding_index_map(p.h, pt, pb, p.padding_mode),
                k.padding_index_map(p.w, pl, pr, p.padding_mode))
        if len(_MAPS) >= 256:
            _MAPS.clear()
        _MAPS[key] = maps
    return maps


_MAPS: dict = {}


def _is_plane_case(p) -> bool:
    """Depthwise or single-channel at stride 1: ``conv2d_plane_same`` / ``conv2d_plane_direct``."""
    return p.c_in // p.groups == 1 and p.stride == (1, 1)


#: Output elements per (plane, row band) unit of ``conv2d_plane_same`` (~16 KiB of float32).
PLANE_BAND_ELEMS = 4096
#: ``conv2d_plane_same`` only for rows up to this wide: it wins where the ring kernel's
#: per-row overhead dominates (MobileNet 112 wide: 0.84-0.86x the time); on the 1024^2
#: 3x3 filter it measured 1.04-1.18x (quiet machine), so wide images keep version 5.
PLANE_SAME_MAX_W = 256


def _is_plane_same_case(p) -> bool:
    """3x3 plane case with output rows as wide as the input rows (e.g. "same" padding), at
    least one column whose taps all lie inside the input, rows up to PLANE_SAME_MAX_W:
    ``conv2d_plane_same`` (v9).  Other kernel sizes also run there, but their per-kernel-row
    passes measured no faster than version 5 (5x5 filters: 1.1x), so they stay on it."""
    return (p.kh == 3 and p.kw == 3 and p.w_out == p.w and p.w > 2 * p.dilation[1]
            and p.w <= PLANE_SAME_MAX_W)


#: Depthwise-like layers (one input channel per group, stride 1) with fewer
#: output channels per group than this go to ``direct`` under "auto"; with more
#: (LeNet-5 C1: 6) the implicit GEMM reuses each input load across channels
#: (C1 on one core: 1.45 ms against 1.91 for the former flat direct kernel).
IGEMM_MIN_GROUP_OUT = 4


def _igemm():
    return _kernel_module("cpu_igemm")


def igemm_plan(p, itemsize: int, cap: int | None = None):
    """The register-blocked direct kernel's plan for ``p`` (None: one image exceeds the cap)."""
    from . import numba_igemm
    cap = IM2COL_WORKSPACE_BYTES if cap is None else cap
    return numba_igemm.plan(p, itemsize, _threads(), cap)


@register("conv2d", "numba", "direct",
          "register-blocked direct convolution without workspace (2 output channels x "
          "output row per inner loop, 3 taps fused for kw=3); depthwise/single-channel "
          "stride-1 3x3 'same' layers up to 256 wide read the input in place (v9); other "
          "depthwise-like stride-1 layers use a ring of padded rows (v5)")
def conv2d_direct(x, weight, bias, p):
    k = _conv()
    x, w, b, has_bias, out = _conv_operands(x, weight, bias, p)
    threads = _threads()
    rmap, cmap = _maps(p)
    if _is_plane_case(p):
        if _is_plane_same_case(p):
            # version 9: the input read in place, one contiguous run of (plane, row band)
            # units per thread; bands of ~PLANE_BAND_ELEMS outputs
            band = max(1, PLANE_BAND_ELEMS // p.w_out)
            units = p.n * p.c_out * (-(-p.h_out // band))
            nworkers = max(1, min(units, threads))
            zrow = np.zeros(p.w, dtype=x.dtype)
            PATH_COUNTS["conv2d/direct/plane"] += 1       # the plane-case branch, either kernel
            PATH_COUNTS["conv2d/direct/plane_same"] += 1
            with _parallel_region():
                k.conv2d_plane_same(x, w, b, out, rmap, cmap, p.padding[0], p.padding[2],
                                    p.dilation[0], p.dilation[1], band, nworkers, zrow)
            return out
        rows = _row_blocks(p.h_out, p.n * p.c_out, threads)
        total = p.n * p.c_out * (-(-p.h_out // rows))
        nworkers = max(1, min(total, 4 * threads))
        span = p.dilation[0] * (p.kh - 1) + 1
        scratch = _workspace("plane_ring", (nworkers, span * cmap.shape[0]), x.dtype)
        PATH_COUNTS["conv2d/direct/plane"] += 1
        with _parallel_region():
            k.conv2d_plane_direct(x, w, b, out, rmap, cmap, p.padding[2], p.dilation[0],
                                  p.dilation[1], rows, nworkers, scratch)
        return out
    _direct_rows(k, x, w, b, has_bias, out, p, rmap, cmap, threads)
    return out


def _direct_rows(k, x, w, b, has_bias, out, p, rmap, cmap, threads):
    """Version 1: row-blocked, no workspace beyond one padded row per worker."""
    og = p.c_out // p.groups
    tasks = p.n * p.groups * (-(-og // 4))
    rows = _row_blocks(p.h_out, tasks, threads)
    total = tasks * (-(-p.h_out // rows))
    nworkers = max(1, min(total, 4 * threads))
    scratch = _workspace("direct_row", (nworkers, cmap.shape[0]), x.dtype)
    PATH_COUNTS["conv2d/direct"] += 1
    with _parallel_region():
        k.conv2d_direct(x, w, b, has_bias, out, rmap, cmap, p.padding[2], p.stride[0],
                        p.stride[1], p.dilation[0], p.dilation[1], p.groups, rows, nworkers,
                        scratch)


@register("conv2d", "numba", "implicit-gemm",
          "register-blocked implicit GEMM: stride-phase planes of the input (a workspace "
          "capped like im2col's), an LLVM-IR microkernel holding 4x24 (or 6x16) outputs in "
          "AVX registers over the whole reduction, BLIS-like cache blocking; nothing like "
          "im2col materialized")
def conv2d_implicit_gemm(x, weight, bias, p):
    x, w, b, has_bias, out = _conv_operands(x, weight, bias, p)
    threads = _threads()
    rmap, cmap = _maps(p)
    plan = igemm_plan(p, x.dtype.itemsize)
    if plan is None:  # one image's planes exceed the cap: no workspace at all
        _direct_rows(_conv(), x, w, b, has_bias, out, p, rmap, cmap, threads)
        return out
    from . import numba_igemm
    PATH_COUNTS["conv2d/implicit-gemm"] += 1
    if plan.packed:
        PATH_COUNTS["conv2d/implicit-gemm/packed"] += 1
    with _parallel_region():
        numba_igemm.run(_igemm(), x, w, b, out, p, plan, rmap, cmap, threads, _workspace)
    return out


def _winograd_supports(p):
    from . import numba_igemm
    return numba_igemm.winograd_unsupported(p)


@register("conv2d", "numba", "winograd",
          "Winograd F(2x2, 3x3) for 3x3 stride-1 layers: 16 transformed-tap GEMMs through "
          "the implicit-gemm microkernel (2.25x fewer multiplications than the direct form), "
          "input/output transforms fused per block of tiles", supports=_winograd_supports)
def conv2d_winograd(x, weight, bias, p):
    x, w, b, has_bias, out = _conv_operands(x, weight, bias, p)
    threads = _threads()
    rmap, cmap = _maps(p)
    from . import numba_igemm
    plan = numba_igemm.plan_winograd(p, x.dtype.itemsize, threads, IM2COL_WORKSPACE_BYTES)
    if plan is None:  # one image's planes exceed the cap: no workspace at all
        _direct_rows(_conv(), x, w, b, has_bias, out, p, rmap, cmap, threads)
        return out
    PATH_COUNTS["conv2d/winograd"] += 1
    with _parallel_region():
        finite = numba_igemm.run_winograd(_igemm(), x, w, b, out, p, plan, rmap, cmap,
                                          threads, _workspace)
    if not finite:
        # NaN/Inf: recomputed in the direct form, so they land where PyTorch puts them
        PATH_COUNTS["conv2d/winograd/nonfinite"] += 1
        return conv2d_implicit_gemm(x, w, bias if has_bias else None, p)
    return out


def im2col_chunk(p, itemsize: int, cap: int | None = None) -> tuple[int, int, int]:
    """(images, output rows, output columns) per im2col chunk under the workspace cap.

    The column buffer holds ``K = C_in/G*kh*kw (+1 bias row)`` rows by
    ``images*rows*cols`` columns; batching several images (only for images of
    fewer than :data:`IM2COL_BATCH_PIXELS` output pixels) also needs a result
    buffer of ``C_out/G`` rows.  Images > 1 imply whole images, rows > 1 whole
    rows.  The total stays <= ``cap`` unless a single output pixel's column
    (``K*itemsize`` bytes) is already larger, in which case one column is used.
    """
    cap = IM2COL_WORKSPACE_BYTES if cap is None else cap
    kk = (p.c_in // p.groups) * p.kh * p.kw + (1 if p.has_bias else 0)
    og = p.c_out // p.groups
    npix = p.h_out * p.w_out
    max_cols = cap // (kk * itemsize)
    if max_cols >= npix:
        images = 1
        if npix < IM2COL_BATCH_PIXELS and p.n > 1:
            images = max(1, min(p.n, cap // ((kk + og) * itemsize * npix)))
        return images, p.h_out, p.w_out
    if max_cols >= p.w_out:
        return 1, max_cols // p.w_out, p.w_out
    return 1, 1, max(1, max_cols)


def wide_im2col_images(p, itemsize: int, cap: int | None = None) -> int:
    """Images per chunk of the "wide" im2col (stride 1), or 0 when it does not apply.

    Needs, per image: padded planes ``C_in/G*(Hp+1)*Wp``, columns
    ``(K [+1])*Ho*Wp`` and the GEMM result ``C_out/G*Ho*Wp``; all within the
    cap; as many images as fit go into one chunk, and an image that does not fit
    whole is cut into row blocks.  Not used when the extra columns would cost
    more than 50 % more GEMM work (``Wp > 1.5*Wo``), nor when not even one
    image's padded planes and one row block fit: then im2col proper.
    """
    if p.stride != (1, 1):
        return 0
    cap = IM2COL_WORKSPACE_BYTES if cap is None else cap
    hp = p.h + p.padding[0] + p.padding[1]
    wp = p.w + p.padding[2] + p.padding[3]
    if 2 * wp > 3 * p.w_out:
        return 0
    cg, og = p.c_in // p.groups, p.c_out // p.groups
    kk = cg * p.kh * p.kw + (1 if p.has_bias else 0)
    pad_bytes = cg * (hp + 1) * wp * itemsize
    row_bytes = (kk + og) * wp * itemsize
    images = cap // (pad_bytes + row_bytes * p.h_out)
    if images == 0 and cap >= pad_bytes + row_bytes:
        return 1  # one image, cut into row blocks (see wide_rows_per_block)
    return int(min(p.n, images))


def wide_rows_per_block(p, itemsize: int, cap: int | None = None) -> int:
    """Output rows per block when the wide path runs one image at a time."""
    cap = IM2COL_WORKSPACE_BYTES if cap is None else cap
    hp = p.h + p.padding[0] + p.padding[1]
    wp = p.w + p.padding[2] + p.padding[3]
    cg, og = p.c_in // p.groups, p.c_out // p.groups
    kk = cg * p.kh * p.kw + (1 if p.has_bias else 0)
    room = min(WIDE_BLOCK_BYTES, cap - cg * (hp + 1) * wp * itemsize)
    return max(1, min(p.h_out, room // ((kk + og) * wp * itemsize)))


def _is_pointwise(p) -> bool:
    return (p.kh == 1 and p.kw == 1 and p.stride == (1, 1) and p.padding == (0, 0, 0, 0))


@register("conv2d", "numba", "im2col",
          "im2col into a capped, reused workspace (Numba) + OpenBLAS GEMM per group; "
          "1x1 stride-1 convolutions go straight to GEMM; bias folded into the GEMM")
def conv2d_im2col(x, weight, bias, p):
    k = _conv()
    x, out = _input_and_output(x, p)
    g, cg, og = p.groups, p.c_in // p.groups, p.c_out // p.groups
    if _is_pointwise(p):
        PATH_COUNTS["conv2d/im2col/1x1"] += 1
        xv = x.reshape(p.n, g, cg, p.h * p.w)
        ov = out.reshape(p.n, g, og, p.h_out * p.w_out)
        wv = np.ascontiguousarray(weight).reshape(g, og, cg)
        for n in range(p.n):
            for gi in range(g):
                np.matmul(wv[gi], xv[n, gi], out=ov[n, gi])
        if bias is not None:
            with _gemm_path_region():
                k.add_bias(out.reshape(p.n, p.c_out, -1), _kernel_array(bias, "bias"))
        return out
    kk = cg * p.kh * p.kw
    hb = 1 if bias is not None else 0
    # waug: (G, C_out/G, K [+1 bias column])
    waug = np.empty((g, og, kk + hb), dtype=x.dtype)
    waug[:, :, :kk] = weight.reshape(g, og, kk)
    if hb:
        waug[:, :, kk] = bias.reshape(g, og)
    rmap, cmap = _maps(p)
    wide_images = wide_im2col_images(p, x.dtype.itemsize)
    if wide_images:
        PATH_COUNTS["conv2d/im2col/wide"] += 1
        hp, wp = rmap.shape[0], cmap.shape[0]
        itemsize = x.dtype.itemsize
        with _gemm_path_region():
            for n0 in range(0, p.n, wide_images):
                nb = min(wide_images, p.n - n0)
                for gi in range(g):
                    # xpad: (nb, C_in/G, Hp+1, Wp); cols: (K [+1], nb*Ho*Wp); res: (C_out/G, ..)
                    xpad = _workspace("im2col_pad", (nb, cg, hp + 1, wp), x.dtype)
                    k.pad_planes(x, n0, nb, gi * cg, cg, rmap, cmap, p.padding[2], xpad)
                    # row blocks small enough for the columns to stay in cache
                    rows = p.h_out if nb > 1 else wide_rows_per_block(p, itemsize)
                    for y0 in range(0, p.h_out, rows):
                        y1 = min(p.h_out, y0 + rows)
                        colbuf = _workspace("im2col", (kk + hb, nb * (y1 - y0) * wp), x.dtype)
                        k.wide_cols(xpad, p.kh, p.kw, p.dilation[0], p.dilation[1], y0, y1,
                                    hb, colbuf)
                        res = _workspace("im2col_res", (og, nb * (y1 - y0) * wp), x.dtype)
                        np.matmul(waug[gi], colbuf, out=res)
                        k.uncol_wide(res, out, n0, nb, gi * og, wp, y0, y1)
        return out
    PATH_COUNTS["conv2d/im2col/gemm"] += 1
    images, rows, cols = im2col_chunk(p, x.dtype.itemsize)
    npix = p.h_out * p.w_out
    (sh, sw), (dh, dw), pl = p.stride, p.dilation, p.padding[2]
    with _gemm_path_region():
        for n0 in range(0, p.n, images):
            nb = min(images, p.n - n0)
            for gi in range(g):
                osl = slice(gi * og, (gi + 1) * og)
                for y0 in range(0, p.h_out, rows):
                    y1 = min(p.h_out, y0 + rows)
                    for x0 in range(0, p.w_out, cols):
                        x1 = min(p.w_out, x0 + cols)
                        # colbuf: (K [+1], nb*(y1-y0)*(x1-x0))
                        colbuf = _workspace("im2col", (kk + hb, nb * (y1 - y0) * (x1 - x0)),
                                            x.dtype)
                        k.im2col_fill(x, n0, nb, gi * cg, cg, p.kh, p.kw, rmap, cmap, pl,
                                      sh, sw, dh, dw, y0, y1, x0, x1, hb, colbuf)
                        if nb > 1:
                            # res: (C_out/G, nb*Ho*Wo) -> out[n0:n0+nb, group]
                            res = _workspace("im2col_res", (og, nb * npix), x.dtype)
                            np.matmul(waug[gi], colbuf, out=res)
                            dst = out[n0:n0 + nb, osl].reshape(nb, og, npix)
                            np.copyto(dst, res.reshape(og, nb, npix).transpose(1, 0, 2))
                        elif x1 - x0 == p.w_out:
                            dst = out[n0, osl, y0:y1, :].reshape(og, (y1 - y0) * p.w_out)
                            np.matmul(waug[gi], colbuf, out=dst)
                        else:
                            np.matmul(waug[gi], colbuf, out=out[n0, osl, y0, x0:x1])
    return out


@register_chooser("conv2d", "numba")
def choose_conv2d(p) -> str:
    """The "auto" rule: the register-blocked implicit GEMM except where another kernel wins.

    * depthwise-like layers at stride 1 (one input channel and fewer than
      :data:`IGEMM_MIN_GROUP_OUT` output channels per group: MobileNet
      depthwise, image filters) -> direct (the plane kernels stream each
      plane once; a reduction of kh*kw taps gives a GEMM nothing to chew on);
    * 1x1 stride-1 unpadded convolutions -> im2col (which is then no im2col
      at all: the input already is the GEMM operand; OpenBLAS ran 71 GFLOP/s
      on one core there against 50-65 for implicit-gemm);
    * 3x3 stride-1 undilated layers with enough channels to make the GEMMs
      dominate (:func:`_winograd_pays`) -> winograd: F(2x2, 3x3) does 16
      multiply-adds per 4 outputs and channel pair instead of 36 (one core,
      CPU time: VGG-16 conv1_2 46 -> 25-27 ms, conv3_2 46 -> 22, ResNet-50
      3x3 256 on 14x14 27 -> 17);
    * everything else -> implicit-gemm.  (Until version 3 of its kernel,
      small deep planes, e.g. ResNet-50 conv5 3x3 512 on 7x7, went to im2col:
      the wide tiles executed 72 pixels per 49; its exact "packed" tiles now
      run that layer in 12.7 ms against 16.2 for im2col, 2 threads.)
    """
    if _is_plane_case(p) and p.c_out // p.groups < IGEMM_MIN_GROUP_OUT:
        return "direct"
    if _is_pointwise(p):
        return "im2col"
    if _winograd_pays(p):
        return "winograd"
    return "implicit-gemm"


#: Winograd under "auto" only when both channel counts per group reach this and
#: their product :data:`WINO_MIN_CHANNEL_PRODUCT`: its transforms cost ~32
#: additions per tile and channel, the GEMMs 2*16*Cg*Og per tile.  Measured
#: (one core, CPU time, winograd / implicit-gemm): 16->16 on 56x56 1.13,
#: 3->64 on 224x224 1.38, 8->8 1.11; 32->32 on 28x28 0.91, 64->32 0.85,
#: 16->128 0.91, 64->64 on 14x14 0.79, 128->128 on 4x4 0.86.
WINO_MIN_CHANNELS = 16
WINO_MIN_CHANNEL_PRODUCT = 1024
#: ... and only when whole 2x2 tiles waste at most this much of the work:
#: ResNet-50 conv5 (7x7 outputs in 8x8 of tiles, 1.31) ran 1.06x implicit-gemm.
WINO_MAX_TILE_WASTE = 1.2


def _winograd_pays(p) -> bool:
    from . import numba_igemm
    if numba_igemm.winograd_unsupported(p) is not None:
        return False
    cg, og = p.c_in // p.groups, p.c_out // p.groups
    waste = (2 * -(-p.h_out // 2)) * (2 * -(-p.w_out // 2)) / (p.h_out * p.w_out)
    return (min(cg, og) >= WINO_MIN_CHANNELS and cg * og >= WINO_MIN_CHANNEL_PRODUCT
            and waste <= WINO_MAX_TILE_WASTE)


# --------------------------------------------------------------------------
# conv_transpose2d
# --------------------------------------------------------------------------
@register("conv_transpose2d", "numba", "direct",
          "gather form, register-blocked: one stride-1 convolution per output phase "
          "(sub-pixel decomposition) through the conv2d direct microkernel, no atomics, "
          "deterministic; depthwise-like layers and inputs past the workspace cap: "
          "each output row sums its input rows, no workspace")
def conv_transpose2d_direct(x, weight, bias, p):
    k = _conv()
    x, w, b, has_bias, out = _conv_operands(x, weight, bias, p)
    if p.c_in // p.groups >= IGEMM_MIN_GROUP_OUT or p.c_out // p.groups >= IGEMM_MIN_GROUP_OUT:
        from . import numba_igemm
        threads = _threads()
        plan = numba_igemm.plan_transposed(p, x.dtype.itemsize, threads, IM2COL_WORKSPACE_BYTES)
        if plan is not None:
            PATH_COUNTS["conv_transpose2d/direct/igemm"] += 1
            with _parallel_region():
                numba_igemm.run_transposed(_igemm(), k, x, w, b, out, p, plan, threads,
                                           _workspace)
            return out
    rows = _row_blocks(p.h_out, p.n * p.c_out, _threads())
    PATH_COUNTS["conv_transpose2d/direct"] += 1
    with _parallel_region():
        k.conv_transpose2d_direct(x, w, b, has_bias, out, p.stride[0], p.stride[1],
                                  p.padding[0], p.padding[1], p.dilation[0], p.dilation[1],
                                  p.groups, rows)
    return out


def _winograd_transposed_supports(p):
    from . import numba_igemm
    return numba_igemm.winograd_transposed_unsupported(p)


@register("conv_transpose2d", "numba", "winograd",
          "each output phase (2x2 taps: kernel = 2 x stride, e.g. DCGAN's k4 s2) by Winograd "
          "F(2x2, 2x2): 9 transformed-tap GEMMs per 4 outputs instead of 16 multiply-adds, "
          "through the implicit-gemm microkernel; no atomics, deterministic",
          supports=_winograd_transposed_supports)
def conv_transpose2d_winograd(x, weight, bias, p):
    x, w, b, has_bias, out = _conv_operands(x, weight, bias, p)
    from . import numba_igemm
    threads = _threads()
    plan = numba_igemm.plan_winograd_transposed(p, x.dtype.itemsize, threads,
                                                IM2COL_WORKSPACE_BYTES)
    if plan is None:  # one image's planes exceed the cap
        return conv_transpose2d_direct(x, w, bias if has_bias else None, p)
    PATH_COUNTS["conv_transpose2d/winograd"] += 1
    with _parallel_region():
        finite = numba_igemm.run_winograd_transposed(_igemm(), _conv(), x, w, b, out, p, plan,
                                                     threads, _workspace)
    if not finite:
        # NaN/Inf: recomputed in the direct form, so they land where PyTorch puts them
        PATH_COUNTS["conv_transpose2d/winograd/nonfinite"] += 1
        return conv_transpose2d_direct(x, w, bias if has_bias else None, p)
    return out


@register("conv_transpose2d", "numba", "gemm",
          "W^T @ x per image and group (OpenBLAS) into a capped workspace, then a "
          "deterministic col2im (one task per output plane; at stride > 1 through "
          "stride-phase planes: one contiguous add per tap, output written once)")
def conv_transpose2d_gemm(x, weight, bias, p):
    k = _conv()
    x, w, b, has_bias, out = _conv_operands(x, weight, bias, p)
    g, cg, og = p.groups, p.c_in // p.groups, p.c_out // p.groups
    kk = og * p.kh * p.kw
    # wt[g]: (C_in/G, C_out/G*kh*kw); its transpose is the GEMM's left operand
    wt = w.reshape(g, cg, kk)
    PATH_COUNTS["conv_transpose2d/gemm"] += 1
    if _use_phase_col2im(p, x.dtype.itemsize):
        _conv_transpose2d_gemm_phase(k, x, wt, b, has_bias, out, p)
        return out
    images, rows = conv_transpose2d_chunk(p, x.dtype.itemsize)
    npix = p.h * p.w
    with _gemm_path_region():
        k.fill_bias(out.reshape(p.n, p.c_out, -1), b, has_bias)
        for n0 in range(0, p.n, images):
            nb = min(images, p.n - n0)
            for gi in range(g):
                xg = x[n0:n0 + nb, gi * cg:(gi + 1) * cg]
                for iy0 in range(0, p.h, rows):
                    iy1 = min(p.h, iy0 + rows)
                    if nb > 1:
                        # xs: (C_in/G, nb*H*W), images side by side
                        xs = _workspace("convt_x", (cg, nb, npix), x.dtype)
                        np.copyto(xs, xg.reshape(nb, cg, npix).transpose(1, 0, 2))
                        xs = xs.reshape(cg, nb * npix)
                    else:
                        xs = xg[0, :, iy0:iy1, :].reshape(cg, (iy1 - iy0) * p.w)
                    # cols: (C_out/G*kh*kw, nb*rows*W)
                    cols = _workspace("col2im", (kk, xs.shape[1]), x.dtype)
                    np.matmul(wt[gi].T, xs, out=cols)
                    k.col2im_add(cols, out, n0, nb, gi * og, og, p.kh, p.kw, iy0, iy1, p.w,
                                 p.stride[0], p.stride[1], p.padding[0], p.padding[1],
                                 p.dilation[0], p.dilation[1])
    return out


#: Target bytes of padded input + columns per GEMM/col2im step of the stride-phase
#: transposed convolution: small enough that col2im reads the columns from cache
#: (measured on the DCGAN-like layer, 1 thread: 17.3 ms with all 16 images in one
#: 31 MB step, 13.5 ms with 2-8 MB steps).
CONVT_PHASE_BLOCK_BYTES = int(os.environ.get("FASTCONV_CONVT_BLOCK_KB", "4096")) * 1024


def _phase_geometry(p):
    """((lo_y, BH), (lo_x, bw)): the stride-phase planes of :func:`col2im_phase_planes`."""
    k = _conv()
    ho, wo = p.output_shape[2], p.output_shape[3]
    return (k.phase_geometry(p.kh, p.dilation[0], p.padding[0], p.stride[0], p.h, ho),
            k.phase_geometry(p.kw, p.dilation[1], p.padding[1], p.stride[1], p.w, wo))


def _use_phase_col2im(p, itemsize: int) -> bool:
    """Stride > 1 and one whole image's padded columns fit the workspace cap."""
    if p.stride == (1, 1):
        return False
    (_, bh), (_, bw) = _phase_geometry(p)
    kk = (p.c_out // p.groups) * p.kh * p.kw
    cg = p.c_in // p.groups
    return (kk + cg) * p.h * bw * itemsize <= IM2COL_WORKSPACE_BYTES


def _conv_transpose2d_gemm_phase(k, x, wt, b, has_bias, out, p):
    """GEMM on x padded to rows of bw columns, then col2im_phase_planes (kernel version 8)."""
    PATH_COUNTS["conv_transpose2d/gemm/phase"] += 1
    g, cg, og = p.groups, p.c_in // p.groups, p.c_out // p.groups
    kk = og * p.kh * p.kw
    (lo_y, bh), (lo_x, bw) = _phase_geometry(p)
    sh, sw = p.stride
    per_image = (kk + cg) * p.h * bw * x.dtype.itemsize
    block = min(IM2COL_WORKSPACE_BYTES, CONVT_PHASE_BLOCK_BYTES)
    images = max(1, min(p.n, block // per_image))
    nworkers = max(1, min(images * og, _threads()))
    scratch = _workspace("col2im_phase", (nworkers, sh * sw, bh * bw), x.dtype)
    with _gemm_path_region():
        for n0 in range(0, p.n, images):
            nb = min(images, p.n - n0)
            for gi in range(g):
                # xs: (C_in/G, nb, H, bw), columns >= W zero
                xs = _workspace("convt_x", (cg, nb, p.h, bw), x.dtype)
                if bw > p.w:
                    xs[..., p.w:] = 0
                np.copyto(xs[..., :p.w], x[n0:n0 + nb, gi * cg:(gi + 1) * cg].transpose(1, 0, 2, 3))
                xs2 = xs.reshape(cg, nb * p.h * bw)
                cols = _workspace("col2im", (kk, xs2.shape[1]), x.dtype)
                np.matmul(wt[gi].T, xs2, out=cols)
                k.col2im_phase_planes(cols, out, b, has_bias, n0, nb, gi * og, og, p.kh, p.kw,
                                      p.h, bw, sh, sw, p.padding[0], p.padding[1],
                                      p.dilation[0], p.dilation[1], lo_y, lo_x, nworkers,
                                      scratch)


def conv_transpose2d_chunk(p, itemsize: int, cap: int | None = None) -> tuple[int, int]:
    """(images, input rows) per GEMM + col2im chunk under the workspace cap.

    The column buffer is ``C_out/G*kh*kw`` x ``images*rows*W``; batching
    several images (whole images only, for inputs of fewer than
    :data:`IM2COL_BATCH_PIXELS` pixels) also needs a ``C_in/G`` x
    ``images*H*W`` copy of the inputs.  At least one input row.
    """
    cap = IM2COL_WORKSPACE_BYTES if cap is None else cap
    kk = (p.c_out // p.groups) * p.kh * p.kw
    cg = p.c_in // p.groups
    npix = p.h * p.w
    rows = max(1, min(p.h, cap // (kk * p.w * itemsize)))
    if rows == p.h and npix < IM2COL_BATCH_PIXELS and p.n > 1:
        images = max(1, min(p.n, cap // ((kk + cg) * npix * itemsize)))
        return images, p.h
    return 1, rows


@register_chooser("conv_transpose2d", "numba")
def choose_conv_transpose2d(p) -> str:
    """The "auto" rule: GEMM + col2im only when every output phase is a 1x1 convolution.

    * depthwise-like (``C_in/G < 8``): direct (a tiny per-group GEMM);
    * several taps per output phase (``kh*kw > sh*sw``, e.g. DCGAN k4 s2: 2x2
      taps per phase): direct, the register-blocked phase convolutions
      (DCGAN-like layer, one core: 13.3 ms against 13.7 for GEMM + col2im);
    * one tap per phase (``k == s``, e.g. U-Net k2 s2): gemm, which is one
      plain GEMM with a cheap col2im (U-Net-like, one core: 11.4 ms against
      15.6 for direct, whose phase planes and strided stores cost more there).

    ``winograd`` (F(2x2, 2x2) per output phase) is never chosen: on the
    DCGAN-like layer it saves 44 % of the multiply-adds but measured 8.8 ms
    against 6.6 for direct in the 2-thread suite run of 2026-11-23 (one
    core, alone: 14.0 vs 15.5); its one-element strided stores of four
    interleaved phases cost what the GEMMs save.  Storing the two column
    phases together (``WINO_PAIR_PHASES``) brought it to parity, not past:
    2 threads, one process, medians of 15: 8.2 ms against 9.3 unpaired and
    8.3 for direct.
    """
    cg = p.c_in // p.groups
    if cg < 8 or p.kh * p.kw > p.stride[0] * p.stride[1]:
        return "direct"
    return "gemm"


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------
@register("max_pool2d", "numba", "direct",
          "separable max pooling (rows folded, then columns) with PyTorch's NaN/tie/index rule")
def max_pool2d(x, p):
    k = _pool()
    x, out = _input_and_output(x, p)
    idx = _indices_or_dummy(p)
    if out.size == 0:
        return (out, idx) if p.return_indices else out
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = p.kernel, p.stride, p.padding, p.dilation
    with _parallel_region():
        if _max_pool_separable(k, p):
            nchunk, nrb = _pool_tasks(p.n * p.c, p.h_out)
            if p.return_indices:
                k.max_pool2d_sep_idx(x, out, idx, kh, kw, sh, sw, ph, pw, dh, dw, nchunk, nrb,
                                     _no_index(p))
            else:
                k.max_pool2d_sep(x, out, kh, kw, sh, sw, ph, pw, dh, dw, nchunk, nrb)
        else:
            k.max_pool2d_rows(x, out, idx, p.return_indices, kh, kw, sh, sw, ph, pw, dh, dw)
    return (out, idx) if p.return_indices else out


def _no_index(p):
    """The index given to the -inf padding of the separable kernels' folded rows: larger
    than any flat index, so the "smallest index among equal maxima" rule never picks it.
    Its type is the kernels' working index type: int32 (8-wide selects beside float32)
    whenever every flat index of a plane fits, else int64."""
    return np.int32(2**31 - 1) if p.h * p.w < 2**31 - 1 else np.int64(1 << 62)


def _max_pool_separable(k, p) -> bool:
    """Kernel version 2 (column pass + row pass) needs every window to hold an input
    element; only dilation can make one miss the input entirely (then version 1 runs)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = p.kernel, p.stride, p.padding, p.dilation
    return not ((dh > 1 and k.axis_has_empty_window(p.h, kh, sh, ph, dh, p.h_out))
                or (dw > 1 and k.axis_has_empty_window(p.w, kw, sw, pw, dw, p.w_out)))


def _pool_tasks(planes: int, rows: int):
    """(chunks, row blocks per plane): one contiguous range of (plane, row block) tasks per
    thread; planes are split into row blocks only when there are fewer than ~8 per thread."""
    threads = _threads()
    nrb = -(-rows // _row_blocks(rows, planes, threads))
    return max(1, min(threads, planes * nrb)), nrb


@register("avg_pool2d", "numba", "direct",
          "separable average pooling (rows summed, then columns; ATen divisor rule)")
def avg_pool2d(x, p):
    k = _pool()
    x, out = _input_and_output(x, p)
    # integer-valued divisors are exact in float32 (< 2**24): divide in x's dtype
    divisor = np.ascontiguousarray(reference.avg_divisors(p), dtype=x.dtype)
    if out.size == 0:
        return out
    nchunk, nrb = _pool_tasks(p.n * p.c, p.h_out)
    with _parallel_region():
        k.avg_pool2d_sep(x, out, divisor, p.kernel[0], p.kernel[1], p.stride[0], p.stride[1],
                         p.padding[0], p.padding[1], nchunk, nrb)
    return out


@register("adaptive_avg_pool2d", "numba", "direct",
          "adaptive average pooling, one task per (n, c) plane")
def adaptive_avg_pool2d(x, p):
    k = _pool()
    x, out = _input_and_output(x, p)
    with _parallel_region():
        k.adaptive_avg_pool2d_planes(x, out)
    return out


@register("adaptive_max_pool2d", "numba", "direct",
          "separable adaptive max pooling with PyTorch's NaN/tie/index rule")
def adaptive_max_pool2d(x, p):
    k = _pool()
    x, out = _input_and_output(x, p)
    idx = _indices_or_dummy(p)
    if out.size == 0:
        return (out, idx) if p.return_indices else out
    nchunk, nrb = _pool_tasks(p.n * p.c, p.h_out)
    with _parallel_region():
        if p.return_indices:
            k.adaptive_max_pool2d_sep_idx(x, out, idx, nchunk, nrb, _no_index(p))
        else:
            k.adaptive_max_pool2d_sep(x, out, nchunk, nrb)
    return (out, idx) if p.return_indices else out
