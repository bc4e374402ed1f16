"""report.html: one self-contained page about a fit (inline SVG and CSS, no script, nothing fetched).

Training curves, held-out metrics beside the popularity baseline, a 2-D map of the fused item vectors coloured by
category, and a few `similar` lists with titles. Every piece of data text is HTML-escaped: titles come from the
data and may hold anything.
"""

from __future__ import annotations

import math
from collections import Counter
from html import escape

import numpy as np

MAP_POINTS = 2000  # items drawn on the map at most (a seeded sample past that)
MAP_COLOURS = 9  # categories with their own colour; the rest are "other"
EXAMPLES = 4
NEIGHBOURS = 5
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f"]
OTHER = "#c7c7c7"
LOWER_IS_BETTER = ("rmse", "mae")

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 24px auto;
       max-width: 1100px; padding: 0 16px; background: #fff; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; }
.sub { color: #666; margin-top: 0; } .row { display: flex; flex-wrap: wrap; gap: 16px; }
table { border-collapse: collapse; margin: 8px 0; } td, th { padding: 3px 10px; border-bottom: 1px solid #eee; }
th { text-align: left; background: #f6f6f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.better { font-weight: 600; color: #1a7f37; } svg { background: #fcfcfc; border: 1px solid #e5e5e5; }
svg text { font: 11px system-ui, sans-serif; fill: #444; } .title { font-size: 13px; font-weight: 600; fill: #222; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 14px; margin: 6px 0; font-size: 12px; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 5px; margin-right: 4px; }
.examples { display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); gap: 12px; }
.example { border: 1px solid #e5e5e5; padding: 6px 10px; } .example h3 { font-size: 14px; margin: 4px 0; }
.muted { color: #777; font-size: 12px; }
"""


def render_report(rec, metrics: dict, baseline: dict, run: dict, train_counts: np.ndarray | None = None) -> str:
    """The report page of a fitted recommender.

    Parameters
    ----------
    rec : HybridRecommender
        The fitted model (its training history, item vectors, display rows and similar-item queries).
    metrics, baseline : dict
        Held-out metrics of the model and of the popularity baseline (same keys).
    run : dict
        Bookkeeping of the fit (sizes, seconds), shown in a folded table.
    train_counts : ndarray, optional
        Training interactions per item row: picks the example items (the most popular item of each of the
        largest categories).

    Returns
    -------
    str
        A complete HTML document.
    """
    from hybridrec import __version__

    name = escape(str(rec.config.name))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>hybridrec report: {name}</title><style>{CSS}</style></head><body>",
        f"<h1>hybridrec report: {name}</h1>",
        f'<p class="sub">{escape(_summary(rec, run))}</p>',
        "<h2>Training</h2>",
        _training_section(rec),
        "<h2>Held-out metrics</h2>",
        _metrics_table(metrics, baseline),
        "<h2>Item map</h2>",
        _item_map(rec),
        "<h2>Similar items: examples</h2>",
        _examples(rec, train_counts),
        "<h2>Run</h2>",
        _run_table(run),
        f'<p class="muted">Written by hybridrec {escape(__version__)}. This page is self-contained: no scripts, '
        "nothing loaded from the network.</p>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _summary(rec, run: dict) -> str:
    bits = [
        f"data {run.get('dataset', '?')}",
        f"variant {rec.config.model.variant}",
        f"{len(rec.users_):,} users",
        f"{len(rec.items_):,} items",
        f"feedback {rec.feedback_}",
    ]
    if "fit_seconds" in run:
        bits.append(f"fitted in {run['fit_seconds']:.0f} s")
    return " · ".join(bits)


# ------------------------------------------------------------------------------------------------------- training
def _training_section(rec) -> str:
    result, settings = rec.train_result_, rec.config.train
    history = result.history
    if not history:
        return "<p>No training history was recorded.</p>"
    from hybridrec.progress import metric_label, stop_message

    epochs = [int(r["epoch"]) for r in history]
    metric = result.metric or "val"
    charts = [_line_chart(epochs, [float(r["train_loss"]) for r in history], "train loss", result.best_epoch)]
    if metric != "train loss":
        label = metric_label(metric) if result.metric else "validation score"
        charts.append(_line_chart(epochs, [float(r["val"]) for r in history], label, result.best_epoch))
    averaged = 0 if settings.early_stopping else min(settings.average_last, settings.epochs)
    text = stop_message(result, settings.patience, averaged)
    note = f'<p class="muted">{escape(text)}. The dashed line marks the epoch the model keeps.</p>'
    return f'<div class="row">{"".join(charts)}</div>{note}'


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    return [start + k * step for k in range(int((hi - start) / step + 1e-9) + 1)]


def _line_chart(xs: list[int], ys: list[float], label: str, best: int, width: int = 520, height: int = 260) -> str:
    left, right, top, bottom = 60, 16, 30, 38
    finite = [y for y in ys if math.isfinite(y)] or [0.0]
    lo, hi = min(finite), max(finite)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 1.0
    lo, hi = lo - pad, hi + pad
    x_lo, x_hi = min(xs), max(max(xs), min(xs) + 1)

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * (width - left - right)

    def py(y: float) -> float:
        return top + (hi - y) / (hi - lo) * (height - top - bottom)

    out = [
        f'<svg class="chart" role="img" aria-label="{escape(label)} per epoch" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        f'<text class="title" x="{left}" y="18">{escape(label)} per epoch</text>',
    ]
    for t in _ticks(lo, hi):
        y = py(t)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{t:.4g}</text>')
    step = max(1, math.ceil(len(xs) / 10))
    for x in xs[::step]:
        out.append(f'<text x="{px(x):.1f}" y="{height - bottom + 16}" text-anchor="middle">{x}</text>')
    out.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 6}" text-anchor="middle">epoch</text>')
    axis = f"M{left},{top} V{height - bottom} H{width - right}"
    out.append(f'<path d="{axis}" fill="none" stroke="#999"/>')
    if best in xs:
        bx = px(best)
        out.append(
            f'<line class="best" x1="{bx:.1f}" x2="{bx:.1f}" y1="{top}" y2="{height - bottom}" stroke="#e15759" '
            'stroke-dasharray="4 3"/>'
        )
    points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys) if math.isfinite(y))
    out.append(f'<polyline class="curve" points="{points}" fill="none" stroke="#4e79a7" stroke-width="2"/>')
    for x, y in zip(xs, ys):
        if math.isfinite(y):
            out.append(
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="#4e79a7">'
                f"<title>epoch {x}: {y:.4f}</title></circle>"
            )
    out.append("</svg>")
    return "".join(out)


# -------------------------------------------------------------------------------------------------------- metrics
def _metrics_table(metrics: dict, baseline: dict) -> str:
    if not metrics:
        return "<p>No held-out metrics (the split left no test rows).</p>"
    rows = ['<table class="metrics"><tr><th>metric</th><th>this model</th><th>popularity baseline</th></tr>']
    for key, value in metrics.items():
        base = baseline.get(key)
        mine_cls = base_cls = "num"
        if isinstance(value, (int, float)) and isinstance(base, (int, float)) and value != base:
            lower = key in LOWER_IS_BETTER
            if (value < base) == lower:
                mine_cls += " better"
            else:
                base_cls += " better"
        rows.append(
            f'<tr><td>{escape(str(key))}</td><td class="{mine_cls}">{_fmt(value)}</td>'
            f'<td class="{base_cls}">{_fmt(base)}</td></tr>'
        )
    rows.append("</table>")
    note = (
        '<p class="muted">Baseline: every user gets the items most often seen in training; a rating is the item\'s '
        "mean training rating. Same split, same code, same sampled negatives. Lower is better for rmse and mae, "
        "higher for the rest; the better of the two is in green.</p>"
    )
    return "".join(rows) + note


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "–" if value is None else escape(str(value))


def _run_table(run: dict) -> str:
    rows = "".join(f'<tr><td>{escape(str(k))}</td><td class="num">{_fmt(v)}</td></tr>' for k, v in run.items())
    return f"<details><summary>bookkeeping ({len(run)} fields)</summary><table>{rows}</table></details>"


# ------------------------------------------------------------------------------------------------------- item map
def category_key(category: str) -> str:
    """The colour group of a display category: the first two levels of a path ('A > B > C' -> 'A > B'), else
    the first of a list ('Action, Comedy' -> 'Action')."""
    category = str(category or "").strip()
    if " > " in category:
        return " > ".join(category.split(" > ")[:2])
    return category.split(", ")[0] if category else "(none)"


def project_2d(vectors: np.ndarray) -> np.ndarray:
    """PCA to two dimensions (numpy SVD of the centred vectors); zeros when there is nothing to project."""
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2 or x.shape[1] == 0:
        return np.zeros((len(x), 2))
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    out = x @ vt[:2].T
    return out if out.shape[1] == 2 else np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def _item_map(rec, width: int = 760, height: int = 560) -> str:
    n = len(rec.items_)
    rows = np.arange(n)
    if n > MAP_POINTS:
        rows = np.sort(np.random.default_rng(0).choice(n, MAP_POINTS, replace=False))
    xy = project_2d(rec.towers_.item_vectors)[rows]
    keys = [category_key(rec.display_[r][2]) for r in rows]
    top = [k for k, _ in Counter(keys).most_common(MAP_COLOURS)]
    colour = {k: PALETTE[j] for j, k in enumerate(top)}
    pad = 20
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    pts = (xy - lo) / span
    out = [
        f'<svg class="map" role="img" aria-label="item map" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">'
    ]
    order = np.argsort([k in colour for k in keys], kind="stable")  # "other" first, coloured on top
    for j in order:
        x = pad + pts[j, 0] * (width - 2 * pad)
        y = pad + (1 - pts[j, 1]) * (height - 2 * pad)
        fill = colour.get(keys[j], OTHER)
        title = escape(f"{rec.display_[rows[j]][0]} ({rec.display_[rows[j]][2] or 'no category'})")
        out.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{fill}" fill-opacity="0.8">'
            f"<title>{title}</title></circle>"
        )
    out.append("</svg>")
    counts = Counter(keys)
    legend = [
        f'<span><span class="swatch" style="background:{colour[k]}"></span>{escape(k)} ({counts[k]})</span>'
        for k in top
    ]
    others = sum(v for k, v in counts.items() if k not in colour)
    if others:
        legend.append(f'<span><span class="swatch" style="background:{OTHER}"></span>other ({others})</span>')
    shown = f"{len(rows):,} of {n:,} items" if len(rows) < n else f"all {n:,} items"
    note = (
        f'<p class="muted">The fused item vectors (content and behaviour) projected on their first two principal '
        f"components; {shown}, coloured by category. Items close together are close for the model. Hover a point "
        "for its title.</p>"
    )
    return f'<div class="legend">{"".join(legend)}</div>{"".join(out)}{note}'


# ------------------------------------------------------------------------------------------------------- examples
def example_items(rec, train_counts: np.ndarray | None, count: int = EXAMPLES) -> list[int]:
    """Item rows to show `similar` lists for: the most popular item of each of the largest categories."""
    n = len(rec.items_)
    popularity = np.asarray(train_counts, dtype=np.float64) if train_counts is not None else np.zeros(n)
    if len(popularity) < n:
        popularity = np.pad(popularity, (0, n - len(popularity)))
    keys = [category_key(rec.display_[r][2]) for r in range(n)]
    order = np.argsort(-popularity, kind="stable")
    chosen: list[int] = []
    for key, _ in Counter(keys).most_common():
        best = next((int(r) for r in order if keys[r] == key), None)
        if best is not None:
            chosen.append(best)
        if len(chosen) == count:
            return chosen
    rest = [int(r) for r in order if int(r) not in chosen]
    return chosen + rest[: count - len(chosen)]


def _examples(rec, train_counts: np.ndarray | None) -> str:
    if len(rec.items_) < 2:
        return "<p>Too few items for examples.</p>"
    blocks = []
    for row in example_items(rec, train_counts):
        item_id = rec.items_.raw(row)
        ids, scores = rec.similar_items(item_id, min(NEIGHBOURS, len(rec.items_) - 1))
        title, _, category = rec.display_[row]
        lines = "".join(
            f"<tr><td>{k}</td><td>{escape(str(info['title']))}</td><td>{escape(str(info['category'] or ''))}</td>"
            f'<td class="num">{float(s):.3f}</td></tr>'
            for k, (info, s) in enumerate(((rec.item_info(i), s) for i, s in zip(ids, scores)), 1)
        )
        blocks.append(
            f'<div class="example"><h3>{escape(str(title))}</h3>'
            f'<div class="muted">{escape(item_id)} · {escape(str(category or "no category"))}</div>'
            f"<table><tr><th>#</th><th>similar item</th><th>category</th><th>score</th></tr>{lines}</table></div>"
        )
    return f'<div class="examples">{"".join(blocks)}</div>'
