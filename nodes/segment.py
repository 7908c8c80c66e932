"""Segment nodes: GroundingDINO and SAM loaders, and the GroundedSAM mask of every frame (the subject mask that
DeT samples its track points from)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace

import torch

import comfy.model_management
import comfy.utils
import folder_paths
from comfy_api.latest import io

from ..det_core.segment import (
    DINO_SPEC, SAM2_SPEC, SAM_SPEC, SAM_CHECKPOINT_EXTS, SAM_CHECKPOINTS, grounded_masks, load_grounding_dino,
    load_sam, load_sam2, overlay,
)
from .common import GroundingDinoType, SamType, device_input, dtype_input, torch_device, torch_dtype

log = logging.getLogger("DeT")
DINO_FOLDER = "grounding-dino"
SAM_FOLDER = "sams"
SAM2_FOLDER = "sam2"
SAM2_PREFIX = "sam2/"


@dataclass
class SegmentModel:
    """A transformers model with its processor, as det_core.segment takes them, and the name it was loaded by."""

    model: torch.nn.Module
    processor: object
    name: str

    @property
    def pair(self) -> tuple:
        return self.model, self.processor


def _entries(folder_name: str, checkpoints: bool = False) -> dict[str, str]:
    """name -> path of the sub-folders (and, if asked, SAM checkpoint files) directly inside models/<folder_name>/.

    Only the top level: the files inside a Hugging Face folder are not models of their own."""
    found: dict[str, str] = {}
    for root in folder_paths.get_folder_paths(folder_name):
        if not os.path.isdir(root):
            continue
        for name in sorted(os.listdir(root)):
            full = os.path.join(root, name)
            is_checkpoint = checkpoints and os.path.isfile(full) and name.lower().endswith(SAM_CHECKPOINT_EXTS)
            if not name.startswith(".") and (os.path.isdir(full) or is_checkpoint):
                found.setdefault(name, full)  # the first configured folder wins, as folder_paths does
    return found


def dino_models() -> dict[str, str]:
    return _entries(DINO_FOLDER)


def sam_models() -> dict[str, str]:
    """SAM folders and .pth checkpoints of models/sams/, then SAM 2 folders of models/sam2/ as 'sam2/<name>'."""
    return {**_entries(SAM_FOLDER, checkpoints=True),
            **{SAM2_PREFIX + name: path for name, path in _entries(SAM2_FOLDER).items()}}


def _stamp(path: str):
    """What changes when the model on disk changes: (name, mtime, size) of the file or of a folder's files."""
    if os.path.isfile(path):
        st = os.stat(path)
        return path, st.st_mtime_ns, st.st_size
    if os.path.isdir(path):
        files = sorted((e for e in os.scandir(path) if e.is_file()), key=lambda e: e.name)
        return path, tuple((e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in files)
    return path


def _first_root(folder_name: str) -> str:
    return folder_paths.get_folder_paths(folder_name)[0]


class DeTGroundingDinoLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DeTGroundingDinoLoader",
            display_name="Load GroundingDINO (DeT)",
            category="DeT/segment",
            description="Loads a GroundingDINO model (Hugging Face format folder, e.g. IDEA-Research/"
                        "grounding-dino-tiny) from models/grounding-dino/. Never downloads.",
            inputs=[
                io.Combo.Input("model_name", options=list(dino_models()),
                               tooltip="A folder in models/grounding-dino/ holding config.json, model.safetensors, "
                                       "preprocessor_config.json and the tokenizer files."),
                device_input("the detector"), dtype_input(),
            ],
            outputs=[GroundingDinoType.Output(display_name="grounding_dino")],
        )

    @classmethod
    def validate_inputs(cls, model_name):
        if model_name not in dino_models():
            return f"GroundingDINO folder {model_name!r} not found in {_first_root(DINO_FOLDER)}; {DINO_SPEC.hint()}"
        return True

    @classmethod
    def fingerprint_inputs(cls, model_name, **kwargs):
        return _stamp(dino_models().get(model_name, model_name))

    @classmethod
    def execute(cls, model_name, device, dtype):
        dev = torch_device(device)
        model, processor = load_grounding_dino(dino_models()[model_name], device=dev, dtype=torch_dtype(dtype, dev))
        return io.NodeOutput(SegmentModel(model, processor, model_name))


class DeTSAMLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DeTSAMLoader",
            display_name="Load SAM (DeT)",
            category="DeT/segment",
            description="Loads SAM from models/sams/ (a Hugging Face folder such as facebook/sam-vit-base, or an "
                        "original segment-anything .pth, converted on load) or SAM 2 from models/sam2/ (a Hugging "
                        "Face folder such as facebook/sam2.1-hiera-tiny). Never downloads.",
            inputs=[
                io.Combo.Input("model_name", options=list(sam_models()),
                               tooltip="A SAM folder or sam_vit_*.pth in models/sams/, or 'sam2/<folder>' for a SAM 2 "
                                       "folder in models/sam2/."),
                device_input("SAM"), dtype_input(),
            ],
            outputs=[SamType.Output(display_name="sam_model")],
        )

    @classmethod
    def validate_inputs(cls, model_name):
        if model_name not in sam_models():
            return (f"SAM model {model_name!r} not found in {_first_root(SAM_FOLDER)} or {_first_root(SAM2_FOLDER)}; "
                    f"{SAM_SPEC.hint()}; or put an original checkpoint ({', '.join(SAM_CHECKPOINTS)}) into "
                    f"models/{SAM_FOLDER}/; for SAM 2, {replace(SAM2_SPEC, models_dir=SAM2_FOLDER).hint()}")
        return True

    @classmethod
    def fingerprint_inputs(cls, model_name, **kwargs):
        return _stamp(sam_models().get(model_name, model_name))

    @classmethod
    def execute(cls, model_name, device, dtype):
        dev = torch_device(device)
        load = load_sam2 if model_name.startswith(SAM2_PREFIX) else load_sam
        model, processor = load(sam_models()[model_name], device=dev, dtype=torch_dtype(dtype, dev))
        return io.NodeOutput(SegmentModel(model, processor, model_name))


class DeTGroundedSAMMask(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DeTGroundedSAMMask",
            display_name="GroundedSAM Mask (DeT)",
            category="DeT/segment",
            description="Masks the prompted subject on every frame: GroundingDINO finds boxes from the text, SAM "
                        "turns them into one binary mask per frame (the union over boxes). Frame 0 must find "
                        "the subject; other frames without a detection get an empty mask and are listed in info.",
            inputs=[
                io.Image.Input("images", tooltip="The reference video's frames."),
                GroundingDinoType.Input("grounding_dino", tooltip="From Load GroundingDINO (DeT)."),
                SamType.Input("sam_model", tooltip="From Load SAM (DeT)."),
                io.String.Input("prompt", default="person",
                                tooltip="What to mask, e.g. 'person' or 'dog'; several objects as 'person. bicycle'."),
                io.Float.Input("box_threshold", default=0.35, min=0.0, max=1.0, step=0.01,
                               tooltip="Keep boxes whose score is above this (lower it when the subject is missed)."),
                io.Float.Input("text_threshold", default=0.25, min=0.0, max=1.0, step=0.01,
                               tooltip="Score a prompt word needs to label a box (GroundingDINO's text threshold)."),
            ],
            outputs=[io.Mask.Output(display_name="mask", tooltip="Binary masks [F, H, W], one per frame."),
                     io.Image.Output(display_name="preview", tooltip="The frames with the mask tinted red."),
                     io.String.Output(display_name="info", tooltip="Detections per frame and frames left empty.")],
        )

    @classmethod
    def execute(cls, images, grounding_dino, sam_model, prompt, box_threshold, text_threshold):
        pbar = comfy.utils.ProgressBar(images.shape[0])

        def on_frame(done: int, total: int) -> None:
            pbar.update_absolute(done, total)
            comfy.model_management.throw_exception_if_processing_interrupted()

        masks, report = grounded_masks(images, prompt, grounding_dino.pair, sam_model.pair, box_threshold,
                                       text_threshold, on_progress=on_frame)
        info = (f"'{report.prompt}' on {report.frames} frames with {grounding_dino.name} + {sam_model.name}: "
                f"{min(report.boxes_per_frame)}-{max(report.boxes_per_frame)} boxes per frame, "
                f"{float(masks.mean()):.1%} of pixels masked")
        if report.warning:
            log.warning("[DeT] %s", report.warning)
            info += "\nWARNING: " + report.warning
        return io.NodeOutput(masks, overlay(images.cpu(), masks), info)


NODES = [DeTGroundingDinoLoader, DeTSAMLoader, DeTGroundedSAMMask]
