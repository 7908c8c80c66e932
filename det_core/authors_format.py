"""The DeT authors' adapter files (`motion_embedding.pth`) and this pack's adapters, both ways.

The authors' code (Shi-qingyu/DeT, `src/det/attention_processor.py`) keeps each block's adapter in its diffusers
attention processor as `temporal_emb` with two bias-free convolutions, `conv1` (C -> m, k) and `conv2` (m -> C, k),
the pack's `down` and `up`. Their training scripts save only those weights, as a pickled dict of bf16 tensors:

    single_transformer_blocks.{i}.attn.processor.temporal_emb.conv1.weight   [m, C, k]   HunyuanVideo single-stream
    transformer_blocks.{i}.attn.processor.temporal_emb.conv2.weight          [C, m, k]   HunyuanVideo double-stream
    blocks.{i}.attn1.processor.temporal_emb.conv1.weight                                 Wan (self-attention)

with a `module.` prefix when accelerate wrapped the model. CogVideoX's blocks are `transformer_blocks.{i}.attn1`:
the same width as HunyuanVideo 13B (3072), so the attention module's name, not the width, tells them apart, and
CogVideoX is refused by name (the pack does not run it).

`read_authors_file` reads such a file with `torch.load(weights_only=True)` (never unpickling objects) and returns a
`DeTAdapter` with C, m and k from the shapes, the architecture from the key prefix (and the width: 2048 is
HunyuanVideo 1.5, 3072 on Wan is Wan 2.2 TI2V 5B; a width no released model has is taken as the family's first
model, HunyuanVideo or Wan 2.1, and attaching it to a model checks the width), and `det.source` metadata saying
where it came from.
`authors_state_dict` writes a pack adapter back in the authors' layout (bf16), for their scripts.
"""

from __future__ import annotations

import os
import re

import torch

from .adapter import AdapterMeta, AdapterMismatch, DeTAdapter
from .safe_load import load_weights_only

_KEY = re.compile(r"^(?P<prefix>single_transformer_blocks|transformer_blocks|blocks)\.(?P<index>\d+)\."
                  r"(?P<attn>attn1?)\.processor\.temporal_emb\.(?P<conv>conv[12])\.weight$")

AUTHORS_LAYOUT = {
    # (key prefix, attention module) -> (pack block kind, architectures by width, or the reason it is refused)
    ("single_transformer_blocks", "attn"): "single",
    ("transformer_blocks", "attn"): "double",
    ("blocks", "attn1"): "blocks",
}
REFUSED = {("transformer_blocks", "attn1"): "CogVideoX (transformer_blocks.{i}.attn1): this pack runs DeT on "
                                           "HunyuanVideo, HunyuanVideo 1.5, Wan 2.1 and Wan 2.2, not on CogVideoX"}
WIDTHS = {"hunyuan": {3072: "hunyuan_video", 2048: "hunyuan_video_15"},
          "wan": {1536: "wan21", 5120: "wan21", 3072: "wan22_ti2v"}}
"""Hidden sizes of the released models, per family: which pack architecture an authors' file belongs to."""
FAMILY_DEFAULT = {"hunyuan": "hunyuan_video", "wan": "wan21"}
PREFIX = {"single": ("single_transformer_blocks", "attn"), "double": ("transformer_blocks", "attn"),
          "blocks": ("blocks", "attn1")}
CONV = {"down": "conv1", "up": "conv2"}


def _parse(state: dict, name: str) -> tuple[str, dict[tuple[str, int], dict[str, torch.Tensor]]]:
    """(family, {(kind, index): {"down": ..., "up": ...}}) from an authors' state dict, or AdapterMismatch."""
    if not isinstance(state, dict) or not state:
        raise AdapterMismatch(f"{name} holds no adapter weights (an empty or non-dict file); expected the DeT "
                              f"authors' motion_embedding.pth, keys like "
                              f"single_transformer_blocks.0.attn.processor.temporal_emb.conv1.weight")
    found: dict[tuple[str, int], dict[str, torch.Tensor]] = {}
    kinds = set()
    for raw, value in state.items():
        key = raw[len("module."):] if isinstance(raw, str) and raw.startswith("module.") else raw
        m = _KEY.match(key) if isinstance(key, str) else None
        if m is None:
            raise AdapterMismatch(f"{name}: key {raw!r} is not a DeT temporal-convolution weight (expected "
                                  f"<blocks>.<i>.<attn>.processor.temporal_emb.conv1/conv2.weight); nothing written")
        where = (m["prefix"], m["attn"])
        if where in REFUSED:
            raise AdapterMismatch(f"{name} is a {REFUSED[where]}; nothing written")
        if where not in AUTHORS_LAYOUT:
            raise AdapterMismatch(f"{name}: {m['prefix']}.*.{m['attn']} is no block layout the pack knows "
                                  f"({', '.join(f'{p}.*.{a}' for p, a in AUTHORS_LAYOUT)}); nothing written")
        if not torch.is_tensor(value) or not value.is_floating_point() or value.ndim != 3:
            raise AdapterMismatch(f"{name}: {raw} must be a floating-point tensor [out, in, kernel], got "
                                  f"{getattr(value, 'shape', type(value).__name__)}; nothing written")
        if not torch.isfinite(value).all():
            raise AdapterMismatch(f"{name}: {raw} holds NaN or infinite values; nothing written")
        kind = AUTHORS_LAYOUT[where]
        kinds.add(kind)
        part = "down" if m["conv"] == "conv1" else "up"
        slot = found.setdefault((kind, int(m["index"])), {})
        if part in slot:
            raise AdapterMismatch(f"{name}: {key} appears twice (with and without 'module.'); nothing written")
        slot[part] = value
    family = "wan" if kinds == {"blocks"} else "hunyuan"
    if "blocks" in kinds and len(kinds) > 1:
        raise AdapterMismatch(f"{name} mixes Wan blocks with HunyuanVideo blocks; nothing written")
    return family, found


