"""fastconv.kernels: device code (``@njit`` CPU loops, ``@cuda.jit`` kernels, CUDA C ``.cu``).

Installed from the repository's top-level ``kernels/`` folder.  Nothing here
is imported by ``import fastconv``; host wrappers in ``fastconv.wrappers``
import these modules when a backend first runs.
"""
import os

#: Folder holding the CUDA C sources (``*.cu``, ``*.cuh``).
SOURCE_DIR = os.path.dirname(os.path.abspath(__file__))


def source_path(name: str) -> str:
    """Absolute path of a CUDA C source file shipped in this package."""
    return os.path.join(SOURCE_DIR, name)
