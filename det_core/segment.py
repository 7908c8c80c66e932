"""GroundedSAM masks: GroundingDINO finds boxes from a text prompt, SAM turns the boxes into a mask.

Two ways to a mask per frame:

    per-frame (`grounded_masks`, any SAM): every frame is detected on its own
        frame -> GroundingDINO(prompt) -> boxes above box_threshold -> SAM(boxes) -> union of the box masks
    propagate (`propagated_masks`, SAM 2 video): one detection, then tracking
        frame 0 -> GroundingDINO(prompt) -> boxes -> one SAM 2 object per box -> SAM 2 memory propagation
        through all frames -> union of the object masks (the same subject on every frame)

Models are Hugging Face `transformers` models read from local folders only (`local_files_only=True`); the user
downloads them once into ComfyUI's `models/grounding-dino` and `models/sams` folders. An original
segment-anything `.pth` checkpoint (as other packs keep in `models/sams`) is also accepted: its keys are renamed
to transformers' `SamModel` layout and its config is read from the tensor shapes.

Thresholds, resizing and `no_grad` live in the thin functions here; the models are the stock transformers ones.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .hf_folder import PREPROCESSOR, WEIGHTS, FolderSpec, check_folder
from .video import to_uint8

GROUNDING_DINO_REPOS = ("IDEA-Research/grounding-dino-tiny", "IDEA-Research/grounding-dino-base")
SAM_REPOS = ("facebook/sam-vit-base", "facebook/sam-vit-large", "facebook/sam-vit-huge")
SAM2_REPOS = ("facebook/sam2.1-hiera-tiny", "facebook/sam2.1-hiera-small", "facebook/sam2.1-hiera-base-plus",
              "facebook/sam2.1-hiera-large")
SAM_CHECKPOINTS = ("sam_vit_b_01ec64.pth", "sam_vit_l_0b3195.pth", "sam_vit_h_4b8939.pth")
SAM_CHECKPOINT_EXTS = (".pth", ".pt")
SAM_DECODER_HEADS = 8
"""Attention heads of SAM's mask decoder: fixed at 8 in every released SAM and not readable from shapes."""
BOX_CHUNK = 32
"""Boxes sent through SAM's mask decoder at once (the image is encoded once per frame)."""

Detector = Callable[..., "tuple[torch.Tensor, torch.Tensor, list[str]]"]


# ----------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------

DINO_SPEC = FolderSpec(
    "GroundingDINO",
    (("config.json",), WEIGHTS, PREPROCESSOR, ("tokenizer.json", "vocab.txt"), ("tokenizer_config.json",)),
    GROUNDING_DINO_REPOS, "grounding-dino")
SAM_SPEC = FolderSpec("SAM", (("config.json",), WEIGHTS, PREPROCESSOR), SAM_REPOS, "sams")
SAM2_SPEC = FolderSpec("SAM 2", (("config.json",), WEIGHTS, PREPROCESSOR), SAM2_REPOS, "sams")
SAM2_MODEL_TYPES = ("sam2", "sam2_video")
"""config model_types of SAM 2 folders: 'sam2_video' (the facebook/sam2.1-* releases: image + memory weights) loads
as the image model too; 'sam2' (image-only conversions) cannot propagate."""
SAM2_VIDEO_PREFIXES = ("memory_attention.", "memory_encoder.")
"""Weights only a SAM 2 video checkpoint has (the memory that carries an object from frame to frame)."""


def _model_type(folder: str) -> str:
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        return str(json.load(f).get("model_type", ""))


def _finish(model: torch.nn.Module, device, dtype: torch.dtype) -> torch.nn.Module:
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_grounding_dino(folder: str, device="cpu", dtype: torch.dtype = torch.float32):
    """GroundingDINO (model, processor) from a local Hugging Face folder (no network)."""
    from transformers import AutoProcessor, GroundingDinoForObjectDetection

    folder = os.fspath(folder)
    check_folder(folder, DINO_SPEC)
    model = GroundingDinoForObjectDetection.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    return _finish(model, device, dtype), processor


