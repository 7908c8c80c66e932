"""The small world's base model: ComfyUI's own HunyuanVideo class at a small size.

Hidden 256 = 2 heads of HunyuanVideo's fixed head dim 128 (ComfyUI's detector reads `num_heads = hidden // 128`),
MLP ratio 4 (fixed by the detector too), 2 double-stream and 2 single-stream blocks, text width 32, the real
16-channel latent and patch (1, 2, 2), guidance embedding on: 9.5 M parameters. Saved with the original
HunyuanVideo release's key names in float16, so the stock UNETLoader detects and loads it.

Nothing here imports ComfyUI at module level; `build` needs the host's `comfy` package importable.
"""

from __future__ import annotations

import math

import torch

from .codec import LATENT_CHANNELS, POOLED_DIM, TEXT_DIM

CONFIG = dict(
    image_model="hunyuan_video", in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, vec_in_dim=POOLED_DIM,
    context_in_dim=TEXT_DIM, hidden_size=256, mlp_ratio=4.0, num_heads=2, depth=2, depth_single_blocks=2,
    axes_dim=[16, 56, 56], theta=256, patch_size=[1, 2, 2], qkv_bias=True, guidance_embed=True, byt5=False,
    meanflow=False, use_cond_type_embedding=False, vision_in_dim=None,
)
MODEL_FILE = "miniworld_hunyuan_video.safetensors"
VAE_FILE = "miniworld_vae.safetensors"
GUIDANCE = 6.0
"""Embedded guidance fed in pretraining (a constant: the world has no guidance to learn)."""
FLOW_SHIFT = 3.0
"""Flow shift used to sample the world (its latents are small: 9 x 12 x 12; HunyuanVideo at 720p uses 7)."""

# ComfyUI's module names -> the names of the original HunyuanVideo checkpoints (the inverse of
# comfy.supported_models.HunyuanVideo.process_unet_state_dict; `to_original` checks the round trip).
_TO_ORIGINAL = [
    ("mlp.0.", "mlp.fc1."), ("mlp.2.", "mlp.fc2."),  # first: the embedder rules below produce "mlp.0."
    ("txt_in.t_embedder.in_layer.", "txt_in.t_embedder.mlp.0."), ("txt_in.t_embedder.out_layer.", "txt_in.t_embedder.mlp.2."),
    ("txt_in.c_embedder.in_layer.", "txt_in.c_embedder.linear_1."), ("txt_in.c_embedder.out_layer.", "txt_in.c_embedder.linear_2."),
    ("time_in.in_layer.", "time_in.mlp.0."), ("time_in.out_layer.", "time_in.mlp.2."),
    ("guidance_in.in_layer.", "guidance_in.mlp.0."), ("guidance_in.out_layer.", "guidance_in.mlp.2."),
    ("_mod.lin.", "_mod.linear."), (".modulation.lin.", ".modulation.linear."),
    ("_attn.qkv.", "_attn_qkv."), ("_attn.proj.", "_attn_proj."),
    ("_attn.norm.query_norm.scale", "_attn_q_norm.weight"), ("_attn.norm.key_norm.scale", "_attn_k_norm.weight"),
    (".norm.query_norm.scale", ".q_norm.weight"), (".norm.key_norm.scale", ".k_norm.weight"),
]


def original_name(key: str) -> str:
    for a, b in _TO_ORIGINAL:
        key = key.replace(a, b)
    return key


def to_original(sd: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """ComfyUI-named weights -> original-release names, checked against ComfyUI's own mapping back."""
    import comfy.supported_models

    original = {original_name(k): v for k, v in sd.items()}
    mapped = comfy.supported_models.HunyuanVideo(config).process_unet_state_dict(dict(original))
    if set(mapped) != set(sd):
        raise RuntimeError(f"key round trip failed: {sorted(set(mapped) ^ set(sd))[:8]}")
    return original


def build(config: dict = CONFIG, seed: int = 0):
    """ComfyUI's HunyuanVideo at `config`, initialised for training from scratch (adaLN-zero: modulations and the
    output layer start at zero, so every block starts as the identity)."""
    import comfy.ops
    from comfy.ldm.hunyuan_video.model import HunyuanVideo

    model = HunyuanVideo(operations=comfy.ops.disable_weight_init, dtype=torch.float32, device="cpu", **config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            zero = ("mod.lin" in name or "modulation.lin" in name or name.startswith("final_layer.")
                    or name.endswith(".bias"))
            if zero:
                p.zero_()
            elif p.ndim == 1:  # norm scales
                p.fill_(1.0)
            else:
                fan_in = math.prod(p.shape[1:])
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
    return model


def checkpoint_blocks(model) -> None:
    """Gradient-checkpoint every block with its residual adds out of place (the pack's training path,
    `det_core.patch.run_block_out_of_place`), for pretraining in plain Python."""
    import torch.utils.checkpoint as cp

    from det_core.patch import run_block_out_of_place

    def wrap(block):
        block.forward = lambda *a, **k: cp.checkpoint(run_block_out_of_place, block, *a, use_reentrant=False, **k)

    for block in [*model.double_blocks, *model.single_blocks]:
        wrap(block)
