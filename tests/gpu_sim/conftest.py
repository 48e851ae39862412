"""Kernel-specific numba-cuda tests: run under the CUDA simulator or on a GPU.

They are collected by every pytest run but skip unless the numba-cuda backend
is available (``NUMBA_ENABLE_CUDASIM=1`` set before Numba is imported, or a
real GPU).  ``tests/test_numba_cuda_sim.py`` starts the simulator run.
"""
import pytest

from fastconv import registry


def pytest_collection_modifyitems(config, items):
    reason = registry.get_backend("numba-cuda").unavailable_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"numba-cuda unavailable: {reason} "
                                   f"(run with NUMBA_ENABLE_CUDASIM=1)")
    for item in items:
        if "gpu_sim" in str(item.fspath):
            item.add_marker(skip)
