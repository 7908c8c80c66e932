"""The GroundedSAM nodes through a real ComfyUI server, with tiny random GroundingDINO / SAM / SAM 2 models (the
builders of test_segment.py) saved into the server's models/grounding-dino, models/sams and models/sam2.

Random weights make detections arbitrary: box_threshold 0.0 detects on every frame and 1.0 on none. Frames left
empty in the middle of a clip cannot be forced through the server with random weights; that behaviour (empty
mask, listed in the report's warning) is covered in test_segment.py with a scripted detector."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from conftest import inspect_report  # noqa: E402
from det_tools.client import PromptExecutionError, PromptValidationError  # noqa: E402
from det_core.segment import (  # noqa: E402
    grounded_masks, load_grounding_dino, load_sam, load_sam2_video, propagated_masks,
)
from det_core.video import LoadSettings, load_video, write_video  # noqa: E402
from test_segment import _tiny_dino, _tiny_sam, _tiny_sam2, _tiny_sam_config, _to_original_keys  # noqa: E402

F, H, W = 5, 40, 56
DINO, SAM, SAM_PTH, SAM2 = "tiny-dino", "tiny-sam", "tiny_sam_vit.pth", "sam2/tiny-sam2"


@pytest.fixture(scope="module")
def models(comfy_base):
    """Tiny models in the server's model folders: a GroundingDINO folder, a SAM folder, an original-layout SAM .pth
    and a SAM 2 folder (when transformers has SAM 2)."""
    from transformers import SamModel

    root = os.path.join(comfy_base, "models")
    with torch.random.fork_rng(devices=[]):
        dino = _tiny_dino(os.path.join(root, "grounding-dino", DINO))
        sam = _tiny_sam(os.path.join(root, "sams", SAM))
        torch.manual_seed(8)
        torch.save(_to_original_keys(SamModel(_tiny_sam_config()).state_dict()), os.path.join(root, "sams", SAM_PTH))
        has_sam2 = hasattr(__import__("transformers"), "Sam2Model")
        sam2 = _tiny_sam2(os.path.join(root, "sam2", SAM2.split("/", 1)[1])) if has_sam2 else None
    return {"dino": dino, "sam": sam, "sam2": sam2}


@pytest.fixture(scope="module")
def clip(comfy_base):
    """A short lossless clip in the input folder: seeded noise over a bright square that moves right."""
    g = np.random.default_rng(0)
    frames = (g.random((F, H, W, 3)) * 80).astype(np.uint8)
    for i in range(F):
        frames[i, 10:30, 5 + 6 * i:25 + 6 * i] = 220
    path = os.path.join(comfy_base, "input", "segment_clip.mp4")
    return write_video(frames, path, fps=8.0, crf=0)


def mask_graph(clip_path, sam=SAM, box_threshold=0.0, dino=DINO, prompt="dog", mode=None):
    return {
        "video": {"class_type": "DeTLoadVideo", "inputs": {
            "video": clip_path, "frame_load_cap": 0, "skip_first_frames": 0, "select_every_nth": 1, "force_rate": 0.0,
            "width": 0, "height": 0, "snap_to_16": "off", "trim_to_4k_plus_1": False}},
        "dino": {"class_type": "DeTGroundingDinoLoader", "inputs": {"model_name": dino, "device": "cpu",
                                                                   "dtype": "auto"}},
        "sam": {"class_type": "DeTSAMLoader", "inputs": {"model_name": sam, "device": "cpu", "dtype": "auto"}},
        "mask": {"class_type": "DeTGroundedSAMMask", "inputs": {
            "images": ["video", 0], "grounding_dino": ["dino", 0], "sam_model": ["sam", 0], "prompt": prompt,
            "box_threshold": box_threshold, "text_threshold": 0.25, **({"mode": mode} if mode else {})}},
        # a binary mask is unchanged by thresholding at 0.5: equal checksums <=> every value is 0 or 1
        "binary": {"class_type": "ThresholdMask", "inputs": {"mask": ["mask", 0], "value": 0.5}},
        "inspect_mask": {"class_type": "DeTTestInspect", "inputs": {"value": ["mask", 0], "label": "mask"}},
        "inspect_binary": {"class_type": "DeTTestInspect", "inputs": {"value": ["binary", 0], "label": "binary"}},
        "inspect_preview": {"class_type": "DeTTestInspect", "inputs": {"value": ["mask", 1], "label": "preview"}},
        "inspect_frames": {"class_type": "DeTTestInspect", "inputs": {"value": ["video", 0], "label": "frames"}},
        "inspect_info": {"class_type": "DeTTestInspect", "inputs": {"value": ["mask", 2], "label": "info"}},
    }


def run_masks(comfy, clip_path, **kw):
    result = comfy.run(mask_graph(clip_path, **kw), timeout=300)
    reports = {k: inspect_report(result, f"inspect_{k}") for k in ("mask", "binary", "preview", "frames", "info")}
    return result, reports


def check_masks(r):
    """One binary float mask per input frame at the frames' size; the preview tints exactly where masks are on."""
    assert r["frames"]["shape"] == [F, H, W, 3]
    assert r["mask"]["shape"] == [F, H, W] and r["mask"]["dtype"] == "torch.float32"
    assert r["binary"]["sha1"] == r["mask"]["sha1"], "mask values other than 0 and 1"
    assert r["preview"]["shape"] == [F, H, W, 3] and 0.0 <= r["preview"]["min"] <= r["preview"]["max"] <= 1.0
    assert (r["preview"]["sha1"] == r["frames"]["sha1"]) == (r["mask"]["max"] == 0.0)
    assert f"on {F} frames" in r["info"]["value"] and "WARNING" not in r["info"]["value"]


