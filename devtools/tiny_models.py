"""Tiny random models in the real checkpoint formats, written for the tests.

`write_tiny_hunyuan_video` builds ComfyUI's own HunyuanVideo transformer at a toy size (hidden 128 = one head
of the fixed head dim 128, 2 double + 2 single blocks, text width 32), fills it with seeded random weights,
and saves it with the key names of the original HunyuanVideo release, which ComfyUI's loader detects and maps.
"""

from __future__ import annotations

import math
import os
import sys

import torch

TINY_HV = dict(
    image_model="hunyuan_video", in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=32,
    hidden_size=128, mlp_ratio=4.0, num_heads=1, depth=2, depth_single_blocks=2, axes_dim=[16, 56, 56],
    theta=256, patch_size=[1, 2, 2], qkv_bias=True, guidance_embed=True, byt5=False, meanflow=False,
    use_cond_type_embedding=False, vision_in_dim=None,
)
TINY_TEXT_DIM = TINY_HV["context_in_dim"]
TINY_HV_FILE = "det_tiny_hunyuan_video.safetensors"

# ComfyUI's module names -> the names of the original HunyuanVideo checkpoints (the inverse of
# comfy.supported_models.HunyuanVideo.process_unet_state_dict, checked by round trip below).
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


def _original_name(key: str) -> str:
    for a, b in _TO_ORIGINAL:
        key = key.replace(a, b)
    return key


def tiny_hunyuan_video_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random weights for ComfyUI's HunyuanVideo at the tiny config, with ComfyUI's key names."""
    import comfy.ops
    from comfy.ldm.hunyuan_video.model import HunyuanVideo

    model = HunyuanVideo(operations=comfy.ops.disable_weight_init, dtype=torch.float32, device="cpu", **TINY_HV)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, p in sorted(model.state_dict().items()):
        if name.endswith(".scale") or (name.endswith(".weight") and p.ndim == 1):  # norms: around 1
            t = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
        elif name.endswith(".bias"):
            t = 0.02 * torch.randn(p.shape, generator=g)
        else:  # fan-in scaled so activations stay O(1) through the blocks
            fan_in = math.prod(p.shape[1:]) if p.ndim > 1 else p.shape[0]
            t = torch.randn(p.shape, generator=g) / math.sqrt(fan_in)
        sd[name] = t.to(torch.float32).contiguous()
    return sd


def write_tiny_hunyuan_video(path: str, seed: int = 0) -> str:
    from safetensors.torch import save_file
    import comfy.supported_models

    sd = tiny_hunyuan_video_state_dict(seed)
    original = {_original_name(k): v for k, v in sd.items()}
    mapped = comfy.supported_models.HunyuanVideo(TINY_HV).process_unet_state_dict(dict(original))
    if set(mapped) != set(sd):
        raise RuntimeError(f"key round trip failed: {sorted(set(mapped) ^ set(sd))[:8]}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file(original, path, metadata={"det.test": "tiny random HunyuanVideo", "seed": str(seed)})
    return path


def import_comfy(host_dir: str) -> None:
    """Make the host's `comfy` package importable in this process (the tests build models with it)."""
    if host_dir not in sys.path:
        sys.path.insert(0, host_dir)
    from comfy.cli_args import args  # parsed from an empty list: the test runner's argv is not ComfyUI's

    if not torch.cuda.is_available():
        args.cpu = True  # before comfy.model_management is imported: it picks the device at import


def tiny_transformer(seed: int = 0):
    """ComfyUI's HunyuanVideo transformer at the tiny size with seeded weights, in this process (import_comfy first)."""
    import comfy.ops
    from comfy.ldm.hunyuan_video.model import HunyuanVideo

    model = HunyuanVideo(operations=comfy.ops.disable_weight_init, dtype=torch.float32, device="cpu", **TINY_HV)
    model.load_state_dict(tiny_hunyuan_video_state_dict(seed))
    return model.eval().requires_grad_(False)


def flow_sampling(shift: float = 7.0):
    """ComfyUI's flow-matching sampling object for HunyuanVideo (as the loaded model has it)."""
    import comfy.model_sampling as ms

    class FlowSampling(ms.ModelSamplingDiscreteFlow, ms.CONST):
        pass

    sampling = FlowSampling()
    sampling.set_parameters(shift=shift)
    return sampling


def x0_predictor(model, sampling, context, pooled, guidance: float = 6.0):
    """predict_x0(x_t, sigma) for det_core.train, calling the transformer as ComfyUI's apply_model does."""
    g = torch.tensor([guidance])

    def predict_x0(x_t, sigma):
        out = model(x_t, sampling.timestep(sigma), context, y=pooled, guidance=g)
        return x_t - sigma.reshape(-1, *[1] * (x_t.ndim - 1)) * out

    return predict_x0
