"""pytest-benchmark suite of fastconv: every registered implementation and every peer.

Run ``pytest bench/ --benchmark-only`` (add ``--benchmark-json=run.json`` to
save a run for ``fastconv report run.json``).  Which layers:

* ``--fastconv-suite=quick`` (default; about a minute on 2 cores), ``cpu``
  (the sizes of shared/docs/benchmark-suite.md: long) or ``gpu`` (larger
  batches); or the environment variable ``FASTCONV_BENCH_SUITE``;
* ``--fastconv-filter=WORDS`` / ``FASTCONV_BENCH_FILTER``: layers whose name or
  group contains one of the comma-separated words;
* ``--fastconv-only=WORDS`` / ``FASTCONV_BENCH_ONLY``: implementations or peers
  whose label contains one of the words (``numba,torch``);
* ``--fastconv-device=cpu|cuda|all`` / ``FASTCONV_BENCH_DEVICE``;
* ``FASTCONV_BENCH_THREADS=N``: every library limited to N CPU threads.

Cases come from :mod:`fastconv.perf.suite` and runners from the registry
(:func:`fastconv.perf.runners.runners`), so whatever is registered at run
time is benchmarked; a missing peer or an unusable backend is a skip with
its reason, never an error.
"""
import os

import pytest

from fastconv.perf import machine, runners, suite


def pytest_addoption(parser):
    group = parser.getgroup("fastconv", "fastconv benchmark selection")
    group.addoption("--fastconv-suite", choices=suite.SUITES,
                    default=os.environ.get("FASTCONV_BENCH_SUITE", "quick"),
                    help="layer sizes: quick (default), cpu or gpu")
    group.addoption("--fastconv-filter", default=os.environ.get("FASTCONV_BENCH_FILTER"),
                    help="only layers whose name/group contains one of these words (a,b)")
    group.addoption("--fastconv-only", default=os.environ.get("FASTCONV_BENCH_ONLY"),
                    help="only implementations/peers whose label contains one of these words")
    group.addoption("--fastconv-device", choices=("cpu", "cuda", "all"),
                    default=os.environ.get("FASTCONV_BENCH_DEVICE", "all"))


def _devices(config):
    dev = config.getoption("--fastconv-device")
    return ("cpu", "cuda") if dev == "all" else (dev,)


def _wanted(label, only):
    return not only or any(w.strip() and w.strip() in label for w in only.split(","))


def pytest_generate_tests(metafunc):
    config = metafunc.config
    if "layer_case" in metafunc.fixturenames:
        params = []
        for case in suite.cases(config.getoption("--fastconv-suite"),
                                config.getoption("--fastconv-filter")):
            for r in runners.runners(case.op, _devices(config)):
                if _wanted(r.label, config.getoption("--fastconv-only")):
                    params.append(pytest.param((case, r), id=f"{case.id}|{r.label}"))
        metafunc.parametrize("layer_case", params)
    if "edge_size" in metafunc.fixturenames:
        key = "quick" if config.getoption("--fastconv-suite") == "quick" else "full"
        metafunc.parametrize("edge_size", suite.EDGE_SWEEP[key],
                             ids=[f"{w}x{h}" for w, h in suite.EDGE_SWEEP[key]])


@pytest.fixture(scope="session")
def machine_description():
    return machine.describe()


@pytest.fixture(scope="session")
def ceilings(request):
    """Measured ceilings per device (GEMM GFLOP/s, copy GB/s), once per session."""
    quick = request.config.getoption("--fastconv-suite") == "quick"
    out = {"cpu": machine.measure_cpu_ceilings(quick)}
    gpu = machine.measure_gpu_ceilings(quick) if "cuda" in _devices(request.config) else None
    if gpu:
        out["cuda"] = gpu
    request.config._fastconv_ceilings = out
    return out


class _CaseCache:
    """Inputs and reference of the current case (tests run case by case)."""
    def __init__(self):
        self.key, self.data, self.auto = None, None, {}

    def get(self, case):
        if self.key != case.id:
            self.key, self.data, self.auto = case.id, runners.case_data(case), {}
        return self.data

    def auto_choice(self, case, device):
        if device not in self.auto:
            self.auto[device] = runners.auto_choice(case, self.data, device)
        return self.auto[device]


@pytest.fixture(scope="session")
def case_cache():
    return _CaseCache()


@pytest.fixture(scope="session")
def edge_methods_cache():
    return {}


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Add the machine and its ceilings, as ``fastconv bench`` does, for ``fastconv report``."""
    output_json["fastconv"] = {
        "suite": config.getoption("--fastconv-suite"),
        "ceilings": getattr(config, "_fastconv_ceilings", {}),
        "machine": machine.describe(),
        "skipped": [], "failed": [],
        "command": "pytest bench/",
    }


def pytest_configure(config):
    """``FASTCONV_BENCH_THREADS=N`` limits every library to N threads (as ``--threads``)."""
    if os.environ.get("FASTCONV_BENCH_THREADS"):
        machine.limit_threads(int(os.environ["FASTCONV_BENCH_THREADS"]))


@pytest.fixture
def timed(benchmark, request):
    """``timed(fn)``: benchmark ``fn`` with a fixed number of rounds.

    pytest-benchmark's own calibration picks the rounds from a first quick
    measurement; on a loaded machine that can turn a 1-second budget into
    half a minute.  Here one call is timed and the rounds are
    ``--benchmark-max-time`` (0.25 s in the quick suite) divided by it, between
    ``--benchmark-min-rounds`` (3 in the quick suite) and 1000.
    """
    import time

    config = request.config
    quick = config.getoption("--fastconv-suite") == "quick"
    max_time = float(getattr(config.option, "benchmark_max_time", 1.0) or 1.0)
    min_rounds = int(getattr(config.option, "benchmark_min_rounds", 5) or 5)
    if quick:
        max_time, min_rounds = min(max_time, 0.25), min(min_rounds, 3)

    def run(fn):
        t0 = time.perf_counter()
        fn()
        once = max(time.perf_counter() - t0, 1e-7)
        rounds = int(min(1000, max(min_rounds, max_time / once)))
        return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
    return run
