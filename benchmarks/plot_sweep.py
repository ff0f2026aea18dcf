#!/usr/bin/env python3
"""plot_sweep.py — a `sluice-bench --json` sweep drawn as one SVG, with plain Python (no matplotlib).

Three panels: output-token throughput against load (concurrency or rate), then TTFT and TPOT percentiles
(p50, p90, p99) against output-token throughput: the latency-versus-throughput curve an operator reads to
choose a load level. Several JSON files, or one `--compare` run, share the axes, one colour per server.

    python benchmarks/plot_sweep.py out.json [peer.json ...] -o sweep.svg [--label sluice --label llama.cpp]
"""
import argparse
import json
import math
import os

W, H = 360, 280           # one panel, px
ML, MR, MT, MB = 60, 15, 30, 45  # margins: room for tick labels and titles
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
DASH = {"p50": "", "p90": "6,3", "p99": "2,3"}


def nice_ticks(lo, hi, n=5):
    """Round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    t = math.floor(lo / step) * step
    out = [round(t, 10)]
    while out[-1] < hi - step * 1e-9:  # the last tick is at or above hi, so every point lies inside the axes
        t += step
        out.append(round(t, 10))
    return out


def panel(x0, title, xlabel, ylabel, series):
    """series: [(label, colour, dash, [(x, y), ...])]. Returns SVG elements of one panel at x offset x0."""
    pts = [p for s in series for p in s[3] if p[1] is not None and not math.isnan(p[1])]
    if not pts:
        return []
    xt = nice_ticks(0, max(p[0] for p in pts))
    yt = nice_ticks(0, max(p[1] for p in pts))
    xmax, ymax = xt[-1] or 1, yt[-1] or 1
    pw, ph = W - ML - MR, H - MT - MB

    def sx(x):
        return x0 + ML + x / xmax * pw

    def sy(y):
        return MT + ph - y / ymax * ph

    e = [f'<text x="{x0 + W / 2}" y="18" text-anchor="middle" font-weight="bold">{title}</text>',
         f'<rect x="{x0 + ML}" y="{MT}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>']
    for t in xt:
        e.append(f'<line x1="{sx(t):.1f}" y1="{MT + ph}" x2="{sx(t):.1f}" y2="{MT + ph + 4}" stroke="#888"/>')
        e.append(f'<text x="{sx(t):.1f}" y="{MT + ph + 16}" text-anchor="middle">{t:g}</text>')
    for t in yt:
        e.append(f'<line x1="{x0 + ML}" y1="{sy(t):.1f}" x2="{x0 + ML + pw}" y2="{sy(t):.1f}" stroke="#eee"/>')
        e.append(f'<text x="{x0 + ML - 5}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    e.append(f'<text x="{x0 + ML + pw / 2}" y="{H - 8}" text-anchor="middle">{xlabel}</text>')
    e.append(f'<text transform="translate({x0 + 14},{MT + ph / 2}) rotate(-90)" text-anchor="middle">{ylabel}</text>')
    for i, (label, colour, dash, ps) in enumerate(series):
        ps = [p for p in ps if p[1] is not None and not math.isnan(p[1])]
        if not ps:
            continue
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in ps)
        e.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/>')
        for x, y in ps:
            e.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}"/>')
        e.append(f'<text x="{x0 + ML + 6}" y="{MT + 14 + 13 * i}" fill="{colour}">{label}</text>')
    return e


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", nargs="+")
    ap.add_argument("-o", "--out", default="sweep.svg")
    ap.add_argument("--label", action="append", default=[])
    a = ap.parse_args()
    runs = []
    for i, path in enumerate(a.json):
        with open(path) as f:
            d = json.load(f)
        label = a.label[i] if i < len(a.label) else d.get("url") or os.path.basename(path)
        runs.append((label, COLOURS[len(runs) % len(COLOURS)], d["levels"]))
        if "compare" in d:  # a --compare run holds both servers
            runs.append((d["compare"]["url"], COLOURS[len(runs) % len(COLOURS)], d["compare"]["levels"]))
    by_rate = all(lv["rate"] > 0 for _, _, lvs in runs for lv in lvs)
    load_key, load_name = ("rate", "request rate (req/s)") if by_rate else ("concurrency", "concurrent streams")

    thr = [(lab, col, "", [(lv[load_key], lv["output_token_throughput"]) for lv in lvs]) for lab, col, lvs in runs]

    def lat(key):
        out = []
        for lab, col, lvs in runs:
            for q in ("p50", "p90", "p99"):
                ps = [(lv["output_token_throughput"], (lv[key] or {}).get(q)) for lv in lvs]
                out.append((f"{lab} {q}", col, DASH[q], ps))
        return out

    els = panel(0, "Throughput", load_name, "output tokens/s", thr)
    els += panel(W, "Time to first token", "output tokens/s", "ms", lat("ttft_ms"))
    els += panel(2 * W, "Time per output token", "output tokens/s", "ms", lat("tpot_ms"))
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{3 * W}" height="{H}" font-family="sans-serif" '
           f'font-size="11"><rect width="100%" height="100%" fill="white"/>' + "".join(els) + "</svg>\n")
    with open(a.out, "w") as f:
        f.write(svg)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
