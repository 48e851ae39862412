"""Reports from saved benchmark runs: report.md and PNG plots, nothing typed in by hand.

Input: one or more runs in pytest-benchmark's JSON format (written by
``fastconv bench`` or by ``pytest bench/ --benchmark-json=FILE``), say a CPU
run and a GPU run.  Every number in the report is read from those files
(measured medians, exact FLOP/byte counts, measured ceilings) or computed
exactly (the edge-detection counts of :mod:`fastconv.dense`).  Speed-ups
are taken only between measurements of the same run: ratios across
processes on a shared machine are not reliable.
"""
from __future__ import annotations

import os
from collections import OrderedDict

from .. import dense
from . import edge

__all__ = ["write_report", "merge"]

ROLE_ORDER = {"fastconv": 0, "reference": 1, "baseline": 2, "peer": 3}
ROLE_COLOR = {"fastconv": "tab:blue", "reference": "tab:gray", "baseline": "tab:red",
              "peer": "tab:orange"}


# --------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------
def merge(docs: list) -> tuple[list, list]:
    """(records, runs): every benchmark tagged with its run index, and each run's metadata."""
    records, runs = [], []
    for i, doc in enumerate(docs):
        fc = doc.get("fastconv", {})
        runs.append({"index": i, "machine": fc.get("machine") or _machine_from(doc),
                     "ceilings": fc.get("ceilings") or _ceilings_from(doc),
                     "skipped": fc.get("skipped", []), "failed": fc.get("failed", []),
                     "note": fc.get("note"), "suite": fc.get("suite"),
                     "elapsed_s": fc.get("elapsed_s"), "command": fc.get("command"),
                     "runners": fc.get("runners", {}), "datetime": doc.get("datetime"),
                     "commit": (doc.get("commit_info") or {}).get("id"),
                     "dense_memory_limit": fc.get("dense_memory_limit")})
        for b in doc.get("benchmarks", []):
            records.append(dict(b, run=i))
    return records, runs


def _machine_from(doc) -> dict:
    mi = doc.get("machine_info", {})
    cpu = mi.get("cpu", {}) or {}
    return {"cpu": cpu.get("brand_raw") or mi.get("processor"), "cores": cpu.get("count"),
            "host": mi.get("node"), "date": doc.get("datetime"), "versions": {
                "python": mi.get("python_version")}}


def _ceilings_from(doc) -> dict:
    """Ceilings from the records' extra_info (runs saved by pytest-benchmark)."""
    out = {}
    for b in doc.get("benchmarks", []):
        info = b.get("extra_info", {})
        if "peak_gflops" in info and info.get("device") not in out:
            out[info["device"]] = {"device": info["device"], "gemm_gflops": info["peak_gflops"],
                                   "copy_gbs": info["peak_gbs"]}
    return out


def _layer_records(records):
    return [r for r in records if r.get("extra_info", {}).get("fastconv")
            and not r["extra_info"].get("sweep")]


def _foreign(records):
    return [r for r in records if not r.get("extra_info", {}).get("fastconv")]


# --------------------------------------------------------------------------
# formatting helpers
# --------------------------------------------------------------------------
def _ms(s: float) -> str:
    ms = s * 1e3
    if ms >= 100:
        return f"{ms:,.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def _num(v, digits=1) -> str:
    if v is None:
        return "–"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.{digits}f}"
    return f"{v:.{digits + 1}f}" if v >= 0.1 else f"{v:.3g}"


def _x(ratio) -> str:
    return "–" if ratio is None else (f"{ratio:.2f}x" if ratio < 10 else f"{ratio:,.0f}x")


def _table(header, rows) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


# --------------------------------------------------------------------------
# the layer tables
# --------------------------------------------------------------------------
def _by_case(records):
    cases = OrderedDict()
    for r in records:
        cases.setdefault(r["extra_info"]["case"], []).append(r)
    return cases


