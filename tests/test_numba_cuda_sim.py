"""The numba-cuda kernels, run without a GPU.

* The shared backend tests (``tests/test_backends.py -k numba-cuda``) and the
  kernel-specific tests in ``tests/gpu_sim/`` run in a separate pytest process
  with ``NUMBA_ENABLE_CUDASIM=1`` (the simulator must be enabled before Numba is
  imported, so it cannot share this process).  Set FASTCONV_SKIP_CUDASIM=1 to
  leave it out of a quick run.
* Without a GPU or driver, asking for the backend raises
  BackendUnavailableError with the probe's reason, never hangs or crashes.
"""
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

import fastconv as fc
from fastconv import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIM_TIMEOUT_S = 1200


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1",
                    reason="already inside the simulator run")
@pytest.mark.skipif(os.environ.get("FASTCONV_SKIP_CUDASIM") == "1",
                    reason="FASTCONV_SKIP_CUDASIM=1")
def test_numba_cuda_kernels_under_the_simulator():
    import background  # started at collection time by conftest when this test is selected
    rc, text, waited = background.result("cudasim", lambda: background.cudasim_spec(ROOT))
    tail = text[-6000:]
    print(f"\nCUDA simulator run (waited {waited:.1f} s here)\n{tail}")
    assert rc == 0, f"simulator run failed:\n{tail}"
    passed = re.search(r"(\d+) passed", text)
    # the backend must really have run (not been skipped as unavailable)
    assert passed and int(passed.group(1)) >= 240, f"too few tests ran:\n{tail}"


def test_clear_error_without_a_gpu():
    be = registry.get_backend("numba-cuda")
    reason = be.unavailable_reason()
    if reason is None:
        pytest.skip("numba-cuda is available here (GPU or simulator)")
    assert isinstance(reason, str) and reason
    x = np.zeros((1, 1, 4, 4), np.float32)
    w = np.zeros((1, 1, 3, 3), np.float32)
    with pytest.raises(fc.BackendUnavailableError, match="numba-cuda") as info:
        fc.conv2d(x, w, backend="numba-cuda")
    assert reason in str(info.value)
    with pytest.raises(fc.BackendUnavailableError):
        fc.max_pool2d(x, 2, backend="numba-cuda")
    row = [b for b in fc.backends() if b["name"] == "numba-cuda"][0]
    assert row["available"] is False and row["reason"] == reason


def test_probe_never_raises(monkeypatch):
    """A probe that blows up inside the driver check still returns a reason string."""
    from fastconv.wrappers import numba_cuda_backend as ncb
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        pytest.skip("the simulator short-circuits the probe")
    from numba import cuda

    def boom():
        raise RuntimeError("driver exploded")
    monkeypatch.setattr(cuda, "is_available", boom)
    reason = ncb._probe()
    assert isinstance(reason, str) and "driver exploded" in reason
