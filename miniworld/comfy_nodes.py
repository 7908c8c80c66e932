"""The small world's ComfyUI nodes (loaded only where a test, the demo or a benchmark adds `miniworld` to a server's
custom_nodes; never part of the shipped pack).

- MiniWorld VAE Encode / Decode: the stand-in VAE (`models/vae/miniworld_vae.safetensors`), HunyuanVideo's
  latent layout and scale;
- MiniWorld Text Encode: "a <colour> <shape>" -> HunyuanVideo-shaped CONDITIONING;
- MiniWorld Fine-tune (baseline): fine-tunes the base model's own block weights on the reference latent (flow
  matching only), the baseline that DeT's design is compared with;
- MiniWorld Read Video: where the object is in each frame, its colour and shape, and its tracks (JSON).
"""

from __future__ import annotations

import json
import os

import torch

import comfy.model_management as mm
import comfy.utils
import folder_paths
from comfy_api.latest import ComfyExtension, io, ui

from . import measure
from .codec import HUNYUAN_SCALE, CaptionEncoder, load_vae
from .finetune import finetune_blocks

_VAES: dict[tuple[str, float], torch.nn.Module] = {}


def _vae(name: str):
    path = folder_paths.get_full_path_or_raise("vae", name)
    key = (path, os.path.getmtime(path))
    if key not in _VAES:
        _VAES.clear()
        _VAES[key] = load_vae(path)
    return _VAES[key]


def _vae_input():
    return io.Combo.Input("vae_name", options=[n for n in folder_paths.get_filename_list("vae") if "miniworld" in n],
                          tooltip="The small world's stand-in VAE in models/vae/.")


class MiniWorldVAEEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="MiniWorldVAEEncode", display_name="MiniWorld VAE Encode", category="DeT/miniworld",
                         inputs=[_vae_input(), io.Image.Input("images", tooltip="Frames [F, H, W, 3], F = 4k+1.")],
                         outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, vae_name, images):
        x = images[..., :3].permute(3, 0, 1, 2)[None].float()  # 1 3 F H W
        with torch.no_grad():
            z = _vae(vae_name).encode(x)
        return io.NodeOutput({"samples": z / HUNYUAN_SCALE})


class MiniWorldVAEDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="MiniWorldVAEDecode", display_name="MiniWorld VAE Decode", category="DeT/miniworld",
                         inputs=[_vae_input(), io.Latent.Input("samples")], outputs=[io.Image.Output()])

    @classmethod
    def execute(cls, vae_name, samples):
        z = samples["samples"].float() * HUNYUAN_SCALE
        with torch.no_grad():
            x = _vae(vae_name).decode(z)  # B 3 F H W
        return io.NodeOutput(x.permute(0, 2, 3, 4, 1).reshape(-1, *x.shape[3:], 3).contiguous())


class MiniWorldTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="MiniWorldTextEncode", display_name="MiniWorld Text Encode", category="DeT/miniworld",
                         inputs=[io.String.Input("text", default="a red disc",
                                                 tooltip="'a <colour> <shape>': red/green/blue/yellow/white, "
                                                         "disc/square/triangle."),
                                 io.Float.Input("guidance", default=6.0, min=0.0, max=100.0)],
                         outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, text, guidance):
        return io.NodeOutput(CaptionEncoder().conditioning(text, guidance))


class MiniWorldFinetune(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MiniWorldFinetune", display_name="MiniWorld Fine-tune (baseline)", category="DeT/miniworld",
            description="Fine-tunes the base model's block weights on the reference latent (flow matching), the "
                        "baseline DeT avoids. Returns a new MODEL; the input MODEL is unchanged.",
            inputs=[io.Model.Input("model"), io.Latent.Input("latent"), io.Conditioning.Input("conditioning"),
                    io.Int.Input("steps", default=200, min=1, max=100000),
                    io.Float.Input("learning_rate", default=1e-4, min=1e-8, max=1.0, step=1e-6, round=False),
                    io.Int.Input("seed", default=0, min=0, max=2**31 - 1)],
            outputs=[io.Model.Output(), io.String.Output(display_name="info")])

    @classmethod
    def execute(cls, model, latent, conditioning, steps, learning_rate, seed):
        pbar = comfy.utils.ProgressBar(steps)
        out, losses = finetune_blocks(model, latent["samples"], conditioning, steps, learning_rate, seed,
                                      on_step=lambda i: pbar.update_absolute(i, steps),
                                      should_stop=mm.processing_interrupted)
        mm.throw_exception_if_processing_interrupted()
        k = max(1, len(losses) // 10)
        info = f"fine-tuned {steps} steps: loss {sum(losses[:k]) / k:.4f} -> {sum(losses[-k:]) / k:.4f}"
        return io.NodeOutput(out, info)


class MiniWorldReadVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="MiniWorldReadVideo", display_name="MiniWorld Read Video", category="DeT/miniworld",
                         inputs=[io.Image.Input("images"), io.String.Input("label", default=""),
                                 io.Boolean.Input("pose", default=False, optional=True,
                                                  tooltip="Also read rotation, scale and a pendulum's shape (the "
                                                          "object-relative motions; miniworld.measure)")],
                         outputs=[], is_output_node=True)

    @classmethod
    def execute(cls, images, label, pose=False):
        reading = measure.read_video(images[..., :3].cpu().numpy(), pose=pose)
        report = {"label": label, "tracks": reading.tracks.tolist(),
                  "pose": None if reading.pose is None else reading.pose.tolist(),
                  "frames": [{"found": r.found, "colour": r.colour, "shape": r.shape,
                              "centroid": list(r.centroid) if r.found else None} for r in reading.frames]}
        return io.NodeOutput(ui=ui.PreviewText(json.dumps(report)))


class MiniWorldExtension(ComfyExtension):
    async def get_node_list(self):
        return [MiniWorldVAEEncode, MiniWorldVAEDecode, MiniWorldTextEncode, MiniWorldFinetune, MiniWorldReadVideo]