def test_loaders_list_the_model_folders(comfy, models):
    dino = comfy.object_info("DeTGroundingDinoLoader")["DeTGroundingDinoLoader"]
    sam = comfy.object_info("DeTSAMLoader")["DeTSAMLoader"]
    assert dino["display_name"] == "Load GroundingDINO (DeT)" and sam["display_name"] == "Load SAM (DeT)"
    assert DINO in dino["input"]["required"]["model_name"][1]["options"]
    options = sam["input"]["required"]["model_name"][1]["options"]
    assert {SAM, SAM_PTH} <= set(options)
    assert (SAM2 in options) == bool(models["sam2"])
    assert not [o for o in options if "model.safetensors" in o], "files inside a HF folder are not models"
    node = comfy.object_info("DeTGroundedSAMMask")["DeTGroundedSAMMask"]
    assert node["output_name"] == ["mask", "preview", "info"]
    assert node["input"]["required"]["box_threshold"][1]["default"] == pytest.approx(0.35)
    for info in (dino, sam, node):
        assert all(spec[1].get("tooltip") for spec in info["input"]["required"].values())


def test_masks_keep_the_frames_and_match_det_core(comfy, models, clip):
    result, r = run_masks(comfy, clip)
    check_masks(r)
    # the node is det_core on the loaded frames: same per-frame coverage as grounded_masks in this process
    frames = load_video(clip, LoadSettings(snap="off", trim_4k_plus_1=False)).frames
    with torch.random.fork_rng(devices=[]):
        expected, report = grounded_masks(frames, "dog", load_grounding_dino(models["dino"]), load_sam(models["sam"]),
                                          box_threshold=0.0, text_threshold=0.25)
    assert r["mask"]["frame_means"] == pytest.approx(expected.mean(dim=(1, 2)).tolist(), abs=2e-3)
    assert f"{min(report.boxes_per_frame)}-{max(report.boxes_per_frame)} boxes per frame" in r["info"]["value"]
    # one progress step per frame on the mask node
    steps = [d["value"] for t, d in result.messages if t == "progress" and d.get("node") == "mask"]
    assert steps == list(range(1, F + 1))


