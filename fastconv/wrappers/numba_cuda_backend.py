"""Backend "numba-cuda": hand-written Numba-CUDA kernels (``kernels/cuda_*.py``).

Implementations take and return Numba device arrays (``native="numba"``);
``fastconv.api`` moves NumPy/CuPy/PyTorch arrays in and out.  Every wrapper
does three things in order: make the inputs C-contiguous on the device (a
copy kernel, only when they are not), allocate the C-contiguous output with
``cuda.device_array``, fetch the cached kernel for (dtype, specialization,
tiles) and launch it.  Launches per op: one (conv2d direct,
conv_transpose2d, every pool), or two per batch chunk (conv2d im2col: the
im2col kernel and the GEMM), plus one copy per non-contiguous input.

Nothing here imports Numba at module level: ``import fastconv`` needs NumPy
only.  On a machine without a CUDA driver or GPU the probe says so and
``fastconv`` raises ``BackendUnavailableError`` with that reason; under the
CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` set before Numba is imported)
the backend is available and runs the very same kernels with smaller tiles
(``SIM_TILES``), so tests cover edge tiles quickly.

Configuration (module attributes, read at every call):

* ``WORKSPACE_LIMIT_BYTES``: cap of the im2col column buffer (default
  256 MiB, or ``FASTCONV_NUMBA_CUDA_WORKSPACE_MB`` from the environment).
  im2col processes the batch in chunks of as many images as fit; it refuses
  (and "auto" picks direct) when one image's columns alone exceed the cap.
* ``TILES``: None (pick ``GPU_TILES`` or ``SIM_TILES``) or a ``Tiles``.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

from ..registry import Backend, register, register_backend, register_chooser

NAME = "numba-cuda"
PROBE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Tiles:
    """Tile constants of every kernel (see the kernel headers for their meaning)."""
    direct: tuple          # (TX, TY, RY, OCB): block TX x TY, outputs (TY*RY) x TX x OCB
    gemm: tuple            # (BM, BN, BK, RM, RN)
    transpose: tuple       # (TX, TY, OCB)
    block_1d: int          # threads per block of the 1-D grid-stride kernels


#: Tiles for a real GPU (not yet tuned on one: no GPU was available).  GEMM 64x64x8 with
#: 4x4 per thread: a 4x8 register block (32 accumulators) left the accumulators in local
#: memory (ptxas: 128-byte stack frame), see tools/ptx_report.py.
GPU_TILES = Tiles(direct=(32, 4, 4, 4), gemm=(64, 64, 8, 4, 4), transpose=(32, 4, 4),
                  block_1d=256)
#: Tiles for the CUDA simulator: the same code paths with 16- and 32-thread blocks (the
#: simulator costs about 1 ms per thread and barrier; GEMM BK=8 halves the barriers of BK=4).
SIM_TILES = Tiles(direct=(8, 4, 2, 2), gemm=(8, 16, 8, 2, 4), transpose=(8, 4, 2),
                  block_1d=32)
TILES = None

WORKSPACE_LIMIT_BYTES = int(float(os.environ.get("FASTCONV_NUMBA_CUDA_WORKSPACE_MB", "256"))
                            * 2 ** 20)
#: Shared memory the direct kernel aims for per block (CK is chosen to stay below it).
DIRECT_SHARED_BUDGET = 24 * 1024
#: The most static + dynamic shared memory a block may use without an opt-in.
MAX_SHARED_BYTES = 48 * 1024
#: Grid y/z limit.
_GRID_YZ = 65535
_GRID_X_1D = 1 << 20


def _simulating() -> bool:
    from numba import config
    return bool(config.ENABLE_CUDASIM)


def tiles() -> Tiles:
    if TILES is not None:
        return TILES
    return SIM_TILES if _simulating() else GPU_TILES


# --------------------------------------------------------------------------
# probe: never hangs, never raises
# --------------------------------------------------------------------------
def _probe():
    try:
        from numba import config
    except Exception as exc:  # noqa: BLE001 - any import failure is a reason
        return f"numba is not installed ({type(exc).__name__}: {exc})"
    if config.ENABLE_CUDASIM:
        return None  # the CUDA simulator runs the kernels on the CPU
    result = {}

    def check():
        try:
            from numba import cuda
            if not cuda.is_available():
                result["reason"] = "no CUDA driver/GPU found"
                return
            cc = cuda.get_current_device().compute_capability
            if tuple(cc) < (3, 5):
                result["reason"] = f"GPU compute capability {cc} is too old for numba-cuda"
                return
            result["reason"] = None
        except Exception as exc:  # noqa: BLE001
            result["reason"] = f"no CUDA driver/GPU found ({type(exc).__name__}: {exc})"

    thread = threading.Thread(target=check, name="fastconv-numba-cuda-probe", daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT_S)
    if thread.is_alive():
        return f"the CUDA driver did not answer within {PROBE_TIMEOUT_S:.0f} s"
    return result.get("reason", "the CUDA probe failed without a reason")


register_backend(Backend(
    name=NAME, device="cuda", native="numba",
    description="hand-written Numba-CUDA kernels: shared-memory tiled direct conv, "
                "im2col + tiled GEMM, gather-form transposed conv, one-pass pooling",
    probe=_probe, dtypes=("float32", "float64")))


# --------------------------------------------------------------------------
# helpers: contiguity, launch shapes, dummies
# --------------------------------------------------------------------------
def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _grid_1d(total: int, block: int) -> int:
    return max(1, min(_ceil(total, block), _GRID_X_1D))


def _contiguous(a):
    """``a`` itself if C-contiguous, else a C-contiguous copy made on the device."""
    if a is None or a.is_c_contiguous():
        return a
    from numba import cuda

    from fastconv.kernels import cuda_layout
    dst = cuda.device_array(tuple(a.shape), dtype=a.dtype)
    size = int(np.prod(a.shape))
    if size:
        block = tiles().block_1d
        kernel = {1: cuda_layout.copy1d, 4: cuda_layout.copy4d}[len(a.shape)]
        kernel[_grid_1d(size, block), block](a, dst)
    return dst


_dummies = {}


def _bias_or_dummy(bias, dtype):
    """The bias, or a 1-element placeholder (the kernels skip it when has_bias is False)."""
    if bias is not None:
        return bias
    from numba import cuda
    key = np.dtype(dtype).name
    if key not in _dummies:
        _dummies[key] = cuda.device_array(1, dtype=dtype)
    return _dummies[key]


def _channels_per_block(ocb: int, cog: int) -> int:
    """Output channels per thread: the tile's OCB, or fewer when a group has fewer
    (depthwise: 1), so no accumulator computes a channel that does not exist."""
    return max(1, min(ocb, cog))


def _mode(p) -> int:
    from fastconv.kernels.cuda_conv import PAD_MODES
    return PAD_MODES[p.padding_mode]


# --------------------------------------------------------------------------
# conv2d: direct
# --------------------------------------------------------------------------
def _pow2_at_least(v: int) -> int:
    return 1 << max(0, (int(v) - 1).bit_length())


def direct_tile_shape(p, t: Tiles) -> tuple[int, int, int, int]:
    """(TX, TY, RY, OCB) for this case: the tile's constants, shrunk to fit small outputs.

    A 16x32 output tile over a 7x7 map would leave 90 % of the threads idle, so TX
    shrinks to the next power of two >= Wo (not below 8: a 32-byte sector per row),
    RY to the next power of two >= Ho/TY, and OCB to C_out/G.
    """
    tx, ty, ry, ocb = t.direct
    tx = min(tx, max(8, _pow2_at_least(p.w_out)))
    ry = min(ry, _pow2_at_least(_ceil(p.h_out, ty)))
    return tx, ty, ry, _channels_per_block(ocb, p.c_out // p.groups)


def _direct_plan(p, t: Tiles):
    """(ck, tile_h, tile_w, shared bytes) or a reason string."""
    from fastconv.kernels.cuda_conv import direct_tile_extent
    tx, ty, ry, ocb = direct_tile_shape(p, t)
    tile_h, tile_w = direct_tile_extent(p, tx, ty, ry)
    itemsize = np.dtype(p.dtype or np.float32).itemsize
    per_channel = (tile_h * tile_w + ocb * p.kh * p.kw) * itemsize
    if per_channel > MAX_SHARED_BYTES:
        return (f"one input channel's tile ({tile_h}x{tile_w} with a {p.kh}x{p.kw} filter) "
                f"needs {per_channel} bytes of shared memory, more than {MAX_SHARED_BYTES}")
    cig = p.c_in // p.groups
    ck = max(1, min(cig, DIRECT_SHARED_BUDGET // per_channel))
    return ck, tile_h, tile_w, ck * per_channel


def _direct_supports(p):
    plan = _direct_plan(p, tiles())
    return plan if isinstance(plan, str) else None


@register("conv2d", NAME, "direct",
          "shared-memory tiled direct conv: input tile + halo and filter tile in shared "
          "memory, (RY rows x OCB channels) outputs per thread in registers; padding modes "
          "in the index math", supports=_direct_supports)
def conv2d_direct(x, weight, bias, p):
    from numba import cuda

    from fastconv.kernels.cuda_conv import conv2d_direct_kernel
    t = tiles()
    plan = _direct_plan(p, t)
    if isinstance(plan, str):
        raise ValueError(f"conv2d: direct algorithm cannot run this case: {plan}")
    ck, tile_h, tile_w, shared = plan
    x, weight, bias = _contiguous(x), _contiguous(weight), _contiguous(bias)
    out = cuda.device_array(p.output_shape, dtype=x.dtype)
    tx, ty, ry, ocb = direct_tile_shape(p, t)
    cig, cog = p.c_in // p.groups, p.c_out // p.groups
    co_blocks = _ceil(cog, ocb)
    grid = (_ceil(p.w_out, tx), _ceil(p.h_out, ty * ry), min(p.n * p.groups * co_blocks,
                                                              _GRID_YZ))
    kernel = conv2d_direct_kernel(x.dtype, _mode(p), tx, ty, ry, ocb)
    kernel[grid, (tx, ty), 0, shared](
        x, weight, _bias_or_dummy(bias, x.dtype), out, bias is not None, p.groups, cig, cog,
        co_blocks, p.h, p.w, p.h_out, p.w_out, p.kh, p.kw, p.stride[0], p.stride[1],
        p.padding[0], p.padding[2], p.dilation[0], p.dilation[1], ck, tile_h, tile_w)
    return out


# --------------------------------------------------------------------------
# conv2d: im2col + GEMM
# --------------------------------------------------------------------------
def _im2col_bytes_per_image(p) -> int:
    itemsize = np.dtype(p.dtype or np.float32).itemsize
    return p.c_in * p.kh * p.kw * p.h_out * p.w_out * itemsize


def _im2col_supports(p):
    need = _im2col_bytes_per_image(p)
    if need > WORKSPACE_LIMIT_BYTES:
        return (f"the columns of one image need {need} bytes, more than the workspace cap "
                f"WORKSPACE_LIMIT_BYTES={WORKSPACE_LIMIT_BYTES}")
    return None


_workspace_lock = threading.Lock()
_workspaces = {}


def _workspace(elements: int, dtype):
    """A cached flat device buffer of at least ``elements`` (grown, never shrunk)."""
    from numba import cuda
    key = np.dtype(dtype).name
    buf = _workspaces.get(key)
    if buf is None or buf.shape[0] < elements:
        _workspaces.pop(key, None)  # free the old one before allocating the larger
        buf = cuda.device_array(elements, dtype=dtype)
        _workspaces[key] = buf
    return buf


@register("conv2d", NAME, "im2col",
          "im2col kernel + hand-written GEMM (shared-memory tiles, register blocking, "
          "double buffering); workspace capped, batch processed in chunks",
          supports=_im2col_supports)
def conv2d_im2col(x, weight, bias, p):
    from numba import cuda

    from fastconv.kernels.cuda_conv import conv_gemm_kernel, im2col_kernel
    why = _im2col_supports(p)
    if why is not None:
        raise ValueError(f"conv2d: im2col algorithm cannot run this case: {why}")
    t = tiles()
    x, weight, bias = _contiguous(x), _contiguous(weight), _contiguous(bias)
    out = cuda.device_array(p.output_shape, dtype=x.dtype)
    cig, cog = p.c_in // p.groups, p.c_out // p.groups
    k = cig * p.kh * p.kw
    hw = p.h_out * p.w_out
    chunk = max(1, min(p.n, WORKSPACE_LIMIT_BYTES // _im2col_bytes_per_image(p)))
    bm, bn, bk, rm, rn = t.gemm
    unfold = im2col_kernel(x.dtype, _mode(p))
    gemm = conv_gemm_kernel(x.dtype, bm, bn, bk, rm, rn)
    a = weight.reshape(p.c_out, k)                  # (C_out, cig*KH*KW)
    out3 = out.reshape(p.n, p.c_out, hw)            # (N, C_out, Ho*Wo)
    b = _bias_or_dummy(bias, x.dtype)
    block = t.block_1d
    with _workspace_lock:  # the cached workspace is shared by all calls
        buf = _workspace(p.c_in * p.kh * p.kw * chunk * hw, x.dtype)
        for n0 in range(0, p.n, chunk):
            nb = min(chunk, p.n - n0)
            m = nb * hw
            cols = buf[: p.c_in * p.kh * p.kw * m].reshape(p.c_in * p.kh * p.kw, m)
            # cols: (G*K, nb*Ho*Wo), rows (c, i, j), c slowest
            unfold[_grid_1d(p.c_in * m, block), block](
                x, cols, n0, nb, p.h, p.w, p.h_out, p.w_out, p.kh, p.kw, p.stride[0],
                p.stride[1], p.padding[0], p.padding[2], p.dilation[0], p.dilation[1])
            grid = (_ceil(m, bn), _ceil(cog, bm), min(p.groups, _GRID_YZ))
            gemm[grid, (bn // rn, bm // rm)](a, cols, b, out3, bias is not None, p.groups,
                                             cog, k, m, hw, n0)
    return out


@register_chooser("conv2d", NAME)
def _choose_conv2d(p):
    # Unmeasured heuristic (no GPU yet): GEMM pays when the reduction and the number of
    # output channels per group are both large; depthwise and thin layers stay direct.
    cig, cog = p.c_in // p.groups, p.c_out // p.groups
    if cig * p.kh * p.kw >= 64 and cog >= 32 and _im2col_supports(p) is None:
        return "im2col"
    if _direct_supports(p) is not None:
        return "im2col"
    return "direct"


# --------------------------------------------------------------------------
# conv_transpose2d: gather
# --------------------------------------------------------------------------
@register("conv_transpose2d", NAME, "direct",
          "gather form: one thread per output pixel x OCB channels visits only the taps "
          "whose input pixel exists (warps share a column phase); no atomics, deterministic")
def conv_transpose2d_direct(x, weight, bias, p):
    from numba import cuda

    from fastconv.kernels.cuda_conv import conv_transpose2d_gather_kernel
    t = tiles()
    x, weight, bias = _contiguous(x), _contiguous(weight), _contiguous(bias)
    out = cuda.device_array(p.output_shape, dtype=x.dtype)
    tx, ty, _ = t.transpose
    cig, cog = p.c_in // p.groups, p.c_out // p.groups
    ocb = _channels_per_block(t.transpose[2], cog)
    co_blocks = _ceil(cog, ocb)
    xblocks = _ceil(_ceil(p.w_out, p.stride[1]), tx)   # blocks per column phase
    grid = (p.stride[1] * xblocks, _ceil(p.h_out, ty), min(p.n * p.groups * co_blocks,
                                                            _GRID_YZ))
    kernel = conv_transpose2d_gather_kernel(x.dtype, tx, ty, ocb)
    kernel[grid, (tx, ty)](
        x, weight, _bias_or_dummy(bias, x.dtype), out, bias is not None, p.groups, cig, cog,
        co_blocks, p.h, p.w, p.h_out, p.w_out, p.kh, p.kw, p.stride[0], p.stride[1],
        p.padding[0], p.padding[1], p.dilation[0], p.dilation[1], xblocks)
    return out


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------
def _launch_1d(kernel, total: int, *args):
    block = tiles().block_1d
    if total:
        kernel[_grid_1d(total, block), block](*args)


@register("max_pool2d", NAME, "direct",
          "one thread per output; PyTorch's NaN/tie/index rules; int64 indices")
def max_pool2d(x, p):
    from numba import cuda

    from fastconv.kernels.cuda_pool import max_pool2d_kernel
    x = _contiguous(x)
    out = cuda.device_array(p.output_shape, dtype=x.dtype)
    idx = cuda.device_array(p.output_shape if p.return_indices else (1, 1, 1, 1),
                            dtype=np.int64)
    _launch_1d(max_pool2d_kernel(x.dtype, p.return_indices), int(np.prod(p.output_shape)),
               x, out, idx, p.h, p.w, p.h_out, p.w_out, p.kernel[0], p.kernel[1],
               p.stride[0], p.stride[1], p.padding[0], p.padding[1], p.dilation[0],
               p.dilation[1])
    return (out, idx) if p.return_indices else out


@register("avg_pool2d", NAME, "direct",
          "one thread per output; ATen's divisor rule (ceil_mode, count_include_pad, "
          "divisor_override)")
def avg_pool2d(x, p):
    from numba import cuda

    from fastconv.kernels.cuda_pool import avg_pool2d_kernel
    x = _contiguous(x)
    out = cuda.device_array(p.output_shape, dtype=x.dtype)
    _launch_1d(avg_pool2d_kernel(x.dtype), int(np.prod(p.output_shape)),
               x, out, p.h, p.w, p.h_out, p.w_out, p.kernel[0], p.kernel[1], p.stride[0],
               p.stride[1], p.padding[0], p.padding[1], bool(p.count_include_pad),
               int(p.divisor_override or 0))
    return out


@register("adaptive_avg_pool2d", NAME, "direct",
          "one thread per output over its window [floor(i*In/Out), ceil((i+1)*In/Out))")
def adaptive_avg_pool2d(x, p):
    from numba import cuda

    from fastconv.kernels.cuda_pool import adaptive_avg_pool2d_kernel
    x = _contiguous(x)
    out = cuda.device_array(p.output_shape, dtype=x.dtype)
    _launch_1d(adaptive_avg_pool2d_kernel(x.dtype), int(np.prod(p.output_shape)),
               x, out, p.h, p.w, p.h_out, p.w_out)
    return out


@register("adaptive_max_pool2d", NAME, "direct",
          "one thread per output; max_pool2d's NaN/tie/index rules; int64 indices")
def adaptive_max_pool2d(x, p):
    from numba import cuda

    from fastconv.kernels.cuda_pool import adaptive_max_pool2d_kernel
    x = _contiguous(x)
    out = cuda.device_array(p.output_shape, dtype=x.dtype)
    idx = cuda.device_array(p.output_shape if p.return_indices else (1, 1, 1, 1),
                            dtype=np.int64)
    _launch_1d(adaptive_max_pool2d_kernel(x.dtype, p.return_indices),
               int(np.prod(p.output_shape)), x, out, idx, p.h, p.w, p.h_out, p.w_out)
    return (out, idx) if p.return_indices else out
