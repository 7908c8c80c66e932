"""How local a video model's 3D attention is: the premise of DeT, measured.

DeT adds a temporal convolution shared by every spatial position beside each block's attention. The authors explain
why it works on HunyuanVideo and CogVideoX and not on Wan (Shi-qingyu/DeT issue #2): in the first two, a video
token's attention is concentrated on the same spatial position in nearby frames (the paper's Fig. 1), which is the
pattern such a convolution can imitate. This module measures that pattern in one forward pass.

`LocalityProbe` is given to ComfyUI's attention through `transformer_options["optimized_attention_override"]`: every
attention call still runs as it would (the override calls the real function and returns its output), and for the
calls of the blocks the probe is told about (`probe.current`), it recomputes the attention weights of a sample of
video queries against all keys, one head at a time, so the extra memory is `queries x keys` floats whatever the
video's size. From those weights, per call, the share of each query's attention on video keys that falls

- `local`: on its own spatial position in its own and the two neighbouring latent frames (|dt| <= 1), which is what
  a kernel-3 temporal convolution covers;
- `same_position`: on its own spatial position in any frame;
- `same_frame`: on its own frame, any position;
- `neighbourhood`: within one token in each direction of space and time (3 x 3 x 3);
- `self`: on itself;

plus `dt_profile` (same position, by frame offset -(T-1) .. T-1), `text`: the share of all attention that goes to
non-video keys, and the same shares under uniform attention (`uniform`), for scale. Video tokens come first in every
attention call of the supported models (HunyuanVideo's double and single blocks put `img` before `txt`; Wan's
self-attention sees video tokens only), in (t, h, w) order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

FIGURES = ("local", "same_position", "same_frame", "neighbourhood", "self")


@dataclass
class _Sums:
    """Running sums of one attention call's figures over heads and sampled queries."""

    figures: dict[str, float] = field(default_factory=lambda: dict.fromkeys(FIGURES, 0.0))
    local_by_head: list[float] = field(default_factory=list)
    dt_profile: torch.Tensor | None = None
    text: float = 0.0
    count: int = 0


