"""Hostile and broken input through the real server, one class per test: each error names the input (or file) and
the fix, nothing raw reaches the user, no file is written, and the server still answers afterwards. (Video, track
and path inputs have their own modules: test_load_video_node, test_track_nodes; training settings and latents:
test_det_nodes.test_bad_input_gets_clear_errors.)"""

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from det_core.adapter import AdapterMeta, DeTAdapter
from det_tools.client import PromptExecutionError, PromptValidationError
from det_graphs import (apply_node, base_nodes, cotracker_node, empty_latent, load_video_node, save_latent,
                        train_node)
from test_det_nodes import adapters_dir, load_adapter_node, write_adapter  # noqa: F401 (fixture)


def refused(comfy, comfy_server, graph, *phrases):
    """Run `graph`, expect a node error whose text holds every phrase and no raw exception type, and check that the
    server still answers."""
    with pytest.raises(PromptExecutionError) as err:
        comfy.run(graph, timeout=300)
    text = str(err.value)
    for phrase in phrases:
        assert phrase in text, text
    for raw in ("Traceback", "IndexError", "KeyError", "AttributeError", "weights_only=False"):
        assert raw not in text, text
    assert comfy_server.alive() and comfy.get_json("/system_stats")
    return text


def test_an_adapter_file_claiming_huge_sizes_is_refused_before_allocating(comfy, comfy_server, adapters_dir):
    a = DeTAdapter(AdapterMeta(channels=128, mid_dim=16, kernel_size=3, blocks={"double": [0]}))
    md = dict(a.meta.to_metadata(), **{"det.mid_dim": "100000000"})
    save_file({k: v.contiguous() for k, v in a.state_dict().items()}, os.path.join(adapters_dir, "huge.safetensors"),
              metadata=md)
    g = dict(base_nodes(), empty=empty_latent(), ad=load_adapter_node("huge.safetensors"))
    g["apply"] = apply_node(("ad", 0))
    g["out"] = save_latent(("apply", 0), "huge")
    refused(comfy, comfy_server, g, "huge.safetensors", "mid_dim=100000000 (allowed 1 to 65536)")


def test_a_pickled_optimizer_state_is_refused_by_name_on_resume(comfy, comfy_server, adapters_dir):
    write_adapter(adapters_dir, "pickled_opt.safetensors", blocks={"double": [0, 1]})
    torch.save({"step": 0, "optimizer": {"note": object.__new__(PicklePayload)}, "log": []},
               os.path.join(adapters_dir, "pickled_opt.optim.pt"))
    g = base_nodes()
    g["train"] = train_node("pickled_opt", steps=2, resume_from="pickled_opt.safetensors", mid_dim=16)
    g["info"] = {"class_type": "PreviewAny", "inputs": {"source": ["train", 2]}}
    refused(comfy, comfy_server, g, "pickled_opt.optim.pt is not a valid DeT optimizer state",
            "never loaded")


class PicklePayload:
    """An object a weights-only load cannot rebuild (what a malicious or mistaken state file holds)."""


@pytest.mark.parametrize("node, value, phrase", [
    ("apply", {"keep_fraction": float("nan")}, "keep_fraction=nan: must be a finite number"),
    ("apply", {"guidance": float("nan")}, "guidance=nan: must be a finite number"),
    ("train", {"learning_rate": float("nan")}, "learning_rate=nan: must be a finite number"),
    ("train", {"tracking_max_timestep": float("nan")}, "tracking_max_timestep=nan: must be a finite number"),
])
def test_nan_and_infinity_are_refused_by_name(comfy, comfy_server, adapters_dir, node, value, phrase):
    g = base_nodes()
    if node == "apply":
        write_adapter(adapters_dir, "finite.safetensors")
        g.update(empty=empty_latent(), ad=load_adapter_node("finite.safetensors"))
        g["apply"] = apply_node(("ad", 0), **value)
        g["out"] = save_latent(("apply", 0), "finite")
    else:
        g["train"] = train_node("finite_train", steps=2, overwrite=True, **value)
        g["info"] = {"class_type": "PreviewAny", "inputs": {"source": ["train", 2]}}
    refused(comfy, comfy_server, g, phrase)
    assert not os.path.exists(os.path.join(adapters_dir, "finite_train.safetensors"))
    # the history that now holds NaN would be unreadable to the browser front end
    comfy.post_json("/history", {"clear": True})


