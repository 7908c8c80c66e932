"""The CoTracker3 and track-file nodes through a real ComfyUI server, with a CoTracker3 checkpoint of random
weights saved in the official layout into the server's models/cotracker/."""

import os
import re

import numpy as np
import pytest
import torch

from det_tools.client import PromptExecutionError, PromptValidationError


def graph(video, mask_image=None, frames=8, checkpoint="det_test_offline.pth", **track_kw):
    g = {
        "video": {"class_type": "DeTLoadVideo", "inputs": {
            "video": video, "frame_load_cap": frames, "skip_first_frames": 0, "select_every_nth": 1, "force_rate": 0.0,
            "width": 0, "height": 0, "snap_to_16": "off", "trim_to_4k_plus_1": False}},
        "tracker": {"class_type": "DeTCoTrackerLoader", "inputs": {"checkpoint": checkpoint, "mode": "auto",
                                                                   "device": "cpu", "dtype": "fp32"}},
        "track": {"class_type": "DeTCoTrackerTracks", "inputs": dict({
            "images": ["video", 0], "cotracker": ["tracker", 0], "points": 40, "sampling": "mask-weighted",
            "query_frame": 0, "backward_tracking": False, "seed": 0}, **track_kw)},
        "save": {"class_type": "DeTSaveTracks", "inputs": {"tracks": ["track", 0], "filename_prefix": "det_tracks"}},
        "preview": {"class_type": "DeTTestInspect", "inputs": {"value": ["track", 1], "label": "preview"}},
    }
    if mask_image is not None:
        g["mask"] = {"class_type": "LoadImageMask", "inputs": {"image": mask_image, "channel": "red"}}
        g["track"]["inputs"]["mask"] = ["mask", 0]
    return g


def saved_tracks(comfy_base, result):
    text = result.outputs["save"]["text"][0]
    path = re.search(r"saved (\S+\.npy)", text).group(1)
    return np.load(path)


def test_tracks_from_the_mask_of_a_video(comfy, comfy_base, cotracker_file, pack_cases):
    case = os.path.join(pack_cases, "world-zig-zag")
    mask_name = comfy.upload(os.path.join(case, "mask_first_frame.png"))
    result = comfy.run(graph(os.path.join(case, "source.mp4"), mask_name), timeout=600)
    arr = saved_tracks(comfy_base, result)  # MTBench layout
    assert arr.shape == (8, 40, 3)
    mask = np.array(__import__("PIL.Image", fromlist=["Image"]).open(os.path.join(case, "mask_first_frame.png")).convert("L")) > 127
    x0 = (arr[0, :, 0] * 720).astype(int)
    y0 = (arr[0, :, 1] * 480).astype(int)
    # the tracker (random weights) may move a point by a pixel or two on its own frame; the disc covers 3 % of
    # the frame, so points spread over the frame would fail this
    from scipy.ndimage import binary_dilation

    near = binary_dilation(mask, iterations=3)
    assert near[y0.clip(0, 479), x0.clip(0, 719)].all(), "query points must lie on the mask"
    assert arr[0, :, 2].all(), "query points are visible on their frame"
    assert np.isfinite(arr).all()
    preview = __import__("json").loads(result.outputs["preview"]["text"][0])
    assert preview["shape"] == [8, 480, 720, 3]


