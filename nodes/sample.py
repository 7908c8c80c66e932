"""Sampling with a DeT adapter: Apply DeT Motion."""

from __future__ import annotations

import comfy.samplers
import node_helpers
import nodes as comfy_nodes
from comfy_api.latest import io

from ..det_core.hunyuan import flow_sampling
from .adapter import strength_inputs
from .common import (DetAdapterType, applied_blocks, attach, check_finite, check_video_latent,
                     hunyuan_transformer)


def with_flow_shift(model, shift: float):
    """The MODEL with its flow-matching shift set (what ComfyUI's ModelSamplingSD3 node does)."""
    model.add_object_patch("model_sampling", flow_sampling(shift, model.model.model_config))
    return model


class DeTApplyMotion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DeTApplyMotion",
            display_name="Apply DeT Motion",
            category="DeT",
            description="Samples a new video with the reference motion: HunyuanVideo with the DeT adapter, a new prompt "
                        "and an empty latent of the target size.",
            inputs=[
                io.Model.Input("model", tooltip="HunyuanVideo from Load Diffusion Model."),
                DetAdapterType.Input("adapter", tooltip="The adapter trained on the reference video."),
                io.Conditioning.Input("positive", tooltip="The new prompt (what the video should show)."),
                io.Latent.Input("latent", tooltip="An empty latent of the target size (EmptyHunyuanLatentVideo)."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Noise seed."),
                io.Int.Input("steps", default=30, min=1, max=1000, tooltip="Sampling steps (the paper uses 50; 30 works)."),
                io.Float.Input("guidance", default=6.0, min=0.0, max=100.0, step=0.1,
                               tooltip="HunyuanVideo's embedded guidance (6 in DeT)."),
                io.Float.Input("cfg", default=1.0, min=1.0, max=30.0, step=0.1,
                               tooltip="Classifier-free guidance; above 1 needs a negative prompt and doubles the cost."),
                io.Float.Input("flow_shift", default=7.0, min=0.0, max=100.0, step=0.1,
                               tooltip="Flow-matching shift of the sigma schedule (HunyuanVideo uses 7)."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler",
                               tooltip="ComfyUI sampler."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="simple",
                               tooltip="ComfyUI scheduler."),
                *strength_inputs(),
                io.Conditioning.Input("negative", optional=True, tooltip="Negative prompt, used when cfg > 1."),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, model, adapter, positive, latent, seed, steps, guidance, cfg, flow_shift, sampler_name,
                scheduler, strength, double_blocks, single_blocks, keep_fraction, negative=None):
        check_finite(guidance=guidance, cfg=cfg, flow_shift=flow_shift, strength=strength, keep_fraction=keep_fraction)
        if cfg > 1.0 and negative is None:
            raise ValueError(f"cfg={cfg} needs a negative prompt: connect one, or set cfg to 1")
        samples = latent["samples"]
        if samples.ndim != 5:
            raise ValueError(f"Apply DeT Motion needs a video latent [B, C, T, H, W], got {tuple(samples.shape)}; "
                             f"use EmptyHunyuanLatentVideo")
        check_video_latent(hunyuan_transformer(model), samples, "the latent")
        double, single = applied_blocks(adapter, double_blocks, single_blocks, keep_fraction)
        patched, _ = attach(model, adapter, double, single, strength)
        with_flow_shift(patched, flow_shift)
        positive = node_helpers.conditioning_set_values(positive, {"guidance": guidance})
        # with cfg 1 ComfyUI never evaluates the negative, so the positive stands in for a missing one
        negative = positive if negative is None else node_helpers.conditioning_set_values(negative, {"guidance": guidance})
        (out,) = comfy_nodes.common_ksampler(patched, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                             latent)
        return io.NodeOutput(out)


NODES = [DeTApplyMotion]