def test_motion_fidelity_alpha_nan_blames_alpha(comfy, comfy_server, cotracker_file, input_dir):
    from media import indexed_clip

    indexed_clip(os.path.join(input_dir, "alpha.mp4"), frames=5, width=64, height=48)
    g = {"video": load_video_node("alpha.mp4"), "tracker": cotracker_node(cotracker_file),
         "score": {"class_type": "DeTMotionFidelity", "inputs": {
             "generated": ["video", 0], "cotracker": ["tracker", 0], "mode": "frechet", "alpha": float("nan"),
             "points": 4, "prompt": "", "source": ["video", 0]}}}
    refused(comfy, comfy_server, g, "alpha=nan: must be a finite number")
    comfy.post_json("/history", {"clear": True})
    assert json.dumps(comfy.get_json("/history"))  # readable again


FILE_NAME_INPUTS = [
    ("DeTLoadVideo", "video", 123, "a video file in ComfyUI's input folder"),
    ("DeTLoadAdapter", "adapter_name", 7, "a .safetensors file in models/det_adapters/"),
    ("DeTTrainAdapter", "resume_from", 1.5, "an adapter in models/det_adapters/"),
    ("DeTCoTrackerLoader", "checkpoint", True, "a CoTracker3 checkpoint in models/cotracker/"),
    ("DeTGroundingDinoLoader", "model_name", {"name": "x"}, "a GroundingDINO folder in models/grounding-dino/"),
    ("DeTSAMLoader", "model_name", 0, "a SAM folder or checkpoint in models/sams/"),
    ("DeTLoadEvalModels", "dino", 3, "a folder in models/det_eval/"),
]


@pytest.mark.parametrize("class_type, input_name, value, what", FILE_NAME_INPUTS,
                         ids=[f"{c}.{i}" for c, i, _, _ in FILE_NAME_INPUTS])
def test_a_file_name_that_is_not_a_string_is_refused_by_name(comfy, comfy_server, class_type, input_name, value, what):
    """An API prompt may send any JSON value where a file name belongs; ComfyUI leaves inputs that a node validates
    itself unchecked, so the node must say what it wanted instead of failing in the path code ('int' object has no
    attribute 'strip')."""
    settings = {"DeTLoadVideo": load_video_node("x.mp4")["inputs"],
                "DeTLoadAdapter": {"adapter_name": "x.safetensors"},
                "DeTCoTrackerLoader": cotracker_node("x.pth")["inputs"],
                "DeTGroundingDinoLoader": {"model_name": "x", "device": "cpu", "dtype": "auto"},
                "DeTSAMLoader": {"model_name": "x", "device": "cpu", "dtype": "auto"},
                "DeTLoadEvalModels": {"clip": "none", "dino": "none", "device": "cpu"}}
    if class_type == "DeTTrainAdapter":
        g = dict(base_nodes(), node=train_node("never_written", steps=2))
    else:
        g = {"node": {"class_type": class_type, "inputs": dict(settings[class_type])}}
    g["node"]["inputs"][input_name] = value
    g["show"] = {"class_type": "PreviewAny", "inputs": {"source": ["node", 0]}}
    with pytest.raises(PromptValidationError) as err:
        comfy.run(g, timeout=60)
    text = "\n".join(err.value.messages())
    assert f"{input_name}={value!r} is not a file name: give the name (a string) of {what}" in text, text
    for raw in ("has no attribute", "argument must be str", "unhashable", "Exception when validating"):
        assert raw not in text, text
    assert comfy_server.alive() and comfy.get_json("/system_stats")
