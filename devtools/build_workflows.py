"""Build the example workflows in the real ComfyUI front end and save them (UI format) with thumbnails.

    .venv/bin/python -m devtools.build_workflows [NAME ...] [--check]

Each workflow is described below by its nodes (type, title, position, widget values by name) and links (by output
index and input name); the front end itself creates the nodes, so `widgets_values`, sockets and node sizes are
exactly what a user's save would hold. `--check` rebuilds in memory and fails if a shipped file differs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "workflows")

UNET = "hunyuan_video_t2v_720p_bf16.safetensors"
CLIP_L, LLAVA = "clip_l.safetensors", "llava_llama3_fp8_scaled.safetensors"
VAE = "hunyuan_video_vae_bf16.safetensors"
EXAMPLE_VIDEO = "det_example.mp4"

MODELS_NOTE = (
    "Model files (put them here, nothing is downloaded):\n"
    f"- models/diffusion_models/{UNET}\n"
    f"- models/text_encoders/{CLIP_L} and {LLAVA}\n"
    f"- models/vae/{VAE}\n"
    "- models/grounding-dino/grounding-dino-tiny/ (Hugging Face folder of IDEA-Research/grounding-dino-tiny)\n"
    "- models/sams/sam-vit-base/ (Hugging Face folder of facebook/sam-vit-base) or sam_vit_b_01ec64.pth\n"
    "- models/cotracker/scaled_offline.pth (CoTracker3 release)\n"
    "Adapters are written to models/det_adapters/."
)


def hv_loaders(x: int, y: int) -> list:
    return [
        ("unet", "UNETLoader", "Load Diffusion Model", (x, y), {"unet_name": UNET, "weight_dtype": "default"}),
        ("clip", "DualCLIPLoader", "DualCLIPLoader", (x, y + 130),
         {"clip_name1": CLIP_L, "clip_name2": LLAVA, "type": "hunyuan_video", "device": "default"}),
        ("vae", "VAELoader", "Load VAE", (x, y + 300), {"vae_name": VAE}),
    ]


def reference_nodes(x: int, y: int) -> list:
    """Video at (x, y); mask and tracks in the next two columns."""
    return [
        ("video", "DeTLoadVideo", "Reference video", (x, y), {
            "video": EXAMPLE_VIDEO, "frame_load_cap": 49, "skip_first_frames": 0, "select_every_nth": 1,
            "force_rate": 0.0, "width": 0, "height": 0, "snap_to_16": "crop", "trim_to_4k_plus_1": True}),
        ("dino", "DeTGroundingDinoLoader", "Load GroundingDINO (DeT)", (x + 440, y - 420),
         {"model_name": "grounding-dino-tiny", "device": "auto", "dtype": "auto"}),
        ("sam", "DeTSAMLoader", "Load SAM (DeT)", (x + 440, y - 270), {"model_name": "sam-vit-base", "device": "auto", "dtype": "auto"}),
        ("mask", "DeTGroundedSAMMask", "Reference mask", (x + 440, y - 100),
         {"prompt": "person", "box_threshold": 0.35, "text_threshold": 0.25, "mode": "per-frame"}),
        ("cotracker", "DeTCoTrackerLoader", "Load CoTracker3 (DeT)", (x + 440, y + 140),
         {"checkpoint": "scaled_offline.pth", "mode": "auto", "device": "auto", "dtype": "auto"}),
        ("tracks", "DeTCoTrackerTracks", "Reference tracks", (x + 440, y + 330),
         {"points": 100, "sampling": "mask-weighted", "query_frame": 0, "backward_tracking": False, "seed": 0,
          "control_after_generate": "fixed"}),
        ("mask_preview", "PreviewImage", "Mask preview", (x + 880, y - 420), {}, (380, 300)),
        ("track_preview", "PreviewImage", "Track preview", (x + 880, y - 80), {}, (380, 300)),
    ]


REFERENCE_LINKS = [
    ("video", 0, "mask", "images"), ("dino", 0, "mask", "grounding_dino"), ("sam", 0, "mask", "sam_model"),
    ("video", 0, "tracks", "images"), ("cotracker", 0, "tracks", "cotracker"), ("mask", 0, "tracks", "mask"),
    ("mask", 1, "mask_preview", "images"), ("tracks", 1, "track_preview", "images"),
]


def train_nodes(x: int, y: int) -> list:
    return [
        ("encode", "VAEEncode", "VAE Encode (reference)", (x, y + 260), {}),
        ("caption", "CLIPTextEncode", "Reference caption", (x, y + 380),
         {"text": "A woman wearing a blue dress is dancing on the ground in front of a lot of people."}),
        ("train", "DeTTrainAdapter", "Train DeT Adapter", (x + 440, y), {
            "steps": 500, "learning_rate": 1e-5, "mid_dim": 128, "kernel_size": 3, "double_blocks": "all",
            "single_blocks": "none", "tracking_weight": 0.1, "tracking_features": "x0", "feature_block": "double:19",
            "guidance": 6.0, "warmup_steps": 100, "optimizer": "auto", "seed": 0, "control_after_generate": "fixed",
            "output_name": "det_motion", "checkpoint_every": 100, "overwrite": False, "resume_from": "none",
            "swap_blocks": 0, "offload_activations": False, "caption": "A woman wearing a blue dress is dancing"}),
        ("loss_preview", "PreviewImage", "Loss curve", (x + 880, y), {}, (380, 300)),
    ]


TRAIN_LINKS = [
    ("video", 0, "encode", "pixels"), ("vae", 0, "encode", "vae"), ("clip", 0, "caption", "clip"),
    ("unet", 0, "train", "model"), ("encode", 0, "train", "latent"), ("caption", 0, "train", "conditioning"),
    ("tracks", 0, "train", "tracks"), ("train", 1, "loss_preview", "images"),
]


def apply_nodes(x: int, y: int, batch: int = 1) -> list:
    return [
        ("prompt", "CLIPTextEncode", "New prompt", (x, y + 380), {"text": "An astronaut is dancing on mars."}),
        ("empty", "EmptyHunyuanLatentVideo", "Empty video latent", (x, y + 640),
         {"width": 720, "height": 480, "length": 49, "batch_size": batch}),
        ("apply", "DeTApplyMotion", "Apply DeT Motion", (x + 440, y), {
            "seed": 42, "control_after_generate": "fixed", "steps": 30, "guidance": 6.0, "cfg": 1.0,
            "flow_shift": 7.0, "sampler_name": "euler", "scheduler": "simple", "strength": 1.0,
            "double_blocks": "trained", "single_blocks": "trained", "keep_fraction": 1.0}),
        ("decode", "VAEDecodeTiled", "VAE Decode (Tiled)", (x + 880, y),
         {"tile_size": 256, "overlap": 64, "temporal_size": 64, "temporal_overlap": 8}),
        ("to_video", "CreateVideo", "Create Video", (x + 880, y + 220), {"fps": 8.0}),
        ("save", "SaveVideo", "Save Video", (x + 1260, y), {"filename_prefix": "video/det", "format": "auto", "codec": "auto"}, (400, 360)),
    ]


APPLY_LINKS = [
    ("clip", 0, "prompt", "clip"), ("unet", 0, "apply", "model"), ("prompt", 0, "apply", "positive"),
    ("empty", 0, "apply", "latent"), ("apply", 0, "decode", "samples"), ("vae", 0, "decode", "vae"),
    ("decode", 0, "to_video", "images"), ("to_video", 0, "save", "video"),
]


WAN_HIGH, WAN_LOW = "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"
UMT5, WAN_VAE = "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan_2.1_vae.safetensors"
WAN_NOTE = (
    "Model files (put them here, nothing is downloaded):\n"
    f"- models/diffusion_models/{WAN_HIGH} and {WAN_LOW}\n"
    f"- models/text_encoders/{UMT5}\n"
    f"- models/vae/{WAN_VAE}\n"
    "- models/grounding-dino/grounding-dino-tiny/, models/sams/sam-vit-base/, models/cotracker/scaled_offline.pth "
    "(as in det_motion_transfer)\n"
    "Adapters are written to models/det_adapters/."
)
WAN_NEGATIVE = "blurry, static, distorted, low quality, watermark, text"


def wan22_nodes() -> list:
    """Wan 2.2 T2V A14B: the adapter trains on the high-noise expert's own noise range (timesteps 875-1000) with the
    authors' Wan settings, and drives the high-noise steps of a two-expert sampling."""
    caption = "A woman wearing a blue dress is dancing on the ground in front of a lot of people."
    return [
        ("unet", "UNETLoader", "High-noise expert", (40, 40), {"unet_name": WAN_HIGH, "weight_dtype": "default"}),
        ("unet_low", "UNETLoader", "Low-noise expert", (40, 170), {"unet_name": WAN_LOW, "weight_dtype": "default"}),
        ("clip", "CLIPLoader", "Load CLIP", (40, 300), {"clip_name": UMT5, "type": "wan", "device": "default"}),
        ("vae", "VAELoader", "Load VAE", (40, 440), {"vae_name": WAN_VAE}),
        *reference_nodes(40, 560),
        ("encode", "VAEEncode", "VAE Encode (reference)", (1360, 300), {}),
        ("caption", "CLIPTextEncode", "Reference caption", (1360, 420), {"text": caption}),
        ("train", "DeTTrainAdapter", "Train DeT Adapter (high-noise expert)", (1800, 40), {
            "steps": 500, "learning_rate": 1e-6, "mid_dim": 128, "kernel_size": 5, "double_blocks": "all",
            "single_blocks": "none", "tracking_weight": 0.1, "tracking_features": "x0", "feature_block": "blocks:39",
            "guidance": 6.0, "warmup_steps": 100, "optimizer": "auto", "seed": 0, "control_after_generate": "fixed",
            "output_name": "det_motion_wan22", "checkpoint_every": 100, "overwrite": False, "resume_from": "none",
            "swap_blocks": 0, "offload_activations": False, "caption": caption, "tracking_max_timestep": 1000.0,
            "memory": "auto", "vram_budget_gib": 0.0, "timestep_sampling": "logit_normal", "timestep_min": 875.0,
            "timestep_max": 1000.0}),
        ("loss_preview", "PreviewImage", "Loss curve", (2240, 40), {}, (380, 300)),
        ("prompt", "CLIPTextEncode", "New prompt", (2680, 420), {"text": "An astronaut is dancing on mars."}),
        ("negative", "CLIPTextEncode", "Negative prompt", (2680, 640), {"text": WAN_NEGATIVE}),
        ("empty", "EmptyHunyuanLatentVideo", "Empty video latent", (2680, 860),
         {"width": 832, "height": 480, "length": 49, "batch_size": 1}),
        ("apply", "DeTApplyMotion", "Apply DeT Motion (two experts)", (3120, 40), {
            "seed": 42, "control_after_generate": "fixed", "steps": 50, "guidance": 6.0, "cfg": 5.0,
            "flow_shift": 5.0, "sampler_name": "uni_pc", "scheduler": "simple", "strength": 1.0,
            "double_blocks": "trained", "single_blocks": "none", "keep_fraction": 0.375, "boundary": 0.875}),
        ("decode", "VAEDecode", "VAE Decode", (3560, 40), {}),
        ("to_video", "CreateVideo", "Create Video", (3560, 220), {"fps": 16.0}),
        ("save", "SaveVideo", "Save Video", (3940, 40), {"filename_prefix": "video/det_wan22", "format": "auto",
                                                       "codec": "auto"}, (400, 360)),
    ]