def test_nothing_on_frame_0_fails_with_the_fix(comfy, models, clip):
    with pytest.raises(PromptExecutionError) as err:
        comfy.run(mask_graph(clip, box_threshold=1.0, prompt="person"), timeout=300)
    assert err.value.node_type == "DeTGroundedSAMMask" and err.value.exception_type.endswith("ValueError")
    assert "no 'person' found on frame 0: lower box_threshold (now 1.0) or change the prompt" in str(err.value)


@pytest.mark.parametrize("node, missing, folder", [("dino", "no-such-dino", "grounding-dino"),
                                                    ("sam", "no-such-sam", "sams")])
def test_missing_model_folder_is_a_validation_error(comfy, models, clip, node, missing, folder):
    graph = mask_graph(clip, **{node: missing})
    del graph["inspect_frames"]  # an output that does not need the loader would still run
    with pytest.raises(PromptValidationError) as err:
        comfy.run(graph, timeout=60)
    msg = str(err.value)
    assert repr(missing) in msg and os.path.join("models", folder) in msg
    assert "config.json" in msg and "model.safetensors" in msg and "preprocessor_config.json" in msg


@pytest.mark.parametrize("sam", [SAM_PTH, SAM2])
def test_pth_sam_and_sam2_work_through_the_mask_node(comfy, models, clip, sam):
    if sam == SAM2 and not models["sam2"]:
        pytest.skip("this transformers has no Sam2Model")
    _, r = run_masks(comfy, clip, sam=sam)
    check_masks(r)
    assert f"+ {sam}:" in r["info"]["value"]


def test_propagate_mode_tracks_frame_0_objects_with_sam2(comfy, models, clip):
    if not models["sam2"]:
        pytest.skip("this transformers has no Sam2Model")
    mode = comfy.object_info("DeTGroundedSAMMask")["DeTGroundedSAMMask"]["input"]["optional"]["mode"]
    assert mode[1]["options"] == ["per-frame", "propagate"] and mode[1]["default"] == "per-frame"
    assert "SAM 2" in mode[1]["tooltip"]
    result, r = run_masks(comfy, clip, sam=SAM2, mode="propagate")
    assert r["mask"]["shape"] == [F, H, W] and r["binary"]["sha1"] == r["mask"]["sha1"]
    assert r["preview"]["shape"] == [F, H, W, 3]
    # the node is propagated_masks on the loaded frames: same per-frame coverage, objects from frame 0
    frames = load_video(clip, LoadSettings(snap="off", trim_4k_plus_1=False)).frames
    expected, report = propagated_masks(frames, "dog", load_grounding_dino(models["dino"]),
                                        load_sam2_video(models["sam2"]), box_threshold=0.0, text_threshold=0.25)
    assert r["mask"]["frame_means"] == pytest.approx(expected.mean(dim=(1, 2)).tolist(), abs=2e-3)
    info = r["info"]["value"]
    assert f"on {F} frames" in info and f"+ {SAM2}:" in info
    assert f"{report.boxes_per_frame[0]} objects from frame 0 propagated" in info
    assert ("WARNING" in info) == bool(report.empty_frames)
    steps = [d["value"] for t, d in result.messages if t == "progress" and d.get("node") == "mask"]
    assert steps == list(range(1, F + 1))


def test_propagate_mode_needs_a_sam2_model(comfy, models, clip):
    with pytest.raises(PromptExecutionError) as err:
        comfy.run(mask_graph(clip, sam=SAM, mode="propagate"), timeout=300)
    assert err.value.node_type == "DeTGroundedSAMMask" and err.value.exception_type.endswith("ValueError")
    msg = str(err.value)
    assert f"mode 'propagate' needs a SAM 2 model, but sam_model is '{SAM}'" in msg
    assert "load a SAM 2 folder from models/sam2/" in msg and "mode 'per-frame'" in msg
