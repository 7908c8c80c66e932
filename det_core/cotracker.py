"""CoTracker3 (Karaev et al., 2024), written for this pack: the published architecture, loading the official
checkpoints (`scaled_offline.pth`, `scaled_online.pth`, or the same tensors as safetensors).

Model math lives in `CoTracker3` and works in one fixed space: frames resized to the model resolution
(384 x 512 for the official checkpoints), pixel values 0..255, query points (t, x, y) in model pixels. Resizing,
support points, thresholds and `no_grad` live in `track_points` (the predictor).

Shape legend: B batch, T frames, N points, C feature channels (128), H W feature map (frame / 4),
r = 2 * corr_radius + 1 (7), D transformer width (384), L correlation levels (4), V virtual tracks (64).

Per iteration (4 in training, 6 at inference) every point at every frame gets a token built from
[visibility logit, confidence logit, 4 correlation embeddings, Fourier features of the motion to the previous
and next frame] (1 + 1 + 4 x 256 + 84 = 1110 dims) plus a sinusoidal time embedding; a transformer alternates
attention over time (per point) and over points (through 64 learned virtual tracks) and predicts updates of
position, visibility and confidence.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

MODEL_RESOLUTION = (384, 512)  # (H, W) the official checkpoints were trained at
SUPPORT_GRID = 6  # extra 6 x 6 grid of points tracked beside sparse queries, as the official predictor does


# ---------------------------------------------------------------------------------------------------------------
# building blocks

class Mlp(nn.Module):
    def __init__(self, dim_in: int, hidden: int, dim_out: int | None = None, tanh_gelu: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(dim_in, hidden)
        self.fc2 = nn.Linear(hidden, dim_out or dim_in)
        self.approximate = "tanh" if tanh_gelu else "none"

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


class Attention(nn.Module):
    """Multi-head attention with a separate query projection and a joint key/value projection."""

    def __init__(self, dim: int, context_dim: int | None = None, heads: int = 8, dim_head: int = 48):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=True)
        self.to_kv = nn.Linear(context_dim or dim, inner * 2, bias=True)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, x, context=None):
        # x: (B, N1, D), context: (B, N2, Dc)
        context = x if context is None else context
        b, n1, _ = x.shape
        n2 = context.shape[1]
        q = self.to_q(x).view(b, n1, self.heads, -1).transpose(1, 2)  # B h N1 d
        k, v = self.to_kv(context).chunk(2, dim=-1)
        k = k.reshape(b, n2, self.heads, -1).transpose(1, 2)  # B h N2 d
        v = v.reshape(b, n2, self.heads, -1).transpose(1, 2)  # B h N2 d
        out = F.scaled_dot_product_attention(q, k, v)  # B h N1 d
        return self.to_out(out.transpose(1, 2).reshape(b, n1, -1))


class AttnBlock(nn.Module):
    def __init__(self, dim: int, heads: int = 8, mlp_ratio: float = 4.0):
        super().__init__()
        self.attn = Attention(dim, heads=heads)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), tanh_gelu=True)

    def forward(self, x):
        x = x + self.attn(F.layer_norm(x, x.shape[-1:], eps=1e-6))
        return x + self.mlp(F.layer_norm(x, x.shape[-1:], eps=1e-6))


class CrossAttnBlock(nn.Module):
    def __init__(self, dim: int, heads: int = 8, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm_context = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, context_dim=dim, heads=heads)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), tanh_gelu=True)

    def forward(self, x, context):
        x = x + self.cross_attn(F.layer_norm(x, x.shape[-1:], eps=1e-6), self.norm_context(context))
        return x + self.mlp(F.layer_norm(x, x.shape[-1:], eps=1e-6))


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with instance norm; a strided 1x1 convolution on the skip path when downsampling."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride)) if stride != 1 else None

    def forward(self, x):
        y = F.relu(F.instance_norm(self.conv1(x)))
        y = F.relu(F.instance_norm(self.conv2(y)))
        if self.downsample is not None:
            x = F.instance_norm(self.downsample(x))
        return F.relu(x + y)


class FeatureEncoder(nn.Module):
    """Frames (B, 3, H, W) in -1..1 -> features (B, C, H/stride, W/stride) from four resolutions."""

    def __init__(self, dim: int = 128, stride: int = 4):
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(3, dim // 2, 7, stride=2, padding=3)
        widths = [dim // 2, dim // 4 * 3, dim, dim]
        c_in = dim // 2
        for i, (w, s) in enumerate(zip(widths, [1, 2, 2, 2]), start=1):
            setattr(self, f"layer{i}", nn.Sequential(ResidualBlock(c_in, w, s), ResidualBlock(w, w, 1)))
            c_in = w
        self.conv2 = nn.Conv2d(sum(widths), dim * 2, 3, padding=1)
        self.conv3 = nn.Conv2d(dim * 2, dim, 1)

    def forward(self, x):
        h, w = x.shape[-2] // self.stride, x.shape[-1] // self.stride
        x = F.relu(F.instance_norm(self.conv1(x)))
        scales = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            scales.append(F.interpolate(x, (h, w), mode="bilinear", align_corners=True))
        x = F.relu(F.instance_norm(self.conv2(torch.cat(scales, dim=1))))
        return self.conv3(x)


class UpdateTransformer(nn.Module):
    """Tokens (B, N, T, 1110) -> updates (B, N, T, 4): dx, dy, visibility logit, confidence logit."""

    def __init__(self, input_dim: int = 1110, dim: int = 384, depth: int = 3, heads: int = 8, virtual_tracks: int = 64):
        super().__init__()
        self.input_transform = nn.Linear(input_dim, dim)
        self.flow_head = nn.Linear(dim, 2)
        self.vis_conf_head = nn.Linear(dim, 2)
        self.virual_tracks = nn.Parameter(torch.randn(1, virtual_tracks, 1, dim))  # (sic) the checkpoint's name
        self.time_blocks = nn.ModuleList(AttnBlock(dim, heads) for _ in range(depth))
        self.space_virtual_blocks = nn.ModuleList(AttnBlock(dim, heads) for _ in range(depth))
        self.space_point2virtual_blocks = nn.ModuleList(CrossAttnBlock(dim, heads) for _ in range(depth))
        self.space_virtual2point_blocks = nn.ModuleList(CrossAttnBlock(dim, heads) for _ in range(depth))

    def forward(self, x):
        # x: (B, N, T, 1110)
        tokens = self.input_transform(x)  # B N T D
        b, n, t, d = tokens.shape
        v = self.virual_tracks.shape[1]
        tokens = torch.cat([tokens, self.virual_tracks.expand(b, v, t, d)], dim=1)  # B (N+V) T D
        for i in range(len(self.time_blocks)):
            # 1. attention along time, per track
            tokens = self.time_blocks[i](tokens.reshape(b * (n + v), t, d)).view(b, n + v, t, d)
            # 2. attention across tracks, per frame, through the virtual tracks
            space = tokens.permute(0, 2, 1, 3).reshape(b * t, n + v, d)  # (B T) (N+V) D
            points, virtual = space[:, :n], space[:, n:]
            virtual = self.space_virtual2point_blocks[i](virtual, points)
            virtual = self.space_virtual_blocks[i](virtual)
            points = self.space_point2virtual_blocks[i](points, virtual)
            tokens = torch.cat([points, virtual], dim=1).view(b, t, n + v, d).permute(0, 2, 1, 3)  # B (N+V) T D
        tokens = tokens[:, :n]
        return torch.cat([self.flow_head(tokens), self.vis_conf_head(tokens)], dim=-1)  # B N T 4


# ---------------------------------------------------------------------------------------------------------------
# sampling helpers (coordinates in feature-map pixels, pixel centres at integers, border padding)

def offsets(radius: int, device) -> torch.Tensor:
    """(r, r, 2) offsets: first axis moves x, second moves y (the order the checkpoints were trained with)."""
    d = torch.linspace(-radius, radius, 2 * radius + 1, device=device)
    ox, oy = torch.meshgrid(d, d, indexing="ij")
    return torch.stack([ox, oy], dim=-1)  # r r 2


def sample_2d(fmap: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """fmap (B, C, H, W), xy (B, ..., 2) in pixels -> (B, ..., C) bilinear samples."""
    b, c, h, w = fmap.shape
    shape = xy.shape[1:-1]
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=xy.device, dtype=xy.dtype)
    grid = (xy * scale - 1.0).reshape(b, -1, 1, 2)  # B M 1 2
    out = F.grid_sample(fmap, grid.to(fmap.dtype), mode="bilinear", align_corners=True, padding_mode="border")
    return out[..., 0].permute(0, 2, 1).reshape(b, *shape, c)  # B ... C


def fourier(x: torch.Tensor, degrees: int = 10) -> torch.Tensor:
    """x (..., k) -> (..., k + 2 k degrees): x, sin(2^i x), cos(2^i x) for i < degrees (scale-major order)."""
    scales = 2.0 ** torch.arange(degrees, device=x.device, dtype=x.dtype)
    xb = (x[..., None, :] * scales[:, None]).flatten(-2)  # ... (degrees k)
    return torch.cat([x, torch.sin(xb), torch.sin(xb + 0.5 * math.pi)], dim=-1)


def sincos_time_embedding(dim: int, length: int) -> torch.Tensor:
    """(1, length, dim) sine / cosine embedding of positions 0..length-1 (float64 maths, as published)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = torch.arange(length, dtype=torch.float64)[:, None] * omega[None]  # length dim/2
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)[None].float()


