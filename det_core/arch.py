"""The one place that knows each video model DeT attaches to.

An `Arch` entry says, for one architecture: how the loaded MODEL is recognised (ComfyUI's model config class),
which blocks carry adapters and where an adapter reads its input and adds its output (`BlockGroup.placement`,
implemented in det_core.patch), how the token grid is read (the patch embedding and the patch size), the latent
channels and the VAE's compression (for the tracking loss and the memory planner), the full-size configuration
(for the planner), the settings the DeT authors used or that we derive, and the adapter's `base_model` name.

Adding a model is an entry here (plus a placement in det_core.patch when its block is a new shape).

Placements (each adds the adapter to the video tokens' self-attention output, before the block's gate):
- `hv_double`: HunyuanVideo double-stream block; reads `img_attn.qkv`'s input (the modulated, normalised video
  tokens), adds to `img_attn.proj`'s output: img + gate * (proj(attn) + adapter(x_mod)).
- `hv_single`: HunyuanVideo single-stream block; reads the video part of `linear1`'s input, adds to the attention
  part of `linear2`'s input.
- `wan_self_attn`: Wan block; reads the self-attention's input norm1(x) * (1 + e1) + e0 and adds to its output:
  x + e2 * (self_attn(...) + adapter(...)). Wan's self-attention sees video tokens only.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BlockGroup:
    kind: str
    """The adapter's name for these blocks (`AdapterMeta.blocks` key; tensors are saved as `<prefix>.<i>.*`)."""
    attr: str
    """The transformer's ModuleList attribute holding them (also the saved tensors' prefix)."""
    placement: str
    """How the adapter attaches (see the module doc)."""
    label: str
    """What users call them, for messages (plural)."""

    @property
    def one(self) -> str:
        return self.label[:-1]  # "double-stream blocks" -> "double-stream block"


HV_GROUPS = (BlockGroup("double", "double_blocks", "hv_double", "double-stream blocks"),
             BlockGroup("single", "single_blocks", "hv_single", "single-stream blocks"))
WAN_GROUPS = (BlockGroup("blocks", "blocks", "wan_self_attn", "blocks"),)
KIND_LABELS = {g.kind: g.label for g in HV_GROUPS + WAN_GROUPS}


@dataclass(frozen=True)
class Arch:
    name: str
    """The adapter's `base_model` and the name in messages."""
    label: str
    config_classes: tuple[str, ...]
    """ComfyUI model config classes (comfy.supported_models) that are this architecture."""
    transformer: str
    """`hunyuan_video` (comfy.ldm.hunyuan_video.model.HunyuanVideo) or `wan` (comfy.ldm.wan.model.WanModel)."""
    groups: tuple[BlockGroup, ...]
    patch_embed: str
    """The transformer's patch embedding: its input is the latent (B, C, T, H, W), which gives the token grid."""
    latent_channels: int
    temporal_compression: int
    spatial_compression: int
    full_size: dict
    """Constructor arguments of the released model(s), by size name (for the memory planner)."""
    defaults: dict = field(default_factory=dict)
    """Settings for training and sampling: the authors' where their runs give them, else derived (see `sources`)."""
    sources: str = ""
    model_files: tuple[str, ...] = ()
    """The released diffusion-model files (models/diffusion_models/) this entry covers."""
    caution: str = ""
    """What is known against DeT on this model, said when an adapter is trained on it ("" when nothing is)."""

    def group(self, kind: str) -> BlockGroup:
        for g in self.groups:
            if g.kind == kind:
                return g
        raise ValueError(f"{self.label} has no {kind!r} blocks; it has {', '.join(g.kind for g in self.groups)}")

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(g.kind for g in self.groups)

    def model_arguments(self, detected: dict) -> dict:
        """The transformer's constructor arguments from a detected config (ComfyUI's unet_config, or its detection
        of a checkpoint), the largest released size's values where it says nothing; other keys (dtype,
        operations...) are dropped."""
        base = list(self.full_size.values())[-1]
        return {k: detected.get(k, v) for k, v in base.items()}


HUNYUAN_VIDEO_13B = dict(
    image_model="hunyuan_video", in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096,
    hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=20, depth_single_blocks=40, axes_dim=[16, 56, 56],
    theta=256, patch_size=[1, 2, 2], qkv_bias=True, guidance_embed=True, byt5=False, meanflow=False,
    use_cond_type_embedding=False, vision_in_dim=None)
