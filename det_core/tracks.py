"""Point tracks: query sampling from a mask, the layouts that cross the pack's boundaries, and a picture.

Layouts:
- MTBench / DeT array: `[T, N, 3]` float32 (x/W, y/H, visibility), as CoTracker3 output is published with MTBench;
- TRACKS (what crosses ComfyUI nodes; the layout of newer ComfyUI releases' own track type):
  `{"track_path": [F, N, 2] pixels, "track_visibility": [F, N] bool}` plus, here, `"image_size": (W, H)`.
  From the tracker `track_path` is float32; converted from a normalised MTBench array it is float64, which makes
  MTBench -> TRACKS -> MTBench exact (x * W and its division by W are exact in float64 for float32 x);
- the JSON string of ComfyUI 0.3.75's `WanTrackToVideo`: a list of tracks, each a list of {"x": px, "y": px}
  per frame (that format has no visibility; hidden points keep their estimated positions).

Query sampling from the first-frame mask (DeT): `mask-weighted` draws points with probability proportional to
1 / (number of mask pixels within 5 px), without replacement, seeded, so thin parts (limbs, tails) get points;
`mask-grid` takes a regular grid inside the mask; `grid` a regular grid over the frame.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from .safe_load import load_weights_only
from .video import to_uint8

SAMPLING = ("mask-weighted", "mask-grid", "grid")
NEIGHBOUR_RADIUS = 5


def make_tracks(track_path: torch.Tensor, visibility: torch.Tensor, image_size: tuple[int, int]) -> dict:
    if track_path.ndim != 3 or track_path.shape[-1] != 2:
        raise ValueError(f"track_path must be [frames, points, 2], got {tuple(track_path.shape)}")
    if tuple(visibility.shape) != tuple(track_path.shape[:2]):
        raise ValueError(f"track_visibility {tuple(visibility.shape)} does not match track_path {tuple(track_path.shape)}")
    if not track_path.is_floating_point():
        track_path = track_path.float()
    return {"track_path": track_path, "track_visibility": visibility.to(torch.bool),
            "image_size": (int(image_size[0]), int(image_size[1]))}


def from_mtbench(arr, width: int, height: int, visible_threshold: float = 0.5) -> dict:
    """MTBench `[T, N, 3]` (x/W, y/H, visibility) -> TRACKS in pixels of a width x height video."""
    a = torch.as_tensor(np.asarray(arr))
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"MTBench tracks must be [frames, points, 3] (x/W, y/H, visibility), got {tuple(a.shape)}")
    if width <= 0 or height <= 0:
        raise ValueError(f"video size {width}x{height} must be positive")
    path = a[..., :2].to(torch.float64) * torch.tensor([float(width), float(height)], dtype=torch.float64)
    return make_tracks(path, a[..., 2] > visible_threshold, (width, height))


def to_mtbench(tracks: dict) -> np.ndarray:
    """TRACKS -> MTBench `[T, N, 3]` float32 (x/W, y/H, visibility 0/1)."""
    w, h = tracks["image_size"]
    xy = tracks["track_path"].to(torch.float64) / torch.tensor([float(w), float(h)], dtype=torch.float64)
    vis = tracks["track_visibility"].to(torch.float64)[..., None]
    return torch.cat([xy, vis], dim=-1).to(torch.float32).numpy()


def to_wan_json(tracks: dict, width: int | None = None, height: int | None = None) -> str:
    """TRACKS -> the JSON track string of WanTrackToVideo, optionally rescaled to a width x height target."""
    w, h = tracks["image_size"]
    sx = (width or w) / w
    sy = (height or h) / h
    path = tracks["track_path"].to(torch.float64)
    out = [[{"x": float(path[f, n, 0] * sx), "y": float(path[f, n, 1] * sy)} for f in range(path.shape[0])]
           for n in range(path.shape[1])]
    return json.dumps(out)


def from_wan_json(text: str, image_size: tuple[int, int]) -> dict:
    """The WanTrackToVideo JSON string -> TRACKS (every point visible: the format carries no visibility)."""
    data = json.loads(text)
    if data and isinstance(data[0], dict):
        data = [data]
    if not data or any(len(tr) != len(data[0]) for tr in data):
        raise ValueError("track JSON must be a non-empty list of tracks with the same number of frames")
    path = torch.tensor([[[p["x"], p["y"]] for p in tr] for tr in data], dtype=torch.float64).permute(1, 0, 2)  # F N 2
    return make_tracks(path, torch.ones(path.shape[:2], dtype=torch.bool), image_size)


# -- sampling ------------------------------------------------------------------------------------------------

def neighbour_counts(mask: torch.Tensor, radius: int = NEIGHBOUR_RADIUS) -> torch.Tensor:
    """For every pixel, how many mask pixels lie within `radius` px (Euclidean), the pixel included."""
    d = torch.arange(-radius, radius + 1, dtype=torch.float32)
    disk = ((d[:, None] ** 2 + d[None, :] ** 2) <= radius ** 2).float()[None, None]  # 1 1 k k
    m = mask.to(torch.float32)[None, None]
    return F.conv2d(m, disk, padding=radius)[0, 0].round()


def sample_mask_weighted(mask: torch.Tensor, n: int, seed: int = 0, radius: int = NEIGHBOUR_RADIUS) -> torch.Tensor:
    """n points (x, y) inside `mask` (H, W), weight 1 / neighbours within `radius` px, without replacement."""
    mask = mask.bool()
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if len(ys) == 0:
        raise ValueError("the mask is empty: lower the detection threshold or check the mask input")
    weights = 1.0 / neighbour_counts(mask, radius)[ys, xs]
    g = torch.Generator().manual_seed(seed)
    pick = torch.multinomial(weights, min(n, len(ys)), replacement=False, generator=g)
    return torch.stack([xs[pick], ys[pick]], dim=-1).to(torch.float32)


def sample_grid(height: int, width: int, n: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """About n points (x, y) on a regular grid over the frame, or inside `mask` (a finer grid is used until at
    least n points fall inside; the first n in row-major order are kept)."""
    area = float(mask.sum()) if mask is not None else float(height * width)
    if area == 0:
        raise ValueError("the mask is empty: lower the detection threshold or check the mask input")
    spacing = max(1.0, math.sqrt(area / n))
    while True:
        ys = torch.arange(spacing / 2, height, spacing)
        xs = torch.arange(spacing / 2, width, spacing)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        pts = torch.stack([gx.flatten(), gy.flatten()], dim=-1)
        if mask is not None:
            inside = mask.bool()[pts[:, 1].long().clamp(0, height - 1), pts[:, 0].long().clamp(0, width - 1)]
            pts = pts[inside]
        if len(pts) >= n or spacing <= 1.0:
            return pts[:n].to(torch.float32)
        spacing = max(1.0, spacing * 0.9)


def sample_queries(method: str, n: int, height: int, width: int, mask: torch.Tensor | None = None,
                   seed: int = 0) -> torch.Tensor:
    """Query points (N, 3) (t=0, x, y) in pixels by one of SAMPLING."""
    if method in ("mask-weighted", "mask-grid") and mask is None:
        raise ValueError(f"sampling '{method}' needs a MASK; connect one or use 'grid'")
    if method == "mask-weighted":
        xy = sample_mask_weighted(mask, n, seed)
    elif method == "mask-grid":
        xy = sample_grid(height, width, n, mask)
    elif method == "grid":
        xy = sample_grid(height, width, n)
    else:
        raise ValueError(f"sampling {method!r} is not one of {', '.join(SAMPLING)}")
    return torch.cat([torch.zeros(len(xy), 1), xy], dim=1)


# -- picture ---------------------------------------------------------------------------------------------------

def draw_tracks(frames: torch.Tensor, tracks: dict, trail: int = 8, radius: int = 2) -> torch.Tensor:
    """IMAGE [F, H, W, 3] with each point drawn in its own colour and a fading trail of its last `trail` frames;
    hidden points are drawn hollow."""
    from PIL import Image, ImageDraw

    path = tracks["track_path"].to(torch.float32)
    vis = tracks["track_visibility"]
    f, n = vis.shape
    if frames.shape[0] != f:
        raise ValueError(f"{frames.shape[0]} frames but the tracks have {f}")
    hues = np.linspace(0, 1, n, endpoint=False)
    colours = [tuple(int(255 * c) for c in _hsv(h)) for h in hues]
    out = []
    for i in range(f):
        img = Image.fromarray(to_uint8(frames[i, ..., :3]))
        d = ImageDraw.Draw(img)
        for j in range(n):
            pts = [tuple(path[k, j].tolist()) for k in range(max(0, i - trail), i + 1)]
            if len(pts) > 1:
                d.line(pts, fill=colours[j], width=1)
            x, y = pts[-1]
            box = [x - radius, y - radius, x + radius, y + radius]
            d.ellipse(box, fill=colours[j] if vis[i, j] else None, outline=colours[j])
        out.append(torch.from_numpy(np.array(img)).float() / 255.0)
    return torch.stack(out)


def _hsv(h: float) -> tuple[float, float, float]:
    import colorsys

    return colorsys.hsv_to_rgb(h, 0.85, 1.0)


def read_tracks(path: str) -> np.ndarray:
    """A track file (.npy, or .pth / .pt holding one tensor, loaded weights-only) -> float [frames, points, 3],
    checked: three values per point, at least 2 frames and 1 point, all finite."""
    name = os.path.basename(path)
    if path.endswith(".npy"):
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise ValueError(f"{name} is not a plain numpy array file ({e})") from None
    elif path.endswith((".pth", ".pt")):
        import torch


        obj = load_weights_only(path, "tracks file (one [frames, points, 3] tensor saved with torch.save)")
        if isinstance(obj, dict):
            tensors = [v for v in obj.values() if torch.is_tensor(v)]
            if len(tensors) != 1:
                raise ValueError(f"{name} holds {len(tensors)} tensors; expected one [frames, points, 3] tensor")
            obj = tensors[0]
        if not torch.is_tensor(obj):
            raise ValueError(f"{name} does not hold a tensor; expected one [frames, points, 3] tensor")
        arr = obj.detach().float().numpy()
    else:
        raise ValueError(f"{name}: track files are .npy, .pth or .pt")
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"{name} holds an array of shape {tuple(arr.shape)}; MTBench tracks are "
                         f"[frames, points, 3] (x / W, y / H, visibility)")
    if arr.shape[0] < 2 or arr.shape[1] < 1:
        raise ValueError(f"{name} has {arr.shape[0]} frames and {arr.shape[1]} points; at least 2 frames and 1 "
                         f"point are needed")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return arr if np.issubdtype(arr.dtype, np.floating) else arr.astype(np.float32)
