"""Evaluation nodes through the real server, on the pack's own drawn cases (tests/media.py): motion difficulty of
a case's tracks, motion fidelity of a video against itself and against its exact object tracks."""

import json
import os
import shutil

import numpy as np
import pytest

from det_tools.client import PromptExecutionError
from det_core.metrics import motion_difficulty
from det_graphs import cotracker_node, load_video_node


def test_motion_difficulty_node_matches_the_metric(comfy, pack_cases):
    path = os.path.join(pack_cases, "world-zig-zag", "tracks.npy")
    g = {"load": {"class_type": "DeTLoadTracks", "inputs": {"path": path, "width": 720, "height": 480}},
         "diff": {"class_type": "DeTMotionDifficulty", "inputs": {"tracks": ["load", 0]}},
         "n": {"class_type": "DeTTestInspect", "inputs": {"value": ["diff", 0], "label": "clusters"}},
         "level": {"class_type": "DeTTestInspect", "inputs": {"value": ["diff", 1], "label": "level"}}}
    result = comfy.run(g)
    arr = np.load(path)
    direct = motion_difficulty(arr[..., :2].transpose(1, 0, 2) * np.array([720, 480]))
    assert json.loads(result.outputs["n"]["text"][0])["value"] == direct["clusters"]
    assert json.loads(result.outputs["level"]["text"][0])["value"] == direct["level"]


def fidelity_graph(source, generated, cotracker_file):
    def load(path):
        return load_video_node(path, frame_load_cap=6, width=192, height=128)

    return {
        "src": load(source), "gen": load(generated), "tracker": cotracker_node(cotracker_file),
        "score": {"class_type": "DeTMotionFidelity", "inputs": {
            "generated": ["gen", 0], "cotracker": ["tracker", 0], "mode": "frechet", "alpha": 0.5, "points": 12,
            "prompt": "", "source": ["src", 0]}},
    }


def test_motion_fidelity_is_100_against_itself_and_lower_against_other_motion(comfy, cotracker_file, pack_cases):
    video = os.path.join(pack_cases, "world-figure-eight", "source.mp4")
    same = json.loads(comfy.run(fidelity_graph(video, video, cotracker_file), timeout=600).outputs["score"]["text"][0])
    assert same["motion_fidelity"] == pytest.approx(100.0)
    assert same["edit_fidelity"] is None and same["temporal_consistency"] is None
    # the random tracker barely moves points, so the object's real motion (its exact tracks) scores far lower
    g = fidelity_graph(video, video, cotracker_file)
    g["tracks"] = {"class_type": "DeTLoadTracks", "inputs": {
        "path": os.path.join(pack_cases, "world-figure-eight", "tracks.npy"), "width": 720, "height": 480}}
    del g["score"]["inputs"]["source"]
    g["score"]["inputs"]["source_tracks"] = ["tracks", 0]
    moving = json.loads(comfy.run(g, timeout=600).outputs["score"]["text"][0])
    assert moving["motion_fidelity"] < 90.0, moving


def test_det_protocol_beside_the_pack_protocol_through_the_server(comfy, cotracker_file, pack_cases, input_dir):
    """protocol=both: the pack's scores first, the public evaluation's under protocols.det; a video against itself
    is 100 under the pack's protocol, local 100 but global below 100 under the public one."""
    from PIL import Image

    from det_core.public_eval import box_mask, grid_queries

    video = os.path.join(pack_cases, "world-figure-eight", "source.mp4")
    mask_png = os.path.join(pack_cases, "world-figure-eight", "mask_first_frame.png")
    shutil.copy(mask_png, os.path.join(input_dir, "det_protocol_mask.png"))
    g = fidelity_graph(video, video, cotracker_file)
    g["mask_image"] = {"class_type": "LoadImage", "inputs": {"image": "det_protocol_mask.png"}}
    g["mask"] = {"class_type": "ImageToMask", "inputs": {"image": ["mask_image", 0], "channel": "red"}}
    g["score"]["inputs"].update(source_mask=["mask", 0], protocol="both", pairing_seed=5)
    doc = json.loads(comfy.run(g, timeout=600).outputs["score"]["text"][0])
    assert doc["protocol"] == "pack" and doc["motion_fidelity"] == pytest.approx(100.0)
    det = doc["protocols"]["det"]
    expected_points = len(grid_queries(box_mask(np.array(Image.open(mask_png).convert("L"))), (384, 512)))
    assert det["tracks"] == expected_points and det["seed"] == 5
    assert det["local"] == pytest.approx(1.0) and det["global_"] < 0.99
    assert det["motion_fidelity"] == pytest.approx(50.0 * (det["local"] + det["global_"]))
    # the public protocol needs the reference frames and mask: said before any tracking
    del g["score"]["inputs"]["source_mask"]
    g["score"]["inputs"]["protocol"] = "det"
    with pytest.raises(PromptExecutionError, match="connect source .* and source_mask"):
        comfy.run(g, timeout=120)