def _sam_classes(model_type: str):
    """transformers (model class, processor class) for a SAM config `model_type`."""
    import transformers

    names = {"sam": ("SamModel", "SamProcessor"), "sam2": ("Sam2Model", "Sam2Processor"),
             "sam2_video": ("Sam2Model", "Sam2Processor")}  # a video checkpoint holds the image model's weights
    if model_type not in names:
        raise ValueError(f"config model_type {model_type!r} is not a SAM model; expected one of {', '.join(names)}")
    model_name, proc_name = names[model_type]
    if not hasattr(transformers, model_name):
        raise RuntimeError(f"{model_name} needs a newer transformers than {transformers.__version__}; "
                           f"upgrade transformers to load {model_type} models")
    return getattr(transformers, model_name), getattr(transformers, proc_name)


def _load_sam_folder(folder: str, spec: FolderSpec, device, dtype):
    check_folder(folder, spec)
    model_cls, proc_cls = _sam_classes(_model_type(folder))
    model = model_cls.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    processor = proc_cls.from_pretrained(folder, local_files_only=True)
    return _finish(model, device, dtype), processor


def load_sam(path: str, device="cpu", dtype: torch.dtype = torch.float32):
    """SAM (model, processor) from a local Hugging Face folder or an original segment-anything `.pth` file.

    A folder whose config says `sam2` loads as SAM 2 (same as `load_sam2`).
    """
    path = os.fspath(path)
    if path.lower().endswith(SAM_CHECKPOINT_EXTS) and not os.path.isdir(path):
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"SAM checkpoint not found: {path}; put an original segment-anything checkpoint "
                f"({', '.join(SAM_CHECKPOINTS)}) in ComfyUI/models/sams/, or give a Hugging Face SAM folder")
        return load_sam_checkpoint(path, device, dtype)
    return _load_sam_folder(path, SAM_SPEC, device, dtype)


def load_sam2(folder: str, device="cpu", dtype: torch.dtype = torch.float32):
    """SAM 2 (model, processor) from a local Hugging Face folder (transformers `Sam2Model`, image mode).

    Both SAM 2 folder kinds load: 'sam2' (image only) and 'sam2_video' (the facebook/sam2.1-* releases, whose
    memory weights the image model leaves unused)."""
    folder = os.fspath(folder)
    check_folder(folder, SAM2_SPEC)
    if _model_type(folder) not in SAM2_MODEL_TYPES:
        raise ValueError(f"{folder} holds a {_model_type(folder)!r} model, not SAM 2; load it with load_sam")
    return _load_sam_folder(folder, SAM2_SPEC, device, dtype)


