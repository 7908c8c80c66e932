"""Tiny random models in the real checkpoint formats, written for the tests.

`write_tiny_hunyuan_video` builds ComfyUI's own HunyuanVideo transformer at a toy size (hidden 128 = one head
of the fixed head dim 128, 2 double + 2 single blocks, text width 32), fills it with seeded random weights,
and saves it with the key names of the original HunyuanVideo release, which ComfyUI's loader detects and maps.

`write_tiny` does the same for the other architectures of det_core.arch, each with two heads (ComfyUI's
detection fixes the head width at 128, so two heads make hidden 256): HunyuanVideo 1.5 (2 double-stream blocks,
65 input channels, 1 x 1 patches, the release's vision and ByT5 inputs), Wan 2.1 (2 blocks; the text width stays
4096 because ComfyUI's detection does not read it) and Wan 2.2 TI2V 5B (48 channels). Wan checkpoints use
ComfyUI's own module names, which are the Wan release's.
"""

from __future__ import annotations

import math
import os

import torch

TINY_HV = dict(
    image_model="hunyuan_video", in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=32,
    hidden_size=128, mlp_ratio=4.0, num_heads=1, depth=2, depth_single_blocks=2, axes_dim=[16, 56, 56],
    theta=256, patch_size=[1, 2, 2], qkv_bias=True, guidance_embed=True, byt5=False, meanflow=False,
    use_cond_type_embedding=False, vision_in_dim=None,
)
TINY_TEXT_DIM = TINY_HV["context_in_dim"]
TINY_HV_FILE = "det_tiny_hunyuan_video.safetensors"

TINY_HV15 = dict(TINY_HV, in_channels=65, out_channels=32, vec_in_dim=None, hidden_size=256, num_heads=2,
                 depth=2, depth_single_blocks=0, patch_size=[1, 1, 1], guidance_embed=False, byt5=True,
                 use_cond_type_embedding=True, vision_in_dim=1152)
_WAN = dict(model_type="t2v", patch_size=(1, 2, 2), text_len=512, freq_dim=256, text_dim=4096, window_size=(-1, -1),
            qk_norm=True, cross_attn_norm=True, eps=1e-6, dim=256, ffn_dim=512, num_heads=2, num_layers=2)
TINY_WAN21 = dict(_WAN, in_dim=16, out_dim=16)
TINY_WAN22_5B = dict(_WAN, in_dim=48, out_dim=48)
TINY_HV_TWO_HEADS = dict(TINY_HV, hidden_size=256, num_heads=2)
"""The tiny HunyuanVideo with two heads, for sequence parallel over 2 ranks (which splits the heads)."""
TINY = {"hunyuan_video": TINY_HV, "hunyuan_video_15": TINY_HV15, "wan21": TINY_WAN21, "wan22_ti2v": TINY_WAN22_5B}
"""Tiny configuration per architecture (det_core.arch names)."""
TINY_FILES = {"hunyuan_video": TINY_HV_FILE, "hunyuan_video_15": "det_tiny_hunyuan_video_15.safetensors",
              "wan21": "det_tiny_wan21.safetensors", "wan22_ti2v": "det_tiny_wan22_ti2v_5b.safetensors"}
TINY_WAN22_LOW_FILE = "det_tiny_wan22_low_noise.safetensors"
"""A second tiny Wan 2.1-shaped model (another seed): the low-noise expert of a tiny Wan 2.2 A14B pair, whose
high-noise expert is TINY_FILES['wan21']."""
TEXT_WIDTH = {"hunyuan_video": TINY_TEXT_DIM, "hunyuan_video_15": TINY_TEXT_DIM, "wan21": 4096, "wan22_ti2v": 4096}


def tiny_state_dict(arch_name: str = "hunyuan_video", seed: int = 0, config: dict | None = None) -> dict[str, torch.Tensor]:
    """Seeded random weights for ComfyUI's transformer of `arch_name` at its tiny config (or `config`), with
    ComfyUI's key names."""
    import comfy.ops

    from det_core.arch import arch_named, transformer_class

    cls = transformer_class(arch_named(arch_name))
    model = cls(operations=comfy.ops.disable_weight_init, dtype=torch.float32, device="cpu",
                **(config or TINY[arch_name]))
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


