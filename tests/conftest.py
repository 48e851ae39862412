"""Shared fixtures: fresh random inputs for every test, and the registry as parameters."""
import os
import zlib

import numpy as np
import pytest

from fastconv import registry


@pytest.fixture
def rng(request):
    """A generator seeded differently on every run (set FASTCONV_SEED to replay one).

    A failing test's report names the seed (``FASTCONV_SEED=...``), so the
    failing draw can be reproduced exactly.
    """
    base = int(os.environ.get("FASTCONV_SEED", np.random.SeedSequence().entropy % 2**32))
    seed = (base + zlib.crc32(request.node.nodeid.encode())) % 2**32
    request.node.fastconv_seed = base
    return np.random.default_rng(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    seed = getattr(item, "fastconv_seed", None)
    if report.failed and seed is not None:
        report.sections.append(("fastconv random inputs",
                                f"replay with FASTCONV_SEED={seed} pytest '{item.nodeid}'"))


def implementation_params(op):
    """pytest params for every registered implementation of ``op`` (unavailable: skipped)."""
    out = []
    for impl in registry.implementations(op):
        be = registry.get_backend(impl.backend)
        reason = be.unavailable_reason()
        marks = [pytest.mark.skip(reason=f"backend {impl.backend}: {reason}")] if reason else []
        out.append(pytest.param(impl, id=impl.key, marks=marks))
    return out


def backend_params():
    out = []
    for be in registry.all_backends():
        reason = be.unavailable_reason()
        marks = [pytest.mark.skip(reason=f"backend {be.name}: {reason}")] if reason else []
        out.append(pytest.param(be.name, id=be.name, marks=marks))
    return out


def pytest_report_header(config):
    lines = []
    for be in registry.all_backends():
        reason = be.unavailable_reason()
        lines.append(f"fastconv backend {be.name}: "
                     + ("available" if reason is None else f"unavailable ({reason})"))
    seed = os.environ.get("FASTCONV_SEED")
    lines.append(f"FASTCONV_SEED={seed}" if seed else "FASTCONV_SEED unset: fresh random inputs")
    return lines


# --------------------------------------------------------------------------
# slow subprocess checks: started as soon as the run's tests are known
# --------------------------------------------------------------------------
_BACKGROUND_TESTS = {
    # test function name -> (job name, spec factory name in background.py)
    "test_shared_tests_pass_with_numba_boundscheck": ("boundscheck", "boundscheck_spec"),
    "test_numba_cuda_kernels_under_the_simulator": ("cudasim", "cudasim_spec"),
}


def pytest_collection_finish(session):
    """Start the selected slow subprocess checks now, to overlap the rest of the run."""
    import background
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for item in session.items:
        job = _BACKGROUND_TESTS.get(getattr(item, "originalname", item.name))
        if job is None:
            continue
        if any(m.name == "skipif" and m.args and m.args[0] for m in item.iter_markers()):
            continue
        name, spec = job
        background.start(name, *getattr(background, spec)(repo))
    # a run with many numba pooling tests (the whole suite): warm Numba's cache
    # for the specializations it reaches last, on the otherwise idle core
    pooling = sum(1 for item in session.items
                  if "numba" in item.nodeid and "pool" in item.nodeid and "cuda" not in item.nodeid)
    if pooling >= WARM_CACHE_MIN_TESTS and os.environ.get("NUMBA_BOUNDSCHECK") != "1":
        background.start("warm", *background.warm_spec(repo))


#: Selected numba pooling tests from which a run warms the cache in the background.
WARM_CACHE_MIN_TESTS = 100


def pytest_sessionfinish(session, exitstatus):
    import background
    background.stop_all()

