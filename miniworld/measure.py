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

For the object-relative motions (spin, pulse, swing) `read_video(..., pose=True)` reads more:
- shape, independent of rotation: a mask that falls into two parts of at least `min_area` / 2 pixels each after
  an opening with a disc of radius 3 px (the rod goes) is a pendulum; otherwise the fill ratio is taken against the
  smallest bounding box over rotations (5 degree steps), so a square turned 45 degrees still reads as a square;
- the object's pose on each frame relative to its first found frame, as the similarity that maps the first mask
  onto this one: translation from the centroids, scale from the square root of the area ratio, and rotation:
  - by complex moments for every clip whose object does not read as a pendulum on most found frames: the mask's
    c_n = sum ((x - x_c) + i (y - y_c))^n turns by n times the angle when the mask turns, so the angle is its phase
    over n, unwrapped across frames (each change taken within +-180/n degrees). n is 3 or 4, whichever part is
    stronger over the clip (strength |c_n| / (N * mean(r^2)^(n/2)): a drawn triangle 0.79 for n = 3 and 0 for
    n = 4, a drawn square the other way round, 0.60; a disc 0.01); on a frame whose strength is below
    `MOMENT_STRENGTH` the angle holds. A sum over the whole mask keeps the phase of a rounded, blurred triangle,
    where a search over outlines lost track of the blobs a fast turn leaves after the codec;
  - by search for a pendulum (the angle within `MAX_TURN` of the previous frame's, in 3 degree steps refined to
    1 degree, whose warped first mask overlaps this frame's mask best, with a small preference for the previous
    angle). Its swing reads as a rotation of the whole mask about its centroid: its body is a disc, so only the
    bob's turn shows, about the centroid instead of the pivot (the reference clip read this way against its exact
    tracks says what that costs);
  the tracks are the first mask's points moved by that similarity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .world import COLOURS

MAX_TURN = 45
"""Degrees an object may turn between two frames (the test motions turn at most 20, the pretraining clips 17): the
rotation search looks this far either side of the previous frame's angle, so a blurred frame cannot read as a flip
of a symmetric shape."""
MOMENT_STRENGTH = 0.1
"""Below this strength of the chosen complex moment a frame shows no turn to read (a disc: 0.01; triangles decoded by
the committed VAE: 0.30 and more), and the previous frame's angle holds."""
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


def _min_box_fill(xs: np.ndarray, ys: np.ndarray, area: int) -> float:
    """area / the smallest bounding-box area over rotations in 5 degree steps (0-85)."""
    x, y = xs - xs.mean(), ys - ys.mean()
    best = np.inf
    for a in np.deg2rad(np.arange(0, 90, 5)):
        u, v = x * np.cos(a) + y * np.sin(a), -x * np.sin(a) + y * np.cos(a)
        best = min(best, (u.max() - u.min() + 1) * (v.max() - v.min() + 1))
    return area / float(best)


def _two_parts(mask: np.ndarray, min_area: int) -> bool:
    disc = np.hypot(*np.mgrid[-3:4, -3:4]) <= 3.0
    opened = ndimage.binary_opening(mask, structure=disc)
    labels, n = ndimage.label(opened, structure=np.ones((3, 3)))
    sizes = ndimage.sum_labels(np.ones(mask.shape), labels, index=np.arange(1, n + 1)) if n else []
    return int(np.sum(np.asarray(sizes) >= min_area / 2)) >= 2


def read_frame(frame: np.ndarray, threshold: float = 0.25, min_area: int = 20,
               rotation_invariant: bool = False) -> FrameReading:
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
    if rotation_invariant:
        if _two_parts(mask, min_area):
            return FrameReading(True, (float(xs.mean()), float(ys.mean())), colour, "pendulum", area, mask)
        fill = _min_box_fill(xs, ys, area)
    else:
        fill = area / float((xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1))
    shape = "square" if fill > SQUARE_FILL else "disc" if fill > DISC_FILL else "triangle"
    return FrameReading(True, (float(xs.mean()), float(ys.mean())), colour, shape, area, mask)


@dataclass
class VideoReading:
    frames: list[FrameReading]
    tracks: np.ndarray
    """MTBench layout [F, N, 3]: x/W, y/H, visibility."""
    pose: np.ndarray | None = None
    """`pose=True` only: [F, 2] rotation (radians, clockwise, continuous across frames) and scale of the object
    relative to its first found frame; frames without an object hold the last values."""

    def appearance(self, colour: str, shape: str) -> float:
        """Fraction of frames whose object has this colour and shape."""
        return float(np.mean([r.found and r.colour == colour and r.shape == shape for r in self.frames]))

    def colour_fraction(self, colour: str) -> float:
        return float(np.mean([r.found and r.colour == colour for r in self.frames]))


