"""Analysis of a leave-one-component-out ablation study.

A study runs a *base* trial (nothing removed) and one trial per component with that
component removed. With ``repeats: k`` every trial runs ``k`` times and repeat ``r`` of
every component uses the seed of repeat ``r`` of the base, so each component is
compared with the base *paired by repeat*:

    ``delta_r = sign * (base_r - ablated_r)``, ``sign = +1`` for ``"max"``, ``-1`` for
    ``"min"``.

A positive delta therefore always means the component *helps*: removing it makes the
metric worse, whatever the optimisation direction.

Several components are tested at once, so the p-values of the paired t-tests are
Holm-Bonferroni adjusted before they are compared with ``alpha``: without the
adjustment a study of 20 useless components would flag one of them as significant
about two nights in three.

The module also writes the results (:func:`write_table_csv`, :func:`write_chart_svg`)
and follows a study across nightly runs (:class:`AblationHistory`,
:func:`compare_with_history`). Everything :func:`analyse` returns is plain JSON data
(dicts, lists, str, int, float, bool, None).
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from maggy_core.ablation.sequential import Repeats, holm_adjust, paired_t, sequential_stats
from maggy_core.exceptions import SpecError
from maggy_core.storage import parse_json_lines

__all__ = [
    "SEQUENTIAL_TEST_NAME",
    "STOP_REASONS",
    "TEST_NAME",
    "AblationHistory",
    "Observation",
    "analyse",
    "compare_with_history",
    "holm_adjust",
    "interactions",
    "welch_p_value",
    "write_chart_svg",
    "write_table_csv",
]

TEST_NAME = "paired t-test (two-sided), Holm-adjusted"
SEQUENTIAL_TEST_NAME = (
    "group-sequential paired t-test, linear alpha spending (always-valid), Holm-adjusted"
)
#: Why a component got no more repeats (``stopped`` in the analysis).
STOP_REASONS = ("decided", "precise", "max", "budget", "stopped")
DIRECTIONS = ("max", "min")
CSV_COLUMNS = (
    "rank",
    "component",
    "kind",
    "n",
    "metric_mean",
    "delta",
    "ci_low",
    "ci_high",
    "p_value",
    "p_adjusted",
    "significant",
    "changed",
    "previous_delta",
    "repeats",
    "stopped",
)


@dataclass(frozen=True)
class Observation:
    """The outcome of one trial of an ablation study.

    Attributes:
        ablated: The component left out; two of them (a tuple) in the interaction
            pass; ``None`` for the base trial.
        repeat: Index of the repeat, ``0..k-1``; repeat ``r`` of every trial shares a seed.
        metric: The trial's final metric; ``None`` when the trial failed.
        status: ``"finished"``, ``"early_stopped"`` or ``"failed"`` (only ``"finished"``
            trials are analysed).
        trial_id: The trial's id, for reference only.
    """

    ablated: str | tuple[str, ...] | None
    repeat: int
    metric: float | None
    status: str
    trial_id: str = ""


# --------------------------------------------------------------------------- statistics


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (``ddof=1``) (see :func:`paired_t`)."""
    mean, std, *_ = paired_t(values, 0.95)
    return mean, std


