"""LeNet-5 and VGG-16 from fastconv ops equal their PyTorch equivalents; training works."""
import copy
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from fastconv import models  # noqa: E402
from fastconv.testing import assert_close  # noqa: E402


def _as_plain_torch(module):
    """The same model with fastconv.torch modules turned back into torch.nn ones."""
    plain = copy.deepcopy(module)
    for m in plain.modules():
        if type(m).__module__ == "fastconv.torch":
            m.__class__ = type(m).__mro__[1]
    return plain


def _numpy_params(module):
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def test_lenet5_matches_pytorch_and_the_notes_table():
    torch.manual_seed(3)
    fast = models.lenet5_module().double()
    plain = _as_plain_torch(fast)
    assert not any(type(m).__module__ == "fastconv.torch" for m in plain.modules())
    x = torch.randn(4, 1, 32, 32, dtype=torch.float64)
    # the notes' table: 6x28x28, 6x14x14, 16x10x10, 16x5x5, 120x1x1, 84, 10
    shapes = []
    h = x
    for layer in plain:
        h = layer(h)
        shapes.append(tuple(h.shape[1:]))
    assert shapes[0] == (6, 28, 28) and shapes[2] == (6, 14, 14) and shapes[4] == (16, 10, 10)
    assert shapes[6] == (16, 5, 5) and shapes[8] == (120, 1, 1) and shapes[11] == (84,)
    expect = plain(x).detach().numpy()
    assert_close(models.lenet5(x.numpy(), _numpy_params(plain)), expect, "float64", "functional")
    assert_close(fast(x).detach().numpy(), expect, "float64", "modules")


def test_vgg16_matches_pytorch():
    torch.manual_seed(4)
    fast = models.vgg16_module(num_classes=10)
    plain = _as_plain_torch(fast).eval()
    fast.eval()
    n_params = sum(p.numel() for p in plain.parameters())
    assert n_params == 14_714_688 + 25088 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 10 + 10
    x = torch.randn(1, 3, 32, 32)   # 32x32 -> 1x1 after five pools; adaptive pool -> 7x7
    with torch.no_grad():
        expect = plain(x).numpy()
        got_modules = fast(x).numpy()
    got = models.vgg16(x.numpy(), _numpy_params(plain))
    assert got.shape == (1, 10)
    assert_close(got, expect, "float32", "functional")
    assert_close(got_modules, expect, "float32", "modules")


def _load_example():
    path = Path(__file__).resolve().parents[1] / "examples" / "train_lenet5_digits.py"
    spec = importlib.util.spec_from_file_location("train_lenet5_digits", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_training_example_loss_falls():
    pytest.importorskip("sklearn")
    example = _load_example()
    _model, losses, accuracy = example.train(epochs=3, subset=300, log=lambda *_: None)
    assert losses[-1] < 0.7 * losses[0], losses
    assert accuracy > 0.5