def _weight_names(folder: str) -> list[str]:
    """Tensor names of a folder's safetensors weights, read from the headers (no tensor is loaded)."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            return list(json.load(f).get("weight_map", {}))
    from safetensors import safe_open

    with safe_open(os.path.join(folder, "model.safetensors"), framework="pt") as f:
        return list(f.keys())


def load_sam2_video(folder: str, device="cpu", dtype: torch.dtype = torch.float32):
    """SAM 2 video (model, processor) from a local Hugging Face folder: transformers `Sam2VideoModel` and
    `Sam2VideoProcessor`, for `propagated_masks`.

    The folder must hold a SAM 2 video checkpoint (model_type 'sam2_video', as facebook/sam2.1-hiera-* are): its
    memory encoder and memory attention carry the objects from frame to frame. An image-only SAM 2 folder lacks
    those weights and is refused with a message saying which folder to get.
    """
    import transformers

    folder = os.fspath(folder)
    check_folder(folder, SAM2_SPEC)
    model_type = _model_type(folder)
    if model_type not in SAM2_MODEL_TYPES:
        raise ValueError(f"{folder} holds a {model_type!r} model, not SAM 2: propagation needs a SAM 2 video folder "
                         f"(config model_type 'sam2_video'), such as {', '.join(SAM2_REPOS)}, in ComfyUI/models/sam2/")
    if not hasattr(transformers, "Sam2VideoModel"):
        raise RuntimeError(f"Sam2VideoModel needs a newer transformers than {transformers.__version__}; upgrade "
                           f"transformers to propagate SAM 2 masks")
    # 1. the memory weights must be in the file: an image-only folder would load them as random numbers
    names = _weight_names(folder)
    lacking = [p.rstrip(".") for p in SAM2_VIDEO_PREFIXES if not any(n.startswith(p) for n in names)]
    if lacking:
        raise ValueError(
            f"{folder} is an image-only SAM 2 folder (model_type {model_type!r}, no {' or '.join(lacking)} weights): "
            f"propagation needs a SAM 2 video checkpoint (config model_type 'sam2_video', with the memory encoder and "
            f"memory attention), such as {', '.join(SAM2_REPOS)}; download one from Hugging Face into "
            f"ComfyUI/models/sam2/, or use the per-frame mode with this folder")
    # 2. model and processor; any weight still missing is an error, not a random init
    model, info = transformers.Sam2VideoModel.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                                              output_loading_info=True)
    missing = sorted(info.get("missing_keys", ()))
    if missing:
        raise ValueError(f"{folder}: the SAM 2 weights do not fit transformers' Sam2VideoModel: {len(missing)} missing "
                         f"({', '.join(missing[:8])}); give an unmodified SAM 2 folder such as {SAM2_REPOS[0]}")
    processor = transformers.Sam2VideoProcessor.from_pretrained(folder, local_files_only=True)
    return _finish(model, device, dtype), processor


# ----------------------------------------------------------------------------------------------------------
# Original segment-anything checkpoints
# ----------------------------------------------------------------------------------------------------------

# original key pattern -> transformers SamModel key, applied in order (the MLP heads are renumbered apart)
_SAM_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^image_encoder\.", "vision_encoder."),
    (r"\.patch_embed\.proj\.", ".patch_embed.projection."),
    (r"\.blocks\.(\d+)\.", r".layers.\1."),
    (r"\.neck\.0\.", ".neck.conv1."),
    (r"\.neck\.1\.", ".neck.layer_norm1."),
    (r"\.neck\.2\.", ".neck.conv2."),
    (r"\.neck\.3\.", ".neck.layer_norm2."),
    (r"\.norm(\d)\.", r".layer_norm\1."),
    (r"\.norm_final_attn\.", ".layer_norm_final_attn."),
    (r"\.pe_layer\.positional_encoding_gaussian_matrix$", ".shared_embedding.positional_embedding"),
    (r"\.point_embeddings\.(\d+)\.", r".point_embed.\1."),
    (r"\.mask_downscaling\.0\.", ".mask_embed.conv1."),
    (r"\.mask_downscaling\.1\.", ".mask_embed.layer_norm1."),
    (r"\.mask_downscaling\.3\.", ".mask_embed.conv2."),
    (r"\.mask_downscaling\.4\.", ".mask_embed.layer_norm2."),
    (r"\.mask_downscaling\.6\.", ".mask_embed.conv3."),
    (r"\.output_upscaling\.0\.", ".upscale_conv1."),
    (r"\.output_upscaling\.1\.", ".upscale_layer_norm."),
    (r"\.output_upscaling\.3\.", ".upscale_conv2."),
)
# the MLP heads: original `layers.j` (j = 0..n-1) -> proj_in, layers.(j-1), proj_out
_SAM_MLP = re.compile(r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.(\d+)\.(.*)$")
_SAM_DROPPED = ("pixel_mean", "pixel_std")


def _count(sd: dict, pattern: str) -> int:
    """How many distinct indices fill the `(\\d+)` group of `pattern` in the keys of `sd`."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def _shape(sd: dict, key: str) -> tuple[int, ...]:
    if key not in sd:
        example = ", ".join(sorted(sd)[:4])
        raise ValueError(f"not an original segment-anything SAM checkpoint: key {key!r} is missing "
                         f"(the file has keys like {example}); give sam_vit_b/l/h .pth files or a Hugging Face folder")
    return tuple(sd[key].shape)


