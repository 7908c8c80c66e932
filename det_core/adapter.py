"""The DeT adapter: a temporal convolution shared over space, one per transformer block.

Per chosen block, next to the 3D full attention and for video tokens only:

    x_mod (B, T*H*W, C)  -> (B*H*W, C, T) -> Conv1d(C->m, k) -> GELU -> Conv1d(m->C, k) -> (B, T*H*W, C)

The second convolution starts at zero, so a new adapter is an exact no-op; the first starts from a standard
normal (std 1), as in the public DeT code, whose learning rate (1e-5) was tuned with that init. The token grid (T, H, W) is given
at run time, so one adapter works at any resolution and frame count.

File format (safetensors): keys `<blocks>.{i}.down.weight` [m, C, k] and `<blocks>.{i}.up.weight` [C, m, k], where
`<blocks>` is the model's own name for the block list (`double_blocks` / `single_blocks` on HunyuanVideo, `blocks`
on Wan; see det_core.arch), metadata `det.*` (see `AdapterMeta`), including the architecture (`det.base_model`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

FORMAT_VERSION = "1"
BLOCK_KINDS = ("double", "single", "blocks")
"""Block kinds over all architectures (det_core.arch.BlockGroup.kind)."""
MAX_CHANNELS = 65536
MAX_KERNEL = 63
MAX_BLOCKS = 1024


class AdapterMismatch(ValueError):
    """An adapter that does not fit a model, or a file that is not a DeT adapter."""


class TemporalConvAdapter(nn.Module):
    """Conv1d(C -> m, k) -> GELU -> Conv1d(m -> C, k) along time, weights shared by every spatial position."""

    def __init__(self, channels: int, mid_dim: int = 128, kernel_size: int = 3, init_std: float | None = None):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size} must be odd (padding k//2 keeps the frame count)")
        self.down = nn.Conv1d(channels, mid_dim, kernel_size, padding=kernel_size // 2, bias=False)
        self.up = nn.Conv1d(mid_dim, channels, kernel_size, padding=kernel_size // 2, bias=False)
        nn.init.normal_(self.down.weight, std=1.0 if init_std is None else init_std)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        # x: (B, T*H*W, C) video tokens in (t, h, w) order; grid: (T, H, W)
        b, n, c = x.shape
        t, h, w = grid
        if n != t * h * w:
            raise ValueError(f"adapter got {n} video tokens but the token grid {t}x{h}x{w} has {t * h * w}")
        # 1. time becomes the convolution axis, space joins the batch
        y = x.view(b, t, h * w, c).permute(0, 2, 3, 1).reshape(b * h * w, c, t)  # (B H W) C T
        # 2. the temporal kernel
        y = self.up(F.gelu(self.down(y.to(self.down.weight.dtype))))  # (B H W) C T
        # 3. back to tokens
        return y.view(b, h * w, c, t).permute(0, 3, 1, 2).reshape(b, n, c).to(x.dtype)  # B (T H W) C


@dataclass
class AdapterMeta:
    """What an adapter file says about itself (stored as `det.<field>` safetensors metadata)."""

    channels: int
    mid_dim: int = 128
    kernel_size: int = 3
    blocks: dict[str, list[int]] = field(default_factory=lambda: {"double": [], "single": []})
    """Block indices that carry an adapter, per block kind."""
    base_model: str = "hunyuan_video"
    steps: int = 0
    """Training steps done so far."""
    prompt: str = ""
    tracking_weight: float = 0.0
    format_version: str = FORMAT_VERSION
    extra: dict[str, str] = field(default_factory=dict)
    """Further `det.*` entries (seed, learning rate, ...), kept as strings."""

    def to_metadata(self) -> dict[str, str]:
        d = asdict(self)
        extra = d.pop("extra")
        out = {f"det.{k}": (json.dumps(v) if isinstance(v, (dict, list)) else str(v)) for k, v in d.items()}
        out.update({f"det.{k}": str(v) for k, v in extra.items() if f"det.{k}" not in out})
        return out

    @classmethod
    def from_metadata(cls, md: dict[str, str], source: str = "adapter") -> "AdapterMeta":
        if not md or "det.format_version" not in md:
            raise AdapterMismatch(f"{source} is not a DeT adapter (no det.format_version metadata); "
                                  f"save adapters with DeTSaveAdapter or DeTTrainAdapter")
        if md["det.format_version"] != FORMAT_VERSION:
            raise AdapterMismatch(f"{source} has DeT adapter format {md['det.format_version']}, this pack reads "
                                  f"format {FORMAT_VERSION}; update the pack")
        try:
            blocks = json.loads(md["det.blocks"])
            meta = cls(channels=int(md["det.channels"]), mid_dim=int(md["det.mid_dim"]),
                       kernel_size=int(md["det.kernel_size"]),
                       blocks={k: [int(i) for i in blocks[k]] for k in BLOCK_KINDS if k in blocks},
                       base_model=md.get("det.base_model", "hunyuan_video"), steps=int(md.get("det.steps", 0)),
                       prompt=md.get("det.prompt", ""), tracking_weight=float(md.get("det.tracking_weight", 0.0)))
            unknown = sorted(set(blocks) - set(BLOCK_KINDS))
            if unknown:
                raise ValueError(f"unknown block kinds {unknown}")
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise AdapterMismatch(f"{source}: broken DeT metadata ({e!r})") from None
        known = set(meta.to_metadata())
        meta.extra = {k[4:]: v for k, v in md.items() if k.startswith("det.") and k not in known}
        return meta

    def check_bounds(self, source: str = "adapter") -> None:
        """Refuse sizes no real adapter has (they would make building it allocate without limit)."""
        problems = []
        for name, value, top in (("channels", self.channels, MAX_CHANNELS), ("mid_dim", self.mid_dim, MAX_CHANNELS),
                                 ("kernel_size", self.kernel_size, MAX_KERNEL)):
            if not 1 <= value <= top:
                problems.append(f"{name}={value} (allowed 1 to {top})")
        if self.kernel_size % 2 == 0:
            problems.append(f"kernel_size={self.kernel_size} (must be odd)")
        for kind in BLOCK_KINDS:
            idx = self.blocks.get(kind, [])
            if any(not 0 <= i < MAX_BLOCKS for i in idx) or len(set(idx)) != len(idx):
                problems.append(f"{kind} blocks {idx[:8]} (indices 0 to {MAX_BLOCKS - 1}, each once)")
        if problems:
            raise AdapterMismatch(f"{source}: DeT metadata out of range: " + "; ".join(problems))

    def tensor_shapes(self) -> dict[str, tuple[int, int, int]]:
        """The tensors an adapter with this metadata holds, and their shapes."""
        c, m, k = self.channels, self.mid_dim, self.kernel_size
        return {f"{block_prefix(kind)}.{i}.{part}.weight": shape for kind in BLOCK_KINDS
                for i in self.blocks.get(kind, []) for part, shape in (("down", (m, c, k)), ("up", (c, m, k)))}


def block_prefix(kind: str) -> str:
    """The saved tensors' prefix for a block kind: the model's own ModuleList name."""
    if kind not in BLOCK_KINDS:
        raise ValueError(f"block kind {kind!r} is not one of {', '.join(BLOCK_KINDS)}")
    return "blocks" if kind == "blocks" else f"{kind}_blocks"


class DeTAdapter(nn.Module):
    """All adapters of one motion: `<blocks>.{i}` sub-modules (named as the model names its blocks) plus metadata."""

    def __init__(self, meta: AdapterMeta, init_std: float | None = None):
        super().__init__()
        self.meta = meta
        self.double_blocks = nn.ModuleDict()
        self.single_blocks = nn.ModuleDict()
        self.blocks = nn.ModuleDict()
        for kind in BLOCK_KINDS:
            for i in sorted(set(meta.blocks.get(kind, []))):
                self.blocks_of(kind)[str(i)] = TemporalConvAdapter(meta.channels, meta.mid_dim, meta.kernel_size, init_std)

    def blocks_of(self, kind: str) -> nn.ModuleDict:
        return getattr(self, block_prefix(kind))

    def get(self, kind: str, index: int) -> TemporalConvAdapter | None:
        blocks = self.blocks_of(kind)
        return blocks[str(index)] if str(index) in blocks else None

    def indices(self, kind: str) -> list[int]:
        return sorted(int(i) for i in self.blocks_of(kind).keys())

    # -- checks ------------------------------------------------------------------------------------
    def check_fits(self, base_model: str, channels: int, counts: dict[str, int], source: str = "adapter") -> None:
        """Raise AdapterMismatch naming what does not fit a model of this architecture (`base_model`, an
        det_core.arch name), width and block layout (`counts`: blocks per kind)."""
        if self.meta.base_model != base_model:
            raise AdapterMismatch(f"{source} was trained on {self.meta.base_model} (hidden size {self.meta.channels}), "
                                  f"the model is {base_model} (hidden size {channels}); use an adapter trained on "
                                  f"{base_model}, or load the {self.meta.base_model} model it was trained on")
        problems = []
        if self.meta.channels != channels:
            problems.append(f"it was trained for hidden size {self.meta.channels}, the model has {channels}")
        from .arch import KIND_LABELS

        for kind in BLOCK_KINDS:
            n = counts.get(kind, 0)
            bad = [i for i in self.indices(kind) if i >= n]
            if bad:
                has = f"only {n} (0-{n - 1})" if n else "none"
                problems.append(f"it has {KIND_LABELS[kind]} {bad}, the model has {has}")
        if problems:
            raise AdapterMismatch(f"{source} does not fit this {base_model} model: " + "; ".join(problems)
                                  + ". Use an adapter trained on the same base model (same size).")

    # -- files -------------------------------------------------------------------------------------
    def save(self, path: str, extra_metadata: dict[str, str] | None = None) -> str:
        from safetensors.torch import save_file

        meta = dict(self.meta.to_metadata(), **(extra_metadata or {}))
        tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.state_dict().items()}
        tmp = path + ".tmp"
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)  # atomic: an interrupted save never leaves a half-written adapter
        return path

    @classmethod
    def load(cls, path: str) -> "DeTAdapter":
        from safetensors import safe_open

        name = os.path.basename(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"adapter file not found: {path}; put it in models/det_adapters/")
        try:
            with safe_open(path, framework="pt") as f:
                md = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own error types for broken headers
            raise AdapterMismatch(f"{name} is not a readable safetensors file ({e})") from None
        meta = AdapterMeta.from_metadata(md, name)
        meta.check_bounds(name)
        # the tensors must be what the metadata describes before anything is built from it
        expected = meta.tensor_shapes()
        missing = sorted(set(expected) - set(tensors))
        unexpected = sorted(set(tensors) - set(expected))
        wrong = [f"{k} {tuple(tensors[k].shape)} (expected {v})"
                 for k, v in expected.items() if k in tensors and tuple(tensors[k].shape) != v]
        if missing or unexpected or wrong:
            parts = [f"missing {missing[:6]}" if missing else "", f"unexpected {unexpected[:6]}" if unexpected else "",
                     f"wrong shapes {wrong[:6]}" if wrong else ""]
            raise AdapterMismatch(f"{name}: tensors do not match its metadata: " + "; ".join(p for p in parts if p))
        bad = [k for k, v in tensors.items() if not v.is_floating_point() or not torch.isfinite(v).all()]
        if bad:
            raise AdapterMismatch(f"{name}: {bad[:3]} hold NaN, infinite or non-float values; the adapter is broken "
                                  f"(retrain it, or resume from an earlier checkpoint)")
        adapter = cls(meta)
        adapter.load_state_dict(tensors)
        return adapter

    def describe(self) -> str:
        m = self.meta
        blocks = ", ".join(f"{k} {self.indices(k)}" for k in BLOCK_KINDS if self.indices(k))
        n = sum(p.numel() for p in self.parameters())
        return (f"DeT adapter ({m.base_model}): C={m.channels} mid={m.mid_dim} k={m.kernel_size}, blocks {blocks}, "
                f"{n:,} parameters, "
                f"{m.steps} steps, tracking weight {m.tracking_weight:g}, prompt {m.prompt!r}")


def parse_blocks(spec: str, count: int, what: str = "blocks") -> list[int]:
    """'all', 'none', '' or a list such as '0-4,7,10-12' -> sorted indices below `count`."""
    spec = (spec or "").strip().lower()
    if spec in ("", "none"):
        return []
    if spec == "all":
        return list(range(count))
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                out.update(range(a, b + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise ValueError(f"{what}: cannot read {part!r}; write 'all', 'none' or indices like '0-4,7'") from None
    bad = sorted(i for i in out if i < 0 or i >= count)
    if bad:
        raise ValueError(f"{what}: {bad} out of range; this model has {count} (0-{count - 1})")
    return sorted(out)


def keep_first_fraction(indices: list[int], fraction: float) -> list[int]:
    """The 'drop ratio' of the DeT code, as a keep fraction: keep the first ceil(fraction * n) of `indices`."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"keep fraction {fraction} must be between 0 and 1")
    return sorted(indices)[: math.ceil(fraction * len(indices) - 1e-9)]