WAN22_LINKS = [
    *REFERENCE_LINKS, ("video", 0, "encode", "pixels"), ("vae", 0, "encode", "vae"), ("clip", 0, "caption", "clip"),
    ("unet", 0, "train", "model"), ("encode", 0, "train", "latent"), ("caption", 0, "train", "conditioning"),
    ("tracks", 0, "train", "tracks"), ("train", 1, "loss_preview", "images"),
    ("clip", 0, "prompt", "clip"), ("clip", 0, "negative", "clip"), ("unet", 0, "apply", "model"),
    ("unet_low", 0, "apply", "low_noise_model"), ("train", 0, "apply", "adapter"), ("prompt", 0, "apply", "positive"),
    ("negative", 0, "apply", "negative"), ("empty", 0, "apply", "latent"), ("apply", 0, "decode", "samples"),
    ("vae", 0, "decode", "vae"), ("decode", 0, "to_video", "images"), ("to_video", 0, "save", "video"),
]


REFERENCE_CAPTION = "A woman wearing a blue dress is dancing on the ground in front of a lot of people."
NEGATIVE = WAN_NEGATIVE
"""The negative prompt of every workflow that samples with cfg > 1."""


def one_model_nodes(loaders: list, train: dict, empty: tuple, apply: dict, decode: tuple) -> list:
    """A motion transfer on one video model (the layout of det_wan22_motion_transfer): `loaders` (unet, clip, vae),
    the reference, Train DeT Adapter with the model's own `train` settings, a new and a negative prompt, the
    model's empty latent (`empty`: node type and widget values), Apply DeT Motion with `apply` and the `decode`
    node (type, title, widget values)."""
    train_values = {
        "steps": 500, "mid_dim": 128, "double_blocks": "all", "single_blocks": "none", "tracking_weight": 0.1,
        "tracking_features": "x0", "guidance": 6.0, "warmup_steps": 100, "optimizer": "auto", "seed": 0,
        "control_after_generate": "fixed", "checkpoint_every": 100, "overwrite": False, "resume_from": "none",
        "swap_blocks": 0, "offload_activations": False, "caption": REFERENCE_CAPTION, "tracking_max_timestep": 400.0,
        "memory": "auto", "vram_budget_gib": 0.0, "timestep_min": 0.0, "timestep_max": 1000.0, **train}
    apply_values = {"seed": 42, "control_after_generate": "fixed", "guidance": 6.0, "scheduler": "simple",
                    "strength": 1.0, "double_blocks": "trained", "single_blocks": "none", **apply}
    return [
        *loaders,
        *reference_nodes(40, 560),
        ("encode", "VAEEncode", "VAE Encode (reference)", (1360, 300), {}),
        ("caption", "CLIPTextEncode", "Reference caption", (1360, 420), {"text": REFERENCE_CAPTION}),
        ("train", "DeTTrainAdapter", "Train DeT Adapter", (1800, 40), train_values),
        ("loss_preview", "PreviewImage", "Loss curve", (2240, 40), {}, (380, 300)),
        ("prompt", "CLIPTextEncode", "New prompt", (2680, 420), {"text": "An astronaut is dancing on mars."}),
        ("negative", "CLIPTextEncode", "Negative prompt", (2680, 640), {"text": NEGATIVE}),
        ("empty", empty[0], "Empty video latent", (2680, 860), empty[1]),
        ("apply", "DeTApplyMotion", "Apply DeT Motion", (3120, 40), apply_values),
        ("decode", decode[0], decode[1], (3560, 40), decode[2]),
        ("to_video", "CreateVideo", "Create Video", (3560, 260), {"fps": 8.0}),
        ("save", "SaveVideo", "Save Video", (3940, 40), {"filename_prefix": f"video/{train['output_name']}",
                                                       "format": "auto", "codec": "auto"}, (400, 360)),
    ]


