"""Attention Locality (DeT): how local the model's 3D attention is on your reference video, before you train.

DeT's adapter is a temporal convolution shared by every spatial position; its authors found it works where a video
token's attention is concentrated on the same position in nearby frames (HunyuanVideo, CogVideoX) and not on Wan
(Shi-qingyu/DeT issue #2). This node runs the model once per chosen noise level on the reference latent, with
ComfyUI's attention override measuring sampled queries (det_core.attention_locality), and reports the figures per
block.
"""

from __future__ import annotations

import json
import math
import types

import numpy as np
import torch

import comfy.model_management as mm
from comfy_api.latest import io, ui

from ..det_core.attention_locality import LocalityProbe, heatmap, summary
from ..det_core.arch import patch_size
from ..det_core.comfy_models import model_conds
from .common import check_finite, check_video_latent, video_transformer

MAX_SIGMAS = 8


def parse_sigmas(text: str) -> list[float]:
    """'0.9, 0.6, 0.3' -> [0.9, 0.6, 0.3]; each in (0, 1], at most MAX_SIGMAS."""
    if not isinstance(text, str):
        raise ValueError(f"sigmas={text!r}: must be text such as '0.9, 0.6, 0.3'")
    parts = [p for p in text.replace(";", ",").split(",") if p.strip()]
    if not parts or len(parts) > MAX_SIGMAS:
        raise ValueError(f"sigmas={text!r}: give 1 to {MAX_SIGMAS} noise levels separated by commas, "
                         f"e.g. '0.9, 0.6, 0.3'")
    out = []
    for p in parts:
        try:
            s = float(p)
        except ValueError:
            raise ValueError(f"sigmas={text!r}: {p.strip()!r} is not a number") from None
        if not math.isfinite(s) or not 0.0 < s <= 1.0:
            raise ValueError(f"sigmas={text!r}: {p.strip()} is outside (0, 1] (1 = pure noise, 0 = the clean video)")
        out.append(s)
    return out


def _label(kind: str, index: int) -> str:
    return f"{'block' if kind == 'blocks' else kind} {index}"


def _labelled(previous, probe: LocalityProbe, label: str):
    """A forward that names the attention call it makes, then runs what was there (the module's own forward, or
    another pack's patch such as a DeT adapter's)."""

    def forward(*args, **kwargs):
        probe.current = label
        try:
            return previous(*args, **kwargs)
        finally:
            probe.current = None

    return forward


def _current_forward(model, key: str):
    """What runs at `key` (a module's `forward`) under this MODEL's own patches: another patch if it has one (a DeT
    adapter's), else the module's class forward (never whatever a previously loaded clone left installed)."""
    if key in model.object_patches:
        return model.object_patches[key]
    import comfy.utils

    module = comfy.utils.get_attr(model.model, key[: -len(".forward")])
    return types.MethodType(type(module).forward, module)


