"""The ``bench`` and ``report`` subcommands of the ``fastconv`` command.

The lead's ``fastconv/cli.py`` calls :func:`add_subcommands` on its argparse
subparsers; until then ``python -m fastconv.perf bench --quick`` runs the
same code.  Each subcommand sets ``func(args) -> int`` (the exit status).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys

__all__ = ["add_subcommands", "cmd_bench", "cmd_report", "main"]


def _default_out() -> str:
    return "fastconv-report-" + _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def cmd_bench(args) -> int:
    from .run import run_bench
    if args.threads:
        from .machine import limit_threads
        limited = limit_threads(args.threads)
        print(f"fastconv bench: {args.threads} thread(s) in {', '.join(limited)}")
    devices = ("cpu", "cuda") if args.device == "all" else (args.device,)
    doc = run_bench(args.out or _default_out(), quick=not args.full, suite=args.suite,
                    devices=devices, name_filter=args.filter, runner_filter=args.only,
                    peers=not args.no_peers, edge_sweep=not args.no_edge,
                    dense_limit=args.dense_limit, progress=not args.no_progress,
                    note=args.note)
    return 1 if doc["fastconv"]["failed"] else 0


def cmd_report(args) -> int:
    from .records import load
    from .report import write_report
    docs = [load(p) for p in args.files]
    out = args.out or _default_out()
    path = write_report(docs, out, sources=[os.path.basename(p) for p in args.files],
                        title=args.title)
    print(f"fastconv report: {len(docs)} run(s) merged into {path}")
    return 0


def add_subcommands(subparsers) -> None:
    """Add ``bench`` and ``report`` to an ``argparse`` subparsers object."""
    b = subparsers.add_parser(
        "bench", help="measure this machine's ceilings and benchmark every registered "
                      "implementation and installed peer; write a report folder",
        description="Measures GEMM and copy ceilings (and the GPU's), runs the layer suite "
                    "over every registered implementation and installed peer (each result "
                    "checked against the float64 reference before timing), runs the "
                    "edge-detection dense-versus-convolution sweep and writes report.md, "
                    "PNG plots, results.json (pytest-benchmark format) and machine.json.")
    size = b.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", default=True,
                      help="the short suite (default; under 3 minutes on 2 cores)")
    size.add_argument("--full", action="store_true",
                      help="the whole suite with longer timing (the 'cpu' sizes by default)")
    b.add_argument("--suite", choices=("quick", "cpu", "gpu"),
                   help="layer sizes: quick, cpu (benchmark-suite.md) or gpu (larger batches)")
    b.add_argument("--device", choices=("cpu", "cuda", "all"), default="all",
                   help="which devices' implementations and peers to run (default all usable)")
    b.add_argument("--filter", help="only layers whose name or group contains one of these "
                                    "comma-separated words")
    b.add_argument("--only", help="only implementations/peers whose label contains one of "
                                  "these comma-separated words (e.g. 'numba,torch')")
    b.add_argument("--no-peers", action="store_true", help="registered implementations only")
    b.add_argument("--no-edge", action="store_true", help="skip the edge-detection sweep")
    b.add_argument("--dense-limit", type=float, default=None,
                   help="memory limit in bytes for dense matrices (default "
                        "fastconv.dense.MEMORY_LIMIT, 1 GiB)")
    b.add_argument("--threads", type=int, default=None,
                   help="CPU threads for every library (BLAS, Numba, PyTorch, OpenCV); "
                        "default: their own defaults (all cores)")
    b.add_argument("--note", help="a note written into the report (e.g. 'shared, noisy machine')")
    b.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    b.add_argument("-o", "--out", help="report folder (default fastconv-report-<date>)")
    b.set_defaults(func=cmd_bench)

    r = subparsers.add_parser(
        "report", help="merge saved runs (pytest-benchmark JSON) into one report",
        description="Merge results.json files of `fastconv bench` or `pytest bench/ "
                    "--benchmark-json=FILE` runs (say a CPU run and a GPU run) into one "
                    "report folder.")
    r.add_argument("files", nargs="+", help="pytest-benchmark JSON files")
    r.add_argument("-o", "--out", help="report folder (default fastconv-report-<date>)")
    r.add_argument("--title", default="fastconv benchmark report")
    r.set_defaults(func=cmd_report)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastconv.perf",
                                     description="fastconv benchmarks and reports")
    sub = parser.add_subparsers(dest="command", required=True)
    add_subcommands(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
