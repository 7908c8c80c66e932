"""Sampling with a DeT adapter: Apply DeT Motion."""

from __future__ import annotations

import comfy.samplers
import node_helpers
import nodes as comfy_nodes
from comfy_api.latest import io

from ..det_core.arch import WAN22_BOUNDARY, block_counts, hidden_size
from ..det_core.comfy_models import flow_sampling
from . import distributed
from .adapter import strength_inputs
from .common import (DetAdapterType, applied_blocks, attach, check_finite, check_video_latent, video_transformer)


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
            description="Samples a new video with the reference motion: the video model with the DeT adapter, a new "
                        "prompt and an empty latent of the target size. For Wan 2.2 A14B connect the high-noise expert "
                        "as model and the low-noise expert as low_noise_model: the adapter drives the high-noise "
                        "steps, as ComfyUI's two-sampler Wan 2.2 workflows split them.",
            inputs=[
                io.Model.Input("model", tooltip="HunyuanVideo, HunyuanVideo 1.5 or Wan 2.1/2.2 from Load Diffusion "
                                                "Model (for Wan 2.2 A14B: the high-noise expert)."),
                DetAdapterType.Input("adapter", tooltip="The adapter trained on the reference video."),
                io.Conditioning.Input("positive", tooltip="The new prompt (what the video should show)."),
                io.Latent.Input("latent", tooltip="An empty latent of the target size (EmptyHunyuanLatentVideo, "
                                                  "EmptyHunyuanVideo15Latent, EmptyHunyuanLatentVideo for Wan 2.1, "
                                                  "Wan22ImageToVideoLatent for Wan 2.2 5B)."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Noise seed."),
                io.Int.Input("steps", default=30, min=1, max=1000, tooltip="Sampling steps (the paper uses 50; 30 works)."),
                io.Float.Input("guidance", default=6.0, min=0.0, max=100.0, step=0.1,
                               tooltip="HunyuanVideo's embedded guidance (6 in DeT); Wan and HunyuanVideo 1.5 ignore "
                                       "it (they use cfg)."),
                io.Float.Input("cfg", default=1.0, min=1.0, max=30.0, step=0.1,
                               tooltip="Classifier-free guidance; above 1 needs a negative prompt and doubles the cost."),
                io.Float.Input("flow_shift", default=7.0, min=0.0, max=100.0, step=0.1,
                               tooltip="Flow-matching shift of the sigma schedule (HunyuanVideo 7, Wan 5; see the "
                                       "README's model table)."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler",
                               tooltip="ComfyUI sampler."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="simple",
                               tooltip="ComfyUI scheduler."),
                *strength_inputs(),
                io.Conditioning.Input("negative", optional=True, tooltip="Negative prompt, used when cfg > 1."),
                io.Model.Input("low_noise_model", optional=True,
                               tooltip="Wan 2.2 A14B: the low-noise expert; it samples the steps whose sigma is below "
                                       "boundary. Leave empty for one-model sampling."),
                io.Float.Input("boundary", default=WAN22_BOUNDARY, min=0.0, max=1.0, step=0.005, optional=True,
                               tooltip="With low_noise_model: the sigma where sampling switches from model to "
                                       "low_noise_model (Wan 2.2 T2V: 0.875)."),
                DetAdapterType.Input("low_noise_adapter", optional=True,
                                     tooltip="With low_noise_model: an adapter for the low-noise expert too "
                                             "(optional; the README says why the default leaves it out)."),
                *distributed.node_inputs("Sample"),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, model, adapter, positive, latent, seed, steps, guidance, cfg, flow_shift, sampler_name,
                scheduler, strength, double_blocks, single_blocks, keep_fraction, negative=None, low_noise_model=None,
                boundary=WAN22_BOUNDARY, low_noise_adapter=None, gpus=1, sequence_parallel=1, model_file="none"):
        check_finite(guidance=guidance, cfg=cfg, flow_shift=flow_shift, strength=strength, keep_fraction=keep_fraction,
                     boundary=boundary)
        if cfg > 1.0 and negative is None:
            raise ValueError(f"cfg={cfg} needs a negative prompt: connect one, or set cfg to 1")
        if not 0.0 <= boundary <= 1.0:
            raise ValueError(f"boundary={boundary}: a sigma between 0 and 1 (Wan 2.2 T2V: 0.875)")
        if low_noise_adapter is not None and low_noise_model is None:
            raise ValueError("low_noise_adapter needs low_noise_model (the expert it was trained on)")
        samples = latent["samples"]
        if samples.ndim != 5:
            raise ValueError(f"Apply DeT Motion needs a video latent [B, C, T, H, W], got {tuple(samples.shape)}; "
                             f"use the model's empty video latent node")
        arch, dm = video_transformer(model)
        check_video_latent(arch, dm, samples, "the latent")
        model_path = distributed.check_request(model, gpus, model_file, 0, sequence_parallel, samples)
        if model_path is not None and low_noise_model is not None:
            raise ValueError(f"gpus={gpus} samples one model: for Wan 2.2 A14B's two experts use gpus=1")
        applied = applied_blocks(arch, adapter, double_blocks, single_blocks, keep_fraction)
        patched, _ = attach(model, adapter, applied, strength)
        with_flow_shift(patched, flow_shift)
        positive = node_helpers.conditioning_set_values(positive, {"guidance": guidance})
        # with cfg 1 ComfyUI never evaluates the negative, so the positive stands in for a missing one
        negative = positive if negative is None else node_helpers.conditioning_set_values(negative, {"guidance": guidance})
        if model_path is not None:  # (attach checked that the adapter fits the model)
            return io.NodeOutput(distributed.sample(patched, adapter, applied, strength, positive, negative, latent,
                                                    seed, steps, cfg, sampler_name, scheduler, guidance, gpus,
                                                    model_path, sequence_parallel))
        if low_noise_model is None:
            (out,) = comfy_nodes.common_ksampler(patched, seed, steps, cfg, sampler_name, scheduler, positive,
                                                 negative, latent)
            return io.NodeOutput(out)
        low = _low_noise_expert(low_noise_model, low_noise_adapter, arch, dm, strength, double_blocks, single_blocks,
                                keep_fraction)
        with_flow_shift(low, flow_shift)
        switch = switch_step(patched, scheduler, steps, boundary)
        # the two-sampler split of ComfyUI's Wan 2.2 workflows: the high-noise expert adds the noise and stops at the
        # switch with its leftover noise, the low-noise expert continues without adding noise
        out = latent
        if switch > 0:
            (out,) = comfy_nodes.common_ksampler(patched, seed, steps, cfg, sampler_name, scheduler, positive,
                                                 negative, out, start_step=0, last_step=switch,
                                                 force_full_denoise=switch >= steps)
        if switch < steps:
            (out,) = comfy_nodes.common_ksampler(low, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                                 out, disable_noise=switch > 0, start_step=switch, last_step=steps,
                                                 force_full_denoise=True)
        return io.NodeOutput(out)


def switch_step(model, scheduler: str, steps: int, boundary: float) -> int:
    """How many of the `steps` start at a sigma of at least `boundary` (those run on the high-noise expert)."""
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps)
    return int((sigmas[:steps] >= boundary).sum())


def _low_noise_expert(low_noise_model, low_noise_adapter, arch, dm, strength, double_blocks, single_blocks,
                      keep_fraction):
    """The low-noise expert, with its own adapter when one is given; it must be the high-noise expert's
    architecture and size."""
    low_arch, low_dm = video_transformer(low_noise_model)
    if low_arch is not arch or hidden_size(low_arch, low_dm) != hidden_size(arch, dm) \
            or block_counts(low_arch, low_dm) != block_counts(arch, dm):
        raise ValueError(f"low_noise_model is {low_arch.label} (hidden size {hidden_size(low_arch, low_dm)}), model is "
                         f"{arch.label} (hidden size {hidden_size(arch, dm)}): connect the two experts of one Wan 2.2 "
                         f"A14B release")
    if low_noise_adapter is None:
        return low_noise_model.clone()
    applied = applied_blocks(low_arch, low_noise_adapter, double_blocks, single_blocks, keep_fraction)
    patched, _ = attach(low_noise_model, low_noise_adapter, applied, strength)
    return patched


NODES = [DeTApplyMotion]