def tiny_hunyuan_video_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    return tiny_state_dict("hunyuan_video", seed)


def write_tiny(arch_name: str, path: str, seed: int = 0, config: dict | None = None) -> str:
    """The tiny model of `arch_name` (at `config`, default its TINY entry) saved as its release names its weights
    (ComfyUI's stock loader detects it)."""
    from safetensors.torch import save_file

    config = config or TINY[arch_name]
    sd = tiny_state_dict(arch_name, seed, config)
    if arch_name.startswith("hunyuan_video"):
        from miniworld.model import to_original  # the original release's key names, checked by round trip

        sd = to_original(sd, config)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file(sd, path, metadata={"det.test": f"tiny random {arch_name}", "seed": str(seed)})
    return path


def write_tiny_hunyuan_video(path: str, seed: int = 0) -> str:
    return write_tiny("hunyuan_video", path, seed)


def import_comfy(host_dir: str) -> None:
    """Make the host's `comfy` package importable in this process (the tests build models with it)."""
    from det_core.comfy_models import use_comfy

    use_comfy(host_dir)


def tiny_transformer(seed: int = 0, arch_name: str = "hunyuan_video"):
    """ComfyUI's transformer of `arch_name` at the tiny size with seeded weights, in this process (import_comfy
    first)."""
    import comfy.ops

    from det_core.arch import arch_named, transformer_class

    cls = transformer_class(arch_named(arch_name))
    model = cls(operations=comfy.ops.disable_weight_init, dtype=torch.float32, device="cpu", **TINY[arch_name])
    model.load_state_dict(tiny_state_dict(arch_name, seed))
    return model.eval().requires_grad_(False)


# -- tiny GroundingDINO / SAM / SAM 2 in Hugging Face format, random weights ----------------------------------------

DINO_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dog", "person", "cat", ".", "the", "red", "ball"]


def tiny_grounding_dino(folder: str) -> str:
    from transformers import (BertConfig, BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor, SwinConfig)

    os.makedirs(folder, exist_ok=True)
    vocab = os.path.join(folder, "vocab.txt")
    with open(vocab, "w") as f:
        f.write("\n".join(DINO_VOCAB) + "\n")
    tokenizer = BertTokenizer(vocab=vocab)
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 48, "longest_edge": 80}),
        tokenizer=tokenizer)
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=2, out_features=["stage2", "stage3", "stage4"])
    text = BertConfig(vocab_size=len(DINO_VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=64)
    config = GroundingDinoConfig(
        backbone_config=backbone, text_config=text, d_model=32, encoder_layers=1, decoder_layers=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2,
        num_queries=12, max_text_len=32, encoder_n_points=1, decoder_n_points=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        GroundingDinoForObjectDetection(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def tiny_sam_config(image_size=64, layers=2, global_idx=(1,), window=2, decoder_heads=8):
    from transformers import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig

    vision = SamVisionConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, image_size=image_size,
                             patch_size=16, output_channels=32, window_size=window,
                             global_attn_indexes=list(global_idx), num_pos_feats=16, mlp_dim=48)
    prompt = SamPromptEncoderConfig(hidden_size=32, image_size=image_size, patch_size=16, mask_input_channels=8)
    decoder = SamMaskDecoderConfig(hidden_size=32, mlp_dim=40, num_hidden_layers=2,
                                   num_attention_heads=decoder_heads, iou_head_hidden_dim=24)
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def tiny_sam(folder: str) -> str:
    from transformers import SamImageProcessor, SamModel, SamProcessor

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        SamModel(tiny_sam_config()).save_pretrained(folder)
    SamProcessor(image_processor=SamImageProcessor(
        size={"longest_edge": 64}, pad_size={"height": 64, "width": 64},
        mask_size={"longest_edge": 16}, mask_pad_size={"height": 16, "width": 16})).save_pretrained(folder)
    return folder


def _tiny_sam2_vision(fpn_hidden_size: int):
    from transformers import Sam2HieraDetConfig, Sam2VisionConfig

    backbone = Sam2HieraDetConfig(
        hidden_size=8, image_size=[64, 64], embed_dim_per_stage=[8, 16, 32, 64], blocks_per_stage=[1, 1, 2, 1],
        num_attention_heads_per_stage=[1, 1, 1, 1], window_size_per_stage=[4, 2, 2, 1], global_attention_blocks=[3],
        window_positional_embedding_background_size=[2, 2])
    return Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[64, 32, 16, 8],
                            backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]], fpn_hidden_size=fpn_hidden_size)


