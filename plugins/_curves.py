"""Learning curves of an experiment's trials, as one server-rendered SVG chart.

Plain SVG text, made to be inlined in the plugin's HTML pages: no JavaScript and
nothing fetched. Every piece of text that comes from an experiment (trial ids,
statuses, metric names, links) is escaped here, so a caller can insert the
returned string as it is.

A trial's curve is its ``history`` in ``result.json``: ``[[step, value], ...]`` in
the order the training function reported them (see ``_Trial.to_dict`` in
``maggy_core/coordinator.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from html import escape
from typing import Any

#: Statuses in drawing order (later ones are drawn on top: the many early-stopped
#: curves below, the few failed ones above), with their colour and dash pattern:
#: dashes and dots keep the statuses apart for readers who cannot tell the colours
#: apart, and in print.
STYLES: dict[str, tuple[str, str]] = {
    "early_stopped": ("#d97706", "6 3"),
    "finished": ("#2563eb", ""),
    "running": ("#6b7280", "3 2"),
    "pending": ("#6b7280", "3 2"),
    "failed": ("#dc2626", "1.5 3"),
}
OTHER_STYLE = ("#6b7280", "")
BEST_COLOUR = "#111827"
#: Points drawn in one chart, over all curves; each curve gets an equal share
#: (within the bounds below). A step finer than a pixel adds bytes, not detail.
POINT_BUDGET = 15_000
MIN_POINTS, MAX_POINTS = 16, 400
#: Up to this many curves, each gets a dot at its last point.
END_MARKERS_UP_TO = 40


def curve(trial: Mapping[str, Any]) -> list[tuple[float, float]]:
    """The finite ``(step, value)`` points of a trial's history, in report order.

    Args:
        trial: One trial of ``result.json``.

    Returns:
        The points; entries that are not a pair of finite numbers are left out
        (``result.json`` may hold ``NaN`` for a diverged metric).
    """
    history = trial.get("history")
    if not isinstance(history, list):
        return []
    points = []
    for item in history:
        if not isinstance(item, list | tuple) or len(item) != 2:
            continue
        try:
            x, y = float(item[0]), float(item[1])
        except (TypeError, ValueError):
            continue
        if math.isfinite(x) and math.isfinite(y):
            points.append((x, y))
    return points


def thin(points: list[tuple[float, float]], limit: int) -> list[tuple[float, float]]:
    """At most about ``limit`` points that keep the curve's shape.

    The points are cut into ``limit // 2`` runs of consecutive points; each run
    keeps its lowest and its highest point, in their order, so spikes survive
    (taking every k-th point would drop them). The first and last points are
    always kept.

    Args:
        points: The curve, in report order.
        limit: Largest number of points wanted (at least 4).

    Returns:
        ``points`` itself when it is short enough, else the thinned curve.
    """
    if len(points) <= limit:
        return points
    buckets = max(1, (limit - 2) // 2)
    inner = points[1:-1]
    size = len(inner) / buckets
    out = [points[0]]
    for b in range(buckets):
        run = inner[int(b * size) : int((b + 1) * size)]
        if not run:
            continue
        low = min(range(len(run)), key=lambda i: run[i][1])
        high = max(range(len(run)), key=lambda i: run[i][1])
        out.extend(run[i] for i in sorted({low, high}))
    out.append(points[-1])
    return out


def ticks(low: float, high: float, count: int = 5, *, whole: bool = False) -> list[float]:
    """About ``count`` round values (1, 2 or 5 times a power of ten) in ``[low, high]``.

    Args:
        low: Start of the axis.
        high: End of the axis.
        count: Roughly how many ticks.
        whole: Only whole numbers (steps are counted: there is no step 0.5).
    """
    span = high - low
    if not span > 0:
        return [low]
    raw = span / count
    power = 10.0 ** math.floor(math.log10(raw))
    step = next((f * power for f in (1.0, 2.0, 5.0) if raw <= f * power), 10.0 * power)
    if whole:
        step = max(step, 1.0)
    first = math.ceil(low / step - 1e-9)
    last = math.floor(high / step + 1e-9)
    # Multiplying (rather than adding step repeatedly) keeps 0.1 * 3 from drifting.
    return [round(k * step, 12) for k in range(first, last + 1)]


def label(value: float) -> str:
    """A short tick label: ``0.25``, ``1e+03``, ``-2``."""
    return f"{value:.4g}"


def _padded(low: float, high: float, fraction: float) -> tuple[float, float]:
    if high > low:
        pad = (high - low) * fraction
        return low - pad, high + pad
    pad = abs(low) * 0.05 or 1.0  # a flat curve still gets a visible band
    return low - pad, high + pad


def learning_curves_svg(
    trials: Sequence[Mapping[str, Any]],
    *,
    metric: str,
    best_id: str | None = None,
    href: Callable[[str], str] | None = None,
    width: int = 860,
    height: int = 340,
) -> str:
    """One chart of every trial's metric history: step on x, metric on y.

    Finished trials are solid blue lines, early-stopped ones dashed amber, failed
    ones dotted red, running ones dashed grey; the best trial is a thick dark line
    drawn on top. Lines are thin and fade as there are more of their status, so
    a few hundred trials still read as a band with outliers; long histories are
    thinned (see :func:`thin`) so that the chart stays small. Each line has a tooltip
    (its trial, status and last value) and, with ``href``, links to its trial.

    Args:
        trials: The trials of ``result.json``; those without a history are skipped.
        metric: Name of the metric (the y axis).
        best_id: The best trial, highlighted.
        href: Maps a trial id to the URL of its page (already safe for a URL
            path; it is escaped here for the attribute).
        width: Width of the chart in SVG units (it scales to the page).
        height: Height of the chart in SVG units.

    Returns:
        The ``<svg>`` element, or ``""`` when no trial has a history.
    """
    series = []
    for t in trials:
        points = curve(t)
        if points:
            series.append((str(t.get("trial_id", "")), str(t.get("status", "")), points))
    if not series:
        return ""

    xs = [p[0] for _, _, points in series for p in points]
    ys = [p[1] for _, _, points in series for p in points]
    x_low, x_high = min(xs), max(xs)
    if x_high == x_low:
        x_low, x_high = x_low - 1.0, x_high + 1.0
    y_low, y_high = _padded(min(ys), max(ys), 0.04)
    left, right, top, bottom = 64, 16, 30, 42
    x0, x1, y0, y1 = left, width - right, top, height - bottom

    def sx(x: float) -> float:
        return x0 + (x - x_low) / (x_high - x_low) * (x1 - x0)

    def sy(y: float) -> float:
        return y1 - (y - y_low) / (y_high - y_low) * (y1 - y0)

    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' class='curves' viewBox='0 0 {width} {height}' "
        f"width='{width}' height='{height}' role='img' font-family='sans-serif' font-size='11' "
        f"aria-label='{escape(f'learning curves: {metric} per step')}'>",
        f"<title>{escape(f'learning curves: {metric} per step')}</title>",
        f"<rect x='{x0}' y='{y0}' width='{x1 - x0}' height='{y1 - y0}' fill='#fafafa' "
        "stroke='#d1d5db'/>",
    ]
    for v in ticks(x_low, x_high, whole=all(x.is_integer() for x in xs)):
        x = sx(v)
        out.append(
            f"<line x1='{x:.1f}' y1='{y0}' x2='{x:.1f}' y2='{y1}' stroke='#e5e7eb'/>"
            f"<text x='{x:.1f}' y='{y1 + 14}' text-anchor='middle'>{escape(label(v))}</text>"
        )
    for v in ticks(y_low, y_high):
        y = sy(v)
        out.append(
            f"<line x1='{x0}' y1='{y:.1f}' x2='{x1}' y2='{y:.1f}' stroke='#e5e7eb'/>"
            f"<text x='{x0 - 6}' y='{y + 4:.1f}' text-anchor='end'>{escape(label(v))}</text>"
        )
    out.append(
        f"<text x='{(x0 + x1) / 2:.1f}' y='{height - 6}' text-anchor='middle'>step</text>"
        f"<text x='14' y='{(y0 + y1) / 2:.1f}' text-anchor='middle' "
        f"transform='rotate(-90 14 {(y0 + y1) / 2:.1f})'>{escape(metric)}</text>"
    )

    limit = max(MIN_POINTS, min(MAX_POINTS, POINT_BUDGET // len(series)))
    thickness = 1.5 if len(series) <= 20 else 1  # a few lines can be bolder
    counts: dict[str, int] = {}
    for _, status, _ in series:
        counts[status] = counts.get(status, 0) + 1
    # Lines fade as there are more of their status, so that many overlapping
    # curves read as a band and the few failed ones still stand out.
    opacity = {s: 0.9 if n <= 20 else max(0.15, 0.9 * math.sqrt(20 / n)) for s, n in counts.items()}
    order = list(STYLES)
    series.sort(key=lambda s: (s[0] == best_id, order.index(s[1]) if s[1] in order else -1))
    out.append("<g fill='none' stroke-linejoin='round' stroke-linecap='round'>")
    for trial_id, status, points in series:
        best = trial_id == best_id
        colour, dash = (BEST_COLOUR, "") if best else STYLES.get(status, OTHER_STYLE)
        style = (
            f"stroke='{colour}' stroke-width='{2.5 if best else thickness}'"
            + (f" stroke-dasharray='{dash}'" if dash else "")
            + ("" if best else f" stroke-opacity='{opacity[status]:.2f}'")
        )
        tip = escape(
            f"{trial_id} {status}{' (best)' if best else ''}: {metric}={points[-1][1]:.6g} "
            f"at step {points[-1][0]:g}"
        )
        drawn = thin(points, MAX_POINTS if best else limit)
        if len(drawn) == 1:  # a polyline of one point draws nothing
            x, y = sx(drawn[0][0]), sy(drawn[0][1])
            shape = f"<circle cx='{x:.1f}' cy='{y:.1f}' r='2.5' fill='{colour}' {style}>"
            shape += f"<title>{tip}</title></circle>"
        else:
            coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in drawn)
            shape = (
                f"<polyline class='{escape(status)}' points='{coords}' {style}>"
                f"<title>{tip}</title></polyline>"
            )
        if best or len(series) <= END_MARKERS_UP_TO:
            x, y = sx(points[-1][0]), sy(points[-1][1])
            shape += (
                f"<circle cx='{x:.1f}' cy='{y:.1f}' r='{3.5 if best else 2}' fill='{colour}' "
                f"stroke='none'><title>{tip}</title></circle>"
            )
        if href is not None:
            shape = f"<a href='{escape(href(trial_id))}'>{shape}</a>"
        out.append(shape)
    out.append("</g>")

    # The legend: a sample line per status that has a line of its own style (the
    # best trial's is drawn in the best style), with how many trials have it.
    styled = {status for trial_id, status, _ in series if trial_id != best_id}
    best_status = next((status for trial_id, status, _ in series if trial_id == best_id), None)
    entries = [
        (*STYLES.get(s, OTHER_STYLE), f"{s.replace('_', ' ')} ({counts[s]})")
        for s in [*order, *sorted(counts.keys() - set(order))]
        if s in styled
    ]
    if best_status is not None:
        entries.append((BEST_COLOUR, "", f"best: {best_id} ({best_status.replace('_', ' ')})"))
    x = x0
    for colour, dash, text in entries:
        dashed = f" stroke-dasharray='{dash}'" if dash else ""
        out.append(
            f"<line x1='{x}' y1='14' x2='{x + 22}' y2='14' stroke='{colour}' "
            f"stroke-width='2'{dashed}/>"
            f"<text x='{x + 27}' y='18'>{escape(text)}</text>"
        )
        x += 40 + 7 * len(text)
    out.append("</svg>")
    return "\n".join(out)
