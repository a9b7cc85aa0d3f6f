"""Hand-written inline-SVG charts for report.html: scatter, horizontal bars, percentile ranges, lines.

No plotting library and no script: every chart is a string of SVG built here, so the report opens
offline in any browser and a CI machine needs nothing beyond the standard library to write it.
Each function takes plain numbers and labels (never the report dict) and returns one ``<svg>``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Sequence

# Colour-blind-safe (Okabe-Ito), in the order series are drawn.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
GREY = "#6b7280"
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"


def fmt(v: float) -> str:
    """A short human label for a tick or a value: 0.025, 1.5, 120, 25k, 1.2M."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"


class Scale:
    """Maps a data interval onto a pixel interval, linearly or logarithmically (base 10)."""

    def __init__(self, lo: float, hi: float, px_lo: float, px_hi: float, log: bool = False) -> None:
        if log:
            lo, hi = max(lo, 1e-12), max(hi, 1e-12)
        if hi <= lo:  # a single value still needs a visible interval around it
            pad = abs(lo) * 0.1 or 1.0
            lo, hi = (lo / 2, hi * 2) if log else (lo - pad, hi + pad)
        self.lo, self.hi, self.px_lo, self.px_hi, self.log = lo, hi, px_lo, px_hi, log

    def _t(self, v: float) -> float:
        return math.log10(max(v, 1e-12)) if self.log else v

    def __call__(self, v: float) -> float:
        span = self._t(self.hi) - self._t(self.lo)
        return self.px_lo + (self._t(v) - self._t(self.lo)) / span * (self.px_hi - self.px_lo)

    def ticks(self, n: int = 5) -> list[float]:
        if not self.log:
            return nice_ticks(self.lo, self.hi, n)
        ticks = log_ticks(self.lo, self.hi)
        # Less than a decade leaves one or two 1-2-5 ticks; round linear ticks read better there.
        return ticks if len(ticks) >= 3 else [t for t in nice_ticks(self.lo, self.hi, n) if t > 0]


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    out, v = [], start
    while v <= hi + step * 1e-9:
        out.append(round(v, 12))
        v += step
    return out