def tiny_sam2_video_config():
    """A tiny `Sam2VideoConfig` (64 px input, 4 x 4 top-level features).

    transformers fixes two sizes: the memory channels are 64 (the memory attention's key/value width is hard-coded
    64), and the object pointers are split into memory-width tokens, which works only when the model width is a
    larger multiple of 64, so the width is 128 (SAM 2 itself: 256 and 64)."""
    from transformers import Sam2VideoConfig, Sam2VideoMaskDecoderConfig, Sam2VideoPromptEncoderConfig

    width = 128
    return Sam2VideoConfig(
        vision_config=_tiny_sam2_vision(width),
        prompt_encoder_config=Sam2VideoPromptEncoderConfig(hidden_size=width, image_size=64, patch_size=16,
                                                           mask_input_channels=4),
        mask_decoder_config=Sam2VideoMaskDecoderConfig(hidden_size=width, mlp_dim=32, num_attention_heads=2,
                                                       iou_head_hidden_dim=16),
        image_size=64, num_maskmem=3, max_object_pointers_in_encoder=4,
        memory_attention_hidden_size=width, memory_attention_num_layers=1, memory_attention_feed_forward_hidden_size=32,
        memory_attention_rope_feat_sizes=[4, 4], memory_encoder_hidden_size=width, memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=width, memory_fuser_num_layers=1, memory_fuser_embed_dim=width,
        memory_fuser_intermediate_dim=32)


def tiny_sam2(folder: str, video: bool = True) -> str:
    """A tiny random SAM 2 folder laid out as the facebook/sam2.1-* releases are: a `Sam2VideoModel` checkpoint
    (model_type 'sam2_video', image and memory weights) with a `Sam2VideoProcessor`. It loads as `Sam2Model` for
    per-frame masks and as `Sam2VideoModel` for propagation.

    The object-score head's output bias is set high, so the random model calls the object present on every frame and
    propagated masks are not all empty. video=False writes an image-only `Sam2Model` folder (model_type 'sam2', no
    memory weights), which cannot propagate."""
    from transformers import (Sam2Config, Sam2ImageProcessor, Sam2MaskDecoderConfig, Sam2Model, Sam2Processor,
                              Sam2PromptEncoderConfig, Sam2VideoModel, Sam2VideoProcessor, Sam2VideoVideoProcessor)

    image_processor = Sam2ImageProcessor(size={"height": 64, "width": 64}, mask_size={"height": 16, "width": 16})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        if video:
            model = Sam2VideoModel(tiny_sam2_video_config())
            with torch.no_grad():
                model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(10.0)
            processor = Sam2VideoProcessor(image_processor=image_processor,
                                           video_processor=Sam2VideoVideoProcessor(size={"height": 64, "width": 64}))
        else:
            model = Sam2Model(Sam2Config(
                vision_config=_tiny_sam2_vision(16),
                prompt_encoder_config=Sam2PromptEncoderConfig(hidden_size=16, image_size=64, patch_size=16,
                                                              mask_input_channels=4),
                mask_decoder_config=Sam2MaskDecoderConfig(hidden_size=16, mlp_dim=32, num_attention_heads=2,
                                                          iou_head_hidden_dim=16)))
            processor = Sam2Processor(image_processor=image_processor)
        model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def write_random_cotracker3(path: str, seed: int = 0, drop: str | None = None) -> str:
    """A CoTracker3 checkpoint with random weights in the official layout ({"model": state_dict}); `drop` removes
    the tensors whose names contain it (for error-path tests)."""
    from det_core.cotracker import CoTracker3

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sd = CoTracker3(window_len=60).state_dict()
    if drop:
        sd = {k: v for k, v in sd.items() if drop not in k}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"model": sd}, path)
    return path
