"""Scoring one generated video against its reference, MTBench style (the evaluation node and the benchmark runner
share this)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch

from .metrics import edit_fidelity, motion_difficulty, motion_fidelity, temporal_consistency

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

    def report(self) -> str:
        return json.dumps(asdict(self))

    def summary(self) -> str:
        ef = "-" if self.edit_fidelity is None else f"{self.edit_fidelity:.1f}"
        tc = "-" if self.temporal_consistency is None else f"{self.temporal_consistency:.1f}"
        return (f"motion fidelity {self.motion_fidelity:.1f} (local {self.local:.3f}, global {self.global_:.3f}, "
                f"{self.mode}); edit fidelity {ef}; temporal consistency {tc}")


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
