"""ComfyUI's HunyuanVideo outside a sampler: the real configuration, the flow-matching sampling object and the x0
predictor that training and the memory planner call. ComfyUI is imported inside the functions, so this module
loads without it."""

from __future__ import annotations

import torch

HUNYUAN_VIDEO_13B = dict(
    image_model="hunyuan_video", in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096,
    hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=20, depth_single_blocks=40, axes_dim=[16, 56, 56],
    theta=256, patch_size=[1, 2, 2], qkv_bias=True, guidance_embed=True, byt5=False, meanflow=False,
    use_cond_type_embedding=False, vision_in_dim=None)
"""HunyuanVideo T2V 13B as ComfyUI builds it (hidden 3072 = 24 heads of 128, 20 double + 40 single blocks, text
width 4096, 2 x 2 patches on a 16-channel latent)."""


def use_comfy(host_dir: str) -> None:
    """Make a ComfyUI folder's `comfy` package importable in this process, on the CPU when there is no CUDA (set
    before comfy.model_management is imported: it picks the device at import)."""
    import sys

    if host_dir not in sys.path:
        sys.path.insert(0, host_dir)
    from comfy.cli_args import args  # parsed from an empty list: this process's argv is not ComfyUI's

    if not torch.cuda.is_available():
        args.cpu = True


def model_arguments(detected: dict) -> dict:
    """HunyuanVideo's constructor arguments from a detected config (ComfyUI's unet_config, or its detection of a
    checkpoint), the 13B values where it says nothing; other keys (dtype, operations...) are dropped."""
    return {k: detected.get(k, v) for k, v in HUNYUAN_VIDEO_13B.items()}


def flow_sampling(shift: float = 7.0, model_config=None):
    """ComfyUI's discrete flow-matching sampling object (what ModelSamplingSD3 sets) with this shift."""
    import comfy.model_sampling as ms

    class FlowSampling(ms.ModelSamplingDiscreteFlow, ms.CONST):
        pass

    sampling = FlowSampling(model_config)
    sampling.set_parameters(shift=shift, multiplier=1000)
    return sampling


def x0_predictor(model, sampling, context, pooled, guidance: float = 6.0, transformer_options: dict | None = None):
    """predict_x0(x_t, sigma) for det_core.train, calling the transformer as ComfyUI's apply_model does: the latent
    goes in at the text features' dtype, the estimate comes back in float32."""
    g = torch.tensor([guidance], device=context.device)
    extra = {} if transformer_options is None else {"transformer_options": transformer_options}

    def predict_x0(x_t, sigma):
        out = model(x_t.to(context.dtype), sampling.timestep(sigma).to(x_t.device), context, y=pooled, guidance=g,
                    **extra)
        return x_t - sigma.reshape(-1, *[1] * (x_t.ndim - 1)).to(x_t.device) * out.float()

    return predict_x0
