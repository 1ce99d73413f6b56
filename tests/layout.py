"""A layout check of matplotlib figures, shared by the figure and report tests."""

from __future__ import annotations

import math

import torch
from matplotlib.transforms import Bbox

__all__ = ["INTEGER_AXES", "layout_problems"]

#: Axis labels whose axis counts layers, depths or tokens: their ticks must be whole numbers.
INTEGER_AXES = ("layer", "t (depth", "source token", "target token")


def _visible_tick_labels(axis, renderer):
    """The drawn tick labels of an axis (major and minor, either side) inside its view interval."""
    lo, hi = sorted(axis.get_view_interval())
    span = hi - lo
    out = []
    for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
        if not lo - 1e-9 * span <= tick.get_loc() <= hi + 1e-9 * span:
            continue
        for text in (tick.label1, tick.label2):
            if text.get_visible() and text.get_text():
                out.append((text.get_text(), text.get_window_extent(renderer)))
    return out


def layout_problems(fig, legends_outside=True) -> list[str]:
    """Everything wrong with a figure's layout: clipped titles/labels/legends, overlapping texts (titles, axis
    and tick labels, legends), legends over the data (``legends_outside``), non-integer ticks on
    layer/depth/token axes, data points outside (or half outside) their axes."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    frame = fig.bbox
    problems = []

    def inside(bb, what):
        if bb.width > 0 and (bb.x0 < frame.x0 - 0.5 or bb.y0 < frame.y0 - 0.5 or bb.x1 > frame.x1 + 0.5
                             or bb.y1 > frame.y1 + 0.5):
            problems.append(f"{what} is clipped by the figure frame")

    def overlap(b1, b2):
        both = Bbox.intersection(b1, b2)
        return both is not None and both.width > 0.5 and both.height > 0.5

    texts = []  # (what, box) of every title, axis label, tick label and legend
    for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes)]:
        if legend is not None:
            bb = legend.get_window_extent(r)
            inside(bb, "a legend")
            texts.append(("a legend", bb))
            if legends_outside and any(overlap(bb, ax.bbox) for ax in fig.axes):
                problems.append("a legend covers the data area")
    for ax in fig.axes:
        if ax.title.get_text():
            texts.append((f"title {ax.title.get_text()!r}", ax.title.get_window_extent(r)))
            inside(texts[-1][1], texts[-1][0])
        for axis, name in ((ax.xaxis, "x"), (ax.yaxis, "y")):
            label = axis.get_label().get_text()
            if label and axis.get_label().get_visible():
                texts.append((f"axis label {label!r}", axis.get_label().get_window_extent(r)))
                inside(texts[-1][1], texts[-1][0])
            ticks = _visible_tick_labels(axis, r)
            for text, bb in ticks:
                inside(bb, f"{name} tick label {text!r}")
            texts += [(f"{name} tick label {t!r}", bb) for t, bb in ticks]
            if label.startswith(INTEGER_AXES):
                lo, hi = sorted(axis.get_view_interval())
                locs = [t for t in axis.get_majorticklocs() if lo <= t <= hi]
                if any(abs(t - round(t)) > 1e-9 for t in locs):
                    problems.append(f"axis {label!r} has ticks between whole numbers: {locs}")
        box = ax.bbox
        for coll in ax.collections:
            if coll.get_offset_transform() is not ax.transData or not len(coll.get_offsets()):
                continue
            radius = max(math.sqrt(float(max(coll.get_sizes(), default=0.0))) / 2 * fig.dpi / 72, 0.0)
            for x, y in ax.transData.transform(coll.get_offsets()):
                if not (box.x0 + radius - 0.5 <= x <= box.x1 - radius + 0.5
                        and box.y0 + radius - 0.5 <= y <= box.y1 - radius + 0.5):
                    problems.append(f"a marker at display ({x:.0f}, {y:.0f}) is not inside the axes {box.bounds}")
        for line in ax.get_lines():
            if line.get_transform() is not ax.transData:
                continue
            xy = line.get_xydata()
            xy = xy[torch.isfinite(torch.as_tensor(xy)).all(dim=1).numpy()]
            for x, y in ax.transData.transform(xy):
                if not (box.x0 - 0.5 <= x <= box.x1 + 0.5 and box.y0 - 0.5 <= y <= box.y1 + 0.5):
                    problems.append(f"a point of line {line.get_label()!r} lies outside the axes")
    for i, (w1, b1) in enumerate(texts):
        for w2, b2 in texts[i + 1:]:
            if overlap(b1, b2):
                problems.append(f"{w1} and {w2} overlap")
    return problems