def _fastest_registry(rows, device, run):
    best = None
    for r in rows:
        info = r["extra_info"]
        if info.get("backend") and info["device"] == device and r["run"] == run:
            if best is None or r["stats"]["median"] < best["stats"]["median"]:
                best = r
    return best


def _case_section(case_id, rows, runs) -> list[str]:
    first = rows[0]["extra_info"]
    rows = sorted(rows, key=lambda r: (r["run"], ROLE_ORDER.get(r["extra_info"]["role"], 9),
                                       r["stats"]["median"]))
    lines = [f"### {case_id}", "",
             f"`{first.get('describe', first['op'])}` — {first['flops']:,} flops, "
             f"{first['bytes']:,} bytes at least (intensity {first['intensity']:.2f} "
             f"flop/byte), {first.get('dtype', 'float32')}.", ""]
    peers = sorted({r["extra_info"]["impl"] for r in rows if r["extra_info"]["role"] == "peer"})
    header = ["implementation", "role", "device", "median ms", "min ms", "IQR ms", "rounds",
              "GFLOP/s",
              "GB/s", "% of roofline"] + [f"vs {p}" for p in peers] + ["vs dense"]
    table = []
    for r in rows:
        info, st = r["extra_info"], r["stats"]
        same_run = {o["extra_info"]["impl"]: o for o in rows if o["run"] == r["run"]}
        ups = []
        for p in peers:
            other = same_run.get(p)
            ups.append("–" if other is None or other is r else
                       _x(other["stats"]["median"] / st["median"]))
        d = same_run.get("numpy/dense")
        ups.append("–" if d is None or d is r else _x(d["stats"]["median"] / st["median"]))
        dev = info["device"] + (f" (run {r['run'] + 1})" if len(runs) > 1 else "")
        table.append([f"`{info['impl']}`", info["role"], dev, _ms(st["median"]),
                      _ms(st["min"]), _ms(st["iqr"]), st["rounds"], _num(info["gflops"]),
                      _num(info["gbs"]),
                      _num(info.get("pct_peak"))] + ups)
    lines += _table(header, table)
    lines.append("")
    notes = []
    for run in sorted({r["run"] for r in rows}):
        for device in sorted({r["extra_info"]["device"] for r in rows if r["run"] == run}):
            autos = {r["extra_info"].get("auto") for r in rows
                     if r["run"] == run and r["extra_info"]["device"] == device}
            auto = next(iter(a for a in autos if a), None)
            best = _fastest_registry(rows, device, run)
            if auto is None or best is None:
                continue
            hit = "yes" if best["extra_info"]["impl"] == auto else "no"
            tag = f"run {run + 1}, " if len(runs) > 1 else ""
            notes.append(f"- {tag}{device}: `auto` chose `{auto}`; fastest registered "
                         f"implementation: `{best['extra_info']['impl']}` "
                         f"({_ms(best['stats']['median'])} ms) — auto was the fastest: **{hit}**")
    ran_dense = any(r["extra_info"]["impl"] == "numpy/dense" for r in rows)
    if not ran_dense and first["op"] == "conv2d":
        p = _params_for(first)
        if p is not None:
            notes.append(f"- dense baseline not run: the matrix of one sample needs "
                         f"{dense.format_bytes(dense.dense_bytes(p))}")
    lines += notes + [""]
    return lines


def _params_for(info):
    """conv2d params of a record (shapes only), or None if the record lacks them."""
    try:
        return dense.conv_params(tuple(info["input_shape"]), tuple(info["weight_shape"]),
                                 dtype=info.get("dtype", "float32"), **info.get("kwargs", {}))
    except Exception:  # noqa: BLE001 - an older or foreign record: no note
        return None


