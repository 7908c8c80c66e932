"""Segment nodes: GroundingDINO and SAM loaders, and the GroundedSAM mask of every frame (the subject mask that
DeT samples its track points from)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace

import torch

import comfy.model_management
import comfy.utils
import folder_paths
from comfy_api.latest import io

from ..det_core.segment import (
    DINO_SPEC, SAM2_REPOS, SAM2_SPEC, SAM_SPEC, SAM_CHECKPOINT_EXTS, SAM_CHECKPOINTS, grounded_masks,
    load_grounding_dino, load_sam, load_sam2, load_sam2_video, overlay, propagated_masks,
)
from .common import GroundingDinoType, SamType, device_input, dtype_input, not_a_file_name, torch_device, torch_dtype

log = logging.getLogger("DeT")
DINO_FOLDER = "grounding-dino"
SAM_FOLDER = "sams"
SAM2_FOLDER = "sam2"
SAM2_PREFIX = "sam2/"
MODES = ("per-frame", "propagate")


@dataclass
class SegmentModel:
    """A transformers model with its processor, as det_core.segment takes them, and the name it was loaded by."""

    model: torch.nn.Module
    processor: object
    name: str
    path: str | None = None
    """Where it was loaded from (SAM 2 reloads its folder as the video model for propagation)."""
    _video: tuple | None = field(default=None, repr=False, compare=False)

    @property
    def pair(self) -> tuple:
        return self.model, self.processor

    @property
    def is_sam2(self) -> bool:
        return type(self.model).__name__ == "Sam2Model"

    def video_pair(self) -> tuple:
        """(Sam2VideoModel, Sam2VideoProcessor) from the same SAM 2 folder, on the image model's device and dtype;
        loaded on first use and kept with this model."""
        if not self.is_sam2 or self.path is None:
            raise ValueError(
                f"mode 'propagate' needs a SAM 2 model, but sam_model is {self.name!r} "
                f"({type(self.model).__name__}); load a SAM 2 folder from models/{SAM2_FOLDER}/ (e.g. "
                f"{SAM2_REPOS[0]}) with Load SAM (DeT), choosing '{SAM2_PREFIX}<folder>', or use mode 'per-frame'")
        if self._video is None:
            p = next(self.model.parameters())
            self._video = load_sam2_video(self.path, device=p.device, dtype=p.dtype)
        return self._video


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
        wrong = not_a_file_name("model_name", model_name, f"a GroundingDINO folder in models/{DINO_FOLDER}/")
        if wrong:
            return wrong
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
        wrong = not_a_file_name("model_name", model_name, f"a SAM folder or checkpoint in models/{SAM_FOLDER}/, or "
                                                          f"'{SAM2_PREFIX}<folder>' for SAM 2")
        if wrong:
            return wrong
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
        path = sam_models()[model_name]
        model, processor = load(path, device=dev, dtype=torch_dtype(dtype, dev))
        return io.NodeOutput(SegmentModel(model, processor, model_name, path))


class DeTGroundedSAMMask(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DeTGroundedSAMMask",
            display_name="GroundedSAM Mask (DeT)",
            category="DeT/segment",
            description="Masks the prompted subject on every frame: GroundingDINO finds boxes from the text, SAM "
                        "turns them into one binary mask per frame (the union over boxes). Frame 0 must find "
                        "the subject; frames left with an empty mask are listed in info. Mode 'propagate' (SAM 2 "
                        "only) detects on frame 0 alone and tracks those objects through the clip with SAM 2's "
                        "video memory, so the mask stays on the same subject.",
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
                io.Combo.Input("mode", options=list(MODES), default="per-frame", optional=True,
                               tooltip="per-frame: detect and segment every frame on its own (any SAM). propagate: "
                                       "detect on frame 0 only and track those objects through all frames with "
                                       "SAM 2 video propagation (needs a SAM 2 model from models/sam2/), so the "
                                       "mask stays on the same subject."),
            ],
            outputs=[io.Mask.Output(display_name="mask", tooltip="Binary masks [F, H, W], one per frame."),
                     io.Image.Output(display_name="preview", tooltip="The frames with the mask tinted red."),
                     io.String.Output(display_name="info", tooltip="Detections per frame and frames left empty.")],
        )

    @classmethod
    def execute(cls, images, grounding_dino, sam_model, prompt, box_threshold, text_threshold, mode="per-frame"):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        pbar = comfy.utils.ProgressBar(images.shape[0])

        def on_frame(done: int, total: int) -> None:
            pbar.update_absolute(done, total)
            comfy.model_management.throw_exception_if_processing_interrupted()

        if mode == "propagate":
            video = sam_model.video_pair()  # the SAM 2 check comes before any model runs
            masks, report = propagated_masks(images, prompt, grounding_dino.pair, video, box_threshold,
                                             text_threshold, on_progress=on_frame)
            found = f"{report.boxes_per_frame[0]} objects from frame 0 propagated"
        else:
            masks, report = grounded_masks(images, prompt, grounding_dino.pair, sam_model.pair, box_threshold,
                                           text_threshold, on_progress=on_frame)
            found = f"{min(report.boxes_per_frame)}-{max(report.boxes_per_frame)} boxes per frame"
        info = (f"'{report.prompt}' on {report.frames} frames with {grounding_dino.name} + {sam_model.name}: "
                f"{found}, {float(masks.mean()):.1%} of pixels masked")
        if report.warning:
            log.warning("[DeT] %s", report.warning)
            info += "\nWARNING: " + report.warning
        return io.NodeOutput(masks, overlay(images.cpu(), masks), info)


NODES = [DeTGroundingDinoLoader, DeTSAMLoader, DeTGroundedSAMMask]