# ---------------------------------------------------------------------------------------------------------------
# the model

@dataclass
class OnlineState:
    """What the online tracker carries from one window to the next."""

    queries: torch.Tensor
    """(B, N, 3) t, x, y in model pixels."""
    start: int = 0
    """First frame of the next window."""
    track_feats: list = field(default_factory=list)
    """Per level: (B, r*r, N, C) support features, filled as query frames enter a window."""
    coords: torch.Tensor | None = None
    """(B, T_so_far, N, 2) predictions in model pixels."""
    vis: torch.Tensor | None = None
    """(B, T_so_far, N) visibility logits."""
    conf: torch.Tensor | None = None


class CoTracker3(nn.Module):
    """CoTracker3 with the official checkpoints' layout; `window_len` comes from the checkpoint's time embedding."""

    def __init__(self, window_len: int = 60, stride: int = 4, corr_radius: int = 3, corr_levels: int = 4,
                 virtual_tracks: int = 64, model_resolution: tuple[int, int] = MODEL_RESOLUTION):
        super().__init__()
        self.window_len, self.stride = window_len, stride
        self.corr_radius, self.corr_levels = corr_radius, corr_levels
        self.model_resolution = tuple(model_resolution)
        self.latent_dim = 128
        r = 2 * corr_radius + 1
        self.input_dim = 2 + corr_levels * 256 + 84
        self.fnet = FeatureEncoder(self.latent_dim, stride)
        self.corr_mlp = Mlp(r ** 4, 384, 256)
        self.updateformer = UpdateTransformer(self.input_dim, 384, 3, 8, virtual_tracks)
        self.register_buffer("time_emb", sincos_time_embedding(self.input_dim, window_len))

    # -- features ------------------------------------------------------------------------------------------
    def feature_pyramid(self, video: torch.Tensor, chunk: int = 32) -> list[torch.Tensor]:
        """video (B, T, 3, H, W) 0..255 -> L maps (B, T, C, H/4/2^l, W/4/2^l), unit-norm over C."""
        b, t = video.shape[:2]
        frames = (2.0 * (video / 255.0) - 1.0).flatten(0, 1)  # (B T) 3 H W
        fmaps = torch.cat([self.fnet(frames[i:i + chunk]) for i in range(0, frames.shape[0], chunk)])
        fmaps = fmaps / fmaps.pow(2).sum(dim=1, keepdim=True).clamp_min(1e-12).sqrt()  # (B T) C h w
        pyramid = [fmaps]
        for _ in range(self.corr_levels - 1):
            pyramid.append(F.avg_pool2d(pyramid[-1], 2, stride=2))
        return [p.view(b, t, *p.shape[1:]) for p in pyramid]

    def support_features(self, fmap: torch.Tensor, frames: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        """Features around each query at its own frame: fmap (B, T, C, h, w), frames (B, N) long, xy (B, N, 2)
        in this level's pixels -> (B, r*r, N, C)."""
        b, t, c, h, w = fmap.shape
        n = xy.shape[1]
        r = 2 * self.corr_radius + 1
        idx = frames.clamp(0, t - 1)  # B N (queries outside a window are masked by the caller)
        pts = xy[:, :, None, None, :] + offsets(self.corr_radius, xy.device)  # B N r r 2
        out = fmap.new_zeros(b, n, r * r, c)
        for bi in range(b):
            for f in idx[bi].unique().tolist():  # one map per query frame, not one per query
                sel = idx[bi] == f
                out[bi, sel] = sample_2d(fmap[bi, f][None], pts[bi, sel].reshape(1, -1, 2).to(fmap.dtype)).view(-1, r * r, c)
        return out.permute(0, 2, 1, 3)  # B rr N C

    def correlation_embedding(self, pyramid, support, coords: torch.Tensor) -> torch.Tensor:
        """pyramid: L maps (B, S, C, h, w); support: L (B, rr, N, C); coords (B, S, N, 2) stride-4 pixels ->
        (B, S, N, L*256): the 4D correlation of the r x r patch around each prediction with the query's patch."""
        b, s, n, _ = coords.shape
        r = 2 * self.corr_radius + 1
        embs = []
        for level, (fmap, sup) in enumerate(zip(pyramid, support)):
            c, h, w = fmap.shape[2:]
            pts = coords.reshape(b * s, n, 1, 1, 2) / 2 ** level + offsets(self.corr_radius, coords.device)  # (B S) N r r 2
            around = sample_2d(fmap.reshape(b * s, c, h, w), pts).view(b, s, n, r, r, c)  # B S N r r C
            query = sup.view(b, r, r, n, c).permute(0, 3, 1, 2, 4)  # B N r r C
            corr = torch.einsum("bsnhwc,bnijc->bsnhwij", around, query)  # B S N r r r r
            embs.append(self.corr_mlp(corr.reshape(b * s * n, r ** 4)))
        return torch.cat(embs, dim=-1).view(b, s, n, -1)

    def time_embedding(self, t: int, dtype) -> torch.Tensor:
        if t == self.time_emb.shape[1]:
            return self.time_emb.to(dtype)
        emb = F.interpolate(self.time_emb.float().permute(0, 2, 1), size=t, mode="linear").permute(0, 2, 1)
        return emb.to(dtype)

    # -- the iterative update --------------------------------------------------------------------------------
    def refine(self, pyramid, support, coords, vis, conf, iters: int):
        """coords (B, S, N, 2) stride-4 pixels, vis / conf (B, S, N) logits -> refined (coords, vis, conf)."""
        b, s, n, _ = coords.shape
        scale = torch.tensor([self.model_resolution[1], self.model_resolution[0]], device=coords.device) / self.stride
        for _ in range(iters):
            coords = coords.detach()
            corr = self.correlation_embedding(pyramid, support, coords)  # B S N L*256
            forward = F.pad(coords[:, :-1] - coords[:, 1:], (0, 0, 0, 0, 0, 1))  # B S N 2, motion to the next frame
            backward = F.pad(coords[:, 1:] - coords[:, :-1], (0, 0, 0, 0, 1, 0))  # B S N 2, from the previous one
            motion = fourier(torch.cat([forward / scale, backward / scale], dim=-1))  # B S N 84
            x = torch.cat([vis[..., None], conf[..., None], corr, motion], dim=-1)  # B S N 1110
            x = x.permute(0, 2, 1, 3) + self.time_embedding(s, x.dtype)  # B N S 1110
            delta = self.updateformer(x).permute(0, 2, 1, 3)  # B S N 4
            coords = coords + delta[..., :2]
            vis = vis + delta[..., 2]
            conf = conf + delta[..., 3]
        return coords, vis, conf

    # -- offline: the whole video at once ------------------------------------------------------------------
    def forward(self, video: torch.Tensor, queries: torch.Tensor, iters: int = 4):
        """video (B, T, 3, H, W) 0..255 at model resolution, queries (B, N, 3) (t, x, y) model pixels ->
        tracks (B, T, N, 2) model pixels, visibility (B, T, N) and confidence (B, T, N) probabilities."""
        b, t, _, h, w = video.shape
        if h % self.stride or w % self.stride:
            raise ValueError(f"frame size {w}x{h} must be a multiple of {self.stride}")
        n = queries.shape[1]
        frames = queries[..., 0].long()
        xy = queries[..., 1:3] / self.stride  # B N 2
        pyramid = self.feature_pyramid(video)
        support = [self.support_features(f, frames, xy / 2 ** i) for i, f in enumerate(pyramid)]
        coords = xy[:, None].expand(b, t, n, 2).float()
        zeros = torch.zeros(b, t, n, device=video.device)
        coords, vis, conf = self.refine(pyramid, support, coords, zeros, zeros, iters)
        return coords * self.stride, torch.sigmoid(vis), torch.sigmoid(conf)

    # -- online: sliding windows of window_len frames, moving by half a window --------------------------------
    def online_start(self, queries: torch.Tensor) -> OnlineState:
        return OnlineState(queries=queries, track_feats=[None] * self.corr_levels)

    def online_step(self, state: OnlineState, chunk: torch.Tensor, iters: int = 4) -> OnlineState:
        """Track through the window that starts at `state.start`: `chunk` (B, T<=S, 3, H, W) holds its frames."""
        b, t = chunk.shape[:2]
        s, step, ind = self.window_len, self.window_len // 2, state.start
        if t > s:
            raise ValueError(f"an online chunk has at most {s} frames, got {t}")
        n = state.queries.shape[1]
        frames = state.queries[..., 0].long()
        xy = state.queries[..., 1:3] / self.stride
        if t < s:  # pad the window by repeating its last frame
            chunk = torch.cat([chunk, chunk[:, -1:].expand(b, s - t, *chunk.shape[2:])], dim=1)
        pyramid = self.feature_pyramid(chunk)
        # 1. support features of the queries whose frame falls in the new part of this window
        left = 0 if ind == 0 else ind + step
        entering = ((frames >= left) & (frames < ind + s))[:, None, :, None]  # B 1 N 1
        for i, fmap in enumerate(pyramid):
            feats = self.support_features(fmap, frames - ind, xy / 2 ** i) * entering
            state.track_feats[i] = feats if state.track_feats[i] is None else state.track_feats[i] + feats
        started = (frames < ind + s)[:, None, :, None]  # B 1 N 1: queries that exist by the end of the window
        support = [f * started for f in state.track_feats]
        # 2. start from the overlap with the previous window where a query already had a prediction
        coords = xy[:, None].expand(b, s, n, 2).float()
        vis = torch.zeros(b, s, n, device=chunk.device)
        conf = torch.zeros(b, s, n, device=chunk.device)
        if state.coords is None:
            state.coords = torch.zeros(b, t, n, 2, device=chunk.device)
            state.vis = torch.zeros(b, t, n, device=chunk.device)
            state.conf = torch.zeros(b, t, n, device=chunk.device)
        else:
            grow = min(step, t - step)
            state.coords = F.pad(state.coords, (0, 0, 0, 0, 0, grow))
            state.vis = F.pad(state.vis, (0, 0, 0, grow))
            state.conf = F.pad(state.conf, (0, 0, 0, grow))
        if ind > 0:
            overlap = s - step
            known = (frames < ind + overlap)[:, None, :]  # B 1 N

            def carried(x):  # overlap frames, then the last of them repeated to fill the window
                x = x[:, ind:ind + overlap]
                return torch.cat([x, x[:, -1:].expand(b, step, *x.shape[2:])], dim=1)

            coords = torch.where(known[..., None], carried(state.coords) / self.stride, coords)
            vis = torch.where(known, carried(state.vis), vis)
            conf = torch.where(known, carried(state.conf), conf)
        # 3. refine and keep the frames this chunk really has
        coords, vis, conf = self.refine(pyramid, support, coords, vis, conf, iters)
        state.coords[:, ind:ind + s] = coords[:, :t] * self.stride
        state.vis[:, ind:ind + s] = vis[:, :t]
        state.conf[:, ind:ind + s] = conf[:, :t]
        state.start += step
        return state

    def forward_online(self, video: torch.Tensor, queries: torch.Tensor, iters: int = 4):
        """The whole video through the online tracker, window after window (as frames would arrive)."""
        t = video.shape[1]
        step = self.window_len // 2
        state = self.online_start(queries)
        for ind in range(0, max(t - step, 1), step):
            state = self.online_step(state, video[:, ind:ind + self.window_len], iters)
        return state.coords, torch.sigmoid(state.vis), torch.sigmoid(state.conf)


# ---------------------------------------------------------------------------------------------------------------
# checkpoints

REQUIRED_KEYS = ("fnet.conv1.weight", "corr_mlp.fc1.weight", "updateformer.input_transform.weight",
                 "updateformer.vis_conf_head.weight", "time_emb")


class CheckpointError(ValueError):
    pass


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """An official CoTracker3 checkpoint (.pth / .pt, read with weights_only=True) or the same tensors as
    .safetensors -> state dict."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CoTracker3 checkpoint not found: {path}; put scaled_offline.pth (or "
                                f"scaled_online.pth) from the CoTracker3 release into models/cotracker/")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        sd = load_file(path)
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a pickle with objects, or not a torch file at all
            raise CheckpointError(f"{os.path.basename(path)} cannot be read as a weights-only torch checkpoint "
                                  f"({type(e).__name__}: {str(e)[:200]})") from None
        if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
            sd = sd["model"]
    if not isinstance(sd, dict):
        raise CheckpointError(f"{os.path.basename(path)} does not hold a state dict")
    missing = [k for k in REQUIRED_KEYS if k not in sd]
    if missing:
        raise CheckpointError(f"{os.path.basename(path)} is not a CoTracker3 checkpoint: missing {missing}; use "
                              f"scaled_offline.pth or scaled_online.pth from the CoTracker3 release")
    return sd


def load_cotracker3(path_or_state: str | dict, device="cpu", dtype=torch.float32) -> CoTracker3:
    """Build the model for a checkpoint (window length from its time embedding) and load it strictly."""
    sd = read_state_dict(path_or_state) if isinstance(path_or_state, str) else path_or_state
    name = os.path.basename(path_or_state) if isinstance(path_or_state, str) else "state dict"
    window = sd["time_emb"].shape[1]
    virtual = sd["updateformer.virual_tracks"].shape[1] if "updateformer.virual_tracks" in sd else 64
    model = CoTracker3(window_len=window, virtual_tracks=virtual)
    result = model.load_state_dict(sd, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"{name} does not match CoTracker3: missing {result.missing_keys[:8]}, "
                              f"unexpected {result.unexpected_keys[:8]}")
    return model.to(device=device, dtype=dtype).eval()


# ---------------------------------------------------------------------------------------------------------------
# the predictor: resizing, queries, support grid, thresholds

def grid_points(size: int, height: float, width: float) -> torch.Tensor:
    """size x size points (x, y) covering a height x width frame with a margin of width / 64, row-major."""
    if size == 1:
        return torch.tensor([[width / 2, height / 2]])
    margin = width / 64
    ys = torch.linspace(margin, height - margin, size)
    xs = torch.linspace(margin, width - margin, size)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1).reshape(-1, 2)


@torch.no_grad()
def track_points(model: CoTracker3, video: torch.Tensor, queries: torch.Tensor, online: bool = False,
                 iters: int = 6, support_grid: bool = True, backward: bool = False,
                 visibility_threshold: float = 0.6, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Track `queries` (N, 3) (t, x, y in video pixels) through `video` (T, H, W, 3) float 0..1 ->
    tracks (T, N, 2) video pixels and visibility (T, N) bool (visibility x confidence > threshold).

    Points are tracked `chunk` at a time (each with the support grid) to bound memory; `backward` also tracks
    from each query frame towards the start, for queries not on frame 0.
    """
    t, h, w, _ = video.shape
    mh, mw = model.model_resolution
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    frames = video.permute(0, 3, 1, 2).to(device, torch.float32) * 255.0  # T 3 H W
    frames = F.interpolate(frames, (mh, mw), mode="bilinear", align_corners=True)[None].to(dtype)  # 1 T 3 mh mw
    to_model = torch.tensor([(mw - 1) / max(w - 1, 1), (mh - 1) / max(h - 1, 1)], device=device)
    q = queries.to(device, torch.float32).clone()
    q[:, 1:] *= to_model
    extra = torch.zeros(0, 3, device=device)
    if support_grid:
        g = grid_points(SUPPORT_GRID, mh, mw).to(device)
        extra = torch.cat([torch.zeros(len(g), 1, device=device), g], dim=1)
    run = model.forward_online if online else model.forward
    tracks, vis = [], []
    for i in range(0, len(q), chunk):
        part = torch.cat([q[i:i + chunk], extra])[None].to(dtype)  # 1 n 3
        tr, v, c = run(frames, part, iters)
        tr, v = tr.float(), (v * c).float()
        if backward:
            flipped = part.clone()
            flipped[..., 0] = t - 1 - flipped[..., 0]
            btr, bv, bc = run(frames.flip(1), flipped, iters)
            before = torch.arange(t, device=device)[None, :, None] < part[:, None, :, 0]  # 1 T n
            tr = torch.where(before[..., None], btr.flip(1).float(), tr)
            v = torch.where(before, (bv * bc).flip(1).float(), v)
        n = min(chunk, len(q) - i)
        tracks.append(tr[0, :, :n])
        vis.append(v[0, :, :n] > visibility_threshold)
    tracks = torch.cat(tracks, dim=1) if tracks else torch.zeros(t, 0, 2, device=device)
    vis = torch.cat(vis, dim=1) if vis else torch.zeros(t, 0, dtype=torch.bool, device=device)
    # a query is where it was asked to be, and visible there
    idx = q[:, 0].long().clamp(0, t - 1)
    arange = torch.arange(len(q), device=device)
    tracks[idx, arange] = q[:, 1:]
    vis[idx, arange] = True
    return (tracks / to_model).cpu(), vis.cpu()