def _summary(cases, runs) -> list[str]:
    header = ["layer", "run", "fastest registered", "ms", "fastest peer", "ms",
              "registered vs peer", "auto chose", "auto fastest"]
    rows = []
    for case_id, recs in cases.items():
        for run in sorted({r["run"] for r in recs}):
            for device in sorted({r["extra_info"]["device"] for r in recs if r["run"] == run}):
                mine = [r for r in recs if r["run"] == run and r["extra_info"]["device"] == device]
                best = _fastest_registry(mine, device, run)
                peers = [r for r in mine if r["extra_info"]["role"] == "peer"]
                bp = min(peers, key=lambda r: r["stats"]["median"]) if peers else None
                auto = next((r["extra_info"].get("auto") for r in mine
                             if r["extra_info"].get("auto")), None)
                rows.append([case_id, f"{run + 1} {device}",
                             f"`{best['extra_info']['impl']}`" if best else "–",
                             _ms(best["stats"]["median"]) if best else "–",
                             f"`{bp['extra_info']['impl']}`" if bp else "–",
                             _ms(bp["stats"]["median"]) if bp else "–",
                             _x(bp["stats"]["median"] / best["stats"]["median"])
                             if best and bp else "–",
                             f"`{auto}`" if auto else "–",
                             ("yes" if best and auto == best["extra_info"]["impl"] else "no")
                             if auto else "–"])
    return _table(header, rows)


