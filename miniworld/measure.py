"""Reading generated frames of the small world: where the object is, its colour and its shape.

Per frame [H, W, 3] (0..1):
1. background: the per-channel median of the frame's border pixels (the world's backgrounds are grey, plain or
   with a soft texture of amplitude 0.05, and objects never cover the whole border);
2. object mask: pixels whose largest channel difference from the background exceeds `threshold` (0.25; every
   object colour differs from every background grey by at least 0.45 in some channel), largest 8-connected
   component, at least `min_area` pixels, else "no object on this frame"; its centroid is the mean of the mask's
   pixels (the threshold moves edges by whole pixels: within 1 px of the drawn centre's motion on drawn clips);
3. colour: the palette colour nearest to the mean colour of the mask's core (difference above 0.4);
4. shape: from the fill ratio area / bounding-box area of the mask (drawn: square 1, disc ~pi/4, triangle ~1/2):
   above 0.85 square, above 0.71 disc, else triangle. The stand-in VAE rounds corners, so the thresholds sit
   between the fill ratios of decoded held-out clips (1st-99th percentiles: triangle 0.55-0.71, disc 0.72-0.87,
   square 0.83-0.98), not between the drawn ones;
5. tracks: the objects only translate, so points on the object follow its centroid: a grid of up to 16 pixels
   inside the first found mask, moved by the centroid's displacement on each frame. Frames without an object
   keep the last position and are marked not visible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .world import COLOURS

SQUARE_FILL = 0.85
DISC_FILL = 0.71


@dataclass
class FrameReading:
    found: bool
    centroid: tuple[float, float] = (float("nan"), float("nan"))
    """(x, y) in pixels."""
    colour: str = ""
    shape: str = ""
    area: int = 0
    mask: np.ndarray | None = None


def read_frame(frame: np.ndarray, threshold: float = 0.25, min_area: int = 20) -> FrameReading:
    frame = np.asarray(frame, dtype=np.float64)
    border = np.concatenate([frame[0], frame[-1], frame[:, 0], frame[:, -1]])
    bg = np.median(border, axis=0)
    diff = np.abs(frame - bg).max(axis=-1)
    labels, n = ndimage.label(diff > threshold, structure=np.ones((3, 3)))
    if n == 0:
        return FrameReading(False)
    sizes = ndimage.sum_labels(np.ones_like(diff), labels, index=np.arange(1, n + 1))
    best = int(np.argmax(sizes)) + 1
    mask = labels == best
    area = int(mask.sum())
    if area < min_area:
        return FrameReading(False)
    ys, xs = np.nonzero(mask)
    core = mask & (diff > 0.4)
    mean = frame[core if core.any() else mask].mean(axis=0)
    colour = min(COLOURS, key=lambda c: float(np.sum((np.array(COLOURS[c]) - mean) ** 2)))
    fill = area / float((xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1))
    shape = "square" if fill > SQUARE_FILL else "disc" if fill > DISC_FILL else "triangle"
    return FrameReading(True, (float(xs.mean()), float(ys.mean())), colour, shape, area, mask)


@dataclass
class VideoReading:
    frames: list[FrameReading]
    tracks: np.ndarray
    """MTBench layout [F, N, 3]: x/W, y/H, visibility."""

    def appearance(self, colour: str, shape: str) -> float:
        """Fraction of frames whose object has this colour and shape."""
        return float(np.mean([r.found and r.colour == colour and r.shape == shape for r in self.frames]))

    def colour_fraction(self, colour: str) -> float:
        return float(np.mean([r.found and r.colour == colour for r in self.frames]))


def read_video(frames: np.ndarray, points: int = 16) -> VideoReading:
    """Frames [F, H, W, 3] -> per-frame readings and the object's tracks."""
    frames = np.asarray(frames)
    f, h, w = frames.shape[:3]
    readings = [read_frame(fr) for fr in frames]
    first = next((r for r in readings if r.found), None)
    if first is None:  # nothing anywhere: one still, invisible track in the middle
        tracks = np.zeros((f, 1, 3), dtype=np.float32)
        tracks[..., 0], tracks[..., 1] = 0.5, 0.5
        return VideoReading(readings, tracks)
    ys, xs = np.nonzero(first.mask)
    pick = np.linspace(0, len(xs) - 1, min(points, len(xs))).round().astype(int)
    offsets = np.stack([xs[pick], ys[pick]], axis=-1) - np.array(first.centroid)  # N 2
    pos, out = np.array(first.centroid), np.zeros((f, len(pick), 3))
    for t, r in enumerate(readings):
        if r.found:
            pos = np.array(r.centroid)
        out[t, :, :2] = (pos + offsets) / np.array([w, h])
        out[t, :, 2] = float(r.found)
    return VideoReading(readings, out.astype(np.float32))