def _shapes(found: dict, name: str) -> tuple[int, int, int]:
    """(C, m, k), the same for every block, or AdapterMismatch naming what differs."""
    sizes = set()
    for (kind, i), slot in sorted(found.items()):
        if set(slot) != {"down", "up"}:
            missing = CONV[({"down", "up"} - set(slot)).pop()]
            raise AdapterMismatch(f"{name}: block {PREFIX[kind][0]}.{i} has no {missing}.weight; nothing written")
        m, c, k = slot["down"].shape
        if tuple(slot["up"].shape) != (c, m, k):
            raise AdapterMismatch(f"{name}: block {PREFIX[kind][0]}.{i}: conv1 {tuple(slot['down'].shape)} and conv2 "
                                  f"{tuple(slot['up'].shape)} do not pair as [m, C, k] / [C, m, k]; nothing written")
        sizes.add((c, m, k))
    if len(sizes) > 1:
        raise AdapterMismatch(f"{name} mixes adapter sizes (C, m, k) {sorted(sizes)}: one file holds one motion "
                              f"for one model; nothing written")
    c, m, k = sizes.pop()
    if k % 2 == 0:
        raise AdapterMismatch(f"{name}: kernel {k} is even; DeT's temporal kernels are odd (padding k//2 keeps the "
                              f"frame count); nothing written")
    return c, m, k


def from_authors_state(state: dict, name: str = "file", base_model: str | None = None) -> DeTAdapter:
    """A pack adapter from the authors' state dict (see the module doc); `base_model` overrides the architecture
    the width implies (a pack architecture name of the same family)."""
    family, found = _parse(state, name)
    c, m, k = _shapes(found, name)
    note = ""
    arch = base_model or WIDTHS[family].get(c)
    if arch is None:  # no released width (a small test model): the family's first model; attaching checks the width
        arch = FAMILY_DEFAULT[family]
        note = f"; hidden size {c} is no released model's, taken as {arch}"
    if arch not in WIDTHS[family].values():
        raise AdapterMismatch(f"{name} holds {family} blocks; base model {arch!r} is not one of "
                              f"{', '.join(sorted(set(WIDTHS[family].values())))}; nothing written")
    blocks: dict[str, list[int]] = {}
    for kind, i in sorted(found):
        blocks.setdefault(kind, []).append(i)
    meta = AdapterMeta(channels=c, mid_dim=m, kernel_size=k, blocks=blocks, base_model=arch,
                       extra={"source": f"DeT authors' file {name} (converted; weights read as float32){note}"})
    meta.check_bounds(name)
    adapter = DeTAdapter(meta)
    with torch.no_grad():
        for (kind, i), slot in found.items():
            module = adapter.get(kind, i)
            module.down.weight.copy_(slot["down"].float())
            module.up.weight.copy_(slot["up"].float())
    return adapter


def read_authors_file(path: str, base_model: str | None = None) -> DeTAdapter:
    """A DeT authors' `.pth` (or a safetensors file in their key layout) as a pack adapter."""
    name = os.path.basename(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = load_weights_only(path, "DeT authors' adapter file (motion_embedding.pth)")
    return from_authors_state(state, name, base_model)


def authors_state_dict(adapter: DeTAdapter, dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """A pack adapter in the authors' layout (their keys, `dtype` tensors), for their scripts."""
    out = {}
    for kind, (prefix, attn) in PREFIX.items():
        for i in adapter.indices(kind):
            module = adapter.get(kind, i)
            for part, conv in CONV.items():
                weight = getattr(module, part).weight.detach()
                out[f"{prefix}.{i}.{attn}.processor.temporal_emb.{conv}.weight"] = weight.to("cpu", dtype).contiguous()
    return out


def write_authors_file(adapter: DeTAdapter, path: str, dtype: torch.dtype = torch.bfloat16) -> str:
    """Save `authors_state_dict` as `.pth` (torch.save of a plain dict of tensors, as the authors' scripts save and
    load it) or `.safetensors`."""
    state = authors_state_dict(adapter, dtype)
    tmp = path + ".tmp"
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(state, tmp, metadata={"det.source": "DeT for ComfyUI, authors' layout"})
    elif path.endswith((".pth", ".pt")):
        torch.save(state, tmp)
    else:
        raise ValueError(f"{path}: write the authors' layout as .pth or .safetensors")
    os.replace(tmp, path)
    return path