ONE_MODEL_LINKS = [
    *REFERENCE_LINKS, ("video", 0, "encode", "pixels"), ("vae", 0, "encode", "vae"), ("clip", 0, "caption", "clip"),
    ("unet", 0, "train", "model"), ("encode", 0, "train", "latent"), ("caption", 0, "train", "conditioning"),
    ("tracks", 0, "train", "tracks"), ("train", 1, "loss_preview", "images"),
    ("clip", 0, "prompt", "clip"), ("clip", 0, "negative", "clip"), ("unet", 0, "apply", "model"),
    ("train", 0, "apply", "adapter"), ("prompt", 0, "apply", "positive"), ("negative", 0, "apply", "negative"),
    ("empty", 0, "apply", "latent"), ("apply", 0, "decode", "samples"), ("vae", 0, "decode", "vae"),
    ("decode", 0, "to_video", "images"), ("video", 1, "to_video", "fps"), ("to_video", 0, "save", "video"),
]
"""The reference's frame rate drives the saved video: its frames map one to one onto the generated ones."""

WAN21_14B, WAN21_1_3B = "wan2.1_t2v_14B_fp16.safetensors", "wan2.1_t2v_1.3B_fp16.safetensors"
WAN21_NOTE = (
    "Model files (put them here, nothing is downloaded):\n"
    f"- models/diffusion_models/{WAN21_14B} (or {WAN21_1_3B}: choose it on Load Diffusion Model)\n"
    f"- models/text_encoders/{UMT5}\n"
    f"- models/vae/{WAN_VAE}\n"
    "- models/grounding-dino/grounding-dino-tiny/, models/sams/sam-vit-base/, models/cotracker/scaled_offline.pth "
    "(as in det_motion_transfer)\n"
    "Adapters are written to models/det_adapters/."
)
WAN21_HOW = (
    "DeT on Wan 2.1 T2V (14B or 1.3B) with the DeT authors' Wan 2.1 14B settings: lr 1e-6, kernel 5, logit-normal "
    "timesteps, cfg 5 with a negative prompt, shift 5, UniPC 50 steps, 832x480, 49 frames, adapters applied in "
    "the first 15 of 40 blocks (keep_fraction 0.375; on 1.3B the first 12 of 30). EXPERIMENTAL: the DeT author "
    "reports that DeT does not run properly on Wan (tried on 1.3B) because Wan's attention is not local in time as "
    "HunyuanVideo's is; look at your model with Attention Locality (DeT) before a long training.")