def measure_locality(model, samples: torch.Tensor, conditioning, sigmas: list[float], queries: int, seed: int,
                     guidance: float) -> list[dict]:
    """One forward of `model` per sigma on the noised latent, measured; returns the per-sigma reports."""
    arch, dm = video_transformer(model)
    pt, ph, pw = patch_size(dm)
    t, h, w = samples.shape[2:]
    grid = (t // pt, h // ph, w // pw)
    patched = model.clone()  # object patches on a clone: the weights are shared, the user's MODEL unchanged
    labels = []
    for g in arch.groups:
        for i in range(len(getattr(dm, g.attr))):
            # the module whose forward makes the video self-attention call: Wan's self_attn (its block also makes
            # a cross-attention call), HunyuanVideo's whole block (one joint attention call)
            key = f"diffusion_model.{g.attr}.{i}." + ("self_attn.forward" if arch.transformer == "wan" else "forward")
            labels.append((key, _label(g.kind, i)))
    reports = []
    for sigma in sigmas:
        probe = LocalityProbe(grid, queries, seed)
        run = patched.clone()
        for key, label in labels:
            run.add_object_patch(key, _labelled(_current_forward(patched, key), probe, label))
        options = run.model_options.setdefault("transformer_options", {})
        options["optimized_attention_override"] = probe.override
        mm.load_models_gpu([run])
        device = run.load_device
        x0 = run.model.process_latent_in(samples.to(device, torch.float32))
        cond = model_conds(run.model, conditioning, guidance, x0, arch.spatial_compression)
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(device)
        s = torch.tensor([sigma], device=device)
        x_t = run.model.model_sampling.noise_scaling(s, noise, x0)
        run.model.apply_model(x_t, s, transformer_options=dict(options), **cond)
        reports.append({"sigma": sigma, **probe.report()})
    return reports


def heatmap_image(reports: list[dict]) -> torch.Tensor:
    """IMAGE [1, H, W, 3]: the heat maps of each sigma, one under the other, titled."""
    from PIL import Image, ImageDraw

    pictures = []
    for r in reports:
        pic = heatmap(r)
        head = Image.new("RGB", (pic.shape[1], 16), (250, 250, 250))
        ImageDraw.Draw(head).text((4, 2), f"sigma {r['sigma']:g}", fill=(20, 20, 20))
        pictures += [np.array(head), pic]
    width = max(p.shape[1] for p in pictures)
    pictures = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=250) for p in pictures]
    return torch.from_numpy(np.concatenate(pictures, axis=0)).float()[None] / 255.0


class DeTAttentionLocality(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DeTAttentionLocality",
            display_name="Attention Locality (DeT)",
            category="DeT/evaluate",
            description="Measures how concentrated the model's 3D attention is on the same spatial position in nearby "
                        "frames, per block, on the reference video: the pattern DeT's shared temporal convolution "
                        "matches (the DeT authors' explanation of why it works on HunyuanVideo and not on Wan). One "
                        "forward per noise level; sampled queries keep memory at a sampling step's.",
            inputs=[
                io.Model.Input("model", tooltip="The video model from Load Diffusion Model (any supported model)."),
                io.Latent.Input("latent", tooltip="The reference video's latents (VAE Encode of its frames)."),
                io.Conditioning.Input("conditioning", tooltip="The reference caption, encoded by the model's text "
                                                              "encoder (the model runs as it would when sampling)."),
                io.String.Input("sigmas", default="0.9, 0.6, 0.3",
                                tooltip="Noise levels to measure at (1 = pure noise), comma-separated, at most 8. "
                                        "One forward each."),
                io.Int.Input("queries", default=256, min=1, max=65536,
                             tooltip="Video tokens sampled as queries (all of them if the video has fewer). Memory "
                                     "grows with queries x tokens, one head at a time."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF,
                             tooltip="Seeds the noise and the query sample."),
                io.Float.Input("guidance", default=6.0, min=0.0, max=100.0, step=0.1,
                               tooltip="Embedded guidance (HunyuanVideo only; other models ignore it)."),
            ],
            outputs=[io.String.Output(display_name="report_json"), io.Image.Output(display_name="heatmap"),
                     io.String.Output(display_name="summary")],
        )

    @classmethod
    def execute(cls, model, latent, conditioning, sigmas, queries, seed, guidance) -> io.NodeOutput:
        check_finite(guidance=guidance)
        if not isinstance(queries, int) or isinstance(queries, bool) or not 1 <= queries <= 65536:
            raise ValueError(f"queries={queries!r}: must be a whole number from 1 to 65536")
        levels = parse_sigmas(sigmas)
        arch, dm = video_transformer(model)
        samples = latent["samples"]
        check_video_latent(arch, dm, samples, "the reference latent")
        reports = measure_locality(model, samples, conditioning, levels, queries, seed, guidance)
        lines = [f"{arch.label}: sigma {r['sigma']:g}: {summary(r)}" for r in reports]
        text = "\n".join(lines)
        data = json.dumps({"model": arch.name, "seed": seed, "by_sigma": reports, "summary": lines})
        image = heatmap_image(reports)
        return io.NodeOutput(data, image, text, ui=ui.PreviewImage(image, cls=cls))


NODES = [DeTAttentionLocality]