# --------------------------------------------------------------------------
# the edge-detection section
# --------------------------------------------------------------------------
def _edge_section(records, runs, plot_name) -> list[str]:
    c = dense.edge_detection_counts(320, 280)
    lines = ["## Dense matrix versus convolution: the edge-detection example", "",
             "Goodfellow et al., ch. 9 (seed notes): a 320 x 280 image (320 wide, 280 tall), "
             "kernel `[-1, 1]`, no padding, output 319 x 280. Exact counts "
             "(`fastconv.dense.edge_detection_counts`, computed by code):", ""]
    lines += _table(["quantity", "value"], [
        ["convolution flops (2 multiplies + 1 add per output pixel)", f"{c['conv_flops']:,}"],
        ["convolution flops at 2 per multiply-add", f"{c['conv_flops_fma2']:,}"],
        ["dense matrix", f"{c['rows']:,} x {c['cols']:,} = {c['entries']:,} entries"],
        ["dense matrix in float32", dense.format_bytes(c["dense_bytes"])],
        ["non-zero entries", f"{c['nonzeros']:,}"],
        ["dense matrix-vector product (2 flops per entry)", f"{c['dense_flops']:,}"],
        ["dense / convolution flops", f"{c['ratio_dense_to_conv']:,.0f}x "
                                      f"({c['ratio_dense_to_conv_fma2']:,.0f}x at 2 per "
                                      f"multiply-add)"],
    ])
    lines += ["", "(The notes' \"약 16,000,000\" drops three zeros: the product takes "
              f"{c['dense_flops'] / 1e9:.1f} billion flops.)", ""]
    sweep = edge.sweep_records(records)
    if not sweep:
        return lines + ["No sweep in these runs.", ""]
    for run in sorted({r["run"] for r in sweep}):
        recs = [r for r in sweep if r["run"] == run]
        machine = recs[0]["extra_info"].get("machine", "")
        methods = list(OrderedDict((r["extra_info"]["impl"], 1) for r in recs))
        sizes = sorted({(r["extra_info"]["width"], r["extra_info"]["height"]) for r in recs},
                       key=lambda s: s[0] * s[1])
        lines += [f"### Measured sweep (run {run + 1}: {machine})", "",
                  "Fastest round in ms (min; medians are in the JSON), each result checked "
                  "against the float64 reference first; `–`: not run (the dense matrix is "
                  "over the memory limit).", ""]
        table = []
        for w, h in sizes:
            row = [f"{w} x {h}", f"{w * h:,}",
                   dense.format_bytes(dense.edge_detection_counts(w, h)["dense_bytes"])]
            for m in methods:
                hit = [r for r in recs if r["extra_info"]["impl"] == m
                       and (r["extra_info"]["width"], r["extra_info"]["height"]) == (w, h)]
                row.append(_ms(hit[0]["stats"]["min"]) if hit else "–")
            table.append(row)
        lines += _table(["image", "pixels", "dense matrix"] + [f"{m} ms" for m in methods],
                        table)
        table = []
        ft = edge.fits(recs)
        ex = edge.extrapolations(ft)
        for m in methods:
            f = ft.get(m)
            if f is None:
                continue
            at = [r for r in recs if r["extra_info"]["impl"] == m
                  and (r["extra_info"]["width"], r["extra_info"]["height"]) == (320, 280)]
            table.append([m, f"{f['b']:.2f}", f"{f['r2']:.3f}", f["points"],
                          f"{f['min_pixels']:,} – {f['max_pixels']:,}", _ms(ex[m]),
                          _ms(at[0]["stats"]["min"]) if at else "not measured"])
        lines += ["", "Growth fitted as `t = a * pixels^b` (least squares on log-log axes, "
                  "fastest rounds), each fit evaluated at 320 x 280 = 89,600 pixels:", ""]
        lines += _table(["method", "exponent b", "R²", "points", "pixel range",
                         "fit at 320x280 (ms)", "measured at 320x280 (ms)"], table)
        dense_ms = ex.get(edge.METHOD_DENSE)
        convs = {m: t for m, t in ex.items() if m.startswith("conv2d")}
        cei = (runs[run]["ceilings"] or {}).get("cpu")
        lines.append("")
        if dense_ms is not None and convs:
            measured = {r["extra_info"]["impl"]: r["stats"]["min"] for r in recs
                        if r["extra_info"]["impl"] in convs
                        and (r["extra_info"]["width"], r["extra_info"]["height"]) == (320, 280)}
            pool = measured or convs
            best_m = min(pool, key=pool.get)
            conv_t, best_meas = pool[best_m], bool(measured)
            lines.append(f"At 320 x 280 the dense product would need "
                         f"{dense.format_bytes(c['dense_bytes'])} and, by its fit, "
                         f"{dense_ms:.2f} s per image; `{best_m}` takes {_ms(conv_t)} ms "
                         f"({'measured' if best_meas else 'fit'}): "
                         f"{dense_ms / conv_t:,.0f} times longer for the dense product.")
            big = max((r for r in recs if r["extra_info"]["impl"] == edge.METHOD_DENSE),
                      key=lambda r: r["extra_info"]["pixels"], default=None)
            if big is not None:
                bw = big["extra_info"]["dense_bytes"] / big["stats"]["min"]
                t_bw = c["dense_bytes"] / bw
                lines.append(f"By bytes instead: at its largest measured size "
                             f"({big['extra_info']['width']} x {big['extra_info']['height']}) "
                             f"the dense product streamed its matrix at {bw / 1e9:.1f} GB/s; "
                             f"the 320 x 280 matrix at that rate takes {t_bw:.2f} s "
                             f"({t_bw / conv_t:,.0f} times `{best_m}`).")
            if cei:
                lo = c["dense_bytes"] / (cei["copy_gbs"] * 1e9)
                lines.append(f"At the measured copy bandwidth ({cei['copy_gbs']:.1f} GB/s, "
                             f"read + write counted; a read-only stream such as this product "
                             f"can go faster) the 32 GB matrix takes {lo:.2f} s.")
        lines += ["", f"![dense versus convolution growth]({plot_name})", ""]
    return lines