HV15_UNET = "hunyuanvideo1.5_720p_t2v_fp16.safetensors"
QWEN, BYT5 = "qwen_2.5_vl_7b.safetensors", "byt5_small_glyphxl_fp16.safetensors"
HV15_VAE = "hunyuanvideo15_vae_fp16.safetensors"
HV15_NOTE = (
    "Model files (put them here, nothing is downloaded):\n"
    f"- models/diffusion_models/{HV15_UNET}\n"
    f"- models/text_encoders/{QWEN} (or qwen_2.5_vl_7b_fp8_scaled.safetensors) and {BYT5}\n"
    f"- models/vae/{HV15_VAE}\n"
    "- models/grounding-dino/grounding-dino-tiny/, models/sams/sam-vit-base/, models/cotracker/scaled_offline.pth "
    "(as in det_motion_transfer)\n"
    "Adapters are written to models/det_adapters/."
)
HV15_HOW = (
    "DeT on HunyuanVideo 1.5 T2V with settings derived from HunyuanVideo's (the DeT authors did not run it): lr "
    "1e-5, kernel 3, uniform timesteps, adapters in all 54 double-stream blocks and all applied, 848x480, 49 "
    "frames, euler 50 steps, shift 7. It is not guidance-distilled: cfg 6 with a negative prompt (embedded "
    "guidance is ignored).")


