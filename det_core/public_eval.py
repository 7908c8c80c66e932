"""The DeT authors' public MTBench evaluation, step by step: the `det` protocol.

Scores under this protocol sit beside the paper's published rows. The pack's own protocol (`pack`: the true
Frechet distance, tracks from the source's query points) lives in `metrics` and `evaluate`; the README's
"Deviations from the public code" table lists every difference.

What the public evaluation does, and what this module reproduces:

1. Points. The first-frame mask of the reference gives a box: rows `[min_row, max_row)` and columns
   `[min_col, max_col)` of its non-zero pixels (the end is exclusive, so the last row and column of the object
   fall outside). The box is resized (nearest) to CoTracker's model resolution (384 x 512); a 50 x 50 grid over
   the whole frame (margin W / 64) keeps the points whose rounded position falls inside the box. Both videos, the
   reference and the generated one, are tracked from these points on frame 0, and the tracks are divided by each
   video's width and height.
2. Motion fidelity. Local: the cosine of [first position, displacements] over all tracks, each generated track
   taking its best source track (`metrics.local_score`). Global: 50 track indices drawn uniformly *with
   replacement* from the generated set (`randint`), the same indices taken from both sets ("paired"), the
   similarity 1 / (1 + mean of all T x T point distances) over the 50 x 50 pairs, each generated track taking its
   best. Hybrid: 0.5 local + 0.5 global. Against itself a video does not score 1 here: the mean point distance
   of a moving track to itself is its spread, not 0.
3. Edit fidelity: CLIP's `logits_per_image` (logit scale x cosine) between each frame and the prompt, averaged
   over all frames; the prompt is the eval prompt without trailing spaces, ending in exactly one full stop.
4. Temporal consistency: DINO's `pooler_output`, L2-normalised, and
   `(mean_t cos(f_t, f_0) + mean_t cos(f_t, f_prev(t))) / 2` over all frames t = 0 .. F-1, with prev(0) = 0 (so
   frame 0 adds two ones). The released `facebook/dino-vitb16` conversion probably has no pooler weights; then
   the public code's pooler is randomly initialised at load and its number is not reproducible. Where the
   checkpoint has no pooler this module uses the CLS token with the public frame formula and says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .metrics import align_frames, local_score, mean_point_distances

GRID_SIZE = 50
GLOBAL_PAIRS = 50
ALPHA = 0.5


def box_mask(mask: Any) -> np.ndarray:
    """First-frame mask [H, W] (any values; non-zero is the object) -> the public code's box, bool [H, W]."""
    m = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask)
    if m.ndim == 3:  # [1, H, W] or [H, W, channels]
        m = m[0] if m.shape[0] == 1 else m[..., 0]
    if m.ndim != 2:
        raise ValueError(f"the first-frame mask must be [height, width], got shape {tuple(m.shape)}")
    rows, cols = np.nonzero(m)
    if len(rows) == 0:
        raise ValueError("the first-frame mask is empty: the public protocol tracks the points inside its box")
    box = np.zeros(m.shape, dtype=bool)
    box[rows.min():rows.max(), cols.min():cols.max()] = True  # exclusive ends, as the public code slices
    return box


def grid_queries(box: np.ndarray, resolution: tuple[int, int], grid_size: int = GRID_SIZE) -> torch.Tensor:
    """The public points: a grid_size^2 grid over a frame of `resolution` (H, W) (CoTracker's grid, margin W/64),
    kept where the box (resized to that resolution, nearest) is set. Returns [N, 2] (x, y) in that resolution."""
    from .cotracker import grid_points

    h, w = resolution
    pts = grid_points(grid_size, h, w)  # (size^2) 2
    resized = F.interpolate(torch.from_numpy(box.astype(np.float32))[None, None], (h, w), mode="nearest")[0, 0]
    keep = resized[pts[:, 1].round().long(), pts[:, 0].round().long()].bool()
    if not keep.any():
        raise ValueError("no grid point falls inside the mask's box; the object is too small for the public grid")
    return pts[keep]


def to_video_pixels(points: torch.Tensor, resolution: tuple[int, int], width: int, height: int) -> torch.Tensor:
    """Points in model resolution -> the video's pixels, as CoTracker's predictor scales its tracks back."""
    h, w = resolution
    return points * torch.tensor([(width - 1) / (w - 1), (height - 1) / (h - 1)], dtype=points.dtype)


def paired_indices(count: int, seed: int, pairs: int = GLOBAL_PAIRS) -> torch.Tensor:
    """`pairs` indices in [0, count), uniform with replacement, from torch's generator seeded with `seed`."""
    return torch.randint(0, count, (pairs,), generator=torch.Generator().manual_seed(int(seed)))


def global_score(generated: np.ndarray, source: np.ndarray, seed: int, pairs: int = GLOBAL_PAIRS) -> float:
    """The public global part of aligned tracks [M, T, 2], [M, T, 2] (same count: both come from the same grid)."""
    if generated.shape[0] != source.shape[0]:
        raise ValueError(f"the public global part pairs tracks by index: both sets need the same number of tracks "
                         f"(the same grid), got {generated.shape[0]} generated and {source.shape[0]} source tracks")
    ids = paired_indices(generated.shape[0], seed, pairs).numpy()
    sim = 1.0 / (1.0 + mean_point_distances(generated[ids], source[ids]))  # pairs pairs
    return float(sim.max(axis=1).mean())


def motion_fidelity(generated: Any, source: Any, seed: int = 0, pairs: int = GLOBAL_PAIRS) -> dict[str, float]:
    """Public motion fidelity of generated tracks [M, T1, 2] against source tracks [M, T2, 2] (normalised).

    Returns {"local", "global", "hybrid", "seed", "pairs", "tracks"}.
    """
    gen, src = align_frames(generated, source, names=("generated", "source"))
    local = local_score(gen, src)
    glob = global_score(gen, src, seed, pairs)
    return {"local": local, "global": glob, "hybrid": ALPHA * local + (1 - ALPHA) * glob, "seed": int(seed),
            "pairs": int(pairs), "tracks": int(gen.shape[0])}


def clip_prompt(prompt: str) -> str:
    """The prompt as the public code gives it to CLIP: trailing spaces gone, one full stop at the end."""
    return prompt.rstrip(" ").removesuffix(".") + "."


def clip_logit_score(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: float) -> float:
    """Mean over frames of logit_scale x cos(frame, prompt) (CLIP's logits_per_image)."""
    img = F.normalize(torch.as_tensor(image_features).double(), dim=-1)  # F E
    txt = F.normalize(torch.as_tensor(text_features).double().reshape(-1), dim=0)  # E
    return float(logit_scale * (img @ txt).mean())


def consistency_score(features: torch.Tensor) -> float:
    """The public frame formula over all F frames (frame 0 against itself included), features [F, C]."""
    f = F.normalize(torch.as_tensor(features).double(), dim=-1)  # F C
    if f.ndim != 2 or f.shape[0] < 1:
        raise ValueError(f"temporal consistency needs per-frame features [frames, channels], got {tuple(f.shape)}")
    prev = torch.arange(f.shape[0]) - 1
    prev[0] = 0
    to_first = (f * f[:1]).sum(-1).mean()
    to_prev = (f * f[prev]).sum(-1).mean()
    return float((to_first + to_prev) / 2)