def log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks per decade inside [lo, hi]; only powers of ten when the range spans many decades."""
    lo_e, hi_e = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    mults = (1,) if hi_e - lo_e > 4 else (1, 2, 5)
    return [m * 10.0**e for e in range(lo_e, hi_e + 1) for m in mults if lo * (1 - 1e-9) <= m * 10.0**e <= hi * (1 + 1e-9)]


def padded(values: Sequence[float], log: bool, frac: float = 0.08) -> tuple[float, float]:
    """A data interval a little wider than ``values`` so points do not sit on the frame."""
    vals = [v for v in values if v is not None and math.isfinite(v) and (v > 0 or not log)]
    if not vals:
        return (1.0, 10.0) if log else (0.0, 1.0)
    lo, hi = min(vals), max(vals)
    if log:
        ratio = (hi / lo) ** frac if hi > lo else 2.0
        return lo / ratio, hi * ratio
    pad = (hi - lo) * frac or abs(hi) * 0.1 or 1.0
    return lo - pad, hi + pad


@dataclass
class Frame:
    """A plotting area inside an SVG of ``width`` x ``height`` with margins for axes and labels."""

    width: int = 720
    height: int = 360
    left: int = 70
    right: int = 20
    top: int = 20
    bottom: int = 50
    parts: list[str] = field(default_factory=list)

    @property
    def x0(self) -> float:
        return self.left

    @property
    def x1(self) -> float:
        return self.width - self.right

    @property
    def y0(self) -> float:  # bottom of the plot (SVG y grows downward)
        return self.height - self.bottom

    @property
    def y1(self) -> float:
        return self.top

    def text(self, x: float, y: float, s: str, anchor: str = "start", size: int = 12, color: str = "#111", extra: str = "") -> None:
        self.parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" fill="{color}"{extra}>{escape(s)}</text>'
        )

    def x_axis(self, sx: Scale, label: str) -> None:
        for t in sx.ticks():
            x = sx(t)
            self.parts.append(f'<line x1="{x:.1f}" y1="{self.y1}" x2="{x:.1f}" y2="{self.y0}" stroke="#e5e7eb"/>')
            self.text(x, self.y0 + 16, fmt(t), "middle", 11, GREY)
        self.parts.append(f'<line x1="{self.x0}" y1="{self.y0}" x2="{self.x1}" y2="{self.y0}" stroke="#9ca3af"/>')
        self.text((self.x0 + self.x1) / 2, self.height - 10, label, "middle", 12)

    def y_axis(self, sy: Scale, label: str) -> None:
        for t in sy.ticks():
            y = sy(t)
            self.parts.append(f'<line x1="{self.x0}" y1="{y:.1f}" x2="{self.x1}" y2="{y:.1f}" stroke="#e5e7eb"/>')
            self.text(self.x0 - 6, y + 4, fmt(t), "end", 11, GREY)
        self.parts.append(f'<line x1="{self.x0}" y1="{self.y1}" x2="{self.x0}" y2="{self.y0}" stroke="#9ca3af"/>')
        cy = (self.y0 + self.y1) / 2
        self.text(16, cy, label, "middle", 12, extra=f' transform="rotate(-90 16 {cy:.1f})"')

    def svg(self, title: str) -> str:
        body = "".join(self.parts)
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {self.width} {self.height}" role="img" '
            f'aria-label="{escape(title)}" style="{FONT};max-width:100%;height:auto">'
            f"<title>{escape(title)}</title>{body}</svg>"
        )


def empty_chart(title: str, message: str, width: int = 720, height: int = 80) -> str:
    f = Frame(width, height)
    f.text(width / 2, height / 2, message, "middle", 13, GREY)
    return f.svg(title)


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str
    color: str = PALETTE[0]
    shape: str = "circle"  # "circle" | "square" | "diamond"
    size: float = 6.0
    hollow: bool = False
    show_label: bool = True


@dataclass(frozen=True)
class Rule:
    """A reference line across the plot: a budget, a gate, a target."""

    value: float
    label: str
    color: str = "#b91c1c"


def _marker(x: float, y: float, p: Point) -> str:
    fill = "white" if p.hollow else p.color
    style = f'fill="{fill}" stroke="{p.color}" stroke-width="1.5"'
    tip = f"<title>{escape(p.label)}</title>"
    if p.shape == "square":
        s = p.size
        return f'<rect x="{x - s:.1f}" y="{y - s:.1f}" width="{2 * s:.1f}" height="{2 * s:.1f}" {style}>{tip}</rect>'
    if p.shape == "diamond":
        s = p.size * 1.3
        return f'<polygon points="{x:.1f},{y - s:.1f} {x + s:.1f},{y:.1f} {x:.1f},{y + s:.1f} {x - s:.1f},{y:.1f}" {style}>{tip}</polygon>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{p.size:.1f}" {style}>{tip}</circle>'


def scatter(
    points: Sequence[Point], *, title: str, x_label: str, y_label: str, x_log: bool = False, y_log: bool = False,
    x_rules: Sequence[Rule] = (), y_rules: Sequence[Rule] = (), width: int = 720, height: int = 380, legend: bool = False,
) -> str:
    """Markers on linear or log axes.  Labels go next to their points, or with ``legend`` into a key on
    the right: better when points can sit on top of each other (variants with the same latency)."""
    pts = [p for p in points if _finite(p.x, p.y) and (p.x > 0 or not x_log) and (p.y > 0 or not y_log)]
    if not pts:
        return empty_chart(title, "no data to plot")
    keyed = [p for p in pts if p.show_label] if legend else []
    key_width = int(min(max((6.3 * len(p.label) for p in keyed), default=0), 360)) + 40 if keyed else 0
    f = Frame(width + key_width, max(height, 40 + 20 * len(keyed)), right=20 + key_width)
    xs = [p.x for p in pts] + [r.value for r in x_rules]
    ys = [p.y for p in pts] + [r.value for r in y_rules]
    sx = Scale(*padded(xs, x_log), f.x0, f.x1, x_log)
    sy = Scale(*padded(ys, y_log), f.y0, f.y1, y_log)
    f.x_axis(sx, x_label)
    f.y_axis(sy, y_label)
    for r in x_rules:
        x = sx(r.value)
        f.parts.append(f'<line x1="{x:.1f}" y1="{f.y1}" x2="{x:.1f}" y2="{f.y0}" stroke="{r.color}" stroke-dasharray="5 4"/>')
        f.text(x - 4, f.y1 + 12, r.label, "end", 11, r.color)
    for r in y_rules:
        y = sy(r.value)
        f.parts.append(f'<line x1="{f.x0}" y1="{y:.1f}" x2="{f.x1}" y2="{y:.1f}" stroke="{r.color}" stroke-dasharray="5 4"/>')
        f.text(f.x1 - 4, y - 5, r.label, "end", 11, r.color)
    # Boxes a label must not cover: every marker, then each label as it is placed (x0, y0, x1, y1).
    placed = [(sx(p.x) - p.size, sy(p.y) - p.size, sx(p.x) + p.size, sy(p.y) + p.size) for p in pts]
    for p in pts:
        x, y = sx(p.x), sy(p.y)
        f.parts.append(_marker(x, y, p))
        if p.show_label and not legend:
            x, y, anchor = _place_label(x, y, p, f, placed)
            f.text(x, y, p.label, anchor, 11, p.color)
    for i, p in enumerate(keyed):
        ky = f.y1 + 10 + 20 * i
        f.parts.append(_marker(f.x1 + 24, ky, Point(0, 0, p.label, p.color, p.shape, 5, p.hollow)))
        f.text(f.x1 + 36, ky + 4, p.label, "start", 11)
    return f.svg(title)


def _place_label(x: float, y: float, p: Point, f: Frame, placed: list[tuple[float, float, float, float]]) -> tuple[float, float, str]:
    """A spot for a point's label that overlaps no earlier label and stays inside the frame.

    Points often cluster (fp32 and INT8 students at nearly the same latency), so the candidates are
    above/below and right/left of the point, then further down, first fit wins."""
    w, h, gap = 6.3 * len(p.label), 12.0, p.size + 5
    for dy in (-gap, gap + h - 2, -gap - h, gap + 2 * h, -gap - 2 * h, gap + 3 * h):
        for anchor in ("start", "end"):
            x0 = x + gap if anchor == "start" else x - gap - w
            box = (x0, y + dy - h + 2, x0 + w, y + dy + 2)
            inside = box[0] >= f.x0 and box[2] <= f.x1 and box[1] >= f.y1 - 4 and box[3] <= f.y0
            clear = all(box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3] for b in placed)
            if inside and clear:
                placed.append(box)
                return (x + gap if anchor == "start" else x - gap), y + dy, anchor
    anchor = "end" if x > (f.x0 + f.x1) / 2 else "start"  # nowhere clear: keep it next to its point
    return (x - gap if anchor == "end" else x + gap), y - gap, anchor


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    color: str = PALETTE[0]
    note: str = ""  # printed after the bar, e.g. "24.5 KiB"


def hbars(bars: Sequence[Bar], *, title: str, x_label: str, rules: Sequence[Rule] = (), width: int = 720, label_width: int = 210) -> str:
    bars = [b for b in bars if _finite(b.value) and b.value >= 0]
    if not bars:
        return empty_chart(title, "no data to plot")
    row = 26
    f = Frame(width, 30 + row * len(bars) + 40, left=label_width, right=110, top=14, bottom=40)
    hi = max([b.value for b in bars] + [r.value for r in rules]) or 1.0
    sx = Scale(0, hi * 1.02, f.x0, f.x1)
    f.x_axis(sx, x_label)
    for i, b in enumerate(bars):
        y = f.y1 + i * row + 4
        w = max(sx(b.value) - f.x0, 1.0)
        f.parts.append(f'<rect x="{f.x0}" y="{y:.1f}" width="{w:.1f}" height="{row - 8}" fill="{b.color}"><title>{escape(b.label)}: {escape(b.note or fmt(b.value))}</title></rect>')
        f.text(f.x0 - 8, y + row / 2, b.label, "end", 12)
        f.text(f.x0 + w + 6, y + row / 2, b.note or fmt(b.value), "start", 11, GREY)
    for r in rules:
        x = sx(r.value)
        f.parts.append(f'<line x1="{x:.1f}" y1="{f.y1}" x2="{x:.1f}" y2="{f.y0}" stroke="{r.color}" stroke-dasharray="5 4"/>')
        f.text(x, f.y1 - 2 if f.y1 > 12 else f.y1 + 10, r.label, "middle", 11, r.color)
    return f.svg(title)


@dataclass(frozen=True)
class Spread:
    """One model's latency distribution as the agent summarized it (ms)."""

    label: str
    min: float
    p50: float
    p90: float
    p99: float
    max: float
    mean: float | None = None
    color: str = PALETTE[0]