def convert_sam_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original segment-anything keys -> transformers `SamModel` keys (tensors are shared, not copied)."""
    depths: dict[str, int] = {}
    for k in sd:
        if m := _SAM_MLP.match(k):
            depths[m.group(1)] = max(depths.get(m.group(1), 0), int(m.group(2)) + 1)
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key in _SAM_DROPPED:
            continue
        new = key
        if m := _SAM_MLP.match(key):
            head, j, rest = m.group(1), int(m.group(2)), m.group(3)
            part = "proj_in" if j == 0 else "proj_out" if j == depths[head] - 1 else f"layers.{j - 1}"
            new = f"{head}.{part}.{rest}"
        for pattern, repl in _SAM_RENAMES:
            new = re.sub(pattern, repl, new)
        out[new] = value
    # SamModel keeps a second copy of the prompt encoder's random Fourier matrix for the image grid
    pe = "prompt_encoder.shared_embedding.positional_embedding"
    if pe in out:
        out["shared_image_embedding.positional_embedding"] = out[pe]
    return out


def sam_config_from_checkpoint(sd: dict[str, torch.Tensor]):
    """A transformers `SamConfig` read from the tensor shapes of an original segment-anything state dict.

    Works for ViT-B/L/H and any other size (embed dim, depth, heads, window and global blocks all come from
    shapes); only the mask decoder's head count is not stored in shapes and is SAM's fixed 8.
    """
    from transformers import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig

    # 1. image encoder: patch embedding (D, C, p, p), absolute positions (1, g, g, D)
    dim, channels, patch, _ = _shape(sd, "image_encoder.patch_embed.proj.weight")
    grid = _shape(sd, "image_encoder.pos_embed")[1]
    depth = _count(sd, r"^image_encoder\.blocks\.(\d+)\.")
    if depth == 0:
        _shape(sd, "image_encoder.blocks.0.attn.qkv.weight")  # raises the "not a SAM checkpoint" message
    # 2. per block: relative positions (2 s - 1, head_dim); s = grid for global blocks, s = window otherwise
    rel_len = [_shape(sd, f"image_encoder.blocks.{i}.attn.rel_pos_h")[0] for i in range(depth)]
    head_dim = _shape(sd, "image_encoder.blocks.0.attn.rel_pos_h")[1]
    global_idx = [i for i, n in enumerate(rel_len) if n == 2 * grid - 1]
    windows = sorted({(n + 1) // 2 for i, n in enumerate(rel_len) if i not in global_idx})
    if len(windows) > 1:
        raise ValueError(f"SAM checkpoint has blocks with different window sizes {windows}; not a SAM ViT")
    vision = SamVisionConfig(
        hidden_size=dim, num_hidden_layers=depth, num_attention_heads=dim // head_dim, num_channels=channels,
        image_size=grid * patch, patch_size=patch,
        mlp_dim=_shape(sd, "image_encoder.blocks.0.mlp.lin1.weight")[0],
        output_channels=_shape(sd, "image_encoder.neck.0.weight")[0],
        qkv_bias="image_encoder.blocks.0.attn.qkv.bias" in sd,
        window_size=windows[0] if windows else 14, global_attn_indexes=global_idx,
        num_pos_feats=_shape(sd, "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix")[1],
    )
    # 3. prompt encoder
    prompt = SamPromptEncoderConfig(
        hidden_size=_shape(sd, "prompt_encoder.no_mask_embed.weight")[1], image_size=grid * patch,
        patch_size=patch, mask_input_channels=_shape(sd, "prompt_encoder.mask_downscaling.3.weight")[0],
        num_point_embeddings=_count(sd, r"^prompt_encoder\.point_embeddings\.(\d+)\."),
    )
    # 4. mask decoder: attention width = hidden / downsample rate
    hidden = _shape(sd, "mask_decoder.iou_token.weight")[1]
    inner = _shape(sd, "mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight")[0]
    if hidden % inner or inner % SAM_DECODER_HEADS:
        raise ValueError(f"SAM mask decoder width {hidden} / attention width {inner} do not fit "
                         f"{SAM_DECODER_HEADS} heads; not a segment-anything checkpoint")
    decoder = SamMaskDecoderConfig(
        hidden_size=hidden, num_attention_heads=SAM_DECODER_HEADS, attention_downsample_rate=hidden // inner,
        num_hidden_layers=_count(sd, r"^mask_decoder\.transformer\.layers\.(\d+)\."),
        mlp_dim=_shape(sd, "mask_decoder.transformer.layers.0.mlp.lin1.weight")[0],
        num_multimask_outputs=_shape(sd, "mask_decoder.mask_tokens.weight")[0] - 1,
        iou_head_depth=_count(sd, r"^mask_decoder\.iou_prediction_head\.layers\.(\d+)\."),
        iou_head_hidden_dim=_shape(sd, "mask_decoder.iou_prediction_head.layers.0.weight")[0],
    )
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def _sam_processor(image_size: int, patch_size: int):
    """SamProcessor matching a model input of `image_size` (SAM: resize the long side, pad to a square)."""
    from transformers import SamImageProcessor, SamProcessor

    low_res = 4 * (image_size // patch_size)  # SAM's low-resolution mask side (256 for 1024 inputs)
    image_processor = SamImageProcessor(
        size={"longest_edge": image_size}, pad_size={"height": image_size, "width": image_size},
        mask_size={"longest_edge": low_res}, mask_pad_size={"height": low_res, "width": low_res})
    return SamProcessor(image_processor=image_processor)


def load_sam_checkpoint(path: str, device="cpu", dtype: torch.dtype = torch.float32):
    """SAM (model, processor) from an original segment-anything `.pth` file (loaded with weights_only=True)."""
    from transformers import SamModel

    # 1. read tensors only (never a pickle of arbitrary objects)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types for a bad file
        raise ValueError(f"{path} is not a readable SAM checkpoint ({type(e).__name__}: {e}); "
                         f"give an original segment-anything file ({', '.join(SAM_CHECKPOINTS)})") from None
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        raw = raw["model"]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors; give an original segment-anything file")
    # 2. config from shapes, keys renamed
    config = sam_config_from_checkpoint(raw)
    state = convert_sam_state_dict(raw)
    # 3. build without random init (meta), then load strictly
    with torch.device("meta"):
        model = SamModel(config)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{path}: the converted SAM weights do not fit transformers' SamModel: "
            f"{len(missing)} missing ({', '.join(missing[:8])}), {len(unexpected)} unexpected "
            f"({', '.join(unexpected[:8])}); the file is not a plain segment-anything SAM (HQ-SAM, MobileSAM and "
            f"SAM 2 files differ) - give {', '.join(SAM_CHECKPOINTS)} or a Hugging Face SAM folder")
    try:
        model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: SAM weights do not fit the shapes read from the file ({e})") from None
    processor = _sam_processor(config.vision_config.image_size, config.vision_config.patch_size)
    return _finish(model, device, dtype), processor


# ----------------------------------------------------------------------------------------------------------
# Detection and segmentation of one frame
# ----------------------------------------------------------------------------------------------------------

def normalize_prompt(prompt: str) -> str:
    """GroundingDINO wants lower case with a final '.': ' A Dog ' -> 'a dog.'"""
    text = " ".join(str(prompt).split()).lower().rstrip(" .")
    if not text:
        raise ValueError("prompt is empty: name what to mask, e.g. 'dog' or 'person. bicycle'")
    return text + "."


def _uint8_image(image) -> np.ndarray:
    """uint8 or float (0..1) HxWx3 array/tensor -> uint8 numpy HxWx3."""
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"image must be H x W x 3, got shape {tuple(arr.shape)}")
    return to_uint8(arr)


def _to_model(inputs, names: Sequence[str], model: torch.nn.Module) -> dict:
    """The named processor outputs, on the model's device; floating ones in the model's dtype."""
    p = next(model.parameters())
    return {k: inputs[k].to(p.device, p.dtype) if inputs[k].is_floating_point() else inputs[k].to(p.device)
            for k in names if k in inputs}


def _threshold_kwargs(processor, box_threshold: float, text_threshold: float) -> dict:
    """`post_process_grounded_object_detection` renamed box_threshold -> threshold in transformers 4.51."""
    params = inspect.signature(processor.post_process_grounded_object_detection).parameters
    box_name = "threshold" if "threshold" in params else "box_threshold"
    return {box_name: box_threshold, "text_threshold": text_threshold}


def _clean_label(text: str, special: set[str]) -> str:
    return " ".join(t for t in text.split() if t not in special)


@torch.no_grad()
def detect_boxes(image, prompt: str, model, processor, box_threshold: float = 0.35,
                 text_threshold: float = 0.25) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """GroundingDINO on one frame -> boxes (K, 4) x0 y0 x1 y1 in pixels, scores (K,), labels (K strings)."""
    img = _uint8_image(image)
    h, w = img.shape[:2]
    # 1. model inputs; the prompt lower-cased and ending in '.'
    inputs = processor(images=img, text=normalize_prompt(prompt), return_tensors="pt")
    outputs = model(**_to_model(inputs, list(inputs.keys()), model))
    # 2. thresholds and pixel boxes by the processor's own post-processing
    result = processor.post_process_grounded_object_detection(
        outputs, inputs["input_ids"].to(outputs.logits.device), target_sizes=[(h, w)],
        **_threshold_kwargs(processor, box_threshold, text_threshold))[0]
    boxes = result["boxes"].float().cpu().reshape(-1, 4)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)  # x0, x1
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)  # y0, y1
    special = set(getattr(processor.tokenizer, "all_special_tokens", []))
    labels = [_clean_label(t, special) for t in dict.get(result, "text_labels", dict.get(result, "labels", []))]
    return boxes, result["scores"].float().cpu().reshape(-1), labels


@torch.no_grad()
def segment_boxes(image, boxes, model, processor, chunk: int = BOX_CHUNK) -> torch.Tensor:
    """SAM on one frame -> bool mask (H, W): the union of one mask per box (single-mask output).

    The image is encoded once; boxes go through the mask decoder `chunk` at a time.
    """
    img = _uint8_image(image)
    h, w = img.shape[:2]
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    union = torch.zeros(h, w, dtype=torch.bool)
    if len(boxes) == 0:
        return union
    # 1. encode the image once
    pixels = processor(images=img, return_tensors="pt")
    embeddings = model.get_image_embeddings(_to_model(pixels, ["pixel_values"], model)["pixel_values"])
    for start in range(0, len(boxes), chunk):
        # 2. boxes -> model coordinates; one single-mask prediction per box
        part = boxes[start:start + chunk].tolist()
        inputs = processor(images=img, input_boxes=[part], return_tensors="pt")
        out = model(image_embeddings=embeddings, multimask_output=False,
                    **_to_model(inputs, ["input_boxes"], model))
        # 3. back to the frame size (SAM 2's processor needs no reshaped sizes), binarised, union over boxes
        sizes = [inputs[k] for k in ("original_sizes", "reshaped_input_sizes") if k in inputs]
        masks = processor.post_process_masks(out.pred_masks.float().cpu(), *sizes)[0]  # K 1 H W
        union |= masks.reshape(-1, h, w).bool().any(dim=0)
    return union


# ----------------------------------------------------------------------------------------------------------
# Video
# ----------------------------------------------------------------------------------------------------------

@dataclass
class MaskReport:
    """What `grounded_masks` found, frame by frame."""

    frames: int
    """Frames masked (always the input count)."""
    prompt: str
    """The prompt as given."""
    boxes_per_frame: list[int] = field(default_factory=list)
    """Boxes that passed the thresholds on each detected frame (every frame per-frame; frame 0 only when
    propagating, where each box is one tracked object)."""
    empty_frames: list[int] = field(default_factory=list)
    """Frames whose mask is empty: no box passed the thresholds (per-frame), or the propagated objects were lost
    there (propagate)."""
    mode: str = "per-frame"
    """'per-frame' (`grounded_masks`) or 'propagate' (`propagated_masks`)."""

    @property
    def warning(self) -> str:
        """A readable note on the empty frames ('' when there are none)."""
        if not self.empty_frames:
            return ""
        shown = ", ".join(str(i) for i in self.empty_frames[:20]) + (" ..." if len(self.empty_frames) > 20 else "")
        if self.mode == "propagate":
            return (f"the '{self.prompt}' mask propagated from frame 0 is empty on {len(self.empty_frames)} of "
                    f"{self.frames} frames ({shown}): SAM 2 lost the object there (it left the view or is hidden); "
                    f"if it is visible there, change the prompt or box_threshold so frame 0 finds it well, or use "
                    f"the per-frame mode")
        return (f"no '{self.prompt}' found on {len(self.empty_frames)} of {self.frames} frames ({shown}): "
                f"their masks are empty; lower box_threshold or change the prompt if the object is visible there")


def _check_frames(frames: torch.Tensor, prompt: str) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be IMAGE [F, H, W, 3], got shape {tuple(frames.shape)}")
    normalize_prompt(prompt)  # an empty prompt fails here, before any model runs


def _nothing_on_frame_0(prompt: str, box_threshold: float) -> ValueError:
    return ValueError(f"no '{prompt}' found on frame 0: lower box_threshold (now {box_threshold}) or change the prompt")


def grounded_masks(frames: torch.Tensor, prompt: str, dino, sam, box_threshold: float = 0.35,
                   text_threshold: float = 0.25, on_progress: Callable[[int, int], None] | None = None,
                   detector: Detector = detect_boxes) -> tuple[torch.Tensor, MaskReport]:
    """GroundedSAM on every frame of a clip.

    frames: IMAGE float (F, H, W, 3) in 0..1; dino, sam: (model, processor) pairs from the loaders.
    Returns masks float (F, H, W) of 0/1 and a `MaskReport`. A frame without detection gets an empty mask;
    frame 0 without detection raises ValueError (nothing to track from). `on_progress(done, F)` is called after
    each frame. `detector` replaces `detect_boxes` (same signature).
    """
    _check_frames(frames, prompt)
    n, h, w, _ = frames.shape
    report = MaskReport(frames=n, prompt=prompt.strip())
    masks = torch.zeros(n, h, w, dtype=torch.float32)
    for i in range(n):
        # 1. boxes from the prompt
        image = _uint8_image(frames[i])
        boxes, _, _ = detector(image, prompt, dino[0], dino[1], box_threshold, text_threshold)
        report.boxes_per_frame.append(len(boxes))
        if len(boxes) == 0 and i == 0:
            raise _nothing_on_frame_0(report.prompt, box_threshold)
        # 2. masks inside the boxes; an empty frame keeps a zero mask
        if len(boxes) == 0:
            report.empty_frames.append(i)
        else:
            masks[i] = segment_boxes(image, boxes, sam[0], sam[1]).float()
        if on_progress is not None:
            on_progress(i + 1, n)
    return masks, report


@torch.no_grad()
def propagated_masks(frames: torch.Tensor, prompt: str, dino, sam2_video, box_threshold: float = 0.35,
                     text_threshold: float = 0.25, on_progress: Callable[[int, int], None] | None = None,
                     detector: Detector = detect_boxes) -> tuple[torch.Tensor, MaskReport]:
    """GroundingDINO on frame 0, then SAM 2 video propagation of those objects through the clip.

    frames: IMAGE float (F, H, W, 3) in 0..1; dino: (model, processor) from `load_grounding_dino`; sam2_video:
    (Sam2VideoModel, Sam2VideoProcessor) from `load_sam2_video`. Each frame-0 box becomes one tracked object; a
    frame's mask is the union of the objects' masks. Returns masks float (F, H, W) of 0/1 and a `MaskReport`
    (mode 'propagate'; frames where the propagated mask is empty are listed). Frame 0 without detection raises
    ValueError. `on_progress(done, F)` is called after each frame; `detector` replaces `detect_boxes` (it runs once).
    """
    _check_frames(frames, prompt)
    n, h, w, _ = frames.shape
    model, processor = sam2_video
    report = MaskReport(frames=n, prompt=prompt.strip(), mode="propagate")
    video = np.stack([_uint8_image(f) for f in frames])  # F H W 3 uint8
    # 1. objects from frame 0 only
    boxes, _, _ = detector(video[0], prompt, dino[0], dino[1], box_threshold, text_threshold)
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    report.boxes_per_frame.append(len(boxes))
    if len(boxes) == 0:
        raise _nothing_on_frame_0(report.prompt, box_threshold)
    # 2. a video session: all frames preprocessed once (kept on the CPU), one object id per box on frame 0
    p = next(model.parameters())
    session = processor.init_video_session(video=video, inference_device=p.device, video_storage_device="cpu",
                                           dtype=p.dtype)
    processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=list(range(1, len(boxes) + 1)),
                                              input_boxes=[boxes.tolist()])
    # 3. propagate forward from frame 0; each frame's object masks back to the frame size, binarised, united
    masks = torch.zeros(n, h, w, dtype=torch.float32)
    done = 0
    for out in model.propagate_in_video_iterator(session, start_frame_idx=0):
        logits = out.pred_masks.float().cpu()  # objects 1 h w
        union = processor.post_process_masks([logits], original_sizes=[[h, w]], binarize=True)[0]
        masks[out.frame_idx] = union.reshape(-1, h, w).any(dim=0).float()
        done += 1
        if on_progress is not None:
            on_progress(done, n)
    if done != n:
        raise RuntimeError(f"SAM 2 propagation returned {done} of {n} frames")
    report.empty_frames = [i for i in range(n) if not masks[i].any()]
    return masks, report


def overlay(frames: torch.Tensor, masks: torch.Tensor, colour: Sequence[float] = (1.0, 0.2, 0.2),
            alpha: float = 0.5) -> torch.Tensor:
    """Preview IMAGE (F, H, W, 3): frames tinted with `colour` at `alpha` where the mask is on."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be IMAGE [F, H, W, 3], got shape {tuple(frames.shape)}")
    if masks.ndim == 2:
        masks = masks[None]  # one mask for every frame
    if masks.shape[-2:] != frames.shape[1:3] or masks.shape[0] not in (1, frames.shape[0]):
        raise ValueError(f"masks {tuple(masks.shape)} do not fit frames {tuple(frames.shape)}: "
                         f"need [F, H, W] or [1, H, W] with the frames' size")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must be in 0..1")
    tint = torch.as_tensor(colour, dtype=frames.dtype, device=frames.device).reshape(1, 1, 1, 3)
    weight = alpha * masks.to(frames.device, frames.dtype).clamp(0, 1)[..., None]  # F H W 1
    return (frames * (1 - weight) + tint * weight).clamp(0, 1)