def test_bad_track_inputs_get_clear_errors(comfy, comfy_base, cotracker_file, pack_cases, input_dir):
    from PIL import Image

    video = os.path.join(pack_cases, "world-zig-zag", "source.mp4")
    Image.fromarray(np.zeros((240, 360), np.uint8)).save(os.path.join(input_dir, "small_mask.png"))
    Image.fromarray(np.zeros((480, 720), np.uint8)).save(os.path.join(input_dir, "empty_mask.png"))
    cases = [
        (graph(video, "small_mask.png"), PromptExecutionError, "the mask is 360x240 but the video is 720x480"),
        (graph(video, "empty_mask.png"), PromptExecutionError, "the mask is empty on frame 0"),
        (graph(video, None, frames=1, sampling="grid"), PromptExecutionError, "needs at least 2 frames, got 1"),
        (graph(video, None, sampling="mask-weighted"), PromptExecutionError, "needs a MASK"),
        (graph(video, None, checkpoint="not_cotracker.pth", sampling="grid"), PromptExecutionError,
         r"not a CoTracker3 checkpoint: missing \['corr_mlp.fc1.weight'\]"),
        (graph(video, None, checkpoint="scaled_offline.pth", sampling="grid"), PromptValidationError,
         "put scaled_offline.pth .* into models/cotracker/"),
    ]
    for g, kind, pattern in cases:
        with pytest.raises(kind) as err:
            comfy.run(g, timeout=300)
        assert re.search(pattern, str(err.value)), str(err.value)


def test_load_tracks_gives_the_published_shapes(comfy, pack_cases):
    g = {"load": {"class_type": "DeTLoadTracks", "inputs": {
            "path": os.path.join(pack_cases, "world-figure-eight", "tracks.npy"), "width": 720, "height": 480}},
         "path": {"class_type": "DeTTestInspect", "inputs": {"value": ["load", 1], "label": "info"}},
         "save": {"class_type": "DeTSaveTracks", "inputs": {"tracks": ["load", 0], "filename_prefix": "published"}}}
    result = comfy.run(g)
    assert "100 points over 49 frames" in result.outputs["path"]["text"][0]
    path = re.search(r"saved (\S+\.npy)", result.outputs["save"]["text"][0]).group(1)
    original = np.load(os.path.join(pack_cases, "world-figure-eight", "tracks.npy"))
    assert np.array_equal(np.load(path)[..., :2], original[..., :2])


class _Payload:
    """A pickled object: what a malicious or mistaken .pth holds instead of a tensor."""


def test_track_files_that_are_not_tensors_are_refused_by_name(comfy, tmp_path):
    pickled, text = tmp_path / "pickled_tracks.pth", tmp_path / "notes_tracks.pth"
    torch.save({"tracks": _Payload()}, pickled)
    text.write_text("this is not a torch file\n")
    for path in (pickled, text):
        g = {"load": {"class_type": "DeTLoadTracks", "inputs": {"path": str(path), "width": 96, "height": 96}},
             "show": {"class_type": "DeTTestInspect", "inputs": {"value": ["load", 1], "label": "info"}}}
        with pytest.raises(PromptExecutionError) as err:
            comfy.run(g, timeout=120)
        message = str(err.value)
        assert f"{path.name} is not a valid tracks file" in message, message
        assert "weights_only=False" not in message and "Unpickling" not in message.split("(")[0], message
    assert comfy.get_json("/system_stats")  # the server still answers


@pytest.mark.parametrize("name, arr, message", [
    ("empty_tracks.npy", np.zeros((0, 8, 3), np.float32), "has 0 frames and 8 points; at least 2 frames"),
    ("nan_tracks.npy", np.full((9, 8, 3), np.nan, np.float32), "holds NaN or infinite values"),
    ("inf_tracks.npy", np.full((9, 8, 3), np.inf, np.float32), "holds NaN or infinite values"),
    ("flat_tracks.npy", np.zeros((9, 8, 2), np.float32), r"shape \(9, 8, 2\); MTBench tracks are \[frames, points, 3\]"),
])
def test_load_tracks_refuses_arrays_no_metric_could_use(comfy, input_dir, name, arr, message):
    np.save(os.path.join(input_dir, name), arr)
    g = {"load": {"class_type": "DeTLoadTracks", "inputs": {"path": name, "width": 96, "height": 96}},
         "show": {"class_type": "DeTTestInspect", "inputs": {"value": ["load", 1], "label": "info"}}}
    with pytest.raises(PromptExecutionError, match=message):
        comfy.run(g, timeout=120)
