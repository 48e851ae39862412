"""The classic image filters of the lecture notes, applied through :func:`fastconv.conv2d`.

The kernels of ``shared/seeds/004_3e702e2ce8884699.txt`` (box, gaussian,
sharpen, horizontal edge, vertical edge, motion; values as printed there)
plus Sobel.  Like every op of fastconv these are cross-correlations: the
kernel is not flipped, as in OpenCV's ``filter2D``.

>>> import numpy as np, fastconv.filters as ff
>>> ff.apply(np.ones((5, 5)), "box").round(6)[2, 2]
1.0
"""
from __future__ import annotations

import numpy as np

from .api import conv2d

__all__ = ["KERNELS", "names", "kernel", "apply"]

KERNELS: dict[str, np.ndarray] = {
    "box": np.full((3, 3), 1.0 / 9.0),
    "gaussian": np.array([[.0000, .0000, .0002, .0000, .0000],
                          [.0000, .0113, .0837, .0113, .0000],
                          [.0002, .0837, .6187, .0837, .0002],
                          [.0000, .0113, .0837, .0113, .0000],
                          [.0000, .0000, .0002, .0000, .0000]]),
    "sharpen": np.array([[0., -1., 0.], [-1., 5., -1.], [0., -1., 0.]]),
    "horizontal_edge": np.array([[1., 1., 1.], [0., 0., 0.], [-1., -1., -1.]]),
    "vertical_edge": np.array([[1., 0., -1.], [1., 0., -1.], [1., 0., -1.]]),
    "motion": np.array([[.0304, .0501, 0., 0., 0.],
                        [.0501, .1771, .0519, 0., 0.],
                        [0., .0519, .1771, .0519, 0.],
                        [0., 0., .0519, .1771, .0501],
                        [0., 0., 0., .0501, .0304]]),
    "sobel_x": np.array([[-1., 0., 1.], [-2., 0., 2.], [-1., 0., 1.]]),
    "sobel_y": np.array([[-1., -2., -1.], [0., 0., 0.], [1., 2., 1.]]),
    # the edge-detection kernel of the notes' FLOP comparison (Goodfellow et al., ch. 9)
    "edge_diff": np.array([[-1., 1.]]),
}
for _k in KERNELS.values():
    _k.setflags(write=False)

#: "sobel" is the gradient magnitude sqrt(sobel_x**2 + sobel_y**2), not a single kernel.
COMBINED = ("sobel",)


def names() -> list[str]:
    """All filter names accepted by :func:`apply`."""
    return sorted(KERNELS) + list(COMBINED)


def kernel(name: str) -> np.ndarray:
    """The (read-only) float64 kernel called ``name``."""
    if name not in KERNELS:
        raise ValueError(f"filter: unknown filter {name!r}; filters are {names()}")
    return KERNELS[name]


def _as_image(image) -> tuple[np.ndarray, bool]:
    image = np.asarray(image)
    if image.ndim == 2:
        return image[None, None], False
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return np.moveaxis(image, 2, 0)[None], True
    raise ValueError(f"filter: image must be 2-D (H, W) grayscale or (H, W, 3|4) color, got "
                     f"shape {image.shape}")


def apply(image, name_or_kernel, *, padding_mode: str = "reflect", dtype=np.float32,
          backend: str = "auto") -> np.ndarray:
    """Filter a grayscale ``(H, W)`` or color ``(H, W, C)`` image; same size out.

    Args:
        image: array-like; integer images are converted to ``dtype``.
        name_or_kernel: a name from :func:`names` or a 2-D kernel array.
        padding_mode: border handling for the "same"-size output: ``"reflect"``
            (OpenCV's default BORDER_REFLECT_101), ``"replicate"``, ``"zeros"``
            or ``"circular"``.
        dtype: float32 or float64: the dtype of the computation and the result.
        backend: passed to :func:`fastconv.conv2d`.

    Returns:
        The filtered image, shape as the input, in ``dtype`` (not clipped).
    """
    x, color = _as_image(image)
    x = x.astype(dtype, copy=False)
    if isinstance(name_or_kernel, str) and name_or_kernel == "sobel":
        gx = apply(image, "sobel_x", padding_mode=padding_mode, dtype=dtype, backend=backend)
        gy = apply(image, "sobel_y", padding_mode=padding_mode, dtype=dtype, backend=backend)
        return np.hypot(gx, gy).astype(dtype)
    k = kernel(name_or_kernel) if isinstance(name_or_kernel, str) else np.asarray(name_or_kernel)
    if k.ndim != 2:
        raise ValueError(f"filter: kernel must be 2-D, got shape {k.shape}")
    channels = x.shape[1]
    # one copy of the kernel per channel, applied channel by channel (depthwise)
    w = np.broadcast_to(k.astype(dtype), (channels, 1) + k.shape)
    out = conv2d(x, np.ascontiguousarray(w), padding="same", groups=channels,
                 padding_mode=padding_mode, backend=backend)
    return np.moveaxis(out[0], 0, 2) if color else out[0, 0]