class LocalityProbe:
    """Collects attention-locality figures of sampled video queries while a model runs (see the module doc).

    grid: the video token grid (T, H, W) of the forward; queries: how many video tokens to sample as queries (all
    of them when there are fewer); seed: which ones."""

    def __init__(self, grid: tuple[int, int, int], queries: int = 256, seed: int = 0):
        if queries < 1:
            raise ValueError(f"queries={queries}: sample at least one query")
        self.grid = tuple(int(g) for g in grid)
        t, h, w = self.grid
        self.tokens = t * h * w
        n = min(queries, self.tokens)
        g = torch.Generator().manual_seed(seed)
        self.index = torch.randperm(self.tokens, generator=g)[:n].sort().values  # Q
        self.qt, self.qh, self.qw = self.index // (h * w), (self.index // w) % h, self.index % w
        self.current: str | None = None
        """The label of the attention call about to run (set by the caller around a block), or None to let calls
        pass unmeasured."""
        self.calls: dict[str, _Sums] = {}
        self.skipped: list[str] = []

    # -- the override --------------------------------------------------------------------------------------------
    def override(self, func, *args, **kwargs):
        """ComfyUI's `optimized_attention_override`: runs the real attention, and measures the call if a block
        label is set. Signature of ComfyUI's attention functions: (q, k, v, heads, mask=None, ...,
        skip_reshape=False, ...)."""
        label = self.current
        if label is not None:
            self.current = None  # one attention call per labelled block: later calls pass (Wan's cross-attention)
            q, k, heads = _arg(args, kwargs, 0, "q"), _arg(args, kwargs, 1, "k"), _arg(args, kwargs, 3, "heads")
            mask = kwargs.get("mask", args[4] if len(args) > 4 else None)
            self.measure(label, q, k, int(heads), mask, bool(kwargs.get("skip_reshape", False)))
        return func(*args, **kwargs)

    # -- the measurement -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def measure(self, label: str, q: torch.Tensor, k: torch.Tensor, heads: int, mask=None,
                skip_reshape: bool = False) -> None:
        """Adds one attention call's figures. q, k: (B, heads, L, D) if `skip_reshape`, else (B, L, heads * D),
        positional encoding already applied; mask: additive float or boolean keep-mask broadcastable to
        (B, heads, Lq, Lk), or None."""
        if not skip_reshape:
            b, lq, hd = q.shape
            q = q.view(b, lq, heads, hd // heads).transpose(1, 2)  # B heads Lq D
            k = k.view(b, k.shape[1], heads, hd // heads).transpose(1, 2)  # B heads Lk D
        b, _, lq, d = q.shape
        lk, n = k.shape[2], self.tokens
        if lq < n or lk < n:
            self.skipped.append(f"{label}: {lq} queries / {lk} keys, fewer than the {n} video tokens")
            return
        t, h, w = self.grid
        idx = self.index.to(q.device)
        bias = _mask_rows(mask, idx, b, lk, q.device)  # B 1|heads Q Lk or None
        sums = self.calls.setdefault(label, _Sums())
        for head in range(q.shape[1]):  # one head at a time: Q x Lk floats
            logits = torch.einsum("bqd,bkd->bqk", q[:, head, idx].float(), k[:, head].float()) / math.sqrt(d)
            if bias is not None:
                logits = logits + bias[:, head if bias.shape[1] > 1 else 0]
            p = logits.softmax(dim=-1)  # B Q Lk
            video = p[..., :n].sum(-1)  # B Q
            share = (p[..., :n] / video[..., None].clamp_min(1e-30)).reshape(b, -1, t, h, w)  # B Q T H W
            figures = self._figures(share)
            for name, value in figures.items():
                if name != "dt_profile":
                    sums.figures[name] += float(value.sum())
            sums.local_by_head.append(float(figures["local"].mean()))
            profile = figures["dt_profile"].sum(dim=(0, 1)).cpu().double()  # 2T-1
            sums.dt_profile = profile if sums.dt_profile is None else sums.dt_profile + profile
            sums.text += float((1 - video).sum())
            sums.count += video.numel()

    def _figures(self, share: torch.Tensor) -> dict[str, torch.Tensor]:
        """share: B Q T H W, each query's attention over the video keys (sums to 1). Returns B Q figures and the
        B Q (2T-1) frame-offset profile at the query's own position."""
        b, nq, t, h, w = share.shape
        dev = share.device
        qt, qh, qw = self.qt.to(dev), self.qh.to(dev), self.qw.to(dev)
        rows = torch.arange(nq, device=dev)
        column = share.permute(1, 3, 4, 0, 2)[rows, qh, qw].transpose(0, 1)  # B Q T: own position, every frame
        frames = torch.arange(t, device=dev)
        dt = frames[None] - qt[:, None]  # Q T
        near = (dt.abs() <= 1).to(share.dtype)
        profile = share.new_zeros(b, nq, 2 * t - 1)
        profile.scatter_add_(2, (dt + t - 1)[None].expand(b, -1, -1), column)
        padded = torch.nn.functional.pad(share, (1, 1, 1, 1, 1, 1))  # B Q T+2 H+2 W+2
        cube = sum(padded[:, rows, qt + a, qh + c, qw + e] for a in range(3) for c in range(3) for e in range(3))
        return {"local": (column * near).sum(-1), "same_position": column.sum(-1),
                "same_frame": share[:, rows, qt].sum(dim=(-1, -2)), "neighbourhood": cube,
                "self": share[:, rows, qt, qh, qw], "dt_profile": profile}

    def uniform(self) -> dict[str, float]:
        """The figures under uniform attention over the video keys, for the same sampled queries."""
        t, h, w = self.grid
        n = self.tokens

        def span(pos, size):  # how many of pos-1, pos, pos+1 lie inside 0..size-1
            return (torch.clamp(pos + 1, max=size - 1) - torch.clamp(pos - 1, min=0) + 1).double()

        near_t, near_h, near_w = span(self.qt, t), span(self.qh, h), span(self.qw, w)
        return {"local": float((near_t / n).mean()), "same_position": t / n, "same_frame": h * w / n,
                "neighbourhood": float((near_t * near_h * near_w / n).mean()), "self": 1 / n}

    # -- the report ----------------------------------------------------------------------------------------------
    def report(self) -> dict:
        """JSON-ready figures: per measured call (in the order they ran) the mean over heads and queries, the
        per-head `local` figure and the frame-offset profile; the uniform figures; what was skipped."""
        calls = []
        for label, s in self.calls.items():
            if not s.count:
                continue
            entry = {"block": label, **{k: v / s.count for k, v in s.figures.items()}, "text": s.text / s.count,
                     "local_by_head": s.local_by_head,
                     "dt_profile": (s.dt_profile / s.count).tolist() if s.dt_profile is not None else []}
            calls.append(entry)
        return {"grid": list(self.grid), "video_tokens": self.tokens, "queries": int(self.index.numel()),
                "uniform": self.uniform(), "calls": calls, "skipped": self.skipped}


def _arg(args, kwargs, pos: int, name: str):
    return args[pos] if len(args) > pos else kwargs[name]


def _mask_rows(mask, idx: torch.Tensor, b: int, lk: int, device) -> torch.Tensor | None:
    """The attention mask as an additive float bias (B, 1|heads, Q, Lk) for the sampled query rows, or None."""
    if mask is None:
        return None
    m = mask.to(device)
    while m.ndim < 4:  # (Lq, Lk), (B, Lq, Lk) or (B, heads, Lq, Lk), with 1s where it broadcasts
        m = m.unsqueeze(0) if m.ndim < 3 else m.unsqueeze(1)
    if m.shape[-1] != lk:
        raise ValueError(f"attention mask of shape {tuple(mask.shape)} does not match {lk} keys")
    m = m[..., idx, :] if m.shape[-2] > 1 else m
    if m.dtype == torch.bool:
        m = torch.zeros(m.shape, device=device).masked_fill(~m, float("-inf"))
    return m.float().expand(b, *m.shape[1:]) if m.shape[0] == 1 else m.float()


# -- summary and picture ---------------------------------------------------------------------------------------------
def summary(report: dict) -> str:
    """A few lines a user can act on: the mean local figure against uniform, the most and least local call."""
    calls, uni = report["calls"], report["uniform"]
    if not calls:
        return "no attention call was measured"
    local = [c["local"] for c in calls]
    best, worst = max(calls, key=lambda c: c["local"]), min(calls, key=lambda c: c["local"])
    mean = float(np.mean(local))
    return (f"attention on the same position in nearby frames (|dt| <= 1): mean {mean:.3f} over {len(calls)} "
            f"blocks ({mean / uni['local']:.0f}x uniform {uni['local']:.4f}); most local {best['block']} "
            f"{best['local']:.3f}, least {worst['block']} {worst['local']:.3f}; same frame "
            f"{np.mean([c['same_frame'] for c in calls]):.3f} "
            f"(uniform {uni['same_frame']:.3f}). DeT's temporal convolution matches attention concentrated on the "
            f"same position in nearby frames; blocks far from that are where it fits least.")


def heatmap(report: dict, cell: int = 14) -> np.ndarray:
    """uint8 [H, W, 3]: one row per measured call, one column per frame offset (-(T-1) .. T-1), colour = the share
    of attention on the query's own position at that offset (white 0 .. dark red = the row's largest value is
    scaled to the figure's largest), with the labels and the `local` figure written beside each row."""
    from PIL import Image, ImageDraw

    calls = report["calls"]
    t = report["grid"][0]
    cols = 2 * t - 1
    left, top, right = 86, 22, 64
    width, height = left + cols * cell + right, top + max(1, len(calls)) * cell + 18
    img = Image.new("RGB", (width, height), (250, 250, 250))
    d = ImageDraw.Draw(img)
    d.text((4, 4), "same-position attention by frame offset", fill=(20, 20, 20))
    top_value = max([max(c["dt_profile"], default=0.0) for c in calls] + [1e-12])
    for r, c in enumerate(calls):
        y = top + r * cell
        d.text((4, y + 1), c["block"][:13], fill=(20, 20, 20))
        for j, v in enumerate(c["dt_profile"]):
            a = min(1.0, v / top_value)
            colour = (int(255 - 75 * a), int(255 - 235 * a), int(255 - 225 * a))
            d.rectangle([left + j * cell, y, left + (j + 1) * cell - 1, y + cell - 1], fill=colour)
        d.text((left + cols * cell + 4, y + 1), f"{c['local']:.3f}", fill=(20, 20, 20))
    y = top + max(1, len(calls)) * cell + 3
    d.text((left, y), f"dt -{t - 1}", fill=(90, 90, 90))
    d.text((left + (t - 1) * cell, y), "0", fill=(90, 90, 90))
    d.text((left + cols * cell - 24, y), f"+{t - 1}", fill=(90, 90, 90))
    return np.array(img)