def spreads(rows: Sequence[Spread], *, title: str, x_label: str, log: bool = True, width: int = 720, label_width: int = 210) -> str:
    """Whisker min..max, box p50..p90, tick at p99, dot at the mean: one row per model."""
    rows = [r for r in rows if _finite(r.min, r.p50, r.p90, r.p99, r.max) and (r.min > 0 or not log)]
    if not rows:
        return empty_chart(title, "no latency data")
    row = 34
    f = Frame(width, 30 + row * len(rows) + 40, left=label_width, right=30, top=14, bottom=40)
    sx = Scale(*padded([v for r in rows for v in (r.min, r.max)], log, 0.04), f.x0, f.x1, log)
    f.x_axis(sx, x_label)
    for i, r in enumerate(rows):
        cy = f.y1 + i * row + row / 2
        tip = f"<title>{escape(r.label)}: min {fmt(r.min)}, p50 {fmt(r.p50)}, p90 {fmt(r.p90)}, p99 {fmt(r.p99)}, max {fmt(r.max)} ms</title>"
        f.parts.append(f'<g>{tip}<line x1="{sx(r.min):.1f}" y1="{cy:.1f}" x2="{sx(r.max):.1f}" y2="{cy:.1f}" stroke="{r.color}"/>')
        f.parts.append(f'<line x1="{sx(r.min):.1f}" y1="{cy - 6:.1f}" x2="{sx(r.min):.1f}" y2="{cy + 6:.1f}" stroke="{r.color}"/>')
        f.parts.append(f'<line x1="{sx(r.max):.1f}" y1="{cy - 6:.1f}" x2="{sx(r.max):.1f}" y2="{cy + 6:.1f}" stroke="{r.color}"/>')
        box_w = max(sx(r.p90) - sx(r.p50), 2.0)
        f.parts.append(f'<rect x="{sx(r.p50):.1f}" y="{cy - 9:.1f}" width="{box_w:.1f}" height="18" fill="{r.color}" fill-opacity="0.35" stroke="{r.color}"/>')
        f.parts.append(f'<line x1="{sx(r.p50):.1f}" y1="{cy - 9:.1f}" x2="{sx(r.p50):.1f}" y2="{cy + 9:.1f}" stroke="{r.color}" stroke-width="3"/>')
        f.parts.append(f'<line x1="{sx(r.p99):.1f}" y1="{cy - 9:.1f}" x2="{sx(r.p99):.1f}" y2="{cy + 9:.1f}" stroke="{r.color}" stroke-width="2" stroke-dasharray="3 2"/>')
        if r.mean is not None and _finite(r.mean) and (r.mean > 0 or not log):
            f.parts.append(f'<circle cx="{sx(r.mean):.1f}" cy="{cy:.1f}" r="3" fill="white" stroke="{r.color}"/>')
        f.parts.append("</g>")
        f.text(f.x0 - 8, cy + 4, r.label, "end", 12)
    return f.svg(title)