def welch_p_value(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's two-sample t-test (unequal variances), by
    :func:`scipy.stats.ttest_ind` with ``equal_var=False``.

    Args:
        a: First sample.
        b: Second sample.

    Returns:
        The p-value; ``None`` when either sample has fewer than two values. When both
        samples have zero variance the test is degenerate: 0.0 if the means differ,
        else 1.0.
    """
    if len(a) < 2 or len(b) < 2:
        return None
    if all(v == a[0] for v in a) and all(v == b[0] for v in b):
        return 0.0 if a[0] != b[0] else 1.0
    from scipy import stats  # lazy: scipy is slow to import

    return float(min(1.0, stats.ttest_ind(a, b, equal_var=False).pvalue))


# --------------------------------------------------------------------------- analysis


def _check_probability(value: object, field: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0.0 < float(value) < 1.0
    ):
        raise SpecError.one(field, f"must be a number strictly between 0 and 1, got {value!r}")
    return float(value)


def _usable_metric(obs: Observation) -> float | None:
    """The metric of a finished trial with a finite metric, else ``None``."""
    if obs.status != "finished" or obs.metric is None or isinstance(obs.metric, bool):
        return None
    try:
        value = float(obs.metric)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _arm(obs: Observation) -> str | tuple[str, ...] | None:
    ablated = obs.ablated
    if isinstance(ablated, list | tuple):
        return tuple(str(a) for a in ablated)
    return ablated


def analyse(
    observations: Sequence[Observation],
    components: Mapping[str, str],
    *,
    direction: str,
    confidence: float = 0.95,
    alpha: float = 0.05,
    repeats: Repeats | None = None,
    budget: Mapping[str, float] | None = None,
    finished: bool = True,
) -> dict[str, Any]:
    """Paired analysis of a leave-one-component-out study.

    Only trials with status ``"finished"`` and a finite metric count. For each
    component, repeat ``r`` is a *pair* when both the base and the ablated trial of
    repeat ``r`` count; ``delta_r = sign * (base_r - ablated_r)`` with ``sign = +1`` for
    ``"max"`` and ``-1`` for ``"min"``, so a positive delta means the component helps.

    Per component, over its pairs (in repeat order):

    - ``delta`` is the mean of ``delta_r``, ``delta_std`` their sample std (``ddof=1``);
    - ``ci_low``/``ci_high`` is the t interval ``delta ± t_{(1+level)/2, n-1} *
      delta_std / sqrt(n)``, and ``p_value`` the two-sided paired t-test of ``delta_r``
      against 0, both from :func:`scipy.stats.ttest_1samp`. With a fixed number of
      repeats (``repeats`` ``None`` or ``min == max``) ``level`` is ``confidence``;
      with adaptive repeats they are the group-sequential design's
      (:mod:`maggy_core.ablation.sequential`): the interval of the look the
      component stopped at, and the always-valid p-value, which stay valid however
      the number of repeats was chosen;
    - ``p_adjusted`` is the Holm-Bonferroni adjustment of ``p_value`` across every
      component that has one (several components are tested at once, so unadjusted
      p-values would flag useless components by chance); ``significant`` is
      ``p_adjusted < alpha``;
    - ``repeats`` is how many of its trials ended, ``look`` the look its pairs count
      as, and ``stopped`` why it got no more (:data:`STOP_REASONS`): ``decided``
      (significant), ``precise`` (the interval's half-width is at most
      ``repeats.precision``), ``max`` (it reached ``repeats.max``), ``budget`` (the
      study's budget ran out first) or ``stopped`` (the experiment did not finish).

    With fewer than two pairs ``delta_std``, ``ci_low``, ``ci_high``, ``p_value`` and
    ``p_adjusted`` are ``None`` and ``significant`` is False (with no pair, ``delta`` is
    ``None`` too). When every ``delta_r`` is equal (std 0, e.g. a deterministic
    training function) the t statistic is undefined; then ``p_value`` is 0.0 if the
    mean is non-zero and 1.0 if it is zero, and the interval collapses to the mean.

    ``metric_mean``/``metric_std`` (of the base and of each component) are over all of
    its counted trials, paired or not; the std is ``None`` for fewer than two.

    Components are ranked by ``delta``, largest first (the component that helps most
    first); ties and components without a delta keep the order of ``components``, the
    latter after all the others.

    Observations that leave out two components (``ablated`` a pair) are the
    interaction pass: see :func:`interactions`; they go under ``interactions``.

    Args:
        observations: Every trial of the study (any order).
        components: Component name -> kind (``"feature"``, ``"layer"``,
            ``"layer_group"``, ``"custom_model"``, ``"component"``), in study order.
        direction: ``"max"`` or ``"min"``: whether a larger metric is better.
        confidence: Level of the confidence intervals, in (0, 1).
        alpha: Significance level for the adjusted p-values, in (0, 1).
        repeats: The study's repeats (``None``: a single look at the pairs there are).
        budget: The study's budget, if it had one (``{"trials": N}`` or
            ``{"seconds": S}``): components it cut short are ``stopped: budget``.
        finished: Whether the experiment finished (else cut short ones are
            ``stopped: stopped``).

    Returns:
        ``{"base": {"metric_mean", "metric_std", "n"}, "confidence", "alpha", "test",
        "repeats", "looks", "components": [...], "undecided": [...], "interactions":
        [...]}`` where each component entry holds ``component``, ``kind``, ``n``
        (complete pairs), ``repeats``, ``look``, ``stopped``, ``metric_mean``,
        ``metric_std``, ``delta``, ``delta_std``, ``ci_low``, ``ci_high``, ``p_value``,
        ``p_adjusted``, ``significant``, ``deltas`` (per pair, in repeat order) and
        ``rank`` (1-based); ``undecided`` names the components that stopped neither
        decided nor precise.

    Raises:
        SpecError: ``direction`` is not ``"max"``/``"min"`` (field ``"direction"``);
            ``confidence`` or ``alpha`` is not in (0, 1) (``"ablation.confidence"`` /
            ``"ablation.alpha"``); an observation names a component not in
            ``components`` (``"ablation.components"``); an observation's repeat is not
            a non-negative int, or two counted trials share a component and repeat
            (``"observations[i].repeat"``).
    """
    if direction not in DIRECTIONS:
        raise SpecError.one("direction", f"must be 'max' or 'min', got {direction!r}")
    confidence = _check_probability(confidence, "ablation.confidence")
    alpha = _check_probability(alpha, "ablation.alpha")
    sign = 1.0 if direction == "max" else -1.0
    sequential = repeats if repeats is not None and repeats.adaptive else None

    # arm (a component, a pair of them, or None) -> repeat -> metric, counted trials only
    metrics: dict[str | tuple[str, ...] | None, dict[int, float]] = {None: {}}
    metrics.update({name: {} for name in components})
    ended: dict[str | tuple[str, ...] | None, int] = {}
    for i, obs in enumerate(observations):
        arm = _arm(obs)
        names = arm if isinstance(arm, tuple) else () if arm is None else (arm,)
        unknown = [name for name in names if name not in components]
        if unknown:
            known = ", ".join(repr(name) for name in components) or "none"
            raise SpecError.one(
                "ablation.components",
                f"observation {obs.trial_id or i!r} ablates unknown component "
                f"{unknown[0]!r} (known: {known})",
            )
        if isinstance(obs.repeat, bool) or not isinstance(obs.repeat, int) or obs.repeat < 0:
            raise SpecError.one(
                f"observations[{i}].repeat", f"must be an int >= 0, got {obs.repeat!r}"
            )
        ended[arm] = ended.get(arm, 0) + 1
        value = _usable_metric(obs)
        if value is None:
            continue
        per_repeat = metrics.setdefault(arm, {})
        if obs.repeat in per_repeat:
            what = "the base" if arm is None else f"component {arm!r}"
            raise SpecError.one(
                f"observations[{i}].repeat",
                f"two finished trials of {what} for repeat {obs.repeat}",
            )
        per_repeat[obs.repeat] = value

    base = metrics[None]
    base_mean, base_std = _mean_std([base[r] for r in sorted(base)])

    def deltas_of(arm: str | tuple[str, ...]) -> dict[int, float]:
        ablated = metrics.get(arm, {})
        return {r: sign * (base[r] - ablated[r]) for r in sorted(ablated) if r in base}

    entries: list[dict[str, Any]] = []
    for name, kind in components.items():
        ablated = metrics[name]
        metric_mean, metric_std = _mean_std([ablated[r] for r in sorted(ablated)])
        deltas = list(deltas_of(name).values())
        stats = sequential_stats(deltas, sequential, confidence)
        entries.append(
            {
                "component": name,
                "kind": kind,
                "n": stats.n,
                "repeats": ended.get(name, 0),
                "look": stats.look,
                "stopped": "",
                "metric_mean": metric_mean,
                "metric_std": metric_std,
                "delta": stats.mean,
                "delta_std": stats.std,
                "ci_low": stats.ci_low,
                "ci_high": stats.ci_high,
                "half_width": stats.half_width,
                "p_value": stats.p_value,
                "p_adjusted": None,
                "significant": False,
                "deltas": deltas,
                "rank": 0,
            }
        )

    _holm(entries, alpha)
    top = repeats.max if repeats is not None else None
    precision = repeats.precision if repeats is not None else None
    for entry in entries:
        half = entry["half_width"]
        if entry["significant"]:
            entry["stopped"] = "decided"
        elif precision is not None and half is not None and half <= precision:
            entry["stopped"] = "precise"
        elif top is None or entry["repeats"] >= top:
            entry["stopped"] = "max"
        else:
            entry["stopped"] = "budget" if budget and finished else "stopped"

    # stable sort: ties and delta-less components keep study order
    entries.sort(key=lambda e: (e["delta"] is None, -(e["delta"] or 0.0)))
    for rank, entry in enumerate(entries, start=1):
        entry["rank"] = rank

    singles = {e["component"]: deltas_of(e["component"]) for e in entries}
    pairs = [arm for arm in metrics if isinstance(arm, tuple)]
    return {
        "base": {"metric_mean": base_mean, "metric_std": base_std, "n": len(base)},
        "confidence": confidence,
        "alpha": alpha,
        "test": SEQUENTIAL_TEST_NAME if sequential is not None else TEST_NAME,
        "repeats": None if repeats is None else repeats.to_dict(),
        "looks": list(sequential.looks()) if sequential is not None else None,
        "budget": dict(budget) if budget else None,
        "components": entries,
        "undecided": [
            e["component"] for e in entries if e["stopped"] not in ("decided", "precise")
        ],
        "interactions": interactions(
            {pair: deltas_of(pair) for pair in pairs}, singles, confidence, alpha
        ),
    }


def _holm(entries: list[dict[str, Any]], alpha: float) -> None:
    """Fill ``p_adjusted`` and ``significant`` of the entries that have a p-value."""
    tested = [entry for entry in entries if entry["p_value"] is not None]
    for entry, adjusted in zip(
        tested, holm_adjust([entry["p_value"] for entry in tested]), strict=True
    ):
        entry["p_adjusted"] = adjusted
        entry["significant"] = adjusted < alpha


def interactions(
    pairs: Mapping[tuple[str, ...], Mapping[int, float]],
    singles: Mapping[str, Mapping[int, float]],
    confidence: float,
    alpha: float,
) -> list[dict[str, Any]]:
    """The interaction of each pair of components left out together.

    For repeat ``r`` (where the pair, both components and the base all counted),
    ``interaction_r = pair_delta_r - delta_a_r - delta_b_r``: what leaving both out
    costs beyond the sum of leaving each out. Positive: *redundant*, either one is
    enough (each alone seems to matter little, both together a lot); negative:
    *complementary*, both are needed (each alone already costs what both cost). The
    interval and p-value are the paired t's at ``confidence`` (each pair runs a
    fixed number of repeats), Holm-adjusted across the pairs.

    Args:
        pairs: ``(a, b)`` -> repeat -> the pair's delta.
        singles: Component -> repeat -> its delta.
        confidence: Level of the intervals.
        alpha: Significance level after Holm's correction.

    Returns:
        One entry per pair: ``pair``, ``n``, ``pair_delta``, ``interaction``,
        ``ci_low``, ``ci_high``, ``p_value``, ``p_adjusted``, ``significant`` and
        ``reading`` (``redundant``, ``complementary`` or ``additive`` when not
        significant).
    """
    out: list[dict[str, Any]] = []
    for pair, deltas in pairs.items():
        a, b = pair[0], pair[1]
        rs = [r for r in sorted(deltas) if r in singles.get(a, {}) and r in singles.get(b, {})]
        values = [deltas[r] - singles[a][r] - singles[b][r] for r in rs]
        mean, _std, low, high, p_value = paired_t(values, confidence)
        pair_mean, *_ = paired_t([deltas[r] for r in rs], confidence)
        out.append(
            {
                "pair": [a, b],
                "n": len(values),
                "pair_delta": pair_mean,
                "interaction": mean,
                "ci_low": low,
                "ci_high": high,
                "p_value": p_value,
                "p_adjusted": None,
                "significant": False,
                "reading": "additive",
            }
        )
    _holm(out, alpha)
    for entry in out:
        if entry["significant"]:
            entry["reading"] = "redundant" if entry["interaction"] > 0 else "complementary"
    return out


# --------------------------------------------------------------------------- outputs


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_table_csv(analysis: dict[str, Any], path: Path) -> Path:
    """Write the ranked components as a CSV table.

    Columns: ``rank, component, kind, n, metric_mean, delta, ci_low, ci_high, p_value,
    p_adjusted, significant, changed, previous_delta, repeats, stopped``. ``None`` and absent values
    (``changed``/``previous_delta`` before :func:`compare_with_history`) are empty
    cells; booleans are ``true``/``false``; floats are written at full precision.

    Args:
        analysis: What :func:`analyse` (or :func:`compare_with_history`) returned.
        path: The file to write (its parent directory is created).

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for entry in analysis["components"]:
            writer.writerow([_cell(entry.get(column)) for column in CSV_COLUMNS])
    return path


