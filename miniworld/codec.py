"""Stand-ins for HunyuanVideo's VAE and text encoder, small enough for a CPU and shaped like the real ones.

`MiniVAE` has the real latent layout: 16 channels, 4x temporal and 8x spatial compression, causal in time
(F = 4k + 1 frames -> k + 1 latent frames; the first latent frame holds frame 0 alone, as HunyuanVideo's causal
VAE does, by repeating frame 0 three times in front). It is a small convolutional autoencoder trained on the world
by `miniworld.train`; its latents are standardised per channel, and ComfyUI sees them as a real VAE's are (divided
by HunyuanVideo's latent scale factor, which ComfyUI multiplies back on the way into the model).

`CaptionEncoder` turns "a <colour> <shape>" into HunyuanVideo-shaped CONDITIONING: cross-attention tokens
(B, 3, TEXT_DIM) and a pooled vector (B, 768), from fixed seeded word vectors. It has no weights to train: the
base model learns to read it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .world import COLOURS, EXTRA_SHAPES, SHAPES, parse_caption

LATENT_CHANNELS = 16
TEMPORAL = 4
SPATIAL = 8
HUNYUAN_SCALE = 0.476986
"""ComfyUI's `latent_formats.HunyuanVideo.scale_factor`: `process_latent_in` multiplies a VAE latent by it."""
TEXT_DIM = 32
POOLED_DIM = 768
VOCAB = ("a", *COLOURS, *SHAPES)


class MiniVAE(nn.Module):
    """Frames [B, 3, F, H, W] in [0, 1] (F = 4k+1, H and W multiples of 8) <-> latents [B, 16, k+1, H/8, W/8]."""

    def __init__(self, width: int = 96, dec_width: int = 128, mid_width: int = 64):
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv3d(3, width, (TEMPORAL, SPATIAL, SPATIAL), stride=(TEMPORAL, SPATIAL, SPATIAL)), nn.GELU(),
            nn.Conv3d(width, width, (1, 3, 3), padding=(0, 1, 1)), nn.GELU(),
            nn.Conv3d(width, LATENT_CHANNELS, 1))
        self.dec = nn.Sequential(
            nn.Conv3d(LATENT_CHANNELS, dec_width, 3, padding=1), nn.GELU(),
            nn.Conv3d(dec_width, dec_width, (1, 3, 3), padding=(0, 1, 1)), nn.GELU(),
            nn.ConvTranspose3d(dec_width, mid_width, (TEMPORAL, 2, 2), stride=(TEMPORAL, 2, 2)), nn.GELU(),
            nn.Conv3d(mid_width, mid_width, (1, 3, 3), padding=(0, 1, 1)), nn.GELU(),
            nn.ConvTranspose3d(mid_width, 3, (1, 4, 4), stride=(1, 4, 4)))
        self.register_buffer("shift", torch.zeros(LATENT_CHANNELS))
        self.register_buffer("scale", torch.ones(LATENT_CHANNELS))

    @staticmethod
    def check_frames(frames: torch.Tensor) -> None:
        if frames.ndim != 5 or frames.shape[1] != 3:
            raise ValueError(f"MiniVAE encodes clips [B, 3, F, H, W], got {tuple(frames.shape)}")
        f, h, w = frames.shape[2:]
        if (f - 1) % TEMPORAL or h % SPATIAL or w % SPATIAL:
            raise ValueError(f"MiniVAE needs 4k+1 frames and sizes that are multiples of 8, got {f} frames of {w}x{h}")

    def encode_raw(self, frames: torch.Tensor) -> torch.Tensor:
        # frames: B 3 F H W in [0, 1]
        self.check_frames(frames)
        x = torch.cat([frames[:, :, :1]] * (TEMPORAL - 1) + [frames], dim=2) * 2 - 1  # B 3 4(k+1) H W
        return self.enc(x)  # B 16 k+1 H/8 W/8

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        x = self.dec(z)  # B 3 4(k+1) H W
        return (x[:, :, TEMPORAL - 1:] + 1) / 2  # B 3 4k+1 H W

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Standardised latents (about zero mean, unit variance per channel)."""
        z = self.encode_raw(frames)
        return (z - self.shift.view(1, -1, 1, 1, 1)) / self.scale.view(1, -1, 1, 1, 1)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.ndim != 5 or latents.shape[1] != LATENT_CHANNELS:
            raise ValueError(f"MiniVAE decodes latents [B, 16, T, h, w], got {tuple(latents.shape)}")
        z = latents * self.scale.view(1, -1, 1, 1, 1) + self.shift.view(1, -1, 1, 1, 1)
        return self.decode_raw(z).clamp(0.0, 1.0)


def load_vae(path: str) -> MiniVAE:
    from safetensors.torch import load_file

    vae = MiniVAE()
    vae.load_state_dict(load_file(path))
    return vae.eval().requires_grad_(False)


class CaptionEncoder:
    """'a red disc' -> (cross-attention tokens [1, 3, TEXT_DIM], pooled [1, 768]); fixed, seeded."""

    def __init__(self, seed: int = 1234):
        g = torch.Generator().manual_seed(seed)
        self.words = {w: torch.randn(TEXT_DIM, generator=g) for w in VOCAB}
        self.pool = torch.randn(len(COLOURS) + len(SHAPES), POOLED_DIM, generator=g) / 2.0
        # words added later (the pendulum) come from a generator of their own: the vectors above stay as the
        # committed base model learned them
        g = torch.Generator().manual_seed(seed + 1)
        self.words.update({w: torch.randn(TEXT_DIM, generator=g) for w in EXTRA_SHAPES})
        self.extra_pool = torch.randn(len(EXTRA_SHAPES), POOLED_DIM, generator=g) / 2.0

    def encode(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        colour, shape = parse_caption(text)
        tokens = torch.stack([self.words["a"], self.words[colour], self.words[shape]])[None]  # 1 3 D
        onehot = torch.zeros(len(COLOURS) + len(SHAPES))
        onehot[list(COLOURS).index(colour)] = 1.0
        pooled = onehot @ self.pool
        if shape in SHAPES:
            pooled = pooled + self.pool[len(COLOURS) + SHAPES.index(shape)]
        else:
            pooled = pooled + self.extra_pool[EXTRA_SHAPES.index(shape)]
        return tokens, pooled[None]  # 1 3 D, 1 768

    def conditioning(self, text: str, guidance: float = 6.0) -> list:
        """ComfyUI CONDITIONING for HunyuanVideo: [[cross_attn, {"pooled_output": ..., "guidance": ...}]]."""
        tokens, pooled = self.encode(text)
        return [[tokens, {"pooled_output": pooled, "guidance": guidance}]]


def reconstruction_error(vae: MiniVAE, clip: torch.Tensor) -> float:
    """Mean absolute pixel error (0..1 scale) of encode -> decode on a clip [F, H, W, 3]."""
    x = clip.permute(3, 0, 1, 2)[None]
    with torch.no_grad():
        rec = vae.decode(vae.encode(x))
    return float(F.l1_loss(rec, x))
