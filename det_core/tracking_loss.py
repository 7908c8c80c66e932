"""Dense tracking loss of DeT and the mapping of point tracks onto a latent (or token) grid.

Tracks arrive in pixels of the reference video: `track_path` [F, N, 2] (x, y) and `track_visibility` [F, N].
For the loss they become normalised coordinates (x/W, y/H) at the latent frame rate: latent frame j shows pixel
frame `linspace(0, F-1, T)[j]` (every 4th frame for 4k+1 frames, HunyuanVideo's temporal compression), and a
point at (x/W, y/H) reads feature cell (floor(y/H * H_f), floor(x/W * W_f)) of a feature map H_f x W_f, as the
public DeT code indexes its latents.

    loss = sum_{t, n} min(V_t, V_t+1) * mean_c (F_t+1[p_t+1] - F_t[p_t])^2  /  sum_{t, n} min(V_t, V_t+1)

i.e. the squared L2 distance (averaged over channels) between consecutive frames' features along each track,
averaged over the visible steps. The public code averages over all steps with invisible ones set to zero; we
average over the visible ones so the scale does not depend on how many points were occluded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TEMPORAL_COMPRESSION = 4
SPATIAL_COMPRESSION = 8


class TrackError(ValueError):
    pass


@dataclass
class LatentTracks:
    """Tracks at the latent frame rate, in normalised coordinates."""

    xy: torch.Tensor
    """[T, N, 2] float (x/W, y/H) in [0, 1)."""
    visibility: torch.Tensor
    """[T, N] float 0/1."""
    frame_ids: torch.Tensor
    """[T] the pixel frame each latent frame takes its points from."""


def latent_frame_ids(pixel_frames: int, latent_frames: int) -> torch.Tensor:
    return torch.linspace(0, pixel_frames - 1, latent_frames).to(torch.int64)


def tracks_for_latent(track_path: torch.Tensor, visibility: torch.Tensor, image_size: tuple[int, int],
                      latent_frames: int) -> LatentTracks:
    """Map pixel tracks [F, N, 2] / [F, N] of a W x H video onto `latent_frames` latent frames."""
    if track_path.ndim != 3 or track_path.shape[-1] != 2:
        raise TrackError(f"track_path must be [frames, points, 2], got {tuple(track_path.shape)}")
    if tuple(visibility.shape) != tuple(track_path.shape[:2]):
        raise TrackError(f"track_visibility {tuple(visibility.shape)} does not match track_path {tuple(track_path.shape)}")
    f, n, _ = track_path.shape
    pixel_frames = TEMPORAL_COMPRESSION * (latent_frames - 1) + 1
    if f == latent_frames:
        ids = torch.arange(f)
    elif f == pixel_frames:
        ids = latent_frame_ids(f, latent_frames)
    else:
        raise TrackError(f"the tracks have {f} frames, which fits neither the latent's {latent_frames} frames nor its "
                         f"{pixel_frames} pixel frames (4k+1); track the same frames that were VAE-encoded")
    vis = visibility[ids].to(torch.float32)
    if not torch.isfinite(track_path).all():
        raise TrackError("the tracks contain NaN or infinite coordinates")
    if vis.sum() == 0:
        raise TrackError("the tracks have no visible point on the latent frames; check the mask and the tracker")
    w, h = image_size
    xy = track_path[ids].to(torch.float32) / torch.tensor([float(w), float(h)])
    return LatentTracks(xy=xy, visibility=vis, frame_ids=ids)


def gather_along_tracks(features: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """features (B, C, T, H, W), xy [T, N, 2] normalised -> (B, T, N, C) features under each point."""
    b, c, t, h, w = features.shape
    if xy.shape[0] != t:
        raise TrackError(f"tracks have {xy.shape[0]} frames, the features {t}")
    xy = xy.to(features.device)
    col = (xy[..., 0] * w).to(torch.int64).clamp(0, w - 1)  # T N
    row = (xy[..., 1] * h).to(torch.int64).clamp(0, h - 1)  # T N
    frame = torch.arange(t, device=features.device)[:, None].expand_as(col)  # T N
    return features.permute(0, 2, 3, 4, 1)[:, frame, row, col]  # B T N C


def tracking_loss(features: torch.Tensor, tracks: LatentTracks) -> torch.Tensor:
    """Visibility-masked squared L2 between consecutive frames' features along each track (see module doc)."""
    emb = gather_along_tracks(features, tracks.xy).float()  # B T N C
    step = (emb[:, 1:] - emb[:, :-1]).pow(2).mean(dim=-1)  # B T-1 N
    vis = tracks.visibility.to(features.device)
    pair = torch.minimum(vis[1:], vis[:-1])  # T-1 N
    return (step * pair).sum() / (pair.sum() * emb.shape[0]).clamp_min(1.0)


def tokens_to_features(tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Video tokens (B, T*H*W, C) in (t, h, w) order -> feature map (B, C, T, H, W)."""
    b, n, c = tokens.shape
    t, h, w = grid
    return tokens.view(b, t, h, w, c).permute(0, 4, 1, 2, 3)  # B C T H W


def mean_track_cosine(features: torch.Tensor, tracks: LatentTracks) -> float:
    """Mean cosine similarity of consecutive frames' features along tracks (the DeT paper's Fig. 8 measure)."""
    emb = gather_along_tracks(features, tracks.xy).float()  # B T N C
    cos = torch.nn.functional.cosine_similarity(emb[:, 1:], emb[:, :-1], dim=-1)  # B T-1 N
    pair = torch.minimum(tracks.visibility[1:], tracks.visibility[:-1]).to(cos.device)
    return float((cos * pair).sum() / (pair.sum() * emb.shape[0]).clamp_min(1.0))