def wan21_nodes() -> list:
    return one_model_nodes(
        [("unet", "UNETLoader", "Load Diffusion Model", (40, 40), {"unet_name": WAN21_14B, "weight_dtype": "default"}),
         ("clip", "CLIPLoader", "Load CLIP", (40, 170), {"clip_name": UMT5, "type": "wan", "device": "default"}),
         ("vae", "VAELoader", "Load VAE", (40, 310), {"vae_name": WAN_VAE})],
        train={"learning_rate": 1e-6, "kernel_size": 5, "feature_block": "blocks:29", "output_name": "det_motion_wan21",
               "timestep_sampling": "logit_normal"},
        empty=("EmptyHunyuanLatentVideo", {"width": 832, "height": 480, "length": 49, "batch_size": 1}),
        apply={"steps": 50, "cfg": 5.0, "flow_shift": 5.0, "sampler_name": "uni_pc", "keep_fraction": 0.375},
        decode=("VAEDecode", "VAE Decode", {}))


def hunyuan15_nodes() -> list:
    return one_model_nodes(
        [("unet", "UNETLoader", "Load Diffusion Model", (40, 40), {"unet_name": HV15_UNET, "weight_dtype": "default"}),
         ("clip", "DualCLIPLoader", "DualCLIPLoader", (40, 170),
          {"clip_name1": QWEN, "clip_name2": BYT5, "type": "hunyuan_video_15", "device": "default"}),
         ("vae", "VAELoader", "Load VAE", (40, 340), {"vae_name": HV15_VAE})],
        train={"learning_rate": 1e-5, "kernel_size": 3, "feature_block": "double:53",
               "output_name": "det_motion_hunyuan15", "timestep_sampling": "uniform"},
        empty=("EmptyHunyuanVideo15Latent", {"width": 848, "height": 480, "length": 49, "batch_size": 1}),
        apply={"steps": 50, "cfg": 6.0, "flow_shift": 7.0, "sampler_name": "euler", "keep_fraction": 1.0},
        decode=("VAEDecodeTiled", "VAE Decode (Tiled)",
                {"tile_size": 256, "overlap": 64, "temporal_size": 64, "temporal_overlap": 8}))


