"""Scoring one generated video against its reference, MTBench style (the evaluation node and the benchmark runner
share this), under two protocols:

- `pack` (the default): the generated video is tracked from the reference's own query points; the global part of
  motion fidelity is the true discrete Frechet distance (or the public mean distance with mode `official`) over
  all pairs; temporal consistency from DINO's CLS token over frames 1 and later.
- `det`: the DeT authors' public evaluation step by step (`public_eval`): both videos tracked from a 50 x 50 grid
  inside the first-frame mask's box, the public global formula on 50 paired random tracks (seeded), CLIP logits,
  the public temporal-consistency formula. Only these scores sit beside the paper's published rows.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch

from . import public_eval
from .metrics import (clip_image_features, clip_text_features, dino_features, edit_fidelity, motion_difficulty,
                      motion_fidelity, temporal_consistency)

PROTOCOLS = ("pack", "det")

PUBLISHED = {  # MTBench "All" rows of the DeT paper: edit fidelity / temporal consistency / motion fidelity
    "DeT (HunyuanVideo)": (31.9, 91.9, 85.9), "DeT (CogVideoX)": (31.2, 89.6, 85.8),
    "MotionInversion": (26.6, 85.4, 85.0), "DreamBooth": (28.4, 85.6, 80.4), "MotionClone": (30.8, 80.9, 78.9),
    "MotionDirector": (31.9, 91.7, 67.7), "DMT": (30.5, 87.6, 65.1), "SMA": (31.6, 82.9, 55.1),
    "MOFT": (33.0, 91.1, 52.5),
}


@dataclass
class Scores:
    motion_fidelity: float
    """hybrid = alpha local + (1 - alpha) global, x 100 as in the paper's tables."""
    local: float
    global_: float
    edit_fidelity: float | None = None
    """CLIP text-frame similarity x 100 (None without a prompt and CLIP)."""
    temporal_consistency: float | None = None
    """DINO frame similarity x 100 (None without DINO)."""
    mode: str = "frechet"
    protocol: str = "pack"


@dataclass
class DetScores:
    """Scores under the public protocol (x 100 like the paper's tables)."""

    motion_fidelity: float
    local: float
    global_: float
    seed: int
    """Seed of the 50 paired tracks of the global part."""
    tracks: int
    """Grid points inside the mask's box (tracked in both videos)."""
    box: tuple[int, int, int, int]
    """The first-frame mask's box in mask pixels: x0, y0, x1, y1 (ends exclusive)."""
    edit_fidelity: float | None = None
    temporal_consistency: float | None = None
    tc_features: str | None = None
    """'pooler_output' (as the public code) or 'cls' when the DINO checkpoint has no trained pooler: then the public
    number is not reproducible, and this is the public frame formula on the CLS token."""
    protocol: str = "det"


def normalised(tracks: dict) -> torch.Tensor:
    """TRACKS -> [N, F, 2] normalised (x/W, y/H), the layout the metrics take."""
    w, h = tracks["image_size"]
    return (tracks["track_path"].to(torch.float64) / torch.tensor([float(w), float(h)], dtype=torch.float64)).permute(1, 0, 2)


def score_video(frames: torch.Tensor, generated_tracks: dict, source_tracks: dict, prompt: str = "",
                clip=None, dino=None, mode: str = "frechet", alpha: float = 0.5) -> Scores:
    """Motion fidelity of the generated tracks against the source tracks; edit fidelity and temporal consistency
    of the frames when the models (model, processor) are given."""
    mf = motion_fidelity(normalised(generated_tracks), normalised(source_tracks), mode=mode, alpha=alpha)
    ef = edit_fidelity(frames, prompt, *clip) if clip is not None and prompt.strip() else None
    tc = 100.0 * temporal_consistency(frames, *dino) if dino is not None else None
    return Scores(100.0 * mf["hybrid"], mf["local"], mf["global"], ef, tc, mode)


def difficulty(tracks: dict) -> dict:
    """Motion clusters and level of TRACKS (pixels, all points)."""
    return motion_difficulty(tracks["track_path"].to(torch.float64).permute(1, 0, 2))


def _grid_tracks(tracker, online: bool, video: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Track model-resolution points from frame 0 of `video` [F, H, W, 3] -> normalised tracks [N, F, 2]."""
    from .cotracker import track_points

    f, h, w, _ = video.shape
    px = public_eval.to_video_pixels(points, tracker.model_resolution, w, h)
    queries = torch.cat([torch.zeros(len(px), 1), px], dim=1)
    path, _ = track_points(tracker, video, queries, online=online, chunk=len(queries))  # all points at once
    return (path.double() / torch.tensor([float(w), float(h)], dtype=torch.float64)).permute(1, 0, 2)


def score_video_det(generated: torch.Tensor, source: torch.Tensor, first_mask, tracker, online: bool = False,
                    prompt: str = "", clip=None, dino=None, seed: int = 0) -> DetScores:
    """The public evaluation of one generated video (IMAGE [F, H, W, 3]) against the reference video's frames and
    its first-frame mask [H, W]; `tracker` is a CoTracker3 model."""
    box = public_eval.box_mask(first_mask)
    rows, cols = box.nonzero()
    points = public_eval.grid_queries(box, tracker.model_resolution)
    mf = public_eval.motion_fidelity(_grid_tracks(tracker, online, generated, points),
                                     _grid_tracks(tracker, online, source, points), seed=seed)
    ef = tc = features = None
    if clip is not None and prompt.strip():
        model, processor = clip
        ef = public_eval.clip_logit_score(clip_image_features(generated, model, processor),
                                          clip_text_features(public_eval.clip_prompt(prompt), model, processor),
                                          float(model.logit_scale.detach().exp()))
    if dino is not None:
        model, processor = dino
        pooled = bool(getattr(model, "has_trained_pooler", False))
        features = "pooler_output" if pooled else "cls"
        tc = 100.0 * public_eval.consistency_score(dino_features(generated, model, processor, pooled=pooled))
    return DetScores(100.0 * mf["hybrid"], mf["local"], mf["global"], mf["seed"], mf["tracks"],
                     (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1), ef, tc, features)


def report(scores: list) -> str:
    """The JSON report of one or both protocols: the first one's fields at the top level (what the outputs give),
    every protocol's under `protocols`."""
    first = asdict(scores[0])
    return json.dumps({**first, "protocols": {sc.protocol: asdict(sc) for sc in scores}})
