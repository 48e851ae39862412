"""fastconv.perf: suite data, peers' alignment, timing records, fits, and report generation.

Everything here is fast (seconds): reports are generated from a tiny
synthetic run in a temporary folder, and the real runners are exercised on
small cases only.
"""
import argparse
import json

import numpy as np
import pytest

import fastconv as fc
from fastconv.perf import edge, records, runners, suite, timing
from fastconv.perf.cli import add_subcommands
from fastconv.perf.suite import Case


# --------------------------------------------------------------------------
# the suite as data
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", suite.SUITES)
def test_every_suite_case_is_a_valid_call(name):
    cases = suite.cases(name)
    assert cases
    for case in cases:
        params = runners.case_params(case)  # raises if the shapes are not a valid call
        assert params.flops > 0 and params.min_bytes(4) > 0
        assert case.input_shape[0] == next(l for l in suite.LAYERS
                                           if l.name == case.name).batch[name]


def test_suite_has_the_documented_layers():
    names = {l.name for l in suite.LAYERS}
    for want in ("LeNet-5 C1", "LeNet-5 C3", "AlexNet conv1", "VGG-16 conv1_2", "VGG-16 conv3_2",
                 "MobileNet depthwise", "image filter 4096^2 5x5"):
        assert want in names
    gpu = {c.name: c for c in suite.cases("gpu")}
    assert all(c.input_shape[0] == 32 for n, c in gpu.items() if n.startswith("ResNet-50"))
    edge_case = next(c for c in suite.cases("cpu") if c.group == "edge detection")
    assert edge_case.input_shape == (1, 1, 280, 320) and edge_case.weight_shape == (1, 1, 1, 2)
    ops = {c.op for c in suite.cases("cpu")}
    assert {"conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d"} <= ops
    assert [c.name for c in suite.cases("cpu", "resnet, edge")][0].startswith("ResNet")


# --------------------------------------------------------------------------
# peers: their index conventions must line up with conv2d's
# --------------------------------------------------------------------------
PEER_CASES = [
    ((1, 1, 9, 11), (1, 1, 3, 3), {"padding": 1}),
    ((1, 1, 9, 11), (1, 1, 4, 4), {"padding": "same"}),   # even kernel: origin -1 in ndimage
    ((1, 1, 8, 10), (1, 1, 2, 3), {}),                     # valid
    ((1, 1, 8, 10), (1, 1, 1, 2), {}),                     # the edge-detection kernel
    ((1, 1, 12, 9), (1, 1, 5, 5), {"padding": (2, 1)}),
]


@pytest.mark.parametrize("xs,ws,kw", PEER_CASES)
def test_cpu_peers_match_reference(xs, ws, kw):
    case = Case("t", "conv2d", xs, ws, kw, "image filter", "quick")
    data = runners.case_data(case)
    ran = 0
    numpy_impls = [r for r in runners.registry_runners("conv2d", ("cpu",)) if r.backend == "numpy"]
    for r in runners.peer_runners(("cpu",)) + numpy_impls:
        try:
            fn, err = runners.prepare(r, data)  # asserts closeness to the reference
        except runners.Skip:
            continue
        assert err < 1e-5
        ran += 1
    assert ran >= 2  # numpy/direct and numpy/im2col at least


def test_prepare_rejects_a_wrong_runner():
    case = Case("t", "conv2d", (1, 1, 6, 6), (1, 1, 3, 3), {}, "conv", "quick")
    data = runners.case_data(case)
    bad = runners.Runner("wrong", "peer", "cpu", lambda d: (lambda: d.reference() * 1.01))
    with pytest.raises(AssertionError, match="relative error"):
        runners.prepare(bad, data)
    skip = runners.Runner("absent", "peer", "cpu", lambda d: runners._import("no_such_mod", "X"))
    with pytest.raises(runners.Skip, match="X not installed"):
        runners.prepare(skip, data)


