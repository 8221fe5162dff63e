"""``report.html``: one self-contained page (inline SVG and CSS, no script, nothing fetched)
that shows a finished job's report to a person."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:980px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse}
td,th{padding:.25em .8em;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}.big{font-size:1.6em;font-weight:600}
.figures{display:flex;gap:2em;flex-wrap:wrap}.note{color:#666}svg text{font:11px sans-serif}
table.confusion td{min-width:2em;padding:.2em .4em}
"""
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")


def percent(value: float | None, digits: int = 1) -> str:
    return "—" if value is None or math.isnan(value) else f"{value * 100:.{digits}f}%"


COLLAPSED = (
    "The student collapsed: it is at chance (the job's warning event names each loss "
    "part's share and the likely fix)."
)


def render(report: dict[str, Any], history: Sequence[dict], plan: np.ndarray | None) -> str:
    """The page, from ``report.json``'s content, the epochs' history and the OT plan."""
    lo, hi = report["ci95"]
    agreement = report["teacher_agreement"]
    summary = (
        f'<p><span class="big">{percent(report["test_accuracy"])}</span> test accuracy '
        f"(95% interval {percent(lo)}–{percent(hi)}, {report['test_size']} inputs); "
        f"expected calibration error {percent(report['ece'])}"
        + (f"; top-1 agreement with the teacher {percent(agreement)}" if agreement else "")
        + ".</p>"
    )
    warning = report["int8"].get("warning") if report.get("int8") else None
    sections = [
        f"<h1>{html.escape(report['title'])}</h1>",
        summary,
        f'<p class="note">{html.escape(warning)}</p>' if warning else "",
        f'<p class="note">{COLLAPSED}</p>' if report.get("collapsed") else "",
        "<h2>Size and speed</h2>",
        _cost_table(report),
        "<h2>Per class</h2>",
        '<div class="figures">',
        _confusion(report["confusion_matrix"], [str(c["class"]) for c in report["per_class"]]),
        _bars([(str(c["class"]), c["accuracy"]) for c in report["per_class"]]),
        "</div>",
        "<h2>Calibration</h2>",
        _reliability(report["reliability"]),
        "<h2>Training</h2>",
        '<div class="figures">',
        _curves(history, ("train_accuracy", "val_accuracy"), "accuracy"),
        _curves(history, ("train_loss", "val_loss"), "loss"),
        "</div>",
    ]
    if plan is not None:
        sections += [
            "<h2>Transport plan</h2>",
            '<p class="note">Teacher neurons (rows) to student neurons (columns), '
            "first layer pair, on a validation batch.</p>",
            _heatmap(plan, "teacher neuron", "student neuron"),
        ]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>otrt report: {html.escape(report['title'])}</title><style>{STYLE}</style>"
        f"</head><body>{''.join(sections)}</body></html>\n"
    )


def _cost_table(report: dict[str, Any]) -> str:
    rows = [("student", report["student"], report["test_accuracy"])]
    if report.get("teacher"):
        rows.append(("teacher", report["teacher"], None))
    if report.get("int8"):
        rows.append(("student, int8", report["int8"], report["int8"]["accuracy"]))
    body = "".join(
        f"<tr><td>{name}</td><td>{_count(c.get('params'))}</td><td>{_count(c.get('macs'))}</td>"
        f"<td>{c['latency_ms']['b1']:.2f} ms</td><td>{c['latency_ms']['b64']:.2f} ms</td>"
        f"<td>{percent(accuracy)}</td></tr>"
        for name, c, accuracy in rows
    )
    ratios = report.get("ratios")
    note = ""
    if ratios:
        macs = f" and {ratios['macs']:.3g}x its MACs" if ratios["macs"] else ""
        note = (
            f'<p class="note">The student has {ratios["params"]:.3g}x the teacher\'s '
            f"parameters{macs}, and runs in {ratios['latency_b1']:.3g}x its latency at "
            "batch 1.</p>"
        )
    return (
        "<table><tr><th></th><th>parameters</th><th>MACs / input</th><th>batch 1</th>"
        f"<th>batch 64</th><th>test accuracy</th></tr>{body}</table>{note}"
    )


def _count(value: int | None) -> str:
    if value is None:
        return "—"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return str(value)


