"""Host side of the register-blocked direct convolution and Winograd F(2x2, 3x3) (``kernels/cpu_igemm.py``).

The "numba" backend's conv2d ``implicit-gemm`` algorithm (what "auto" picks
for most layers) runs :func:`run`, except when a single image of phase planes
would not fit the workspace cap (then the row-blocked ``direct`` kernel
version 1, which needs no workspace); its conv_transpose2d ``direct`` runs
:func:`run_transposed`, one stride-1 convolution per output phase.

:func:`plan` turns checked :class:`~fastconv.arguments.ConvParams` into every
size the kernels need (phase-plane geometry, tap offsets, register block,
cache blocking, task shape, workspace sizes); :func:`run` validates nothing
(the arguments are checked upstream), allocates workspaces, packs the
weights and launches ``phase_planes`` then ``conv_tiles`` per chunk of
images.  Cache blocking (sizes for this machine: L1d 32 KiB, L2 512 KiB per
core; they are not critical to within 2x):

* ``kc`` taps per reduction chunk (whole channels): the tile's distinct input
  lines for them (per channel: kernel rows x column phases windows of
  ceil(bytes/64)+1 lines) fit in :data:`B_L1_BYTES` (1x1 layers: 43 -> 50
  GFLOP/s on one core against a flat ``kc*T*itemsize`` estimate; 3x3: no change);
* ``mc`` output channels per weight chunk: ``mc * kc * itemsize`` fits in
  :data:`A_L2_BYTES`;
* a task's accumulators (``C_out/G`` padded x wide pixels of its band) fit in
  :data:`C_L2_BYTES`; small planes group several images per task instead, so
  each weight chunk serves at least 16 tiles.

Exact ("packed") tiles (``conv_tiles_packed``, see :func:`_use_packed` and
:func:`_packed_blocking`) replace the wide ones where those execute much more
than the useful work: small planes (7x7 padded to 9 wide) with many output
channels to share the cost of packing.  Measured on ResNet-50 3x3 512 on 7x7
(8 images, one core): wide 27.9 ms, packed 24.6; the predicted 30 % gain (72
wide pixels per 49) shrank to 12 % because packing a 16-pixel tile of 7-pixel
runs costs about 12 blocks' worth of microkernel work per tap (fitted on that
layer and on 3x3 256 on 14x14, where packed lost by 3 %: hence
:data:`PACK_COST_BLOCKS`).

The conv2d ``winograd`` algorithm (3x3, stride 1, no dilation) runs
:func:`run_winograd`: :func:`plan_winograd` pads the planes to whole 2x2
tiles, cuts the tiles of all images into one block per thread (at most
:data:`WINO_MAX_TILES`: the block's transformed inputs and products are the
worker's scratch, 16 x (Cg + mc) x tiles) and sizes the reduction chunks
(:data:`WINO_B_L1_BYTES`) and output-channel groups (:data:`WINO_MC`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Tile input windows per reduction chunk (L1).
B_L1_BYTES = 16 * 1024
#: Packed weights per chunk (L2).
A_L2_BYTES = 160 * 1024
#: A task's accumulator block (L2).
C_L2_BYTES = 160 * 1024
#: Phase planes an odd number of 64-byte lines apart (see phase_planes): 2-3 %
#: faster on 64x64 padded planes (16 KiB apart otherwise), no change elsewhere.
PAD_PLANES = True
#: Exact ("packed") tiles, ``conv_tiles_packed``: "auto" (when the wide tiles
#: would execute clearly more than the useful work, see :func:`plan`), "always"
#: or "never" (tests and measurements).
PACKED = "auto"
#: A tile's packed windows per reduction chunk (L1), packed mode.
PACK_L1_BYTES = 16 * 1024
#: All of a task's packed tiles per reduction chunk (L2), packed mode.
PACK_L2_BYTES = 256 * 1024
#: A task's accumulators in packed mode (few large tasks: every task streams all the weights).
C_PACKED_BYTES = 1 << 20
#: Cost of packing one tap of one tile, in units of one MR-channel block's
#: microkernel work on it.  First estimated at 4 (a 24-pixel copy in runs
#: ~15-30 cycles, a 4x3 block 6 cycles per tap); 12 is what the measurements
#: of the module docstring imply (packed lost on 3x3 256 on 14x14 at 4).
PACK_COST_BLOCKS = 12.0
#: Register blocks (MR output channels, NV vectors of pixels), as kernels/cpu_igemm.MICROKERNELS.
MICROKERNELS = ((4, 3), (6, 2))


@dataclass(frozen=True)
class IgemmPlan:
    """Sizes of one register-blocked direct convolution (see the module docstring)."""

    hq: int            # phase plane rows, ceil(Hp / sh)
    pstride: int       # elements from one phase plane to the next (>= hq*wq)
    wq: int            # phase plane columns (= the wide output row), ceil(Wp / sw)
    gstride: int       # elements between two groups' planes in an image's buffer
    blen: int          # elements per image buffer (planes + tail read by wide tiles)
    offs: np.ndarray   # (K,) int64 tap offsets, K = C_in/G * kh * kw
    shape_id: int      # index into MICROKERNELS
    mr: int
    tile: int          # pixels per microkernel tile, NV * vector width
    nblk: int          # ceil(C_out/G / MR)
    kc: int
    mc: int
    images_per_chunk: int   # images whose phase planes are built at once
    imgs_per_task: int
    band_rows: int
    ldc: int           # scratch row length (elements)
    in_place: bool = False  # unpadded stride 1: all images but the last read from x itself
    packed: bool = False    # exact tiles (conv_tiles_packed): ldc counts valid pixels

    def scratch_len(self) -> int:
        if self.packed:
            return self.nblk * self.mr * self.ldc + self.ldc * self.kc
        return self.imgs_per_task * self.nblk * self.mr * self.ldc


def vector_width(itemsize: int) -> int:
    return 32 // itemsize


def _plane_stride(hq: int, wq: int, itemsize: int) -> int:
    """Elements from one plane to the next: an odd number of 64-byte lines (see phase_planes)."""
    lines = -(-hq * wq * itemsize // 64)
    return (lines + 1 - lines % 2) * 64 // itemsize if PAD_PLANES else hq * wq


def _register_block(og: int, itemsize: int, pixels: int) -> tuple[int, int, int, int]:
    """(shape_id, MR, tile, nblk): the block executing the least padded work (ties: 4x3).

    Work = channels rounded up to MR x ``pixels`` (wide outputs per image)
    rounded up to the tile.  Measured on one core: 4x3 is 3-6 % faster where
    both waste alike (VGG, ResNet 3x3); 6x2 wins LeNet-5 C1 (6 channels: 29 ->
    39 GFLOP/s) and ResNet-50 3x3 512 on 7x7 (63 wide pixels: 49 -> 59).
    """
    vw = vector_width(itemsize)
    work = [-(-og // mr) * mr * (-(-pixels // (nv * vw)) * nv * vw) for mr, nv in MICROKERNELS]
    shape_id = 0 if work[0] <= work[1] else 1
    mr, nv = MICROKERNELS[shape_id]
    return shape_id, mr, nv * vw, -(-og // mr)


def _blocking(*, groups, cg, og, ho, wq, taps_per_channel, lines_per_channel, itemsize,
              threads, images, tile, mr, nblk):
    """(kc, mc, imgs_per_task, band_rows, ldc) for the cache blocking of the module docstring."""
    copad = nblk * mr
    cc = max(1, min(cg, B_L1_BYTES // (64 * max(1, lines_per_channel))))
    kc = max(1, cc * taps_per_channel)
    mc = max(mr, min(copad, (A_L2_BYTES // (kc * itemsize)) // mr * mr))
    pix = max(tile, C_L2_BYTES // (copad * itemsize))
    lb_img = -(-ho * wq // tile) * tile
    want = 4 * threads
    if lb_img <= pix:
        band = ho
        if images > 1:
            # small planes: image blocks (a multiple of the thread count) of
            # >= 16 tiles each, so a weight chunk serves many tiles
            nbk = threads * max(1, (images * (lb_img // tile)) // (16 * threads))
            imgs = max(1, min(pix // lb_img * 4, -(-images // nbk)))
        else:
            imgs = 1
    else:
        imgs, band = 1, max(1, min(ho, pix // wq))
    while imgs == 1 and band > 1 and groups * images * -(-ho // band) < want:
        band = -(-band // 2)
    ldc = -(-band * wq // tile) * tile
    return kc, mc, imgs, band, ldc


#: Plans by (params, itemsize, threads, cap, tunables): a plan costs 0.1-0.2 ms
#: of NumPy and Python per call, 3 % of the DCGAN-like layer's 6.4 ms.
_PLANS: dict = {}
_PLANS_MAX = 256


def _tunables() -> tuple:
    return (PACKED, PACK_L1_BYTES, PACK_L2_BYTES, C_PACKED_BYTES, PACK_COST_BLOCKS, B_L1_BYTES,
            A_L2_BYTES, C_L2_BYTES, PAD_PLANES, WINO_MAX_TILES, WINO_MC, WINO_B_L1_BYTES,
            WINO_TASK_COST_TILES, WINO_MAX_TILES_PHASED, WINO_PAIR_PHASES)


def _cached(kind, build, p, itemsize, threads, cap):
    """``build(p, itemsize, threads, cap)``, memoized.

    Plans are shared: nobody may write to their arrays (they stay writeable
    only because Numba compiles a separate specialization for read-only ones).
    """
    key = (kind, p, itemsize, threads, cap, _tunables())
    try:
        return _PLANS[key]
    except KeyError:
        pass
    except TypeError:       # unhashable params: no caching
        return build(p, itemsize, threads, cap)
    result = build(p, itemsize, threads, cap)
    if len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
    _PLANS[key] = result
    return result


def plan(p, itemsize: int, threads: int, cap: int) -> IgemmPlan | None:
    """The plan for ``p`` (checked Conv2dParams), or None when one image's planes exceed ``cap``."""
    return _cached("conv", _plan, p, itemsize, threads, cap)