def test_auto_choice_names_a_registered_implementation():
    case = suite.cases("quick", "edge")[0]
    auto = runners.auto_choice(case)
    _params, impl = fc.plan("conv2d", np.zeros(case.input_shape, np.float32),
                            np.zeros(case.weight_shape, np.float32))
    assert auto == f"{impl.backend}/{impl.algorithm}"


# --------------------------------------------------------------------------
# timing, records, fits
# --------------------------------------------------------------------------
def test_stats_like_pytest_benchmark():
    st = timing.stats([0.3, 0.1, 0.2, 0.4])
    assert st["min"] == 0.1 and st["max"] == 0.4 and st["rounds"] == 4
    assert st["median"] == pytest.approx(0.25) and st["mean"] == pytest.approx(0.25)
    assert st["data"] == [0.3, 0.1, 0.2, 0.4]
    assert set(st) >= {"stddev", "iqr", "q1", "q3", "ops", "total", "iterations", "outliers"}


def test_measure_respects_budget():
    calls = []
    data = timing.measure(lambda: calls.append(1), timing.Budget(0.0, 10.0, 4, 7))
    assert len(data) == len(calls) == 4
    data = timing.measure(lambda: None, timing.Budget(10.0, 10.0, 1, 6))
    assert len(data) == 6


def test_fit_power_law_recovers_exponent():
    px = np.array([100, 400, 1600, 6400])
    f = edge.fit_power_law(px, 3e-9 * px ** 2.0)
    assert f["b"] == pytest.approx(2.0) and f["a"] == pytest.approx(3e-9)
    assert f["r2"] == pytest.approx(1.0)
    assert edge.fit_power_law([5], [1.0]) is None


def test_extra_info_rates_and_roofline():
    case = Case("t", "conv2d", (1, 2, 8, 8), (3, 2, 3, 3), {"padding": 1}, "conv", "quick")
    p = runners.case_params(case)
    r = runners.Runner("x/y", "fastconv", "cpu", None, "x", "y")
    info = records.extra_info(case, r, p, 1e-3, 1e-7, {"gemm_gflops": 100.0, "copy_gbs": 10.0},
                              "x/y", "m")
    assert info["flops"] == p.flops == 2 * 3 * 64 * 2 * 9
    assert info["gflops"] == pytest.approx(p.flops / 1e-3 / 1e9)
    assert info["gbs"] == pytest.approx(p.min_bytes(4) / 1e-3 / 1e9)
    roof = min(100.0, info["intensity"] * 10.0)
    assert info["pct_peak"] == pytest.approx(100 * info["gflops"] / roof)
    json.dumps(info)  # serializable


# --------------------------------------------------------------------------
# a report from a tiny synthetic run
# --------------------------------------------------------------------------
def _synthetic_run(device="cpu", scale=1.0, machine="test machine"):
    """A run document with known times: layer records and an edge sweep with t ~ pixels^2."""
    ceil = {"device": device, "gemm_gflops": 100.0, "copy_gbs": 20.0, "gemm_n": 64}
    case = Case("tiny conv", "conv2d", (1, 1, 16, 16), (1, 1, 3, 3), {"padding": 1},
                "image filter", "quick")
    p = runners.case_params(case)
    benches = []
    times = {"numpy/direct": 2e-3, "numpy/im2col": 1e-3, "numpy/dense": 4e-3, "torch": 5e-4}
    roles = {"numpy/direct": "reference", "numpy/im2col": "peer", "numpy/dense": "baseline",
             "torch": "peer"}
    for label, t in times.items():
        t *= scale
        backend, _, algo = label.partition("/")
        r = runners.Runner(label, roles[label], device, None, backend if algo else None,
                           algo or None)
        st = timing.stats([t, t * 1.1, t * 0.95])
        info = records.extra_info(case, r, p, st["median"], 0.0, ceil, "numpy/direct", machine)
        benches.append(records.benchmark_record(f"{case.id} | {label}", case.group, st, info,
                                                {"case": case.id, "impl": label}))
    for w, h in [(16, 14), (32, 28), (64, 56)]:
        for name, a, b in [(edge.METHOD_DENSE, 1e-9, 2.0), ("conv2d numpy/direct", 1e-7, 1.0)]:
            t = a * (w * h) ** b
            st = timing.stats([t, t])
            benches.append(records.benchmark_record(
                f"edge[{w}x{h}-{name}]", edge.GROUP, st,
                edge.sweep_info(w, h, name, "baseline", t, 0.0, machine, ceil), {}))
    benches.append({"group": None, "name": "test_other", "fullname": "x.py::test_other",
                    "params": None, "extra_info": {}, "stats": timing.stats([1e-3])})
    desc = {"date": "2026-01-01 00:00 UTC", "cpu": "Test CPU", "cores": 2, "threads": 2,
            "memory_gib": 1.0, "gpu": None, "versions": {"numpy": np.__version__},
            "commit": "abc"}
    return records.run_document(benches, desc, {"suite": "quick", "ceilings": {device: ceil},
                                                "skipped": ["tiny conv | cupy: no GPU"],
                                                "failed": [], "note": "shared, noisy machine"})


