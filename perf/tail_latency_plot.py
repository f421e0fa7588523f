#!/usr/bin/env python3
"""Plots publish p99 against batchInterval, hedging on and off, from the
sweeps of perf/tail-latency.md: one panel per layout (one node, three
zones) and S3 model (base, with the tail and 503s), one line per hedging
setting and maxBytesInBatch. Writes an SVG by hand (no plotting library).

Usage: python3 perf/tail_latency_plot.py OUT.svg RESULTS_DIR...
Each RESULTS_DIR is a `ferry-bench sweep` results directory whose name ends
in `-<layout>-<hedge-off|hedge-on|tail-hedge-off|tail-hedge-on>-v2`.
"""
import csv
import os
import re
import sys

W, H = 360, 260
PAD_L, PAD_R, PAD_T, PAD_B = 56, 16, 34, 40
COLOURS = {("off", 1): "#c0392b", ("off", 8): "#e59866", ("on", 1): "#1f618d", ("on", 8): "#7fb3d5"}


def load(path):
    name = os.path.basename(path.rstrip("/"))
    m = re.search(r"-(z\d)-(tail-)?hedge-(on|off)-v2$", name)
    if not m:
        raise SystemExit(f"{path}: not a tail-latency sweep directory")
    layout, tail, hedge = m.group(1), bool(m.group(2)), m.group(3)
    points = {}
    with open(os.path.join(path, "sweep.csv")) as f:
        for row in csv.DictReader(f):
            if row["target"] != "ferry" or row["status"] != "ok":
                continue
            mib = int(row["max_bytes_in_batch"]) >> 20
            points.setdefault(mib, []).append((int(row["batch_interval_ms"]), float(row["publish_p99_ms"])))
    return (layout, tail), hedge, points


def panel(x0, y0, title, series, y_max):
    out = [f'<g transform="translate({x0},{y0})">',
           f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="13">{title}</text>']
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    xs = sorted({x for pts in series.values() for x, _ in pts})
    sx = lambda x: PAD_L + (xs.index(x) + 0.5) * pw / len(xs)
    sy = lambda y: PAD_T + ph - y / y_max * ph
    out.append(f'<rect x="{PAD_L}" y="{PAD_T}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    for t in range(0, int(y_max) + 1, 500):
        out.append(f'<text x="{PAD_L - 6}" y="{sy(t) + 4}" text-anchor="end" font-size="10">{t}</text>')
        out.append(f'<line x1="{PAD_L}" x2="{PAD_L + pw}" y1="{sy(t)}" y2="{sy(t)}" stroke="#eee"/>')
    for x in xs:
        out.append(f'<text x="{sx(x)}" y="{PAD_T + ph + 16}" text-anchor="middle" font-size="10">{x} ms</text>')
    out.append(f'<text x="{PAD_L + pw / 2}" y="{H - 4}" text-anchor="middle" font-size="11">batchInterval</text>')
    for (hedge, mib), pts in sorted(series.items()):
        pts = sorted(pts)
        c = COLOURS[(hedge, mib)]
        path = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(pts))
        out.append(f'<path d="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
        for x, y in pts:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{c}"/>')
    out.append("</g>")
    return out


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    panels = {}
    for d in sys.argv[2:]:
        key, hedge, points = load(d)
        for mib, pts in points.items():
            panels.setdefault(key, {})[(hedge, mib)] = pts
    keys = sorted(panels)
    y_max = max(y for s in panels.values() for pts in s.values() for _, y in pts)
    y_max = (int(y_max) // 500 + 1) * 500
    cols = 2
    rows = (len(keys) + cols - 1) // cols
    legend_h = 28
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W * cols}" height="{H * rows + legend_h}" '
           f'font-family="sans-serif">',
           f'<rect width="100%" height="100%" fill="white"/>']
    for i, key in enumerate(keys):
        layout, tail = key
        title = (f"{'one node' if layout == 'z1' else 'three zones'}, "
                 f"{'p99.9 1.5 s + 1% 503' if tail else 'base model'}: publish p99 (ms)")
        svg += panel((i % cols) * W, (i // cols) * H, title, panels[key], y_max)
    x = 10
    for (hedge, mib), c in COLOURS.items():
        svg.append(f'<rect x="{x}" y="{H * rows + 8}" width="12" height="12" fill="{c}"/>')
        svg.append(f'<text x="{x + 16}" y="{H * rows + 18}" font-size="11">hedging {hedge}, {mib} MiB</text>')
        x += 150
    svg.append("</svg>")
    with open(sys.argv[1], "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
