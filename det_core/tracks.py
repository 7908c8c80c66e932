"""Point tracks: conversions between the layouts that cross the pack's boundaries.

- MTBench / DeT array: `[T, N, 3]` float (x/W, y/H, visibility), as CoTracker3 output is published with MTBench;
- TRACKS (what crosses ComfyUI nodes, the layout of newer ComfyUI releases' own track type):
  `{"track_path": [F, N, 2] float pixels, "track_visibility": [F, N] bool}` plus, here, `"image_size": (W, H)`.
"""

from __future__ import annotations

import numpy as np
import torch


def make_tracks(track_path: torch.Tensor, visibility: torch.Tensor, image_size: tuple[int, int]) -> dict:
    if track_path.ndim != 3 or track_path.shape[-1] != 2:
        raise ValueError(f"track_path must be [frames, points, 2], got {tuple(track_path.shape)}")
    if tuple(visibility.shape) != tuple(track_path.shape[:2]):
        raise ValueError(f"track_visibility {tuple(visibility.shape)} does not match track_path {tuple(track_path.shape)}")
    return {"track_path": track_path.to(torch.float32), "track_visibility": visibility.to(torch.bool),
            "image_size": (int(image_size[0]), int(image_size[1]))}


def from_mtbench(arr, width: int, height: int, visible_threshold: float = 0.5) -> dict:
    """MTBench `[T, N, 3]` (x/W, y/H, visibility) -> TRACKS in pixels of a width x height video."""
    a = torch.as_tensor(np.asarray(arr), dtype=torch.float32)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"MTBench tracks must be [frames, points, 3] (x/W, y/H, visibility), got {tuple(a.shape)}")
    if width <= 0 or height <= 0:
        raise ValueError(f"video size {width}x{height} must be positive")
    path = a[..., :2] * torch.tensor([float(width), float(height)])
    return make_tracks(path, a[..., 2] > visible_threshold, (width, height))


def to_mtbench(tracks: dict) -> np.ndarray:
    """TRACKS -> MTBench `[T, N, 3]` float32 (x/W, y/H, visibility 0/1)."""
    w, h = tracks["image_size"]
    xy = tracks["track_path"].to(torch.float64) / torch.tensor([float(w), float(h)], dtype=torch.float64)
    vis = tracks["track_visibility"].to(torch.float64)[..., None]
    return torch.cat([xy, vis], dim=-1).to(torch.float32).numpy()