def test_report_from_synthetic_runs(tmp_path):
    a, b = _synthetic_run(), _synthetic_run("cuda", 0.1, "test GPU")
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    out = tmp_path / "rep"
    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["report", str(pa), str(pb), "-o", str(out)])
    assert args.func(args) == 0
    text = (out / "report.md").read_text()
    for png in ("layers.png", "roofline.png", "edge_growth.png"):
        assert (out / png).stat().st_size > 10_000
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    # speed-ups inside one run: torch 0.5 ms vs direct 2 ms -> direct is 0.25x torch
    row = next(l for l in text.splitlines() if l.startswith("| `numpy/direct`"))
    assert "0.25x" in row and "2.00x" in row  # vs torch, vs dense
    assert "shared, noisy machine" in text and "Test CPU" in text
    assert "auto was the fastest: **no**" in text  # im2col (1 ms) beat the auto choice
    # the fit recovers the synthetic exponents, and extrapolates exactly
    assert "| dense matrix x vector | 2.00 |" in text
    assert "| conv2d numpy/direct | 1.00 |" in text
    assert f"{1e-9 * 89600 ** 2:.2f} s per image" in text
    # exact counts of the notes' example
    for n in ("267,960", "357,280", "8,003,072,000", "178,640", "16,006,144,000"):
        assert n in text
    assert "test_other" in text and "tiny conv | cupy: no GPU" in text
    assert text.count("### tiny conv N=1") == 1 and "(run 2)" in text


def test_bench_cli_tiny_run(tmp_path, monkeypatch):
    """The real ``bench`` command end to end on one tiny layer, one runner, no sweep."""
    monkeypatch.setattr(suite, "LAYERS", (suite.Layer(
        "tiny", "conv2d", (1, 12, 10), (2, 1, 1, 2), {}, "edge detection", {"quick": 1}),))
    monkeypatch.setattr("fastconv.perf.machine.measure_cpu_ceilings", lambda quick=True: {
        "device": "cpu", "gemm_gflops": 50.0, "gemm_n": 8, "copy_gbs": 5.0, "copy_bytes": 8,
        "ridge_flops_per_byte": 10.0})
    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers(dest="cmd"))
    out = tmp_path / "bench"
    args = parser.parse_args(["bench", "--quick", "--only", "numpy/", "--no-edge",
                              "--no-progress", "--device", "cpu", "-o", str(out)])
    assert args.func(args) == 0
    doc = json.loads((out / "results.json").read_text())
    labels = {b["extra_info"]["impl"] for b in doc["benchmarks"]}
    assert {"numpy/direct", "numpy/im2col", "numpy/dense"} <= labels
    assert all(b["stats"]["rounds"] >= 3 for b in doc["benchmarks"])
    assert (out / "report.md").exists() and (out / "machine.json").exists()