@dataclass(frozen=True)
class Series:
    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    color: str = PALETTE[0]


def lines(series: Sequence[Series], *, title: str, x_label: str, y_label: str, width: int = 720, height: int = 320) -> str:
    series = [s for s in series if len(s.xs) and len(s.xs) == len(s.ys)]
    if not series:
        return empty_chart(title, "no data to plot")
    f = Frame(width, height, right=170)
    sx = Scale(*padded([x for s in series for x in s.xs], False, 0.02), f.x0, f.x1)
    sy = Scale(*padded([y for s in series for y in s.ys], False), f.y0, f.y1)
    f.x_axis(sx, x_label)
    f.y_axis(sy, y_label)
    for i, s in enumerate(series):
        pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(s.xs, s.ys) if _finite(x, y))
        f.parts.append(f'<polyline points="{pts}" fill="none" stroke="{s.color}" stroke-width="2"><title>{escape(s.label)}</title></polyline>')
        for x, y in zip(s.xs, s.ys):
            if _finite(x, y):
                f.parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{s.color}"/>')
        ly = f.y1 + 14 + 18 * i
        f.parts.append(f'<line x1="{f.x1 + 10}" y1="{ly - 4}" x2="{f.x1 + 28}" y2="{ly - 4}" stroke="{s.color}" stroke-width="3"/>')
        f.text(f.x1 + 32, ly, s.label, "start", 11)
    return f.svg(title)


def _finite(*values: float | None) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
