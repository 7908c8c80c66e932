"""A loss-curve picture drawn with Pillow (no plotting library needed)."""

from __future__ import annotations

import math

import numpy as np


def loss_curve_image(losses: list[float], tracks: list[float | None] | None = None, width: int = 640,
                     height: int = 320, title: str = "DeT training loss") -> np.ndarray:
    """uint8 [height, width, 3]: total loss per step (grey), its moving average (blue), tracking loss (orange)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), (250, 250, 250))
    d = ImageDraw.Draw(img)
    left, right, top, bottom = 56, 12, 24, 28
    d.text((left, 6), title, fill=(20, 20, 20))
    d.rectangle([left, top, width - right, height - bottom], outline=(120, 120, 120))
    values = [v for v in losses if v is not None and math.isfinite(v)]
    if not values:
        d.text((left + 10, top + 10), "no steps yet", fill=(120, 0, 0))
        return np.array(img)
    series = [("loss", losses, (170, 170, 170)), ("mean", _moving_average(losses), (30, 90, 200))]
    if tracks and any(t is not None for t in tracks):
        series.append(("tracking", tracks, (230, 120, 20)))
    every = [v for _, s, _ in series for v in s if v is not None and math.isfinite(v)]
    lo, hi = min(every), max(every)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    n = max(len(losses), 2)
    sx = (width - right - left) / (n - 1)
    sy = (height - bottom - top) / (hi - lo)
    for name, s, colour in series:
        pts = [(left + i * sx, height - bottom - (v - lo) * sy) for i, v in enumerate(s)
               if v is not None and math.isfinite(v)]
        if len(pts) > 1 and name != "tracking":
            d.line(pts, fill=colour, width=2 if name == "mean" else 1)
        else:
            for x, y in pts:
                d.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=colour)
    d.text((4, top), f"{hi:.3g}", fill=(60, 60, 60))
    d.text((4, height - bottom - 10), f"{lo:.3g}", fill=(60, 60, 60))
    d.text((left, height - bottom + 6), "step 1", fill=(60, 60, 60))
    d.text((width - right - 70, height - bottom + 6), f"step {len(losses)}", fill=(60, 60, 60))
    legend = "grey: loss   blue: moving mean" + ("   orange: tracking" if len(series) > 2 else "")
    d.text((left + 150, 6), legend, fill=(60, 60, 60))
    return np.array(img)


def _moving_average(values: list[float], window: int = 20) -> list[float]:
    out, acc = [], []
    for v in values:
        acc.append(v)
        if len(acc) > window:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out