def _nice_step(span: float, target: int = 6) -> float:
    """A tick step of 1, 2 or 5 times a power of ten giving about ``target`` ticks."""
    raw = span / target
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 5.0, 10.0):
        if raw <= factor * power:
            return factor * power
    return 10.0 * power


def _tick_label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step)))
    text = f"{value:.{decimals}f}"
    return "0" if float(text) == 0.0 else text


def write_chart_svg(analysis: dict[str, Any], path: Path, *, title: str = "") -> Path:
    """Write a forest plot of the component effects as a standalone SVG file.

    One row per component in rank order: a dot at ``delta`` and a whisker from
    ``ci_low`` to ``ci_high`` (where they exist), a dashed vertical line at 0 and an x
    axis with ticks. Significant components are drawn in red, others in grey;
    components without a delta are labelled "no data". Names and the title are
    XML-escaped.

    Args:
        analysis: What :func:`analyse` (or :func:`compare_with_history`) returned.
        path: The file to write (its parent directory is created).
        title: Heading drawn above the plot (default: none).

    Returns:
        ``path``.
    """
    entries = list(analysis["components"])
    confidence = analysis.get("confidence", 0.95)
    row_h, width, right = 26, 760, 130
    longest = max([len(str(e["component"])) for e in entries] + [9])
    left = min(320, 20 + 7 * longest)
    top = 50 if title else 22
    plot_h = row_h * max(1, len(entries))
    height = top + plot_h + 80
    x0, x1 = left, width - right

    values = [0.0]
    for e in entries:
        values += [v for v in (e.get("delta"), e.get("ci_low"), e.get("ci_high")) if v is not None]
    lo, hi = min(values), max(values)
    if hi - lo == 0.0:
        lo, hi = lo - 1.0, hi + 1.0
    step = _nice_step(hi - lo)
    lo = math.floor(lo / step) * step
    hi = math.ceil(hi / step) * step

    def x_of(v: float) -> float:
        return x0 + (v - lo) / (hi - lo) * (x1 - x0)

    sig_colour, plain_colour = "#c0392b", "#555555"
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f"<title>{escape(title or 'Ablation study')}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
    ]
    if title:
        out.append(
            f'<text x="{width / 2:.1f}" y="24" text-anchor="middle" font-size="15" '
            f'font-weight="bold">{escape(title)}</text>'
        )
    axis_y = top + plot_h + 6
    # ticks and grid
    n_ticks = round((hi - lo) / step)
    for k in range(n_ticks + 1):
        v = lo + k * step
        x = x_of(v)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{axis_y}" stroke="#eeeeee"/>')
        out.append(
            f'<line x1="{x:.1f}" y1="{axis_y}" x2="{x:.1f}" y2="{axis_y + 5}" stroke="black"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{axis_y + 18}" text-anchor="middle">'
            f"{escape(_tick_label(v, step))}</text>"
        )
    out.append(f'<line x1="{x0}" y1="{axis_y}" x2="{x1}" y2="{axis_y}" stroke="black"/>')
    out.append(
        f'<text x="{(x0 + x1) / 2:.1f}" y="{axis_y + 38}" text-anchor="middle">'
        f"delta (&gt; 0: the component helps), {escape(f'{confidence:.0%}')} CI</text>"
    )
    zero = x_of(0.0)
    out.append(
        f'<line x1="{zero:.1f}" y1="{top - 4}" x2="{zero:.1f}" y2="{axis_y}" '
        'stroke="black" stroke-dasharray="4 3"/>'
    )
    for i, e in enumerate(entries):
        y = top + row_h * i + row_h / 2
        colour = sig_colour if e.get("significant") else plain_colour
        name = str(e["component"])
        out.append(f'<text x="{left - 10}" y="{y + 4:.1f}" text-anchor="end">{escape(name)}</text>')
        delta, ci_low, ci_high = e.get("delta"), e.get("ci_low"), e.get("ci_high")
        if delta is None:
            out.append(
                f'<text x="{x0 + 4}" y="{y + 4:.1f}" fill="#999999" font-style="italic">'
                "no data</text>"
            )
            continue
        if ci_low is not None and ci_high is not None:
            xa, xb = x_of(ci_low), x_of(ci_high)
            out.append(
                f'<line x1="{xa:.1f}" y1="{y:.1f}" x2="{xb:.1f}" y2="{y:.1f}" '
                f'stroke="{colour}" stroke-width="2"/>'
            )
            for xe in (xa, xb):
                out.append(
                    f'<line x1="{xe:.1f}" y1="{y - 5:.1f}" x2="{xe:.1f}" y2="{y + 5:.1f}" '
                    f'stroke="{colour}" stroke-width="2"/>'
                )
        label = f"{delta:+.4g}" + (" *" if e.get("significant") else "")
        out.append(
            f'<circle cx="{x_of(delta):.1f}" cy="{y:.1f}" r="5" fill="{colour}">'
            f"<title>{escape(name)}: delta {escape(label)}</title></circle>"
        )
        out.append(
            f'<text x="{x1 + 10}" y="{y + 4:.1f}" fill={quoteattr(colour)}>{escape(label)}</text>'
        )
    legend_y = height - 8
    out.append(
        f'<circle cx="{x0 + 5}" cy="{legend_y - 4}" r="5" fill="{sig_colour}"/>'
        f'<text x="{x0 + 14}" y="{legend_y}">significant (Holm-adjusted p &lt; '
        f"{escape(str(analysis.get('alpha', 0.05)))})</text>"
    )
    out.append("</svg>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- history


class AblationHistory:
    """An append-only JSON-lines file, one line per run of a study.

    Each line is ``{"experiment_id", "ended", "confidence", "components": {name:
    {"kind", "delta", "ci_low", "ci_high", "n", "deltas"}}}``. A writer that died
    mid-line leaves a torn line; it is skipped when reading, and the next
    :meth:`append` starts on a fresh line so its own record stays intact.

    Args:
        path: The JSON-lines file (need not exist yet).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def runs(self) -> list[dict[str, Any]]:
        """The recorded runs, oldest first.

        Returns:
            One dict per valid line, in file order. Lines that are not a JSON object
            (a torn last line, or a torn line an append has since closed) are skipped.
            A missing file gives ``[]``.
        """
        if not self.path.exists():
            return []
        return parse_json_lines(self.path.read_bytes())

    def append(self, experiment_id: str, analysis: dict[str, Any], ended: float) -> None:
        """Append one run as a single line, flushed and fsynced.

        Args:
            experiment_id: Id of the run.
            analysis: What :func:`analyse` returned for the run.
            ended: When the run ended (seconds since the epoch).
        """
        record = {
            "experiment_id": experiment_id,
            "ended": ended,
            "confidence": analysis.get("confidence"),
            "components": {
                e["component"]: {
                    "kind": e.get("kind"),
                    "delta": e.get("delta"),
                    "ci_low": e.get("ci_low"),
                    "ci_high": e.get("ci_high"),
                    "n": e.get("n"),
                    "deltas": list(e.get("deltas") or []),
                }
                for e in analysis["components"]
            },
        }
        line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+b") as fh:
            if fh.seek(0, os.SEEK_END) > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    line = "\n" + line  # close a torn line left by a dead writer
            fh.write(line.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())


def _previous(history: Sequence[dict[str, Any]], name: str) -> tuple[dict[str, Any], str] | None:
    """The latest run (by position) whose entry for ``name`` has a delta."""
    for run in reversed(history):
        components = run.get("components")
        if not isinstance(components, dict):
            continue
        entry = components.get(name)
        if isinstance(entry, dict) and entry.get("delta") is not None:
            return entry, str(run.get("experiment_id", ""))
    return None


def _intervals_disjoint(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    a_low, a_high = a.get("ci_low"), a.get("ci_high")
    b_low, b_high = b.get("ci_low"), b.get("ci_high")
    if a_low is None or a_high is None or b_low is None or b_high is None:
        return False
    return float(a_high) < float(b_low) or float(b_high) < float(a_low)


def compare_with_history(
    analysis: dict[str, Any], history: list[dict[str, Any]], *, alpha: float = 0.05
) -> dict[str, Any]:
    """Flag the components whose effect changed since the previous run.

    For each component, the *previous* run is the latest entry of ``history`` (which
    is oldest first, as :meth:`AblationHistory.runs` returns it, and must not contain
    this run) that has this component with a delta. The effect *changed* when:

    - both runs have at least two per-repeat deltas: Welch's two-sample t-test
      (two-sided, unequal variances) of this run's deltas against the previous run's
      gives p < ``alpha`` (if both have zero variance: the means differ);
    - otherwise: both runs have a confidence interval and the two do not overlap;
    - and never when there is no previous run or this run has no delta.

    Args:
        analysis: What :func:`analyse` returned for this run (not modified).
        history: Earlier runs, oldest first.
        alpha: Significance level of the Welch test, in (0, 1).

    Returns:
        A deep copy of ``analysis`` where every component entry also has ``changed``
        (bool), ``change_p_value`` (the Welch p-value, or ``None`` when it was not
        computed), ``previous`` (``None`` or ``{"experiment_id", "delta", "ci_low",
        "ci_high", "n"}``) and ``previous_delta`` (``None`` or the previous delta); the
        top level also has ``history_runs`` (``len(history)``).

    Raises:
        SpecError: ``alpha`` is not in (0, 1) (field ``"ablation.alpha"``).
    """
    alpha = _check_probability(alpha, "ablation.alpha")
    result = copy.deepcopy(analysis)
    result["history_runs"] = len(history)
    for entry in result["components"]:
        entry["changed"] = False
        entry["change_p_value"] = None
        entry["previous"] = None
        entry["previous_delta"] = None
        found = _previous(history, entry["component"])
        if found is None:
            continue
        prev, experiment_id = found
        entry["previous"] = {
            "experiment_id": experiment_id,
            "delta": prev.get("delta"),
            "ci_low": prev.get("ci_low"),
            "ci_high": prev.get("ci_high"),
            "n": prev.get("n"),
        }
        entry["previous_delta"] = prev.get("delta")
        if entry.get("delta") is None:
            continue
        now_deltas = [float(v) for v in entry.get("deltas") or []]
        prev_deltas = [float(v) for v in prev.get("deltas") or []]
        p_value = welch_p_value(now_deltas, prev_deltas)
        if p_value is not None:
            entry["change_p_value"] = p_value
            entry["changed"] = p_value < alpha
        else:
            entry["changed"] = _intervals_disjoint(entry, prev)
    return result
