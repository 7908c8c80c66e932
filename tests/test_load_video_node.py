"""DeTLoadVideo through a real ComfyUI server: schema, real media, upload, caching, and bad input."""

import os
import re
import shutil
import time

import pytest

from conftest import inspect_report
from det_tools.client import PromptExecutionError, PromptValidationError
from media import empty_video, frame_indices, indexed_clip

WIDGETS = ["video", "frame_load_cap", "skip_first_frames", "select_every_nth", "force_rate", "width", "height",
           "snap_to_16", "trim_to_4k_plus_1"]


def load_prompt(video: str, **settings) -> dict:
    inputs = {"video": video, "frame_load_cap": 0, "skip_first_frames": 0, "select_every_nth": 1, "force_rate": 0.0,
              "width": 0, "height": 0, "snap_to_16": "crop", "trim_to_4k_plus_1": True}
    inputs.update(settings)
    return {
        "1": {"class_type": "DeTLoadVideo", "inputs": inputs},
        "2": {"class_type": "DeTTestInspect", "inputs": {"value": ["1", 0], "label": "frames"}},
        "3": {"class_type": "DeTTestInspect", "inputs": {"value": ["1", 1], "label": "fps"}},
        "4": {"class_type": "DeTTestInspect", "inputs": {"value": ["1", 2], "label": "count"}},
        "5": {"class_type": "DeTTestInspect", "inputs": {"value": ["1", 3], "label": "info"}},
    }


def run_load(comfy, video, **settings):
    result = comfy.run(load_prompt(video, **settings), timeout=120)
    return result, {k: inspect_report(result, n) for k, n in (("frames", "2"), ("fps", "3"), ("count", "4"), ("info", "5"))}


def test_object_info_lists_the_node_with_its_widgets(comfy):
    info = comfy.object_info("DeTLoadVideo")["DeTLoadVideo"]
    assert info["display_name"] == "Load Video (DeT)"
    required = info["input"]["required"]
    assert list(required) == WIDGETS
    assert required["video"][1].get("video_upload") is True
    assert required["snap_to_16"][1]["options"] == ["crop", "resize", "off"]
    assert info["output_name"] == ["frames", "fps", "frame_count", "info"]
    assert all(spec[1].get("tooltip") for spec in required.values())


def test_dance_twirl_gives_49_frames_of_480x720(comfy, mtbench_examples):
    path = os.path.join(mtbench_examples, "dance-twirl", "source.mp4")
    _, r = run_load(comfy, path)
    assert r["frames"]["shape"] == [49, 480, 720, 3]
    assert 0.0 <= r["frames"]["min"] < r["frames"]["max"] <= 1.0
    assert r["count"]["value"] == 49 and r["fps"]["value"] == pytest.approx(8.0)
    assert "49 frames 720x480" in r["info"]["value"]


def test_uploaded_video_with_selection_and_size(comfy, pack_cases):
    name = comfy.upload(os.path.join(pack_cases, "world-zig-zag", "source.mp4"))
    assert name == "source.mp4"
    assert "source.mp4" in comfy.object_info("DeTLoadVideo")["DeTLoadVideo"]["input"]["required"]["video"][1]["options"]
    _, r = run_load(comfy, name, frame_load_cap=18, select_every_nth=2, width=360)
    assert r["frames"]["shape"] == [17, 240, 352, 3]  # 18 capped -> 17 (4k+1); 720x480 -> 360x240 -> crop 352
    assert r["fps"]["value"] == pytest.approx(4.0)


def test_selected_frames_are_the_right_ones(comfy, input_dir):
    indexed_clip(os.path.join(input_dir, "indexed.mp4"), frames=40, fps=10.0)
    _, r = run_load(comfy, "indexed.mp4", skip_first_frames=2, select_every_nth=4, trim_to_4k_plus_1=False)
    assert frame_indices(r["frames"]["frame_means"]) == list(range(2, 40, 4))


def test_reruns_only_when_the_file_or_settings_change(comfy, input_dir):
    path = indexed_clip(os.path.join(input_dir, "cache.mp4"), frames=12)
    executed = lambda res: {d["node"] for t, d in res.messages if t == "executing" and d.get("node")}
    first, _ = run_load(comfy, "cache.mp4")
    assert "1" in executed(first)
    again, _ = run_load(comfy, "cache.mp4")
    assert "1" not in executed(again)
    new_time = time.time() + 5
    os.utime(path, (new_time, new_time))
    touched, _ = run_load(comfy, "cache.mp4")
    assert "1" in executed(touched)
    changed, _ = run_load(comfy, "cache.mp4", select_every_nth=2)
    assert "1" in executed(changed)