def note(key, pos, text, size=(420, 260)):
    return (key, "Note", "Note", pos, {"text": text}, size)


WORKFLOWS = {
    "det_motion_transfer": {
        "nodes": [*hv_loaders(40, 40), *reference_nodes(40, 560), *train_nodes(1360, 40), *apply_nodes(2680, 40),
                  note("models", (40, -420), MODELS_NOTE, (820, 300)),
                  note("how", (1360, -420), "DeT motion transfer: the reference video's subject is masked (GroundedSAM), "
                       "tracked (CoTracker3), and its motion is learned by Train DeT Adapter (about an hour on an A100 "
                       "for 500 steps). Apply DeT Motion then samples the new prompt with that motion. Put your video in "
                       "ComfyUI's input folder (or upload it on Reference video) and write its caption.", (820, 200))],
        "links": [*REFERENCE_LINKS, *TRAIN_LINKS, *APPLY_LINKS, ("train", 0, "apply", "adapter"),
                  ("video", 1, "to_video", "fps")],
    },
    "det_train_adapter": {
        "nodes": [*hv_loaders(40, 40), *reference_nodes(40, 560), *train_nodes(1360, 40),
                  note("models", (40, -420), MODELS_NOTE, (820, 300)),
                  note("how", (1360, -420), "Trains a DeT adapter and stops: it is saved as models/det_adapters/"
                       "det_motion.safetensors (every 100 steps, at the end and when you press Cancel). Use it later "
                       "with det_apply_adapter; set resume_from to continue training.", (700, 160))],
        "links": [*REFERENCE_LINKS, *TRAIN_LINKS],
    },
    "det_apply_adapter": {
        "nodes": [*hv_loaders(40, 40),
                  ("adapter", "DeTLoadAdapter", "Load DeT Adapter", (40, 420), {"adapter_name": "det_motion.safetensors"}),
                  *apply_nodes(480, -340, batch=2),
                  note("models", (40, -260), "Model files:\n"
                       f"- models/diffusion_models/{UNET}\n- models/text_encoders/{CLIP_L} and {LLAVA}\n"
                       f"- models/vae/{VAE}\n- models/det_adapters/det_motion.safetensors (from Train DeT Adapter)",
                       (700, 200)),
                  note("how", (800, -260), "A saved adapter with a new prompt; batch_size 2 samples two seeds at once. "
                       "Lower keep_fraction to apply the adapter only in the first blocks, or strength to weaken it.",
                       (600, 160))],
        "links": [*APPLY_LINKS, ("adapter", 0, "apply", "adapter")],
    },
    "det_wan22_motion_transfer": {
        "nodes": [*wan22_nodes(), note("models", (40, -420), WAN_NOTE, (820, 300)),
                  note("how", (1360, -420), "DeT on Wan 2.2 T2V A14B with the DeT authors' Wan settings (lr 1e-6, "
                       "kernel 5, logit-normal timesteps, cfg 5 with a negative prompt, shift 5, UniPC 50 steps, "
                       "adapters applied in the first 15 of 40 blocks). The adapter trains on the high-noise expert "
                       "at timesteps 875-1000 only, with the tracking loss on all of them; Apply DeT Motion runs the "
                       "adapted high-noise expert while sigma >= 0.875 and the low-noise expert after, as ComfyUI's "
                       "two-sampler Wan 2.2 workflows do (for Wan 2.1: det_motion_transfer_wan21). EXPERIMENTAL: "
                       "the DeT author reports that DeT does not run properly on Wan because Wan's attention is not "
                       "local in time as HunyuanVideo's is; look at your model with Attention Locality (DeT) before "
                       "a long training.", (1200, 220))],
        "links": WAN22_LINKS,
    },
    "det_motion_transfer_wan21": {
        "nodes": [*wan21_nodes(), note("models", (40, -420), WAN21_NOTE, (820, 300)),
                  note("how", (1360, -420), WAN21_HOW, (1200, 220))],
        "links": ONE_MODEL_LINKS,
    },
    "det_motion_transfer_hunyuan15": {
        "nodes": [*hunyuan15_nodes(), note("models", (40, -420), HV15_NOTE, (820, 300)),
                  note("how", (1360, -420), HV15_HOW, (1200, 220))],
        "links": ONE_MODEL_LINKS,
    },
    "det_evaluate": {
        "nodes": [
            ("generated", "DeTLoadVideo", "Generated video", (40, 40), {
                "video": "det_generated.mp4", "frame_load_cap": 49, "skip_first_frames": 0, "select_every_nth": 1,
                "force_rate": 0.0, "width": 0, "height": 0, "snap_to_16": "off", "trim_to_4k_plus_1": False}),
            ("video", "DeTLoadVideo", "Reference video", (40, 480), {
                "video": EXAMPLE_VIDEO, "frame_load_cap": 49, "skip_first_frames": 0, "select_every_nth": 1,
                "force_rate": 0.0, "width": 0, "height": 0, "snap_to_16": "off", "trim_to_4k_plus_1": False}),
            ("cotracker", "DeTCoTrackerLoader", "Load CoTracker3 (DeT)", (440, 40),
             {"checkpoint": "scaled_offline.pth", "mode": "auto", "device": "auto", "dtype": "auto"}),
            ("eval_models", "DeTLoadEvalModels", "Load Eval Models (DeT)", (440, 220),
             {"clip": "clip-vit-base-patch32", "dino": "dino-vitb16", "device": "auto"}),
            ("score", "DeTMotionFidelity", "Motion Fidelity (DeT)", (840, 40), {
                "mode": "frechet", "alpha": 0.5, "points": 100, "prompt": "An astronaut is dancing on mars."}),
            ("report", "PreviewAny", "Scores", (1240, 40), {}),
            note("models", (40, -260), "Model files:\n- models/cotracker/scaled_offline.pth (CoTracker3 release)\n"
                 "- models/det_eval/clip-vit-base-patch32/ (Hugging Face folder of openai/clip-vit-base-patch32)\n"
                 "- models/det_eval/dino-vitb16/ (Hugging Face folder of facebook/dino-vitb16)\n"
                 "Motion fidelity needs only CoTracker3; edit fidelity needs CLIP, temporal consistency DINO.", (700, 200)),
        ],
        "links": [("generated", 0, "score", "generated"), ("video", 0, "score", "source"),
                  ("cotracker", 0, "score", "cotracker"), ("eval_models", 0, "score", "eval_models"),
                  ("score", 3, "report", "source")],
    },
}

