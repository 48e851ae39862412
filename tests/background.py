"""Slow subprocess checks started at the beginning of a test run, collected by their tests.

The bounds-checked rerun of the shared tests and the CUDA-simulator run are
separate pytest processes that mostly compile kernels on one core.  When a
run selects their tests, ``conftest.pytest_collection_finish`` starts them
right away (:func:`start`), so they overlap the rest of the suite on the
second core instead of running after it; the test then waits for the result
(:func:`result`).  Run alone, a test simply starts its job and waits.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

#: Niceness of the background jobs (POSIX).
BACKGROUND_NICE = 10

#: name -> (Popen, output file, deadline, scratch folder or None)
_JOBS: dict = {}


def start(name: str, cmd, cwd, env, timeout: float, scratch: str | None = None) -> None:
    """Start job ``name`` (once); its stdout and stderr go to a temporary file."""
    if name in _JOBS:
        return
    out = tempfile.TemporaryFile(mode="w+")
    # niced: the main pytest process is the run's long pole and must keep a
    # whole core; the jobs share the other (with three jobs and no nice, each
    # process got 56 % of a core on 2 cores)
    nice = shutil.which("nice")
    if nice:
        cmd = [nice, "-n", str(BACKGROUND_NICE), *cmd]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                            text=True)
    _JOBS[name] = (proc, out, time.monotonic() + timeout, scratch)


def result(name: str, spec) -> tuple[int, str, float]:
    """(return code, output, seconds waited here) of job ``name``; starts it first if needed.

    ``spec()`` returns the ``start`` arguments after ``name``.  A job past its
    deadline is killed (return code -9).
    """
    if name not in _JOBS:
        start(name, *spec())
    proc, out, deadline, scratch = _JOBS.pop(name)
    t0 = time.monotonic()
    try:
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    waited = time.monotonic() - t0
    out.seek(0)
    text = out.read()
    out.close()
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    return proc.returncode, text, waited


def stop_all() -> None:
    """Kill jobs nobody collected (a run stopped early, e.g. by -x)."""
    for name in list(_JOBS):
        proc, out, _deadline, scratch = _JOBS.pop(name)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def boundscheck_spec(repo: str):
    """The bounds-checked rerun of the shared numba CPU tests (see test_numba_cpu.py)."""
    cache = tempfile.mkdtemp(prefix="fastconv-boundscheck-")
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=cache)
    cmd = [_python(), "-m", "pytest", "-p",
           "no:cacheprovider", "-q", "-x", "tests/test_backends.py", "-k", "numba and not cuda"]
    return cmd, repo, env, 1800, cache


def cudasim_spec(repo: str):
    """The numba-cuda kernels under the CUDA simulator (see test_numba_cuda_sim.py)."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    cmd = [_python(), "-m", "pytest", "-p", "no:cacheprovider", "-q",
           "tests/test_backends.py", "tests/gpu_sim", "-k", "numba-cuda or numba_cuda_kernels"]
    return cmd, repo, env, 1200, None


def warm_spec(repo: str):
    """Numba cache warming for the late specializations (see warm_numba_cache.py)."""
    cmd = [_python(), os.path.join("tests", "warm_numba_cache.py")]
    return cmd, repo, dict(os.environ), 1800, None


def _python() -> str:
    import sys
    return sys.executable