# --------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------
def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_layers(cases, path) -> bool:
    if not cases:
        return False
    plt = _plt()
    from matplotlib.ticker import NullFormatter
    ncol = 3
    nrow = (len(cases) + ncol - 1) // ncol
    heights = [max(len(v) for v in list(cases.values())[i * ncol:(i + 1) * ncol])
               for i in range(nrow)]
    fig, axes = plt.subplots(nrow, ncol, figsize=(18, sum(0.32 * h + 1.0 for h in heights)),
                             gridspec_kw={"height_ratios": [0.32 * h + 0.6 for h in heights]},
                             squeeze=False)
    for ax, (case_id, rows) in zip(axes.flat, cases.items()):
        rows = sorted(rows, key=lambda r: r["stats"]["median"])
        labels = [r["extra_info"]["impl"] + (f" [{r['extra_info']['device']}]"
                                             if r["extra_info"]["device"] != "cpu" else "")
                  for r in rows]
        ms = [r["stats"]["median"] * 1e3 for r in rows]
        colors = [ROLE_COLOR.get(r["extra_info"]["role"], "k") for r in rows]
        ax.barh(range(len(rows)), ms, color=colors)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_title(case_id, fontsize=10)
        ax.set_xlabel("median ms (log)", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        for i, v in enumerate(ms):
            ax.text(v, i, f" {v:.3g}", va="center", fontsize=7)
        ax.set_xlim(min(ms) / 2, max(ms) * 8)
        ax.xaxis.set_minor_formatter(NullFormatter())
    for ax in list(axes.flat)[len(cases):]:
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in ROLE_COLOR.values()]
    fig.legend(handles, list(ROLE_COLOR), loc="upper center", ncol=4, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def plot_roofline(records, runs, path) -> bool:
    panels = OrderedDict()
    for r in records:
        info = r["extra_info"]
        if "peak_gflops" in info:
            panels.setdefault((r["run"], info["device"]), []).append(r)
    if not panels:
        return False
    plt = _plt()
    import numpy as np
    fig, axes = plt.subplots(len(panels), 1, figsize=(11.5, 7 * len(panels)), squeeze=False)
    markers = {"conv": "o", "image filter": "s", "edge detection": "D", "transposed": "^",
               "pooling": "v"}
    legends = []
    for ax, ((run, device), rows) in zip(axes.flat, panels.items()):
        peak_f, peak_b = rows[0]["extra_info"]["peak_gflops"], rows[0]["extra_info"]["peak_gbs"]
        ai = np.logspace(-2, 3, 200)
        ax.loglog(ai, np.minimum(peak_f, ai * peak_b), "k-", lw=2)
        ax.text(ai[-1], peak_f * 1.1, f"GEMM {peak_f:.0f} GFLOP/s", ha="right", fontsize=9)
        ax.text(0.012, 0.012 * peak_b * 1.3, f"copy {peak_b:.1f} GB/s", fontsize=9,
                rotation=30)
        impls = list(OrderedDict((r["extra_info"]["impl"], 1) for r in rows))
        palette = list(plt.get_cmap("tab10").colors) + list(plt.get_cmap("Dark2").colors)
        for i, impl in enumerate(impls):
            pts = [r for r in rows if r["extra_info"]["impl"] == impl]
            for group in OrderedDict((r["extra_info"]["group"], 1) for r in pts):
                sel = [r for r in pts if r["extra_info"]["group"] == group]
                ax.scatter([r["extra_info"]["intensity"] for r in sel],
                           [r["extra_info"]["gflops"] for r in sel],
                           color=palette[i % len(palette)], marker=markers.get(group, "o"), s=40,
                           edgecolors="k", linewidths=0.4,
                           label=impl if group == pts[0]["extra_info"]["group"] else None)
        ax.set_xlabel("arithmetic intensity (flop / minimum byte)")
        ax.set_ylabel("GFLOP/s (useful flops)")
        machine = rows[0]["extra_info"].get("machine", device)
        ax.set_title(f"roofline, run {run + 1}: {machine}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        legends.append((ax, ax.get_legend_handles_labels(), f"implementation (run {run + 1}, "
                                                             f"{device})"))
        shape_handles = [plt.Line2D([], [], color="gray", marker=m, ls="", label=g)
                         for g, m in markers.items()]
        ax.legend(handles=shape_handles, fontsize=8, loc="upper left", title="layer group")
    fig.tight_layout()
    for ax, (handles, labels), title in legends:  # outside each panel, right of it
        box = ax.get_position()
        fig.legend(handles, labels, fontsize=8, loc="upper left", title=title,
                   bbox_to_anchor=(box.x1 + 0.005, box.y1))
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return True


def plot_edge(records, path) -> bool:
    sweep = edge.sweep_records(records)
    if not sweep:
        return False
    plt = _plt()
    import numpy as np
    runs_ = sorted({r["run"] for r in sweep})
    fig, axes = plt.subplots(1, len(runs_), figsize=(10 * len(runs_), 7), squeeze=False)
    target = 320 * 280
    for ax, run in zip(axes.flat, runs_):
        recs = [r for r in sweep if r["run"] == run]
        ft = edge.fits(recs)
        methods = list(OrderedDict((r["extra_info"]["impl"], 1) for r in recs))
        cmap = plt.get_cmap("tab10")
        for i, m in enumerate(methods):
            pts = sorted((r["extra_info"]["pixels"], r["stats"]["min"]) for r in recs
                         if r["extra_info"]["impl"] == m)
            color = cmap(i % 10)
            f = ft.get(m)
            label = m + (f"  (t ~ pixels^{f['b']:.2f})" if f else "")
            ax.loglog([p for p, _ in pts], [t * 1e3 for _, t in pts], "o", color=color,
                      label=label)
            if f:
                xs = np.logspace(np.log10(min(p for p, _ in pts)), np.log10(target), 50)
                ax.loglog(xs, f["a"] * xs ** f["b"] * 1e3, "-", color=color, alpha=0.6)
                if max(p for p, _ in pts) < target:
                    ax.loglog([target], [f["a"] * target ** f["b"] * 1e3], "*", color=color,
                              ms=16, markeredgecolor="k")
        ax.axvline(target, color="k", ls="--", lw=1)
        ax.text(target, ax.get_ylim()[0] * 1.5, " 320 x 280", fontsize=9)
        ax.set_xlabel("image pixels (width x height)")
        ax.set_ylabel("fastest round, ms per image (log)")
        ax.set_title(f"edge detection [-1, 1]: dense matrix vs sparse vs convolution\n"
                     f"run {run + 1}: {recs[0]['extra_info'].get('machine', '')} "
                     f"(points measured, lines fitted, stars extrapolated)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------
def write_report(docs: list, out_dir: str, sources=None, title: str = "fastconv benchmark report"
                 ) -> str:
    """Write ``report.md`` and the plots into ``out_dir``; returns the report's path."""
    os.makedirs(out_dir, exist_ok=True)
    records, runs = merge(docs)
    layers = _layer_records(records)
    cases = _by_case(layers)
    lines = [f"# {title}", ""]
    lines.append("Generated by `fastconv.perf.report` from "
                 + (", ".join(f"`{s}`" for s in sources) if sources else f"{len(docs)} run(s)")
                 + ". Every number below is a measurement from these runs or an exact count.")
    lines.append("")
    lines.append("## Runs and machines")
    lines.append("")
    for run in runs:
        m = run["machine"] or {}
        v = m.get("versions") or {}
        lines.append(f"**Run {run['index'] + 1}** — {m.get('date') or run.get('datetime')}, "
                     f"suite `{run.get('suite')}`"
                     + (f", {run['elapsed_s']:.0f} s" if run.get("elapsed_s") else "")
                     + (f", commit `{run['commit']}`" if run.get("commit") else ""))
        lines.append("")
        lines.append(f"- CPU: {m.get('cpu')}, {m.get('cores')} cores "
                     f"({m.get('threads')} usable"
                     + (f", libraries limited to {m['threads_limit']} thread(s)"
                        if m.get("threads_limit") else "")
                     + f"), {m.get('memory_gib')} GiB; "
                     + (f"load average at the start {m['load_average'][0]:.1f} (1 min) / "
                        f"{m['load_average'][1]:.1f} (5 min); " if m.get("load_average") else "")
                     + f"GPU: {m.get('gpu') or 'none'}; {m.get('system', '')}")
        if v:
            lines.append("- software: " + ", ".join(f"{k} {val}" for k, val in v.items()))
        if run.get("command"):
            lines.append(f"- command: `{run['command']}`")
        if run.get("note"):
            lines.append(f"- **note:** {run['note']}")
        for dev, c in (run["ceilings"] or {}).items():
            lines.append(f"- measured ceiling ({dev}): GEMM {c['gemm_gflops']:.1f} GFLOP/s"
                         + (f" (float32 matmul n={c['gemm_n']})" if "gemm_n" in c else "")
                         + f", copy {c['copy_gbs']:.1f} GB/s (read + write)"
                         + ("; the higher of " + " and ".join(
                             f"{m['gemm_gflops']:.1f} GFLOP/s / {m['copy_gbs']:.1f} GB/s"
                             for m in c["measured"]) + " measured before and after the suite"
                            if c.get("measured") else ""))
        lines.append("")
    lines += ["Rates: GFLOP/s counts the convolution's useful flops (2 per multiply-add; "
              "pooling: 1 per window tap) whatever the algorithm executes; GB/s the minimum "
              "bytes (inputs, weights and output once). `% of roofline` = GFLOP/s / "
              "min(GEMM peak, intensity x copy bandwidth), against this run's measured "
              "ceilings. `vs X` = X's median time / this row's (above 1: this row is "
              "faster), only within one run. Registered implementations are timed through "
              "their kernel function with checked arguments (no argument parsing); peers "
              "through their public call.", ""]
    plot_layers(cases, os.path.join(out_dir, "layers.png"))
    have_roof = plot_roofline(layers, runs, os.path.join(out_dir, "roofline.png"))
    plot_edge(records, os.path.join(out_dir, "edge_growth.png"))
    if cases:
        lines += ["## Summary", ""] + _summary(cases, runs) + [""]
        lines += ["![per-layer times](layers.png)", ""]
        if have_roof:
            lines += ["![roofline](roofline.png)", ""]
        lines += ["## Layers", ""]
        for case_id, rows in cases.items():
            lines += _case_section(case_id, rows, runs)
    lines += _edge_section(records, runs, "edge_growth.png")
    foreign = _foreign(records)
    if foreign:
        lines += ["## Other benchmarks in these files", ""]
        lines += _table(["name", "group", "median ms", "rounds"],
                        [[b.get("fullname", b.get("name")), b.get("group"),
                          _ms(b["stats"]["median"]), b["stats"]["rounds"]] for b in foreign])
        lines.append("")
    notes = [(run["index"], s) for run in runs for s in run["skipped"]]
    failed = [(run["index"], s) for run in runs for s in run["failed"]]
    if failed:
        lines += ["## Failed (wrong result or error: not timed)", ""]
        lines += [f"- run {i + 1}: {s}" for i, s in failed] + [""]
    if notes:
        lines += ["## Skipped", "", "Runners that cannot run a case here (not installed, no "
                  "device, or a case they do not cover):", ""]
        lines += [f"- run {i + 1}: {s}" for i, s in notes] + [""]
    descs = {}
    for run in runs:
        descs.update(run.get("runners") or {})
    if descs:
        measured = {(r["extra_info"].get("op"), r["extra_info"].get("impl")) for r in layers}
        rows = []
        for key, text in descs.items():
            op, _, label = key.partition(" ") if " " in key else ("", "", key)
            if (op, label) in measured or not op:
                rows.append([op, f"`{label}`", text])
        lines += ["## Implementations", ""]
        lines += _table(["op", "name", "what it is"], rows)
        lines.append("")
    path = os.path.join(out_dir, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return path