"""HunyuanVideo T2V 13B as ComfyUI builds it (hidden 3072 = 24 heads of 128, 20 double + 40 single blocks, text
width 4096, 2 x 2 patches on a 16-channel latent)."""

HUNYUAN_VIDEO_15_8B = dict(
    image_model="hunyuan_video", in_channels=65, out_channels=32, vec_in_dim=None, context_in_dim=3584,
    hidden_size=2048, mlp_ratio=4.0, num_heads=16, depth=54, depth_single_blocks=0, axes_dim=[16, 56, 56],
    theta=256, patch_size=[1, 1, 1], qkv_bias=True, guidance_embed=False, byt5=True, meanflow=False,
    use_cond_type_embedding=True, vision_in_dim=1152)
"""HunyuanVideo 1.5 (8.3B) as ComfyUI detects the release: hidden 2048 = 16 heads of 128, 54 double-stream blocks
and no single-stream ones, 1 x 1 patches on the 32-channel latent of a 16x VAE; the input is the latent plus 32
image-condition channels and a mask channel (65), which ComfyUI's `concat_cond` adds; Qwen2.5-VL text (3584) and
ByT5 glyph text."""

WAN_COMMON = dict(model_type="t2v", patch_size=(1, 2, 2), text_len=512, freq_dim=256, text_dim=4096,
                  window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6)
WAN21_1_3B = dict(WAN_COMMON, in_dim=16, out_dim=16, dim=1536, ffn_dim=8960, num_heads=12, num_layers=30)
WAN21_14B = dict(WAN_COMMON, in_dim=16, out_dim=16, dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)
"""Also each expert of Wan 2.2 T2V A14B (high noise, low noise)."""
WAN22_5B = dict(WAN_COMMON, in_dim=48, out_dim=48, dim=3072, ffn_dim=14336, num_heads=24, num_layers=30)

WAN_CAUTION = (
    "experimental on Wan: the DeT author found that DeT does not run properly on Wan's architecture and can "
    "destabilise it (tried on Wan 2.1 1.3B; Shi-qingyu/DeT issue #2), because Wan's attention is not concentrated "
    "on the same position in nearby frames as HunyuanVideo's and CogVideoX's is, which DeT's temporal convolution "
    "matches; look at your model with Attention Locality (DeT) before a long training")
"""Why an adapter on Wan is experimental (the authors' development code still has Wan 2.1 14B runs, whose settings
WAN_DEFAULTS are)."""

WAN22_BOUNDARY = 0.875
"""Wan 2.2 T2V A14B: the high-noise expert samples while sigma >= this (Wan 2.2's own T2V boundary), the low-noise
expert after."""

HV_DEFAULTS = dict(kernel_size=3, mid_dim=128, learning_rate=1e-5, warmup_steps=100, timestep_sampling="uniform",
                   keep_fraction=1.0, frames=49, height=512, width=768, flow_shift=7.0, guidance=6.0, cfg=1.0,
                   steps=50, sampler="euler", scheduler="simple")
WAN_DEFAULTS = dict(kernel_size=5, mid_dim=128, learning_rate=1e-6, warmup_steps=100, timestep_sampling="logit_normal",
                    keep_fraction=0.375, frames=49, height=480, width=832, flow_shift=5.0, guidance=6.0, cfg=5.0,
                    steps=50, sampler="uni_pc", scheduler="simple")

HUNYUAN_VIDEO = Arch(
    name="hunyuan_video", label="HunyuanVideo", config_classes=("HunyuanVideo",), transformer="hunyuan_video",
    groups=HV_GROUPS, patch_embed="img_in", latent_channels=16, temporal_compression=4, spatial_compression=8,
    full_size={"13B": HUNYUAN_VIDEO_13B},
    defaults=HV_DEFAULTS,
    sources="the paper (kernel 3 by its ablation, mid 128, lr 1e-5) and the authors' HunyuanVideo benchmark script "
            "(all 20 double-stream blocks, 512x768, 49 frames, 50 steps, guidance 6; it used kernel 5); their "
            "HunyuanVideo training script (train_conv1d_hunyuan.py) puts the adapters on the 40 single-stream blocks "
            "only instead (double_blocks none, single_blocks all)",
    model_files=("hunyuan_video_t2v_720p_bf16.safetensors",))