def _rotation(first: FrameReading, now: FrameReading, scale: float, previous: float) -> float:
    """The angle (radians, clockwise on screen) whose rotation of the first mask about its centroid, scaled and
    moved onto this frame's centroid, overlaps this frame's mask best (see the module doc)."""
    h, w = now.mask.shape
    ys, xs = np.nonzero(now.mask)
    pad = 4
    y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, h)
    x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, w)
    gy, gx = np.mgrid[y0:y1, x0:x1]
    target = now.mask[y0:y1, x0:x1].ravel()
    dx, dy = (gx - now.centroid[0]).ravel() / scale, (gy - now.centroid[1]).ravel() / scale

    def overlap(angles: np.ndarray) -> np.ndarray:
        c, s = np.cos(angles)[:, None], np.sin(angles)[:, None]
        # pixel -> the first frame: undo the rotation (R(-a)) about the centroids
        fx = np.round(first.centroid[0] + c * dx + s * dy).astype(int)
        fy = np.round(first.centroid[1] - s * dx + c * dy).astype(int)
        inside = (fx >= 0) & (fx < w) & (fy >= 0) & (fy < h)
        hit = np.zeros(fx.shape, dtype=bool)
        hit[inside] = first.mask[fy[inside], fx[inside]]
        inter = (hit & target).sum(-1)
        return inter / np.maximum((hit | target).sum(-1), 1)

    def pick(angles: np.ndarray) -> float:
        turn = np.abs(angles - previous)
        return float(angles[np.argmax(overlap(angles) - 0.02 * turn / np.pi)])

    coarse = pick(previous + np.deg2rad(np.arange(-MAX_TURN, MAX_TURN + 1, 3)))
    return pick(coarse + np.deg2rad(np.arange(-3, 4)))


def _moments(mask: np.ndarray, centroid: tuple[float, float]) -> dict[int, complex]:
    """The mask's complex moments c_3 and c_4 about the centroid, each divided by N * mean(r^2)^(n/2), so that its
    size is the part's strength (0..1) and its phase n times the mask's turn."""
    ys, xs = np.nonzero(mask)
    z = (xs - centroid[0]) + 1j * (ys - centroid[1])
    r2 = max(float((np.abs(z) ** 2).mean()), 1e-9)
    return {n: complex((z ** n).sum() / (len(z) * r2 ** (n / 2))) for n in (3, 4)}


def moment_angles(readings: list[FrameReading]) -> np.ndarray:
    """[F] the object's turn (radians, clockwise on screen) relative to the first found frame whose part is strong
    enough (`MOMENT_STRENGTH`), from the complex moments (module doc); frames without an object, or with too weak
    a part, hold the last angle."""
    moments = [_moments(r.mask, r.centroid) if r.found else None for r in readings]
    seen = [m for m in moments if m is not None]
    if not seen:
        return np.zeros(len(readings))
    n = max((3, 4), key=lambda k: np.mean([abs(m[k]) for m in seen]))
    out, angle, phase = np.zeros(len(readings)), 0.0, None
    for t, m in enumerate(moments):
        if m is not None and abs(m[n]) >= MOMENT_STRENGTH:
            now = np.angle(m[n]) / n
            if phase is not None:
                angle += (now - phase + np.pi / n) % (2 * np.pi / n) - np.pi / n
            phase = now
        out[t] = angle
    return out


def read_video(frames: np.ndarray, points: int = 16, pose: bool = False) -> VideoReading:
    """Frames [F, H, W, 3] -> per-frame readings and the object's tracks (`pose`: the object-relative reading of
    the module doc: rotation-invariant shapes, tracks moved by each frame's similarity to the first)."""
    frames = np.asarray(frames)
    f, h, w = frames.shape[:3]
    readings = [read_frame(fr, rotation_invariant=pose) for fr in frames]
    first = next((r for r in readings if r.found), None)
    if first is None:  # nothing anywhere: one still, invisible track in the middle
        tracks = np.zeros((f, 1, 3), dtype=np.float32)
        tracks[..., 0], tracks[..., 1] = 0.5, 0.5
        return VideoReading(readings, tracks, np.tile([0.0, 1.0], (f, 1)) if pose else None)
    ys, xs = np.nonzero(first.mask)
    pick = np.linspace(0, len(xs) - 1, min(points, len(xs))).round().astype(int)
    offsets = np.stack([xs[pick], ys[pick]], axis=-1) - np.array(first.centroid)  # N 2
    pos, out = np.array(first.centroid), np.zeros((f, len(pick), 3))
    found = [r for r in readings if r.found]
    by_moments = pose and sum(r.shape == "pendulum" for r in found) * 2 <= len(found)
    turns = moment_angles(readings) if by_moments else None
    angle, scale = 0.0, 1.0
    poses = np.zeros((f, 2))
    for t, r in enumerate(readings):
        if r.found:
            pos = np.array(r.centroid)
            if pose:
                scale = float(np.sqrt(r.area / first.area))
                # continuous: the moments' unwrapped phase, or a search about the previous angle
                angle = float(turns[t]) if by_moments else _rotation(first, r, scale, angle)
        c, s = np.cos(angle), np.sin(angle)
        moved = scale * np.stack([c * offsets[:, 0] - s * offsets[:, 1], s * offsets[:, 0] + c * offsets[:, 1]], -1)
        out[t, :, :2] = (pos + moved) / np.array([w, h])
        out[t, :, 2] = float(r.found)
        poses[t] = angle, scale
    return VideoReading(readings, out.astype(np.float32), poses if pose else None)
