"""DeT adapters on diffusers' video transformers: the pack's adapters (or the authors', through
det_core.authors_format) in a diffusers pipeline, with the same maths as the ComfyUI path.

    from diffusers import HunyuanVideoPipeline
    from det_core.adapter import DeTAdapter
    from det_core.diffusers_interop import apply_det

    pipe = HunyuanVideoPipeline.from_pretrained(...)
    hooks = apply_det(pipe, DeTAdapter.load("dance.safetensors"), strength=1.0)
    video = pipe(prompt="An astronaut is dancing on mars.", num_frames=49, ...).frames[0]
    hooks.remove()                                   # the pipeline as it was

The adapters attach with forward hooks on the attention modules, not by replacing diffusers' attention processors
(which changed for Wan in diffusers 0.35): a pre-hook keeps the attention's video-token input (the block's modulated,
normalised tokens), a hook adds `strength * adapter(input)` to the attention's video output, which the block then
gates: `x + gate * (attn(x_mod) + adapter(x_mod))`, as det_core.patch does in ComfyUI. Where that output is:

- HunyuanVideo `transformer_blocks[i].attn` (double-stream; after `to_out`, as ComfyUI's `img_attn.proj`) and
  `single_transformer_blocks[i].attn` (single-stream; before `proj_out`, as ComfyUI's attention part of `linear2`'s
  input); HunyuanVideo 1.5 `transformer_blocks[i].attn`;
- Wan 2.1 / 2.2 `blocks[i].attn1` (self-attention, after `to_out`); Wan 2.2 A14B's `transformer_2` (the low-noise
  expert) takes `low_noise_adapter` when one is given.

The token grid (T, H, W) is read at run time by a pre-hook on `transformer.rope`, which sees the latent; nothing
fixes a resolution. diffusers is an optional extra (`pip install .[diffusers]`); nothing here imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .adapter import AdapterMismatch, DeTAdapter

TRANSFORMERS = {
    "HunyuanVideoTransformer3DModel": "hunyuan_video",
    "HunyuanVideo15Transformer3DModel": "hunyuan_video_15",
    "WanTransformer3DModel": "wan",
}
"""diffusers transformer classes -> the pack's architecture (Wan: 2.1 or 2.2 TI2V by the latent channels)."""
ATTENTION = {"double": ("transformer_blocks", "attn"), "single": ("single_transformer_blocks", "attn"),
             "blocks": ("blocks", "attn1")}
"""Pack block kind -> (the transformer's block list, the attention module in each block)."""


def architecture(transformer) -> str:
    """The pack architecture name of a diffusers transformer, or AdapterMismatch naming what is supported."""
    name = type(transformer).__name__
    if name not in TRANSFORMERS:
        raise AdapterMismatch(f"DeT does not support diffusers' {name}; supported are {', '.join(TRANSFORMERS)}")
    arch = TRANSFORMERS[name]
    if arch == "wan":
        arch = "wan22_ti2v" if int(transformer.config.in_channels) == 48 else "wan21"
    return arch


def _width(transformer) -> int:
    c = transformer.config
    return int(c.num_attention_heads) * int(c.attention_head_dim)


def _counts(transformer) -> dict[str, int]:
    return {kind: len(getattr(transformer, blocks)) for kind, (blocks, _) in ATTENTION.items()
            if hasattr(transformer, blocks)}


@dataclass
class DeTHooks:
    """The hooks `apply_det` registered; `remove()` takes them all off."""

    handles: list = field(default_factory=list)
    grids: list = field(default_factory=list)
    """Per hooked transformer, the token grid of its last forward (a one-element list each)."""

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def _hook_transformer(transformer, adapter: DeTAdapter, strength: float, hooks: DeTHooks) -> None:
    arch = architecture(transformer)
    adapter.check_fits(arch, _width(transformer), _counts(transformer), "the DeT adapter")
    param = next(transformer.parameters())
    adapter.to(param.device)
    grid: list = [None]
    hooks.grids.append(grid)
    rope = transformer.rope

    def read_grid(module, args, kwargs):
        latent = args[0] if args else kwargs["hidden_states"]  # B C T H W
        pt, ph, pw = _patch(module)
        _, _, t, h, w = latent.shape
        grid[0] = (t // pt, h // ph, w // pw)

    hooks.handles.append(rope.register_forward_pre_hook(read_grid, with_kwargs=True))
    for kind in ("double", "single", "blocks"):
        blocks_attr, attn_attr = ATTENTION[kind]
        for i in adapter.indices(kind):
            attention = getattr(getattr(transformer, blocks_attr)[i], attn_attr)
            module = adapter.get(kind, i)
            kept: dict = {}

            def keep(mod, args, kwargs, kept=kept):
                kept["x"] = args[0] if args else kwargs["hidden_states"]  # B (T H W) C: video tokens only

            def add(mod, args, kwargs, output, kept=kept, module=module):
                if grid[0] is None:
                    raise RuntimeError("DeT: the token grid is unknown (transformer.rope did not run first)")
                x = kept.pop("x")
                delta = strength * module(x, grid[0])
                if isinstance(output, tuple):  # HunyuanVideo: (video, text)
                    return (output[0] + delta.to(output[0].dtype), *output[1:])
                return output + delta.to(output.dtype)

            hooks.handles.append(attention.register_forward_pre_hook(keep, with_kwargs=True))
            hooks.handles.append(attention.register_forward_hook(add, with_kwargs=True))


def _patch(rope) -> tuple[int, int, int]:
    """(pt, ph, pw) of a diffusers rotary embedding module (HunyuanVideo's and 1.5's: patch_size_t and patch_size;
    Wan's: a patch_size triple)."""
    p = rope.patch_size
    if isinstance(p, (tuple, list)):
        return tuple(int(v) for v in p)
    return int(rope.patch_size_t), int(p), int(p)


def apply_det(target, adapter: DeTAdapter, strength: float = 1.0,
              low_noise_adapter: DeTAdapter | None = None) -> DeTHooks:
    """Attach `adapter` to a diffusers pipeline (its `transformer`; for Wan 2.2 A14B `low_noise_adapter` goes on
    `transformer_2`) or to a transformer; returns the hooks (`.remove()` detaches). The adapter must have been
    trained on the same architecture and width (checked, as in ComfyUI)."""
    hooks = DeTHooks()
    transformer = getattr(target, "transformer", None) or target
    _hook_transformer(transformer, adapter, strength, hooks)
    if low_noise_adapter is not None:
        second = getattr(target, "transformer_2", None)
        if second is None:
            hooks.remove()
            raise ValueError("low_noise_adapter needs a pipeline with a transformer_2 (Wan 2.2 T2V A14B)")
        _hook_transformer(second, low_noise_adapter, strength, hooks)
    return hooks
