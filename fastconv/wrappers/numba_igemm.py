"""Host side of the register-blocked direct convolution (``kernels/cpu_igemm.py``).

The "numba" backend's conv2d ``direct`` algorithm runs this for every layer
except depthwise-like ones (one input channel per group and few output
channels per group, which ``conv2d_plane_direct`` streams) and layers whose
single image of phase planes would not fit the workspace cap (then the
row-blocked kernel version 1, which needs no workspace).

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

    @property
    def workspace_bytes_per_image(self) -> int:
        return self.blen

    def scratch_len(self) -> int:
        return self.imgs_per_task * self.nblk * self.mr * self.ldc


def vector_width(itemsize: int) -> int:
    return 32 // itemsize


def plan(p, itemsize: int, threads: int, cap: int) -> IgemmPlan | None:
    """The plan for ``p`` (checked ConvParams), or None when one image's planes exceed ``cap``."""
    cg, og = p.c_in // p.groups, p.c_out // p.groups
    (sh, sw), (dh, dw) = p.stride, p.dilation
    pt, pb, pl, pr = p.padding
    hp, wp = p.h + pt + pb, p.w + pl + pr
    hq, wq = -(-hp // sh), -(-wp // sw)
    # plane stride: an odd number of 64-byte lines (see kernels.cpu_igemm.phase_planes)
    lines = -(-hq * wq * itemsize // 64)
    plane = (lines + 1 - lines % 2) * 64 // itemsize if PAD_PLANES else hq * wq
    s = sh * sw
    gstride = cg * s * plane
    c = np.arange(cg, dtype=np.int64)[:, None, None]
    i = np.arange(p.kh, dtype=np.int64)[None, :, None]
    j = np.arange(p.kw, dtype=np.int64)[None, None, :]
    offs = (((c * sh + (i * dh) % sh) * sw + (j * dw) % sw) * plane
            + ((i * dh) // sh) * wq + (j * dw) // sw).reshape(-1)
    kk = offs.shape[0]
    # register block: the one wasting fewer padded channels (ties: 4x3)
    shape_id = 0 if -(-og // 4) * 4 <= -(-og // 6) * 6 else 1
    mr, nv = MICROKERNELS[shape_id]
    tile = nv * vector_width(itemsize)
    nblk = -(-og // mr)
    copad = nblk * mr
    ho, wo = p.h_out, p.w_out
    blen = max(p.c_in * s * plane, (p.groups - 1) * gstride + int(offs.max()) + ho * wq + tile)
    if blen * itemsize > cap:
        return None
    # a tile's distinct input lines per channel: one window per kernel row and
    # column phase, each spanning ceil(window bytes / 64) + 1 lines
    window = (tile + ((p.kw - 1) * dw) // sw) * itemsize
    lines = p.kh * min(p.kw, sw) * (-(-window // 64) + 1)
    cc = max(1, min(cg, B_L1_BYTES // (64 * lines)))
    kc = cc * p.kh * p.kw
    mc = max(mr, min(copad, (A_L2_BYTES // (kc * itemsize)) // mr * mr))
    images = max(1, min(p.n, cap // (blen * itemsize)))
    pix = max(tile, C_L2_BYTES // (copad * itemsize))
    lb_img = -(-ho * wq // tile) * tile
    want = 4 * threads
    if lb_img <= pix:
        band = ho
        nb = images
        if nb > 1:
            # small planes: image blocks (a multiple of the thread count) of
            # >= 16 tiles each, so a weight chunk serves many tiles
            nbk = threads * max(1, (nb * (lb_img // tile)) // (16 * threads))
            imgs = max(1, min(pix // lb_img * 4, -(-nb // nbk)))
        else:
            imgs = 1
    else:
        imgs, band = 1, max(1, min(ho, pix // wq))
    while imgs == 1 and band > 1 and p.groups * images * -(-ho // band) < want:
        band = -(-band // 2)
    ldc = -(-band * wq // tile) * tile
    return IgemmPlan(hq=hq, pstride=plane, wq=wq, gstride=gstride, blen=blen, offs=offs, shape_id=shape_id,
                     mr=mr, tile=tile, nblk=nblk, kc=kc, mc=mc, images_per_chunk=images,
                     imgs_per_task=imgs, band_rows=band, ldc=ldc)


def pack_weights(weight: np.ndarray, groups: int, nblk: int, mr: int) -> np.ndarray:
    """(G, nblk, K, MR): packed[g, b, k, m] = w[g*Og + b*MR + m, k] (zeros past Og)."""
    c_out = weight.shape[0]
    og = c_out // groups
    kk = int(np.prod(weight.shape[1:]))
    packed = np.zeros((groups, nblk * mr, kk), dtype=weight.dtype)
    packed[:, :og] = weight.reshape(groups, og, kk)
    return np.ascontiguousarray(packed.reshape(groups, nblk, mr, kk).transpose(0, 1, 3, 2))


def run(kernels, x, weight, b, out, p, pl_: IgemmPlan, rmap, cmap, threads, workspace):
    """out = conv2d(x, weight) + b by phase planes + register-blocked tiles, chunked over images.

    ``kernels``: the ``cpu_igemm`` module; ``workspace(name, shape, dtype)``
    returns a reused buffer; ``b`` holds zeros when there is no bias.
    """
    apack = pack_weights(weight, p.groups, pl_.nblk, pl_.mr)
    sh, sw = p.stride
    images = pl_.images_per_chunk
    buf = workspace("igemm_planes", (images, pl_.blen), x.dtype)
    for n0 in range(0, p.n, images):
        nb = min(images, p.n - n0)
        tasks = p.groups * -(-nb // pl_.imgs_per_task) * -(-p.h_out // pl_.band_rows)
        nworkers = max(1, min(threads, tasks))
        scratch = workspace("igemm_acc", (nworkers, pl_.scratch_len()), x.dtype)
        kernels.phase_planes(x, n0, nb, rmap, cmap, p.padding[2], sh, sw, pl_.hq, pl_.wq,
                             pl_.pstride, buf)
        kernels.conv_tiles(buf, nb, n0, pl_.offs, apack, b, out, p.groups, pl_.gstride, pl_.wq,
                           pl_.imgs_per_task, pl_.band_rows, pl_.kc, pl_.mc, pl_.shape_id,
                           nworkers, scratch)
    return out