HUNYUAN_VIDEO_15 = Arch(
    name="hunyuan_video_15", label="HunyuanVideo 1.5", config_classes=("HunyuanVideo15",),
    transformer="hunyuan_video", groups=HV_GROUPS, patch_embed="img_in", latent_channels=32,
    temporal_compression=4, spatial_compression=16, full_size={"8.3B": HUNYUAN_VIDEO_15_8B},
    defaults=dict(HV_DEFAULTS, height=480, width=848, cfg=6.0),
    sources="derived: HunyuanVideo's DeT settings on all 54 double-stream blocks (the same block design); shift 7 is "
            "ComfyUI's default for the model; it is not guidance-distilled, so cfg 6 with a negative prompt",
    model_files=("hunyuanvideo1.5_720p_t2v_fp16.safetensors",))

WAN21 = Arch(
    name="wan21", label="Wan 2.1", config_classes=("WAN21_T2V",), transformer="wan", groups=WAN_GROUPS,
    patch_embed="patch_embedding", latent_channels=16, temporal_compression=4, spatial_compression=8,
    full_size={"1.3B": WAN21_1_3B, "14B": WAN21_14B},
    defaults=WAN_DEFAULTS,
    sources="the authors' Wan 2.1 T2V 14B runs (kernel 5, mid 128, lr 1e-6, warm-up 100, logit-normal timesteps, "
            "480x832, shift 5, guidance 5 with a negative prompt, UniPC 50 steps, adapters applied in blocks 0-14 of "
            "40 = keep_fraction 0.375); 1.3B: the same, keep_fraction 0.375 of 30 = blocks 0-11 (derived)",
    model_files=("wan2.1_t2v_1.3B_fp16.safetensors", "wan2.1_t2v_14B_fp16.safetensors",
                 "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"),
    caution=WAN_CAUTION)

WAN22_TI2V = Arch(
    name="wan22_ti2v", label="Wan 2.2 TI2V 5B", config_classes=("WAN22_T2V",), transformer="wan", groups=WAN_GROUPS,
    patch_embed="patch_embedding", latent_channels=48, temporal_compression=4, spatial_compression=16,
    full_size={"5B": WAN22_5B},
    defaults=dict(WAN_DEFAULTS, height=704, width=1280),
    sources="derived: the authors' Wan 2.1 settings (same block design) at the 5B model's native 704x1280",
    model_files=("wan2.2_ti2v_5B_fp16.safetensors",), caution=WAN_CAUTION)

ARCHS = (HUNYUAN_VIDEO, HUNYUAN_VIDEO_15, WAN21, WAN22_TI2V)
BY_NAME = {a.name: a for a in ARCHS}


class UnsupportedModel(ValueError):
    pass


def supported() -> str:
    return ", ".join(f"{a.label} ({', '.join(a.model_files[:2])})" for a in ARCHS)


def arch_named(name: str) -> Arch:
    if name not in BY_NAME:
        raise UnsupportedModel(f"unknown base model {name!r}; this pack knows {', '.join(BY_NAME)}")
    return BY_NAME[name]


def arch_of(model) -> Arch:
    """The Arch of a ComfyUI MODEL (a ModelPatcher), or UnsupportedModel naming what is supported."""
    base = getattr(model, "model", None)
    config = getattr(base, "model_config", None)
    name = type(config).__name__ if config is not None else \
        type(getattr(base, "diffusion_model", model)).__name__
    for a in ARCHS:
        if name in a.config_classes:
            return a
    raise UnsupportedModel(f"DeT does not support this model yet ({name}); supported are: {supported()}. Load one "
                           f"of them with Load Diffusion Model (UNETLoader)")


def transformer_class(arch: Arch):
    if arch.transformer == "hunyuan_video":
        from comfy.ldm.hunyuan_video.model import HunyuanVideo
        return HunyuanVideo
    from comfy.ldm.wan.model import WanModel
    return WanModel


def width_key(arch: Arch) -> str:
    """The transformer's width: its constructor argument and attribute (`hidden_size`, Wan's `dim`)."""
    return "hidden_size" if arch.transformer == "hunyuan_video" else "dim"


def hidden_size(arch: Arch, dm) -> int:
    return int(getattr(dm, width_key(arch)))


def block_counts(arch: Arch, dm) -> dict[str, int]:
    return {g.kind: len(getattr(dm, g.attr)) for g in arch.groups}


def patch_size(dm) -> tuple[int, int, int]:
    return tuple(int(p) for p in (getattr(dm, "patch_size", None) or (1, 2, 2)))
