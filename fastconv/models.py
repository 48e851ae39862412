"""LeNet-5 and VGG-16 from the seed notes, built only from fastconv's functional ops.

Both take parameters as a dict of arrays named like the equivalent PyTorch
``nn.Sequential``'s ``state_dict`` (so ``{k: v.numpy() for k, v in
torch_model.state_dict().items()}`` plugs straight in), and any array kind
fastconv accepts.

LeNet-5 (``shared/seeds/000_52b30ff491a7e0e6.txt``), 1x32x32 input::

    C1 conv 1->6 5x5 + tanh   (6x28x28)     S2 avgpool 2/2 + tanh (6x14x14)
    C3 conv 6->16 5x5 + tanh  (16x10x10)    S4 avgpool 2/2 + tanh (16x5x5)
    C5 conv 16->120 5x5 + tanh (120x1x1)    F6 linear 120->84 + tanh
    output linear 84->10 (logits; the table's softmax belongs to the loss)

VGG-16 (same notes): 13 3x3 convolutions with padding 1 and ReLU in five
blocks (64, 64 | 128, 128 | 256 x3 | 512 x3 | 512 x3), a 2x2 max pool after
each block, AdaptiveAvgPool2d((7, 7)), then linear 25088->4096, ReLU,
dropout, 4096->4096, ReLU, dropout, 4096->classes (dropout is the identity
at inference).  The notes print 10000 classes; torchvision's VGG-16 has
1000, the default here.
"""
from __future__ import annotations

import numpy as np

from . import api

__all__ = ["LENET5_LAYERS", "VGG16_CONFIG", "lenet5", "vgg16", "lenet5_module",
           "vgg16_module"]

#: (state_dict prefix, kind, args) of LeNet-5 as an nn.Sequential.
LENET5_LAYERS = [
    ("0", "conv", dict(in_channels=1, out_channels=6, kernel_size=5)),
    ("1", "tanh", {}),
    ("2", "avgpool", dict(kernel_size=2, stride=2)),
    ("3", "tanh", {}),
    ("4", "conv", dict(in_channels=6, out_channels=16, kernel_size=5)),
    ("5", "tanh", {}),
    ("6", "avgpool", dict(kernel_size=2, stride=2)),
    ("7", "tanh", {}),
    ("8", "conv", dict(in_channels=16, out_channels=120, kernel_size=5)),
    ("9", "tanh", {}),
    ("10", "flatten", {}),
    ("11", "linear", dict(in_features=120, out_features=84)),
    ("12", "tanh", {}),
    ("13", "linear", dict(in_features=84, out_features=10)),
]

#: VGG-16 feature extractor: channel counts, "M" for a 2x2 max pool.
VGG16_CONFIG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                512, 512, 512, "M"]


def _host(a):
    from .testing import to_numpy
    return to_numpy(a)


def _linear(x, w, b):
    return x @ w.T + b


def lenet5(x, params: dict, backend: str = "auto"):
    """LeNet-5 forward pass: ``x`` (N, 1, 32, 32) -> logits (N, 10)."""
    for name, kind, args in LENET5_LAYERS:
        if kind == "conv":
            x = api.conv2d(x, params[f"{name}.weight"], params[f"{name}.bias"], backend=backend)
        elif kind == "avgpool":
            x = api.avg_pool2d(x, args["kernel_size"], args["stride"], backend=backend)
        elif kind == "tanh":
            x = np.tanh(_host(x))
        elif kind == "flatten":
            x = _host(x).reshape(len(x), -1)
        elif kind == "linear":
            x = _linear(x, _host(params[f"{name}.weight"]), _host(params[f"{name}.bias"]))
    return x


def _vgg_layers(num_classes):
    """(name, kind) of torchvision's VGG-16 layout: features.i, avgpool, classifier.i."""
    layers, i, c_in = [], 0, 3
    for v in VGG16_CONFIG:
        if v == "M":
            layers.append((f"features.{i}", "maxpool", {}))
            i += 1
        else:
            layers.append((f"features.{i}", "conv", dict(in_channels=c_in, out_channels=v)))
            layers.append((f"features.{i + 1}", "relu", {}))
            i, c_in = i + 2, v
    layers.append(("avgpool", "adaptive", {}))
    layers.append(("flatten", "flatten", {}))
    for j, (fin, fout) in enumerate([(512 * 7 * 7, 4096), (4096, 4096), (4096, num_classes)]):
        layers.append((f"classifier.{3 * j}", "linear", dict(in_features=fin, out_features=fout)))
        if j < 2:
            layers.append((f"classifier.{3 * j + 1}", "relu", {}))
            layers.append((f"classifier.{3 * j + 2}", "dropout", {}))
    return layers


def vgg16(x, params: dict, backend: str = "auto"):
    """VGG-16 forward pass (inference): ``x`` (N, 3, H, W) -> logits (N, classes)."""
    for name, kind, _args in _vgg_layers(len(params["classifier.6.bias"])):
        if kind == "conv":
            x = api.conv2d(x, params[f"{name}.weight"], params[f"{name}.bias"], padding=1,
                           backend=backend)
        elif kind == "relu":
            x = np.maximum(_host(x), 0)
        elif kind == "maxpool":
            x = api.max_pool2d(x, 2, 2, backend=backend)
        elif kind == "adaptive":
            x = api.adaptive_avg_pool2d(x, (7, 7), backend=backend)
        elif kind == "flatten":
            x = _host(x).reshape(len(x), -1)
        elif kind == "linear":
            x = _linear(x, _host(params[f"{name}.weight"]), _host(params[f"{name}.bias"]))
    return x


def lenet5_module():
    """LeNet-5 as a ``torch.nn.Sequential`` of fastconv.torch modules (needs PyTorch)."""
    from torch import nn

    from . import torch as fct
    make = {"conv": fct.Conv2d, "avgpool": fct.AvgPool2d, "tanh": nn.Tanh,
            "flatten": nn.Flatten, "linear": nn.Linear}
    return nn.Sequential(*[make[kind](**args) for _name, kind, args in LENET5_LAYERS])


def vgg16_module(num_classes: int = 1000):
    """VGG-16 with torchvision's parameter names, built from fastconv.torch modules."""
    from torch import nn

    from . import torch as fct
    features, classifier = [], []
    for name, kind, args in _vgg_layers(num_classes):
        if name.startswith("features"):
            features.append({"conv": lambda a: fct.Conv2d(a["in_channels"], a["out_channels"], 3,
                                                          padding=1),
                             "relu": lambda a: nn.ReLU(inplace=True),
                             "maxpool": lambda a: fct.MaxPool2d(2, 2)}[kind](args))
        elif name.startswith("classifier"):
            classifier.append({"linear": lambda a: nn.Linear(**a),
                               "relu": lambda a: nn.ReLU(inplace=True),
                               "dropout": lambda a: nn.Dropout(0.5)}[kind](args))

    class VGG16(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*features)
            self.avgpool = fct.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(*classifier)

        def forward(self, x):
            return self.classifier(self.avgpool(self.features(x)).flatten(1))

    return VGG16()