BUILD_JS = """
async (spec) => {
  const g = window.app.graph;
  g.clear();
  const made = {};
  for (const [key, type, title, pos, values, size] of spec.nodes) {
    const n = LiteGraph.createNode(type);
    if (!n) throw new Error("unknown node type " + type);
    n.title = title;
    n.pos = pos;
    for (const w of (n.widgets || [])) {
      if (Object.prototype.hasOwnProperty.call(values, w.name)) w.value = values[w.name];
    }
    if (size) n.size = size;
    g.add(n);
    made[key] = n;
  }
  for (const [src, slot, dst, input] of spec.links) {
    const to = made[dst], from = made[src];
    const idx = to.findInputSlot(input);
    if (idx < 0) throw new Error(`${dst} has no input ${input}`);
    from.connect(slot, to, idx);
  }
  window.app.canvas.setDirty(true, true);
  return true;
}
"""

FIT_JS = """
() => {
  window.app.canvas.min_font_size_for_lod = 0;  // draw titles and widgets at any zoom
  const nodes = window.app.graph._nodes;
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const n of nodes) { x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - 30);
                           x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]); }
  const c = window.app.canvas, W = c.canvas.width, H = c.canvas.height;
  const s = Math.min(W / (x1 - x0 + 80), H / (y1 - y0 + 80));
  c.ds.scale = s;
  c.ds.offset = [-x0 + 40 / s, -y0 + 40 / s];
  c.setDirty(true, true);
}
"""


