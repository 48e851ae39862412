"""The benchmark layer suite, as plain data (shared by ``bench/`` and ``fastconv bench``).

Shapes from ``shared/docs/benchmark-suite.md``.  Each :class:`Layer` gives a
batch size per suite: ``"quick"`` (a short subset for ``--quick``, batch
reduced so it finishes in well under 3 minutes on 2 cores), ``"cpu"`` (the
documented CPU sizes) and ``"gpu"`` (larger batches that fill a GPU, e.g.
ResNet-50 layers at batch 32).  ``None`` leaves the layer out of that suite.
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Layer", "Case", "LAYERS", "SUITES", "cases", "EDGE_SWEEP"]

SUITES = ("quick", "cpu", "gpu")


@dataclass(frozen=True)
class Layer:
    """One benchmarked call: ``op(input, weight, **kwargs)`` (pooling: no weight).

    ``input`` is ``(C, H, W)`` (the batch comes from ``batch[suite]``),
    ``weight`` the full weight shape or None, ``group`` the report section.
    """
    name: str
    op: str
    input: tuple
    weight: tuple | None
    kwargs: dict
    group: str
    batch: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    """A layer at one suite's batch size: what a benchmark runs."""
    name: str
    op: str
    input_shape: tuple
    weight_shape: tuple | None
    kwargs: dict
    group: str
    suite: str

    @property
    def id(self) -> str:
        return f"{self.name} N={self.input_shape[0]}"

    def describe(self) -> str:
        kw = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        w = f" weight {self.weight_shape}" if self.weight_shape else ""
        return f"{self.op} input {self.input_shape}{w}" + (f" ({kw})" if kw else "")


