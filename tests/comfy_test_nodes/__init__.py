"""Test-only ComfyUI nodes, loaded by the test server beside the DeT pack (never shipped to users).

The real HunyuanVideo text encoder is 4096 wide and cannot be made tiny, so tests build HunyuanVideo-shaped
conditioning at the tiny checkpoint's text width here.
"""

import torch
from comfy_api.latest import ComfyExtension, io


class DeTTestConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DeTTestConditioning",
            display_name="DeT Test Conditioning (tests only)",
            category="DeT/testing",
            inputs=[
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, tooltip="Seed of the random text features."),
                io.Int.Input("tokens", default=8, min=1, max=512, tooltip="Number of text tokens."),
                io.Int.Input("width", default=32, min=1, max=4096, tooltip="Text feature width (the tiny model's)."),
                io.Float.Input("guidance", default=6.0, min=0.0, max=100.0, tooltip="Embedded guidance."),
            ],
            outputs=[io.Conditioning.Output()],
        )

    @classmethod
    def execute(cls, seed, tokens, width, guidance):
        g = torch.Generator().manual_seed(seed)
        cross_attn = torch.randn(1, tokens, width, generator=g)
        pooled = torch.randn(1, 768, generator=g)
        return io.NodeOutput([[cross_attn, {"pooled_output": pooled, "guidance": guidance}]])


class DeTTestInspect(io.ComfyNode):
    """Reports what a tensor holds (shape, dtype, range, a content checksum) as UI text, for assertions."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DeTTestInspect",
            display_name="DeT Test Inspect (tests only)",
            category="DeT/testing",
            inputs=[
                io.AnyType.Input("value", tooltip="An IMAGE, MASK, LATENT or plain value."),
                io.String.Input("label", default="", tooltip="Free text echoed back."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, value, label):
        import hashlib
        import json

        from comfy_api.latest import ui

        if isinstance(value, dict) and "samples" in value:
            value = value["samples"]
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu()
            report = {
                "shape": list(t.shape), "dtype": str(t.dtype),
                "min": float(t.min()), "max": float(t.max()), "mean": float(t.float().mean()),
                "finite": bool(torch.isfinite(t).all()),
                "sha1": hashlib.sha1(t.contiguous().numpy().tobytes()).hexdigest(),
                "frame_means": [float(x) for x in t.float().reshape(t.shape[0], -1).mean(1)] if t.ndim >= 2 else [],
            }
        else:
            report = {"value": value if isinstance(value, (int, float, str, bool)) else repr(value)}
        report["label"] = label
        return io.NodeOutput(ui=ui.PreviewText(json.dumps(report)))


class DeTTestLatent(io.ComfyNode):
    """A seeded video latent with temporal structure (a blob drifting across frames), standing in for VAE Encode
    (the real HunyuanVideo VAE cannot be made tiny)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DeTTestLatent",
            display_name="DeT Test Latent (tests only)",
            category="DeT/testing",
            inputs=[
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1),
                io.Int.Input("frames", default=13, min=1, max=64, tooltip="Latent frames."),
                io.Int.Input("height", default=6, min=2, max=128, tooltip="Latent height."),
                io.Int.Input("width", default=8, min=2, max=128, tooltip="Latent width."),
                io.Int.Input("channels", default=16, min=1, max=128, optional=True,
                             tooltip="Latent channels (HunyuanVideo and Wan 2.1: 16, HunyuanVideo 1.5: 32, Wan 2.2 5B: 48)."),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, seed, frames, height, width, channels=16):
        g = torch.Generator().manual_seed(seed)
        base = 0.3 * torch.randn(1, channels, 1, height, width, generator=g)
        colour = torch.randn(1, channels, 1, 1, 1, generator=g)
        yy, xx = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
        blobs = []
        for t in range(frames):
            cx = (width - 1) * t / max(1, frames - 1)
            blobs.append(torch.exp(-((xx - cx) ** 2 + (yy - height / 2) ** 2) / 4.0))
        blob = torch.stack(blobs)[None, None]  # 1 1 T H W
        # VAE-encoded latents are unscaled: ComfyUI divides by the HunyuanVideo scale factor (0.476986) on the way in
        return io.NodeOutput({"samples": (base + colour * blob) / 0.476986})


class DeTTestOtherModel(io.ComfyNode):
    """A MODEL whose transformer is not HunyuanVideo (no other architecture can be made tiny enough here)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="DeTTestOtherModel", display_name="DeT Test Other Model (tests only)",
                         category="DeT/testing", inputs=[], outputs=[io.Model.Output()])

    @classmethod
    def execute(cls):
        import comfy.model_management
        import comfy.model_patcher

        class OtherModel(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.diffusion_model = torch.nn.Linear(4, 4)

        dev = comfy.model_management.get_torch_device()
        return io.NodeOutput(comfy.model_patcher.ModelPatcher(OtherModel(), load_device=dev, offload_device=dev))


class DeTTestPseudoEncode(io.ComfyNode):
    """Frames -> a HunyuanVideo-shaped latent without the VAE (which cannot be made tiny): every 4th frame,
    8x8 average pooling and a fixed random 3 -> 16 channel mix. Motion in the frames stays motion in the latent."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="DeTTestPseudoEncode", display_name="DeT Test Pseudo Encode (tests only)",
                         category="DeT/testing", inputs=[io.Image.Input("frames")], outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, frames):
        x = frames[::4].permute(3, 0, 1, 2)[None]  # 1 3 T H W
        x = torch.nn.functional.avg_pool3d(x, (1, 8, 8))
        mix = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
        latent = torch.einsum("oc,bcthw->bothw", mix, x - 0.5)
        return io.NodeOutput({"samples": latent / 0.476986})


class DeTTestPseudoDecode(io.ComfyNode):
    """The inverse of DeTTestPseudoEncode, roughly: a latent -> frames (x4 in time, x8 in space), standing in for
    VAE Decode in tests."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="DeTTestPseudoDecode", display_name="DeT Test Pseudo Decode (tests only)",
                         category="DeT/testing", inputs=[io.Latent.Input("samples")], outputs=[io.Image.Output()])

    @classmethod
    def execute(cls, samples):
        z = samples["samples"] * 0.476986  # B 16 T h w
        mix = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
        rgb = torch.einsum("co,bothw->bcthw", torch.linalg.pinv(mix), z)[0] + 0.5  # 3 T h w
        t = rgb.shape[1]
        rgb = torch.nn.functional.interpolate(rgb[None], size=((t - 1) * 4 + 1, rgb.shape[2] * 8, rgb.shape[3] * 8),
                                              mode="trilinear", align_corners=True)[0]
        return io.NodeOutput(rgb.permute(1, 2, 3, 0).clamp(0, 1).contiguous())


class _Ext(ComfyExtension):
    async def get_node_list(self):
        return [DeTTestConditioning, DeTTestInspect, DeTTestLatent, DeTTestOtherModel, DeTTestPseudoEncode, DeTTestPseudoDecode]


async def comfy_entrypoint():
    return _Ext()