def _heatmap(matrix: np.ndarray, rows_label: str, columns_label: str) -> str:
    """A matrix as an inline PNG, darker for larger values, pooled to at most 256 cells a
    side and drawn at least 240 pixels wide with square cells."""
    from PIL import Image

    matrix = _pooled(np.asarray(matrix, dtype=np.float64), 256)
    peak = matrix.max() or 1.0
    shades = (255 - 200 * matrix / peak).astype(np.uint8)
    pixels = np.stack([shades, shades, np.full_like(shades, 255)], axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    height, width = matrix.shape
    scale = max(1, 240 // max(height, width))
    data = base64.b64encode(buffer.getvalue()).decode()
    return (
        f'<figure><img alt="{rows_label} by {columns_label}" src="data:image/png;base64,{data}" '
        f'width="{width * scale}" height="{height * scale}" style="image-rendering:pixelated">'
        f"<figcaption>rows: {rows_label}; columns: {columns_label}; "
        f"darkest {peak:.3g}</figcaption></figure>"
    )


def _pooled(matrix: np.ndarray, limit: int) -> np.ndarray:
    """Block means, so that neither side has more than ``limit`` cells."""
    for axis in (0, 1):
        size = matrix.shape[axis]
        if size > limit:
            groups = np.array_split(np.arange(size), limit)
            matrix = np.stack([matrix.take(g, axis=axis).mean(axis=axis) for g in groups], axis)
    return matrix


MAX_LABELED_CLASSES = 40  # past it the confusion matrix is a heatmap without names


def _confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> str:
    """The confusion matrix as a table: class names on both sides, counts in cells shaded
    by their share of the row (a heatmap when the classes are too many to name)."""
    counts = np.asarray(matrix)
    if len(classes) > MAX_LABELED_CLASSES:
        return _heatmap(counts, "true class", "predicted class")
    head = "".join(f"<th>{html.escape(name)}</th>" for name in classes)
    rows = []
    for name, row in zip(classes, counts, strict=True):
        total = max(int(row.sum()), 1)
        cells = "".join(
            f'<td style="background:rgba(31,119,180,{0.85 * n / total:.2f})">{n}</td>' for n in row
        )
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    return (
        '<figure><table class="confusion"><tr><th>true \\ predicted</th>'
        f"{head}</tr>{''.join(rows)}</table>"
        "<figcaption>rows: true class; columns: predicted class</figcaption></figure>"
    )


def _bars(values: Sequence[tuple[str, float | None]]) -> str:
    """Per-class accuracy as bars (0 to 100%), each named under it."""
    width = max(14, min(30, 400 // max(1, len(values))))
    bars = "".join(
        f'<rect x="{40 + i * width}" y="{10 + 150 * (1 - v)}" width="{width - 2}" '
        f'height="{150 * v}" fill="{PALETTE[0]}"><title>{html.escape(name)}: {percent(v)}'
        f"</title></rect>"
        for i, (name, v) in enumerate(values)
        if v is not None
    )
    names = "".join(
        f'<text transform="translate({40 + i * width + width / 2},166) rotate(60)">'
        f"{html.escape(name[:14])}</text>"
        for i, (name, _) in enumerate(values)
    )
    return (
        f'<svg width="{60 + len(values) * width}" height="260" role="img" '
        f'aria-label="accuracy per class">{_y_ticks(40, 10, 150, "%")}{bars}{names}'
        f'<text x="40" y="255">accuracy per class</text></svg>'
    )


def _y_ticks(x: float, top: float, height: float, unit: str) -> str:
    """0, 50 and 100 on a vertical axis at ``x`` from ``top`` down ``height`` pixels."""
    return (
        f'<line x1="{x - 2}" y1="{top}" x2="{x - 2}" y2="{top + height}" stroke="#999"/>'
        + "".join(
            f'<text x="{x - 6}" y="{top + height * (1 - f) + 4}" text-anchor="end">'
            f"{round(100 * f)}{unit}</text>"
            for f in (0.0, 0.5, 1.0)
        )
    )


def _reliability(bins: Sequence[dict]) -> str:
    """Accuracy against confidence per bin, beside the diagonal of perfect calibration;
    both axes from 0 to 100%."""
    size, left = 220, 40
    bars = "".join(
        f'<rect x="{left + b["low"] * size}" y="{10 + (1 - b["accuracy"]) * size}" '
        f'width="{(b["high"] - b["low"]) * size - 1}" height="{b["accuracy"] * size}" '
        f'fill="{PALETTE[0]}"><title>confidence {percent(b["confidence"])}: accuracy '
        f"{percent(b['accuracy'])} over {b['count']}</title></rect>"
        for b in bins
    )
    diagonal = f'<line x1="{left}" y1="{10 + size}" x2="{left + size}" y2="10" stroke="#d62728"/>'
    x_ticks = "".join(
        f'<text x="{left + f * size}" y="{size + 24}" text-anchor="middle">{round(100 * f)}%</text>'
        for f in (0.0, 0.5, 1.0)
    )
    return (
        f'<svg width="{size + left + 20}" height="{size + 50}" role="img" '
        f'aria-label="reliability diagram">{_y_ticks(left, 10, size, "%")}{bars}{diagonal}'
        f'{x_ticks}<text x="{left}" y="{size + 44}">confidence → (bars: accuracy; '
        "line: perfect calibration)</text></svg>"
    )


def _curves(history: Sequence[dict], keys: Sequence[str], label: str) -> str:
    """One line per key of the epochs' history."""
    series = {k: [(r["epoch"], r.get(k)) for r in history if _finite(r.get(k))] for k in keys}
    values = [v for points in series.values() for _, v in points]
    if not values:
        return ""
    low, high = min(values), max(values)
    span, epochs = (high - low) or 1.0, max(len(history), 2)
    width, height = 320, 160

    def xy(epoch: int, value: float) -> str:
        x, y = 30 + (epoch - 1) / (epochs - 1) * width, 10 + (high - value) / span * height
        return f"{x:.1f},{y:.1f}"

    lines = "".join(
        f'<polyline fill="none" stroke="{PALETTE[i]}" stroke-width="2" '
        f'points="{" ".join(xy(e, v) for e, v in points)}"><title>{key}</title></polyline>'
        for i, (key, points) in enumerate(series.items())
    )
    legend = "".join(
        f'<text x="30" y="{height + 44 + 14 * i}" fill="{PALETTE[i]}">— {k}</text>'
        for i, k in enumerate(keys)
    )
    return (
        f'<svg width="{width + 40}" height="{height + 50 + 14 * len(keys)}" role="img" '
        f'aria-label="{label}">{lines}<text x="30" y="{height + 28}">{label} by epoch '
        f"(1 to {epochs}; {high:.3g} top, {low:.3g} bottom)</text>{legend}</svg>"
    )


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
