"""fastconv: hand-written convolution and pooling kernels, drop-in for torch.nn.functional.

``import fastconv`` needs only NumPy.  Numba, numba-cuda and CuPy are
imported when a backend first needs them.

>>> import numpy as np, fastconv as fc
>>> x = np.random.rand(1, 3, 32, 32).astype(np.float32)
>>> w = np.random.rand(10, 3, 5, 5).astype(np.float32)
>>> fc.conv2d(x, w, padding=2).shape
(1, 10, 32, 32)
"""
from .api import (adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d, conv2d,
                  conv_transpose2d, max_pool2d, plan)
from .backward import (adaptive_avg_pool2d_backward, adaptive_max_pool2d_backward,
                       avg_pool2d_backward, conv2d_backward, conv_transpose2d_backward,
                       max_pool2d_backward)
from .registry import BackendUnavailableError, backends
from .shape_helpers import (adaptive_pool2d_output_shape, avg_pool2d_output_shape,
                            conv2d_output_shape, conv_transpose2d_output_shape,
                            max_pool2d_output_shape)

__version__ = "0.1.0"

__all__ = [
    "conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
    "adaptive_max_pool2d", "backends", "plan",
    "conv2d_backward", "conv_transpose2d_backward", "max_pool2d_backward", "avg_pool2d_backward",
    "adaptive_avg_pool2d_backward", "adaptive_max_pool2d_backward", "BackendUnavailableError",
    "conv2d_output_shape", "conv_transpose2d_output_shape", "max_pool2d_output_shape",
    "avg_pool2d_output_shape", "adaptive_pool2d_output_shape", "__version__",
]