def _conv(name, n, c_in, c_out, hw, k, s=1, p=0, g=1, group="conv", batch=None):
    h, w = (hw, hw) if isinstance(hw, int) else hw
    kh, kw = (k, k) if isinstance(k, int) else k
    kwargs = {}
    if s != 1:
        kwargs["stride"] = s
    if p != 0:
        kwargs["padding"] = p
    if g != 1:
        kwargs["groups"] = g
    return Layer(name, "conv2d", (c_in, h, w), (c_out, c_in // g, kh, kw), kwargs, group,
                 batch or {"cpu": n})


#: Every layer; batch per suite (cpu sizes as measured in benchmark-suite.md).
LAYERS: tuple[Layer, ...] = (
    _conv("LeNet-5 C1", 256, 1, 6, 32, 5, batch={"cpu": 256, "gpu": 1024}),
    _conv("LeNet-5 C3", 256, 6, 16, 14, 5, batch={"quick": 32, "cpu": 256, "gpu": 1024}),
    _conv("AlexNet conv1", 8, 3, 64, 224, 11, s=4, p=2, batch={"cpu": 8, "gpu": 64}),
    _conv("VGG-16 conv1_2", 1, 64, 64, 224, 3, p=1, batch={"cpu": 1, "gpu": 16}),
    _conv("VGG-16 conv3_2", 1, 256, 256, 56, 3, p=1, batch={"cpu": 1, "gpu": 16}),
    _conv("ResNet-50 conv2 1x1", 8, 256, 64, 56, 1, batch={"cpu": 8, "gpu": 32}),
    _conv("ResNet-50 conv2 3x3", 8, 64, 64, 56, 3, p=1,
          batch={"quick": 1, "cpu": 8, "gpu": 32}),
    _conv("ResNet-50 conv3 3x3 s2", 8, 128, 128, 56, 3, s=2, p=1, batch={"cpu": 8, "gpu": 32}),
    _conv("ResNet-50 conv4 1x1", 8, 1024, 256, 14, 1, batch={"cpu": 8, "gpu": 32}),
    _conv("ResNet-50 conv5 3x3", 8, 512, 512, 7, 3, p=1, batch={"cpu": 8, "gpu": 32}),
    _conv("MobileNet depthwise", 16, 32, 32, 112, 3, p=1, g=32,
          batch={"quick": 2, "cpu": 16, "gpu": 64}),
    _conv("image filter 1024^2 3x3", 1, 1, 1, 1024, 3, p=1, group="image filter",
          batch={"quick": 1, "cpu": 1, "gpu": 1}),
    _conv("image filter 1024^2 5x5", 1, 1, 1, 1024, 5, p=2, group="image filter",
          batch={"cpu": 1, "gpu": 1}),
    _conv("image filter 4096^2 3x3", 1, 1, 1, 4096, 3, p=1, group="image filter",
          batch={"cpu": 1, "gpu": 1}),
    _conv("image filter 4096^2 5x5", 1, 1, 1, 4096, 5, p=2, group="image filter",
          batch={"cpu": 1, "gpu": 1}),
    # the lecture notes' example: 320 wide x 280 tall, kernel [-1, 1], no padding
    _conv("edge detection 320x280 [-1,1]", 1, 1, 1, (280, 320), (1, 2), group="edge detection",
          batch={"quick": 1, "cpu": 1, "gpu": 1}),
    Layer("DCGAN-like up 64->32 k4 s2", "conv_transpose2d", (64, 28, 28), (64, 32, 4, 4),
          {"stride": 2, "padding": 1}, "transposed", {"quick": 2, "cpu": 16, "gpu": 64}),
    Layer("U-Net up 256->128 k2 s2", "conv_transpose2d", (256, 14, 14), (256, 128, 2, 2),
          {"stride": 2}, "transposed", {"cpu": 16, "gpu": 64}),
    Layer("max pool k2 s2", "max_pool2d", (64, 112, 112), None, {"kernel_size": 2, "stride": 2},
          "pooling", {"cpu": 8, "gpu": 32}),
    Layer("max pool k3 s2 p1", "max_pool2d", (64, 112, 112), None,
          {"kernel_size": 3, "stride": 2, "padding": 1}, "pooling",
          {"quick": 1, "cpu": 8, "gpu": 32}),
    Layer("avg pool k2 s2", "avg_pool2d", (64, 112, 112), None, {"kernel_size": 2, "stride": 2},
          "pooling", {"quick": 1, "cpu": 8, "gpu": 32}),
    Layer("adaptive avg pool to 7x7", "adaptive_avg_pool2d", (64, 112, 112), None,
          {"output_size": 7}, "pooling", {"quick": 1, "cpu": 8, "gpu": 32}),
    Layer("adaptive max pool to 7x7", "adaptive_max_pool2d", (64, 112, 112), None,
          {"output_size": 7}, "pooling", {"cpu": 8, "gpu": 32}),
)


def cases(suite: str = "quick", name_filter: str | None = None) -> list[Case]:
    """The cases of one suite (``"quick"``, ``"cpu"``, ``"gpu"``), optionally filtered.

    ``name_filter`` keeps layers whose name or group contains it (case-insensitive;
    several alternatives separated by ``,``).
    """
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; suites are {SUITES}")
    wanted = [f.strip().lower() for f in name_filter.split(",")] if name_filter else None
    out = []
    for layer in LAYERS:
        n = layer.batch.get(suite)
        if n is None:
            continue
        if wanted and not any(f in layer.name.lower() or f in layer.group.lower()
                              for f in wanted):
            continue
        out.append(Case(layer.name, layer.op, (n,) + tuple(layer.input), layer.weight,
                        dict(layer.kwargs), layer.group, suite))
    return out


#: Image sizes (width, height) of the dense-versus-convolution sweep: the notes'
#: 320 x 280 scaled down by 20, 10, 8, 5, 4, 10/3, 5/2, 2, 4/3 and 1.  The dense
#: matrix is built only where it fits the memory limit (128 x 112: 816 MB).
EDGE_SWEEP = {
    "quick": ((16, 14), (32, 28), (40, 35), (64, 56), (80, 70), (96, 84), (160, 140),
              (320, 280)),
    "full": ((16, 14), (32, 28), (40, 35), (64, 56), (80, 70), (96, 84), (128, 112),
             (160, 140), (240, 210), (320, 280)),
}