def comparable(wf: dict) -> tuple:
    """What a rebuild must reproduce: each node's id, type, title and widget values, and the links."""
    return ([(n["id"], n["type"], n.get("title"), n.get("widgets_values")) for n in wf["nodes"]],
            [link[:5] for link in wf["links"]])


def stale(built: dict, folder: str) -> list[str]:
    """Names of the workflows whose file in `folder` is missing or differs from the fresh build."""
    out = []
    for name, (wf, _jpg, _png) in built.items():
        path = os.path.join(folder, name + ".json")
        if not os.path.isfile(path):
            out.append(f"{name} (no {path})")
            continue
        with open(path) as f:
            if comparable(json.load(f)) != comparable(wf):
                out.append(name)
    return out


def build_all(url: str, names=None) -> dict[str, tuple[dict, bytes]]:
    """name -> (UI workflow, JPEG thumbnail) built in the front end served at `url`."""
    from PIL import Image

    from .browser import comfy_page

    out = {}
    with comfy_page(url, width=2800, height=1400) as (page, _messages):
        for name, spec in WORKFLOWS.items():
            if names and name not in names:
                continue
            nodes = [list(n) + [None] * (6 - len(n)) for n in spec["nodes"]]
            page.evaluate(BUILD_JS, {"nodes": nodes, "links": spec["links"]})
            wf = page.evaluate("() => window.app.graph.serialize()")
            page.evaluate(FIT_JS)
            page.wait_for_timeout(600)
            png = page.screenshot()
            img = Image.open(io.BytesIO(png)).convert("RGB")
            img.thumbnail((800, 500))
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=82)
            out[name] = (wf, buf.getvalue(), png)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host-dir", default=os.path.join(ROOT, ".comfyui"))
    parser.add_argument("--out", default=OUT)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"build only these (default: all of {', '.join(WORKFLOWS)})")
    parser.add_argument("--check", action="store_true",
                        help="rebuild in memory, write nothing, exit 1 if a shipped workflow is missing or differs")
    ns = parser.parse_args(argv)
    unknown = [n for n in ns.names if n not in WORKFLOWS]
    if unknown:
        parser.error(f"unknown workflow {', '.join(unknown)}; the builder knows {', '.join(WORKFLOWS)}")
    import tempfile

    from det_tools.host import ComfyServer, prepare_base_dir

    with tempfile.TemporaryDirectory() as tmp:
        base = prepare_base_dir(tmp)
        with ComfyServer(ns.host_dir, base_dir=base, log_path=os.path.join(tmp, "server.log")) as server:
            built = build_all(server.url, ns.names)
    if ns.check:
        bad = stale(built, ns.out)
        for name in bad:
            print(f"stale: {name}; run .venv/bin/python -m devtools.build_workflows", file=sys.stderr)
        if not bad:
            print(f"{len(built)} workflows in {ns.out} match what the builder makes today")
        return 1 if bad else 0
    os.makedirs(ns.out, exist_ok=True)
    for name, (wf, jpg, png) in built.items():
        with open(os.path.join(ns.out, name + ".json"), "w") as f:
            json.dump(wf, f, indent=1)
        with open(os.path.join(ns.out, name + ".jpg"), "wb") as f:
            f.write(jpg)
        if name == "det_motion_transfer":
            with open(os.path.join(ROOT, "docs", "det_motion_transfer.png") if os.path.isdir(os.path.join(ROOT, "docs"))
                      else os.path.join(ns.out, name + ".png"), "wb") as f:
                f.write(png)
        print(f"wrote {os.path.join(ns.out, name)}.json and .jpg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
