"""The ``fastconv`` command: ``info``, ``filter``, ``bench`` and ``report``.

    fastconv info                         # version, backends (available or why not), devices
    fastconv filter IN.png OUT.png --filter gaussian
    fastconv bench --quick                # measure, compare, write a report folder
    fastconv report A.json B.json ...     # merge saved runs into one report
"""
from __future__ import annotations

import argparse
import os
import platform
import sys

import numpy as np

from . import __version__, registry
from . import filters as _filters


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _devices() -> list[str]:
    """GPU devices visible to CuPy or Numba-CUDA, without failing when there are none."""
    found = []
    if registry.has_backend("cupy") and registry.get_backend("cupy").available:
        try:
            import cupy
            for i in range(cupy.cuda.runtime.getDeviceCount()):
                props = cupy.cuda.runtime.getDeviceProperties(i)
                name = props["name"]
                found.append(f"cuda:{i} {name.decode() if isinstance(name, bytes) else name} "
                             f"(sm_{props['major']}{props['minor']}, "
                             f"{props['totalGlobalMem'] / 2**30:.0f} GiB)")
        except Exception as exc:  # report, never fail
            found.append(f"(CuPy could not list devices: {exc})")
    return found


def markdown_table() -> str:
    """Ops x backends table of registered algorithms, from the registry (for the README)."""
    rows = registry.backends()
    lines = ["| op | " + " | ".join(r["name"] for r in rows) + " |",
             "|---" * (len(rows) + 1) + "|"]
    for op in registry.OPS:
        cells = [", ".join(r["ops"].get(op, [])) or "-" for r in rows]
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    lines.append("| dtypes | " + " | ".join(", ".join(r["dtypes"]) for r in rows) + " |")
    return "\n".join(lines)


def cmd_info(args) -> int:
    if args.markdown:
        print(markdown_table())
        return 0
    print(f"fastconv {__version__}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, "
          f"{platform.system()} {platform.machine()}")
    print(f"cpu: {_cpu_model()}, {os.cpu_count()} logical cores")
    print("backends:")
    for row in registry.backends():
        state = "available" if row["available"] else f"unavailable: {row['reason']}"
        print(f"  {row['name']:<11} [{row['device']}] {state}")
        for op, algos in row["ops"].items():
            print(f"      {op:<20} {', '.join(algos)}")
    devices = _devices()
    print("devices: " + ("; ".join(devices) if devices else "none (CPU only)"))
    return 0


def _load_image(path: str) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise SystemExit("fastconv filter needs Pillow: pip install pillow")
    with Image.open(path) as img:
        img = img.convert("L") if img.mode not in ("L", "RGB", "RGBA") else img
        return np.asarray(img)


def _save_image(path: str, image: np.ndarray):
    from PIL import Image
    Image.fromarray(image).save(path)


def cmd_filter(args) -> int:
    image = _load_image(args.input)
    out = _filters.apply(image, args.filter, padding_mode=args.padding_mode,
                         backend=args.backend)
    if args.filter in ("horizontal_edge", "vertical_edge", "sobel_x", "sobel_y", "edge_diff"):
        out = np.abs(out)  # signed responses: show their magnitude
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    _save_image(args.output, out)
    print(f"{args.input} ({image.shape[1]}x{image.shape[0]}) -> {args.output} "
          f"with filter {args.filter!r}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastconv", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"fastconv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("info", help="version, backends and devices")
    p.add_argument("--markdown", action="store_true",
                   help="print the ops x backends x algorithms table as Markdown")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("filter", help="apply a named image filter to an image file")
    p.add_argument("input", help="input image (PNG, JPEG, ...)")
    p.add_argument("output", help="output image path")
    p.add_argument("--filter", required=True, choices=_filters.names(), help="filter name")
    p.add_argument("--padding-mode", default="reflect",
                   choices=["reflect", "replicate", "zeros", "circular"])
    p.add_argument("--backend", default="auto")
    p.set_defaults(func=cmd_filter)
    try:
        from .perf.cli import add_subcommands
    except ImportError:
        pass
    else:
        add_subcommands(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, registry.BackendUnavailableError, OSError) as exc:
        print(f"fastconv {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