def _plan(p, itemsize: int, threads: int, cap: int) -> IgemmPlan | None:
    cg, og = p.c_in // p.groups, p.c_out // p.groups
    (sh, sw), (dh, dw) = p.stride, p.dilation
    pt, pb, pl, pr = p.padding
    hp, wp = p.h + pt + pb, p.w + pl + pr
    hq, wq = -(-hp // sh), -(-wp // sw)
    # unpadded stride 1: tiles read the input in place (planes exactly H*W apart)
    in_place = (sh, sw) == (1, 1) and (pt, pb, pl, pr) == (0, 0, 0, 0)
    plane = hq * wq if in_place else _plane_stride(hq, wq, itemsize)
    s = sh * sw
    gstride = cg * s * plane
    c = np.arange(cg, dtype=np.int64)[:, None, None]
    i = np.arange(p.kh, dtype=np.int64)[None, :, None]
    j = np.arange(p.kw, dtype=np.int64)[None, None, :]
    offs = (((c * sh + (i * dh) % sh) * sw + (j * dw) % sw) * plane
            + ((i * dh) // sh) * wq + (j * dw) // sw).reshape(-1)
    ho = p.h_out
    shape_id, mr, tile, nblk = _register_block(og, itemsize, ho * wq)
    blen = max(p.c_in * s * plane, (p.groups - 1) * gstride + int(offs.max()) + ho * wq + tile)
    if blen * itemsize > cap:
        return None
    # reading in place, tiles of an image may reach into the next image only
    in_place = in_place and blen <= 2 * p.c_in * plane
    # a tile's distinct input lines per channel: one window per kernel row and
    # column phase, each spanning ceil(window bytes / 64) + 1 lines
    window = (tile + ((p.kw - 1) * dw) // sw) * itemsize
    images = max(1, min(p.n, cap // (blen * itemsize)))
    kc, mc, imgs, band, ldc = _blocking(
        groups=p.groups, cg=cg, og=og, ho=ho, wq=wq, taps_per_channel=p.kh * p.kw,
        lines_per_channel=p.kh * min(p.kw, sw) * (-(-window // 64) + 1), itemsize=itemsize,
        threads=threads, images=images, tile=tile, mr=mr, nblk=nblk)
    packed = _use_packed(p, wq, tile, nblk, band, ldc, imgs)
    if packed:
        kc, mc, imgs, band, ldc = _packed_blocking(p, itemsize, threads, images, tile, nblk * mr)
        mc = max(mr, mc // mr * mr)
    return IgemmPlan(hq=hq, pstride=plane, wq=wq, gstride=gstride, blen=blen, offs=offs,
                     in_place=in_place, packed=packed,
                     shape_id=shape_id, mr=mr, tile=tile, nblk=nblk, kc=kc, mc=mc,
                     images_per_chunk=images, imgs_per_task=imgs, band_rows=band, ldc=ldc)


def _use_packed(p, wq, tile, nblk, band, ldc, imgs) -> bool:
    """Exact tiles when the wide ones execute over ``1 + PACK_COST_BLOCKS/nblk + 3 %`` of the useful work."""
    if PACKED != "auto":
        return PACKED == "always"
    useful = p.h_out * p.w_out
    wide = -(-p.h_out // band) * ldc          # wide pixels per image (bands of ldc)
    return wide > useful * (1.03 + PACK_COST_BLOCKS / nblk)


def _packed_blocking(p, itemsize, threads, images, tile, copad):
    """(kc, mc, imgs_per_task, band_rows, ldc) for exact tiles: few large tasks.

    Per task and chunk of ``kc`` taps, all the task's tiles are packed first
    (``ldc x kc``: one tile's pack within :data:`PACK_L1_BYTES`, all within
    :data:`PACK_L2_BYTES`), then for each group of ``mc`` output channels
    (weights ``mc x kc`` within half of :data:`A_L2_BYTES`) every tile runs the
    microkernel for every block of the group.  Tasks: whole images, as many per
    task as leave every thread one task (each task streams every weight),
    accumulators within :data:`C_PACKED_BYTES`; large planes are cut into bands.
    """
    kk = (p.c_in // p.groups) * p.kh * p.kw
    kc = max(1, min(kk, PACK_L1_BYTES // (tile * itemsize)))
    mc = max(4, (A_L2_BYTES // 2) // (kc * itemsize))
    pix = max(tile, min(C_PACKED_BYTES // (copad * itemsize), PACK_L2_BYTES // (kc * itemsize)))
    per_img = p.h_out * p.w_out
    if per_img <= pix:
        band = p.h_out
        imgs = max(1, min(pix // per_img, -(-images // threads)))
    else:
        imgs, band = 1, max(1, min(p.h_out, pix // max(1, p.w_out)))
        while band > 1 and p.groups * images * -(-p.h_out // band) < threads:
            band = -(-band // 2)
    ldc = -(-imgs * band * p.w_out // tile) * tile
    return kc, mc, imgs, band, ldc


def pack_weights(kernels, weight: np.ndarray, groups: int, nblk: int, mr: int) -> np.ndarray:
    """(G, nblk, K, MR): packed[g, b, k, m] = w[g*Og + b*MR + m, k] (zeros past Og)."""
    og = weight.shape[0] // groups
    return _pack(kernels, weight.reshape(groups, og, -1), nblk, mr)


def _pack(kernels, wk: np.ndarray, nblk: int, mr: int) -> np.ndarray:
    """wk (G, Og, K) -> (G, nblk, K, MR), zero rows past Og (``kernels.pack_weights``)."""
    groups, og, kk = wk.shape
    packed = np.empty((groups, nblk, kk, mr), dtype=wk.dtype)
    kernels.pack_weights(np.ascontiguousarray(wk), nblk, mr, packed)
    return packed


def run(kernels, x, weight, b, out, p, pl_: IgemmPlan, rmap, cmap, threads, workspace):
    """out = conv2d(x, weight) + b by phase planes + register-blocked tiles, chunked over images.

    ``kernels``: the ``cpu_igemm`` module; ``workspace(name, shape, dtype)``
    returns a reused buffer; ``b`` holds zeros when there is no bias.
    """
    apack = pack_weights(kernels, weight, p.groups, pl_.nblk, pl_.mr)
    sh, sw = p.stride

    def tiles(src, nb, n0):
        tasks = p.groups * -(-nb // pl_.imgs_per_task) * -(-p.h_out // pl_.band_rows)
        nworkers = max(1, min(threads, tasks))
        scratch = workspace("igemm_acc", (nworkers, pl_.scratch_len()), x.dtype)
        if pl_.packed:
            kernels.conv_tiles_packed(src, nb, n0, pl_.offs, apack, b, out, p.groups,
                                      pl_.gstride, p.h_out, p.w_out, pl_.wq, pl_.imgs_per_task,
                                      pl_.band_rows, pl_.kc, pl_.mc, pl_.shape_id, nworkers,
                                      scratch)
            return
        kernels.conv_tiles(src, nb, n0, pl_.offs, apack, b, out, p.groups, pl_.gstride, pl_.wq,
                           p.h_out, p.w_out, 0, 0, 1, 1,
                           pl_.imgs_per_task, pl_.band_rows, pl_.kc, pl_.mc, pl_.shape_id,
                           nworkers, scratch)

    first = 0
    if pl_.in_place and p.n > 1:
        # unpadded, stride 1: x itself holds the planes; tiles of an image may
        # read into the next one, so only the last image needs a padded copy
        tiles(x.reshape(p.n, pl_.pstride * p.c_in), p.n - 1, 0)
        first = p.n - 1
    images = pl_.images_per_chunk
    buf = workspace("igemm_planes", (images, pl_.blen), x.dtype)
    for n0 in range(first, p.n, images):
        nb = min(images, p.n - n0)
        kernels.phase_planes(x, n0, nb, rmap, cmap, p.padding[2], sh, sw, pl_.hq, pl_.wq,
                             pl_.pstride, buf)
        tiles(buf, nb, n0)
    return out


# --------------------------------------------------------------------------
# transposed convolution: one stride-1 convolution per output phase
# --------------------------------------------------------------------------
def _transposed_axis(size_in: int, size_out: int, k: int, d: int, pad: int, s: int):
    """Per output phase r < s along one axis: (outputs, [(tap, input offset e)]), and (lo, extent).

    Output ``o = q*s + r`` gathers tap ``t`` from input ``q + e`` when
    ``r + pad - t*d = e*s`` (PyTorch's ``o + pad = i*s + t*d``).  The input is
    zero-padded by ``lo`` in front and to ``extent`` in all, so every ``q + e``
    of every phase lands inside.
    """
    phases = []
    for r in range(s):
        count = max(0, -(-(size_out - r) // s))
        taps = [(t, (r + pad - t * d) // s) for t in range(k) if (r + pad - t * d) % s == 0]
        phases.append((count, taps))
    es = [e for count, taps in phases if count for _, e in taps]
    if not es:
        return phases, 0, max(1, size_in)
    lo = max(0, -min(es))
    hi = max(count - 1 + e for count, taps in phases if count for _, e in taps) + 1
    extent = lo + max(size_in, hi, max(count for count, _ in phases))
    return phases, lo, extent


@dataclass(frozen=True)
class TransposedPlan:
    """A transposed convolution as ``sh*sw`` stride-1 convolutions over one padded input."""

    hq: int
    wq: int
    top: int           # zero rows above the input
    left: int          # zero columns left of it
    pstride: int
    gstride: int
    blen: int
    images_per_chunk: int
    phases: tuple      # (ry, rx, rows, cols, offs, (i taps), (j taps), IgemmPlan-like blocking)
    shape_id: int
    mr: int
    tile: int
    nblk: int
    taps: tuple = ()   # per phase: (i*kw + j for its taps) as an int64 array


def plan_transposed(p, itemsize: int, threads: int, cap: int) -> TransposedPlan | None:
    """The plan for ``p`` (checked ConvTranspose2dParams), or None when one image exceeds ``cap``."""
    return _cached("transposed", _plan_transposed, p, itemsize, threads, cap)


def _plan_transposed(p, itemsize: int, threads: int, cap: int) -> TransposedPlan | None:
    cg, og = p.c_in // p.groups, p.c_out // p.groups
    (sh, sw), (dh, dw), (ph, pw) = p.stride, p.dilation, p.padding
    yph, top, hq = _transposed_axis(p.h, p.h_out, p.kh, dh, ph, sh)
    xph, left, wq = _transposed_axis(p.w, p.w_out, p.kw, dw, pw, sw)
    plane = _plane_stride(hq, wq, itemsize)
    gstride = cg * plane
    rows_max = max(-(-(p.h_out - r) // sh) for r in range(min(sh, p.h_out)))
    shape_id, mr, tile, nblk = _register_block(og, itemsize, rows_max * wq)
    c = np.arange(cg, dtype=np.int64)
    phases, last = [], 0
    for ry, (rows, ytaps) in enumerate(yph):
        for rx, (cols, xtaps) in enumerate(xph):
            if rows == 0 or cols == 0:
                continue
            ey = np.array([e for _, e in ytaps], dtype=np.int64) + top
            ex = np.array([e for _, e in xtaps], dtype=np.int64) + left
            offs = (c[:, None, None] * plane + ey[None, :, None] * wq
                    + ex[None, None, :]).reshape(-1)
            if offs.size:
                last = max(last, int(offs.max()) + rows * wq + tile)
            phases.append((ry, rx, rows, cols, offs, tuple(t for t, _ in ytaps),
                           tuple(t for t, _ in xtaps)))
    blen = max(p.c_in * plane, (p.groups - 1) * gstride + last)
    if blen * itemsize > cap:
        return None
    images = max(1, min(p.n, cap // (blen * itemsize)))
    window = (tile + max(0, (p.kw - 1) * dw // sw)) * itemsize
    full = []
    for ry, rx, rows, cols, offs, ti, tj in phases:
        blocking = _blocking(
            groups=p.groups, cg=cg, og=og, ho=rows, wq=wq,
            taps_per_channel=len(ti) * len(tj),
            lines_per_channel=len(ti) * (-(-window // 64) + 1), itemsize=itemsize,
            threads=threads, images=images, tile=tile, mr=mr, nblk=nblk)
        full.append((ry, rx, rows, cols, offs, ti, tj, blocking))
    taps = []
    for _, _, _, _, _, ti, tj, _ in full:
        t = np.array([i * p.kw + j for i in ti for j in tj], dtype=np.int64)
        taps.append(t)
    return TransposedPlan(hq=hq, wq=wq, top=top, left=left, pstride=plane, gstride=gstride,
                          blen=blen, images_per_chunk=images, phases=tuple(full), taps=tuple(taps),
                          shape_id=shape_id, mr=mr, tile=tile, nblk=nblk)


def run_transposed(kernels, conv_kernels, x, weight, b, out, p, tp: TransposedPlan, threads,
                   workspace):
    """out = conv_transpose2d(x, weight) + b, one register-blocked convolution per output phase.

    ``weight``: (C_in, C_out/G, kh, kw); ``conv_kernels``: ``cpu_conv`` (for
    ``padding_index_map``).  Phases with no tap get the bias only.
    """
    g, cg, og = p.groups, p.c_in // p.groups, p.c_out // p.groups
    # wg[g, o, c, i*kw + j] = weight[g*Cg + c, o, i, j]
    wg = weight.reshape(g, cg, og, p.kh * p.kw).transpose(0, 2, 1, 3)
    packs = [_pack(kernels, np.take(wg, taps, axis=3).reshape(g, og, -1), tp.nblk, tp.mr)
             for taps in tp.taps]
    rmap = conv_kernels.padding_index_map(p.h, tp.top, tp.hq - p.h - tp.top, "zeros")
    cmap = conv_kernels.padding_index_map(p.w, tp.left, tp.wq - p.w - tp.left, "zeros")
    images = tp.images_per_chunk
    buf = workspace("igemm_planes", (images, tp.blen), x.dtype)
    for n0 in range(0, p.n, images):
        nb = min(images, p.n - n0)
        kernels.phase_planes(x, n0, nb, rmap, cmap, tp.left, 1, 1, tp.hq, tp.wq, tp.pstride,
                             buf)
        for (ry, rx, rows, cols, offs, _, _, blocking), apack in zip(tp.phases, packs):
            kc, mc, imgs, band, ldc = blocking
            tasks = g * -(-nb // imgs) * -(-rows // band)
            nworkers = max(1, min(threads, tasks))
            scratch = workspace("igemm_acc", (nworkers, imgs * tp.nblk * tp.mr * ldc), x.dtype)
            kernels.conv_tiles(buf, nb, n0, offs, apack, b, out, g, tp.gstride, tp.wq, rows,
                               cols, ry, rx, p.stride[0], p.stride[1], imgs, band, kc, mc,
                               tp.shape_id, nworkers, scratch)
    return out


# --------------------------------------------------------------------------
# Winograd F(2x2, 3x3): 3x3, stride 1, dilation 1 (cpu_igemm.winograd_tiles)
# --------------------------------------------------------------------------
#: Tiles (2x2 outputs each) per Winograd task at most: ``V`` (16 x Cg x tiles)
#: and ``M`` (16 x mc x tiles) are a worker's scratch, through L2/L3.
WINO_MAX_TILES = 96
#: Elements after an image's planes (zeroed) that the input transform may read:
#: it runs whole vectors of tiles past a tile row's end (the extra V columns
#: are overwritten by the next run or ignored), reading at most 2*VW+2 past the
#: last row (VW <= 8).  DCGAN-like phases (14 tiles a row: one vector and a
#: scalar tail of 6), one phase on one core: input transform 0.86 -> 0.52 ms.
WINO_SLACK = 18
#: A task's stream of all the transformed weights (16 x Cg x Og, from L3),
#: in tiles of GEMM work: 64 bytes per 32 flops per channel pair, i.e.
#: 2 x 80 GFLOP/s / 20 GB/s = 8 tiles whatever the channel counts.
WINO_TASK_COST_TILES = 8
#: Tiles per task when a task runs every output phase of a transposed
#: convolution (V and M of one phase, and the block's outputs of all phases,
#: in L2).
WINO_MAX_TILES_PHASED = 48
#: Store the two column phases of a stride-2 transposed convolution together
#: (four consecutive outputs per tile and row instead of every other one).
WINO_PAIR_PHASES = True
#: Output channels per Winograd GEMM group (``M`` holds 16 x mc x tiles).
WINO_MC = 256
#: A Winograd GEMM's B panel (``kc`` channels x NV*VW tiles of one transformed
#: tap) in L1 beside the streaming weights: 8 KiB measured 5-15 % faster than 16.
WINO_B_L1_BYTES = 8 * 1024


@dataclass(frozen=True)
class WinogradPlan:
    """Sizes of one Winograd F(2x2, 3x3) convolution (see ``cpu_igemm.winograd_tiles``)."""

    hb: int            # padded plane rows, 2*ceil(Ho/2) + 2
    wb: int            # padded plane columns, 2*ceil(Wo/2) + 2
    pstride: int       # elements from one plane to the next (>= hb*wb)
    blen: int          # elements per image buffer
    shape_id: int
    mr: int
    tile: int
    nblk: int
    ptiles: int        # tiles per task (a multiple of ``tile``)
    kc: int
    mc: int
    images_per_chunk: int

    def scratch_len(self, cg: int, itemsize: int) -> int:
        return _wino_scratch_len(16, cg, min(self.mc, self.nblk * self.mr), self.ptiles,
                                 itemsize)


def winograd_unsupported(p) -> str | None:
    """None when F(2x2, 3x3) runs ``p``, else why not."""
    if (p.kh, p.kw) != (3, 3) or p.stride != (1, 1) or p.dilation != (1, 1):
        return ("winograd F(2x2, 3x3) needs a 3x3 kernel, stride 1 and dilation 1; got "
                f"kernel {(p.kh, p.kw)}, stride {p.stride}, dilation {p.dilation}")
    return None


def plan_winograd(p, itemsize: int, threads: int, cap: int) -> WinogradPlan | None:
    """The plan for ``p`` (checked, :func:`winograd_unsupported` None), or None when one image exceeds ``cap``."""
    return _cached("winograd", _plan_winograd, p, itemsize, threads, cap)


def _plan_winograd(p, itemsize: int, threads: int, cap: int) -> WinogradPlan | None:
    cg, og = p.c_in // p.groups, p.c_out // p.groups
    ty, tx = -(-p.h_out // 2), -(-p.w_out // 2)
    hb, wb = 2 * ty + 2, 2 * tx + 2
    pstride = _plane_stride(hb, wb, itemsize)
    blen = p.c_in * pstride + WINO_SLACK
    if blen * itemsize > cap:
        return None
    images = max(1, min(p.n, cap // (blen * itemsize)))
    ntiles = ty * tx
    shape_id, mr, tile, nblk = _register_block(og, itemsize, ntiles)
    ptiles = _wino_ptiles(images * ntiles, p.groups, threads, tile)
    kc, mc = _wino_chunks(cg, nblk, mr, tile, itemsize)
    return WinogradPlan(hb=hb, wb=wb, pstride=pstride, blen=blen, shape_id=shape_id, mr=mr,
                        tile=tile, nblk=nblk, ptiles=ptiles, kc=kc, mc=mc,
                        images_per_chunk=images)


def _wino_chunks(cg: int, nblk: int, mr: int, tile: int, itemsize: int) -> tuple[int, int]:
    """(kc, mc): channels per reduction chunk (:data:`WINO_B_L1_BYTES`), output channels per
    GEMM group (:data:`WINO_MC`, a multiple of MR)."""
    kc = max(1, min(cg, WINO_B_L1_BYTES // (tile * itemsize)))
    return kc, max(mr, min(nblk * mr, WINO_MC) // mr * mr)


def _wino_scratch_len(taps: int, cg: int, mc: int, ptiles: int, itemsize: int) -> int:
    """A worker's V then M (``winograd_tiles``), each transformed tap's rows one 64-byte
    line further apart than packed."""
    line = 64 // itemsize
    return taps * (cg * ptiles + line) + taps * (mc * ptiles + line)


def _wino_ptiles(tiles: int, groups: int, threads: int, tile: int, most: int | None = None) -> int:
    """Tiles per Winograd task out of ``tiles`` per group (a multiple of ``tile``, at most ``most``)."""
    most = WINO_MAX_TILES if most is None else most
    # tiles per task (blocks may span images), up to ``most``: the block
    # that leaves the busiest thread the least work, counting every task's
    # stream of all the transformed weights as WINO_TASK_COST_TILES tiles
    # (VGG-16 conv3_2, 784 tiles on 2 threads: 96 a task puts 5 of 9 tasks
    # on one thread, 80 puts 5 of 10)
    best = None
    for cand in range(tile, max(tile, most) + 1, tile):
        tasks = groups * -(-tiles // cand)
        key = (-(-tasks // threads) * (cand + WINO_TASK_COST_TILES), -cand)
        best = key if best is None else min(best, key)
        if cand >= tiles:
            break
    return -best[1]


def run_winograd(kernels, x, weight, b, out, p, wp: WinogradPlan, rmap, cmap, threads,
                 workspace):
    """out = conv2d(x, weight) + b by Winograd F(2x2, 3x3), chunked over images.

    ``rmap``/``cmap``: the padding index maps (any padding mode); the planes
    are padded to ``hb x wb`` (zeros past the padded extent).  Returns False
    when some output is NaN or +-Inf: the transforms spread a non-finite input
    (or weight) over whole 4x4 tiles, so ``out`` then differs from the direct
    form's NaN/Inf pattern and the caller recomputes it.
    """
    g, cg, og = p.groups, p.c_in // p.groups, p.c_out // p.groups
    upack = np.empty((g, 16, wp.nblk, cg, wp.mr), dtype=x.dtype)
    kernels.winograd_weights(weight.reshape(g, og, cg, 3, 3), wp.nblk, wp.mr, upack)
    images = wp.images_per_chunk
    buf = workspace("igemm_planes", (images, wp.blen), x.dtype)
    ntiles = -(-p.h_out // 2) * -(-p.w_out // 2)
    vw = vector_width(x.dtype.itemsize)
    chk = np.zeros(threads * vw, dtype=x.dtype)
    phases = np.array([[0, 0, p.h_out, p.w_out, 0, 0]], dtype=np.int64)
    for n0 in range(0, p.n, images):
        nb = min(images, p.n - n0)
        tasks = g * -(-nb * ntiles // wp.ptiles)
        nworkers = max(1, min(threads, tasks))
        kernels.phase_planes(x, n0, nb, rmap, cmap, p.padding[2], 1, 1, wp.hb, wp.wb,
                             wp.pstride, buf)
        scratch = workspace("winograd_scratch",
                            (nworkers, wp.scratch_len(cg, x.dtype.itemsize)), x.dtype)
        kernels.winograd_tiles(buf, nb, n0, wp.hb, wp.wb, wp.pstride, phases, upack[None], b,
                               out, g, 1, 1, -(-p.h_out // 2), -(-p.w_out // 2), wp.ptiles,
                               wp.kc, wp.mc, wp.shape_id, nworkers, scratch, chk, False)
    return not np.isnan(chk).any()


# --------------------------------------------------------------------------
# transposed convolution by Winograd F(2x2, 2x2): every output phase of a block per task
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class WinogradTransposedPlan:
    """Each output phase of a transposed convolution whose phases all have 2x2 taps (e.g.
    DCGAN's k4 s2) as an F(2x2, 2x2) convolution over one padded input."""

    hb: int
    wb: int
    top: int
    left: int
    pstride: int
    blen: int
    images_per_chunk: int
    phases: tuple      # (ry, rx, rows, cols, e0y, e0x, (i taps), (j taps))
    table: np.ndarray  # (phases, 6) int64: (ry, rx, rows, cols, e0y, e0x), for the kernel
    ty: int            # tile grid (rows, columns) of every phase
    tx: int
    ptiles: int
    pair: bool         # phases 2k, 2k+1 are column phases 0, 1 of one row phase (stride 2)
    shape_id: int
    mr: int
    tile: int
    nblk: int
    kc: int
    mc: int

    def scratch_len(self, cg: int, itemsize: int) -> int:
        one = _wino_scratch_len(9, cg, min(self.mc, self.nblk * self.mr), self.ptiles, itemsize)
        return 2 * one if self.pair else one


def _two_tap_phases(phases) -> bool:
    """Every phase with outputs has two taps at consecutive input offsets."""
    for count, taps in phases:
        if count and (len(taps) != 2 or abs(taps[0][1] - taps[1][1]) != 1):
            return False
    return True


def winograd_transposed_unsupported(p) -> str | None:
    """None when every output phase of ``p`` is a 2x2-tap convolution (F(2x2, 2x2)), else why not."""
    ok = p.dilation == (1, 1) and all(
        _two_tap_phases(_transposed_axis(size, out, k, 1, pad, s)[0])
        for size, out, k, pad, s in ((p.h, p.h_out, p.kh, p.padding[0], p.stride[0]),
                                     (p.w, p.w_out, p.kw, p.padding[1], p.stride[1])))
    if ok:
        return None
    return ("winograd F(2x2, 2x2) needs every output phase to have 2x2 taps (kernel = 2 x "
            f"stride, no dilation, e.g. k4 s2); got kernel {(p.kh, p.kw)}, stride {p.stride}, "
            f"dilation {p.dilation}")


def plan_winograd_transposed(p, itemsize: int, threads: int, cap: int):
    """The plan for ``p`` (winograd_transposed_unsupported None), or None over ``cap``."""
    return _cached("winograd-transposed", _plan_winograd_transposed, p, itemsize, threads, cap)


def _plan_winograd_transposed(p, itemsize: int, threads: int, cap: int):
    cg, og = p.c_in // p.groups, p.c_out // p.groups
    (sh, sw), (ph, pw) = p.stride, p.padding
    yph, top, hq = _transposed_axis(p.h, p.h_out, p.kh, 1, ph, sh)
    xph, left, wq = _transposed_axis(p.w, p.w_out, p.kw, 1, pw, sw)
    phases = []
    for ry, (rows, ytaps) in enumerate(yph):
        for rx, (cols, xtaps) in enumerate(xph):
            if rows == 0 or cols == 0:
                continue
            ytaps, xtaps = sorted(ytaps, key=lambda te: te[1]), sorted(xtaps, key=lambda te: te[1])
            phases.append((ry, rx, rows, cols, top + ytaps[0][1], left + xtaps[0][1],
                           tuple(t for t, _ in ytaps), tuple(t for t, _ in xtaps)))
    # one tile grid for all phases (each writes only its own outputs)
    ty = max(-(-ph_[2] // 2) for ph_ in phases)
    tx = max(-(-ph_[3] // 2) for ph_ in phases)
    shape_id, mr, tile, nblk = _register_block(og, itemsize, ty * tx)
    hb = max([hq] + [ph_[4] + 2 * ty + 1 for ph_ in phases])
    wb = max([wq] + [ph_[5] + 2 * tx + 2 for ph_ in phases])
    pstride = _plane_stride(hb, wb, itemsize)
    blen = p.c_in * pstride + WINO_SLACK
    if blen * itemsize > cap:
        return None
    images = max(1, min(p.n, cap // (blen * itemsize)))
    ptiles = _wino_ptiles(images * ty * tx, p.groups, threads, tile, WINO_MAX_TILES_PHASED)
    kc, mc = _wino_chunks(cg, nblk, mr, tile, itemsize)
    table = np.array([ph_[:6] for ph_ in phases], dtype=np.int64)
    # stride 2 across: the two column phases of each row phase store together
    pair = (WINO_PAIR_PHASES and sw == 2 and len(phases) % 2 == 0 and all(
        a[0] == b[0] and (a[1], b[1]) == (0, 1) and a[2:4] == b[2:4]
        for a, b in zip(phases[::2], phases[1::2])))
    return WinogradTransposedPlan(hb=hb, wb=wb, top=top, left=left, pstride=pstride, blen=blen,
                                  images_per_chunk=images, phases=tuple(phases), table=table,
                                  ty=ty, tx=tx, ptiles=ptiles, pair=pair, shape_id=shape_id, mr=mr,
                                  tile=tile, nblk=nblk, kc=kc, mc=mc)


def run_winograd_transposed(kernels, conv_kernels, x, weight, b, out, p,
                            wp: WinogradTransposedPlan, threads, workspace) -> bool:
    """out = conv_transpose2d(x, weight) + b, each output phase by F(2x2, 2x2).

    Returns False when some output is NaN or +-Inf (see :func:`run_winograd`).
    """
    g, cg, og = p.groups, p.c_in // p.groups, p.c_out // p.groups
    # wg[g, o, c, i, j] = weight[g*Cg + c, o, i, j]
    wg = weight.reshape(g, cg, og, p.kh, p.kw).transpose(0, 2, 1, 3, 4)
    upack = np.empty((len(wp.phases), g, 9, wp.nblk, cg, wp.mr), dtype=x.dtype)
    for i, (ry, rx, rows, cols, e0y, e0x, ti, tj) in enumerate(wp.phases):
        wk = np.ascontiguousarray(wg[:, :, :, list(ti)][:, :, :, :, list(tj)])
        kernels.winograd_weights(wk, wp.nblk, wp.mr, upack[i])
    rmap = conv_kernels.padding_index_map(p.h, wp.top, wp.hb - p.h - wp.top, "zeros")
    cmap = conv_kernels.padding_index_map(p.w, wp.left, wp.wb - p.w - wp.left, "zeros")
    images = wp.images_per_chunk
    buf = workspace("igemm_planes", (images, wp.blen), x.dtype)
    chk = np.zeros(threads * vector_width(x.dtype.itemsize), dtype=x.dtype)
    sh, sw = p.stride
    for n0 in range(0, p.n, images):
        nb = min(images, p.n - n0)
        kernels.phase_planes(x, n0, nb, rmap, cmap, wp.left, 1, 1, wp.hb, wp.wb, wp.pstride,
                             buf)
        nworkers = max(1, min(threads, g * -(-nb * wp.ty * wp.tx // wp.ptiles)))
        scratch = workspace("winograd_scratch",
                            (nworkers, wp.scratch_len(cg, x.dtype.itemsize)), x.dtype)
        kernels.winograd_tiles(buf, nb, n0, wp.hb, wp.wb, wp.pstride, wp.table, upack, b, out,
                               g, sh, sw, wp.ty, wp.tx, wp.ptiles, wp.kc, wp.mc, wp.shape_id,
                               nworkers, scratch, chk, wp.pair)
    return not np.isnan(chk).any()
