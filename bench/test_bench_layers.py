"""Each layer of the suite with each registered implementation and each peer.

The result is checked once against the float64 NumPy reference (that call is
also the warm-up: compilation stays out of the timing); GPU runners
synchronize inside the timed call.  ``extra_info`` holds FLOPs, bytes,
GFLOP/s, GB/s and the % of the measured roofline (see fastconv.perf.records).
"""
import pytest

from fastconv.perf import runners
from fastconv.perf.records import extra_info
from fastconv.perf.run import machine_label


def test_layer(benchmark, timed, layer_case, ceilings, case_cache, machine_description):
    case, runner = layer_case
    data = case_cache.get(case)
    try:
        fn, err = runners.prepare(runner, data)
    except runners.Skip as exc:
        pytest.skip(str(exc))
    benchmark.group = case.id
    timed(fn)
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(extra_info(
        case, runner, data.params, median, err, ceilings.get(runner.device),
        case_cache.auto_choice(case, runner.device), machine_label(machine_description,
                                                                   runner.device)))