def expect_execution_error(comfy, video, pattern, **settings):
    with pytest.raises(PromptExecutionError) as err:
        run_load(comfy, video, **settings)
    assert err.value.node_type == "DeTLoadVideo"
    msg = err.value.exception_message
    assert re.search(pattern, msg), msg
    return msg


def test_bad_input_gets_clear_errors_and_the_server_keeps_serving(comfy, input_dir, comfy_server):
    # a missing file: refused at validation, naming the file
    with pytest.raises(PromptValidationError) as err:
        run_load(comfy, "no_such_clip.mp4")
    assert any("video file not found" in m and "no_such_clip.mp4" in m for m in err.value.messages()), err.value
    # a file that is not a video
    with open(os.path.join(input_dir, "notes.mp4"), "w") as f:
        f.write("plain text, not a video\n" * 50)
    expect_execution_error(comfy, "notes.mp4", r"notes\.mp4 is not a readable video")
    # a video with zero frames
    empty_video(os.path.join(input_dir, "empty.avi"))
    expect_execution_error(comfy, "empty.avi", r"empty\.avi contains no video frames")
    # skip_first_frames past the end, alone and after force_rate
    indexed_clip(os.path.join(input_dir, "short.mp4"), frames=10, fps=10.0)
    expect_execution_error(comfy, "short.mp4", r"short\.mp4: skip_first_frames=10 is past the end.*only 10 frames",
                           skip_first_frames=10)
    expect_execution_error(comfy, "short.mp4", r"short\.mp4: .*only 2 frames at force_rate=2.*raise force_rate",
                           force_rate=2.0, skip_first_frames=4)
    # sizes: too small after snapping, negative, absurd
    expect_execution_error(comfy, "short.mp4", r"short\.mp4: size 8x8 is smaller than 16 px", width=8, height=8)
    for setting, kind in ((dict(width=-5), "smaller than min"), (dict(height=100000), "bigger than max"),
                          (dict(select_every_nth=0), "smaller than min")):
        with pytest.raises(PromptValidationError) as err:
            run_load(comfy, "short.mp4", **setting)
        assert any(kind in m for m in err.value.messages()), err.value
    # the server still serves
    assert comfy_server.alive()
    _, r = run_load(comfy, "short.mp4")
    assert r["frames"]["shape"] == [9, 64, 96, 3]


def test_nothing_outside_comfyuis_folders_can_be_read_or_probed(comfy_host, comfy_base, input_dir, tmp_path):
    """A server started without DET_ALLOW_ABSOLUTE_PATHS: Load Video and Load Tracks read the input folder (and its
    subfolders) only; absolute paths and '../' are refused with one message whether or not the file exists."""
    import numpy as np

    from det_tools.client import ComfyClient
    from det_tools.host import ComfyServer

    os.makedirs(os.path.join(input_dir, "sub"), exist_ok=True)
    indexed_clip(os.path.join(input_dir, "sub", "inside.mp4"), frames=9)
    np.save(os.path.join(input_dir, "sub", "inside_tracks.npy"), np.random.default_rng(0).random((9, 4, 3)))
    outside = tmp_path / "outside.mp4"
    shutil.copy(os.path.join(input_dir, "sub", "inside.mp4"), outside)
    np.save(tmp_path / "outside_tracks.npy", np.zeros((9, 4, 3)))

    def tracks_prompt(path):
        return {"1": {"class_type": "DeTLoadTracks", "inputs": {"path": path, "width": 64, "height": 48}},
                "2": {"class_type": "DeTTestInspect", "inputs": {"value": ["1", 1], "label": "info"}}}

    with ComfyServer(comfy_host, base_dir=comfy_base, log_path=str(tmp_path / "strict.log"),
                     env={"DET_ALLOW_ABSOLUTE_PATHS": None}) as server:
        client = ComfyClient(server.url)
        assert inspect_report(client.run(load_prompt("sub/inside.mp4", trim_to_4k_plus_1=False)), "4")["value"] == 9
        assert "4 points over 9 frames" in inspect_report(client.run(tracks_prompt("sub/inside_tracks.npy")), "2")["value"]
        messages = []
        for name in (str(outside), str(tmp_path / "missing.mp4"), "../../outside.mp4", "../nowhere.mp4"):
            with pytest.raises(PromptValidationError) as err:
                client.run(load_prompt(name))
            messages.append(re.sub(re.escape(repr(name)), "NAME", str(err.value)))
        assert all("is not in ComfyUI's input folder" in m for m in messages), messages
        assert len(set(messages)) == 1, messages  # an existing file and a missing one look the same
        for name in (str(tmp_path / "outside_tracks.npy"), str(tmp_path / "nope.npy"), "../x/../../etc/passwd"):
            with pytest.raises(PromptExecutionError, match="is not in ComfyUI's input folder"):
                client.run(tracks_prompt(name))
        assert server.alive()
