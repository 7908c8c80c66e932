"""Video decoding and encoding with PyAV.

`load_video` decodes a file frame by frame and keeps only the frames it will return, so memory holds the
requested frames and never the whole file. The selection pipeline, in order:

    decode -> force_rate (resample in time) -> skip_first_frames -> select_every_nth -> frame_load_cap
           -> trim to 4k+1 frames (what HunyuanVideo's VAE wants)

and each frame is resized / cropped on the way (`SizePlan`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterator

import numpy as np
import torch

SNAP_MODES = ("crop", "resize", "off")
SNAP = 16  # HunyuanVideo: VAE /8 and patch 2 -> sizes in multiples of 16


class VideoError(ValueError):
    """A video that cannot be loaded as asked; the message names the file, the problem and the fix."""


@dataclass(frozen=True)
class LoadSettings:
    """What to take from a video file."""

    frame_load_cap: int = 0
    """Keep at most this many frames after the other selections (0 = no cap)."""
    skip_first_frames: int = 0
    """Drop this many frames from the start (counted after `force_rate`)."""
    select_every_nth: int = 1
    """Keep every n-th frame (1 = all), counted after `skip_first_frames`."""
    force_rate: float = 0.0
    """Resample to this frame rate by nearest earlier frame (0 = keep the file's rate)."""
    width: int = 0
    """Target width in pixels (0 = from the file, or from `height` keeping the aspect ratio)."""
    height: int = 0
    """Target height in pixels (0 = from the file, or from `width` keeping the aspect ratio)."""
    snap: str = "crop"
    """How to reach multiples of 16: `crop` (centre crop down), `resize` (scale to nearest), `off`."""
    trim_4k_plus_1: bool = True
    """Drop up to 3 trailing frames so the count is 4k+1."""

    def __post_init__(self) -> None:
        if self.snap not in SNAP_MODES:
            raise ValueError(f"snap={self.snap!r} is not one of {', '.join(SNAP_MODES)}")
        for name in ("frame_load_cap", "skip_first_frames", "width", "height"):
            if getattr(self, name) < 0:
                raise VideoError(f"{name}={getattr(self, name)} is negative; use 0 or more")
        if self.select_every_nth < 1:
            raise VideoError(f"select_every_nth={self.select_every_nth} must be 1 or more")
        if self.force_rate < 0 or not math.isfinite(self.force_rate):
            raise VideoError(f"force_rate={self.force_rate} must be 0 (keep) or a positive frame rate")


@dataclass(frozen=True)
class SizePlan:
    """Resize every decoded frame to (resize_w, resize_h), then centre-crop to (out_w, out_h)."""

    resize_w: int
    resize_h: int
    out_w: int
    out_h: int

    @classmethod
    def make(cls, src_w: int, src_h: int, width: int, height: int, snap: str, name: str = "video") -> "SizePlan":
        # 1. target size from the settings, keeping the aspect ratio when only one side is given
        if width and height:
            tw, th = width, height
        elif width:
            tw, th = width, max(1, round(src_h * width / src_w))
        elif height:
            tw, th = max(1, round(src_w * height / src_h)), height
        else:
            tw, th = src_w, src_h
        # 2. snap to multiples of 16
        if snap == "off":
            return cls(tw, th, tw, th)
        if snap == "crop":
            ow, oh = (tw // SNAP) * SNAP, (th // SNAP) * SNAP
        elif snap == "resize":
            ow, oh = max(SNAP, round(tw / SNAP) * SNAP), max(SNAP, round(th / SNAP) * SNAP)
        else:
            raise ValueError(f"snap={snap!r} is not one of {', '.join(SNAP_MODES)}")
        if ow == 0 or oh == 0:
            raise VideoError(
                f"{name}: size {tw}x{th} is smaller than {SNAP} px on a side, so cropping to multiples of "
                f"{SNAP} leaves nothing; ask for a larger width/height or use snap='resize'"
            )
        if snap == "resize":
            return cls(ow, oh, ow, oh)
        return cls(tw, th, ow, oh)

    def apply(self, frame) -> np.ndarray:
        """An `av.VideoFrame` -> uint8 array (out_h, out_w, 3)."""
        arr = frame.to_ndarray(format="rgb24", width=self.resize_w, height=self.resize_h)
        y0 = (self.resize_h - self.out_h) // 2
        x0 = (self.resize_w - self.out_w) // 2
        return arr[y0:y0 + self.out_h, x0:x0 + self.out_w]


@dataclass
class LoadedVideo:
    frames: torch.Tensor
    """IMAGE layout: float32 [F, H, W, 3] in 0..1."""
    fps: float
    """Frame rate of the returned frames (after force_rate and select_every_nth)."""
    source_fps: float
    source_size: tuple[int, int]
    """(width, height) of the file."""
    counts: dict[str, int] = field(default_factory=dict)
    """How many frames were left after each step of the selection pipeline."""

    @property
    def info(self) -> str:
        f, h, w, _ = self.frames.shape
        sw, sh = self.source_size
        steps = " -> ".join(f"{k} {v}" for k, v in self.counts.items())
        return (f"{f} frames {w}x{h} @ {self.fps:.3f} fps from {sw}x{sh} @ {self.source_fps:.3f} fps "
                f"({steps})")


def _open(path: str):
    import av  # PyAV: a ComfyUI dependency; imported here so det_core imports stay light

    if not os.path.isfile(path):
        raise VideoError(f"video file not found: {path}; put it in ComfyUI's input folder or give an absolute path")
    try:
        container = av.open(path)
    except av.error.FFmpegError as e:
        raise VideoError(f"{path} is not a readable video file ({e}); give an .mp4/.webm/.mov/.gif file") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path} has no video stream; give a file that contains video")
    return container


def _decoded(container, path: str) -> Iterator[tuple[float, object]]:
    """Yield (time in seconds, av.VideoFrame) for every frame of the first video stream."""
    import av

    stream = container.streams.video[0]
    rate = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
    try:
        for i, frame in enumerate(container.decode(stream)):
            t = frame.time if frame.time is not None else i / rate
            yield t, frame
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: decoding failed after some frames ({e}); the file may be truncated") from None


def _resampled(frames: Iterator[tuple[float, object]], rate: float, source_rate: float
               ) -> Iterator[tuple[float, object]]:
    """Resample to `rate` fps: output frame k shows the last source frame whose time <= k / rate.

    The last source frame lasts one source frame period (1 / source_rate).
    """
    eps = 1e-6
    k, prev, t0, last = 0, None, None, 0.0
    for t, frame in frames:
        t0 = t if t0 is None else t0
        last = t - t0
        while prev is not None and k / rate < last - eps:  # output time k falls before this frame
            yield k / rate, prev
            k += 1
        prev = frame
    end = last + 1.0 / source_rate
    while prev is not None and k / rate < end - eps:
        yield k / rate, prev
        k += 1


def load_video(path: str, settings: LoadSettings = LoadSettings()) -> LoadedVideo:
    """Decode `path` into IMAGE frames, keeping only the frames that `settings` select."""
    name = os.path.basename(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        src_w, src_h = stream.codec_context.width, stream.codec_context.height
        src_fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
        plan = SizePlan.make(src_w, src_h, settings.width, settings.height, settings.snap, name)

        # 1. stream the frames through the selection; stop reading once the cap is reached
        read = 0
        kept: list[np.ndarray] = []
        source = _decoded(container, path)
        timeline = _resampled(source, settings.force_rate, src_fps) if settings.force_rate > 0 else source
        for _, frame in timeline:
            read += 1
            idx = read - 1 - settings.skip_first_frames
            if idx < 0 or idx % settings.select_every_nth:
                continue
            kept.append(plan.apply(frame))
            if settings.frame_load_cap and len(kept) >= settings.frame_load_cap:
                break
    finally:
        container.close()

    # 2. explain an empty result by the step that emptied it
    rate_note = f" at force_rate={settings.force_rate:g}" if settings.force_rate > 0 else ""
    if read == 0:
        raise VideoError(f"{path} contains no video frames; re-export the file")
    if not kept:
        raise VideoError(
            f"{path}: skip_first_frames={settings.skip_first_frames} is past the end: the video has only "
            f"{read} frames{rate_note}; lower skip_first_frames" + (" or raise force_rate" if rate_note else "")
        )
    counts = {f"read{rate_note}": read, "selected": len(kept)}
    # 3. 4k+1 frames for the HunyuanVideo VAE
    if settings.trim_4k_plus_1:
        keep = (len(kept) - 1) // 4 * 4 + 1
        del kept[keep:]
        counts["4k+1"] = keep

    frames = torch.from_numpy(np.stack(kept)).to(torch.float32).div_(255.0)  # F H W 3
    out_rate = (settings.force_rate if settings.force_rate > 0 else src_fps) / settings.select_every_nth
    return LoadedVideo(frames=frames, fps=out_rate, source_fps=src_fps, source_size=(src_w, src_h), counts=counts)


def to_uint8(frames) -> np.ndarray:
    """Float pixels (0..1; numpy or torch) -> uint8 numpy, clipped and rounded half up; uint8 passes through.
    The one conversion every writer and model input of the pack uses."""
    arr = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if arr.dtype == np.uint8:
        return arr
    return (np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_video(frames: torch.Tensor | np.ndarray, path: str, fps: float = 8.0, codec: str = "libx264",
                crf: int = 18) -> str:
    """Write IMAGE frames [F, H, W, 3] (float 0..1 or uint8) to a video file; returns the path."""
    import av

    arr = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] < 3:
        raise ValueError(f"expected frames [F, H, W, 3], got shape {tuple(arr.shape)}")
    arr = to_uint8(arr[..., :3])
    f, h, w, _ = arr.shape
    if codec == "libx264" and (h % 2 or w % 2):
        raise ValueError(f"libx264 needs even sizes, got {w}x{h}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(round(fps * 1000), 1000))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf)}
        for img in arr:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img[..., :3]), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def synthetic_clip(frames: int = 17, height: int = 128, width: int = 192, seed: int = 0) -> torch.Tensor:
    """A short clip made here, for demos and tests: a disc on a textured background, moving along an arc.

    Returns IMAGE [F, H, W, 3] float 0..1; deterministic for a seed.
    """
    g = torch.Generator().manual_seed(seed)
    background = 0.25 + 0.15 * torch.rand(3, 1, 1, generator=g) + 0.05 * torch.rand(3, height, width, generator=g)
    yy, xx = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    radius = 0.18 * min(height, width)
    colour = torch.tensor([0.95, 0.55, 0.15]).view(3, 1, 1)
    out = torch.empty(frames, 3, height, width)
    for i in range(frames):
        phase = math.pi * i / max(1, frames - 1)
        cx = width * (0.2 + 0.6 * i / max(1, frames - 1))
        cy = height * (0.65 - 0.35 * math.sin(phase))
        inside = ((xx - cx) ** 2 + (yy - cy) ** 2 <= radius ** 2).float()  # H W
        out[i] = background * (1 - inside) + colour * inside
    return out.permute(0, 2, 3, 1).contiguous()  # F H W 3
