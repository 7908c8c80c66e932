"""Nodes and options that had no test through the server: Save DeT Adapter, keep_fraction below 1, cfg above 1
with a negative prompt, .pth track files, query_frame above 0 with mask-grid sampling, and Load Eval Models with
Motion Fidelity's edit-fidelity and temporal-consistency outputs, and a shipped workflow run end to end."""

import glob
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import need_shared
from det_core.adapter import DeTAdapter
from det_tools.client import PromptExecutionError
from det_core.metrics import edit_fidelity, load_clip, load_dino, temporal_consistency
from det_graphs import (apply_node, base_nodes, cotracker_node, empty_latent, fetch_latent, load_video_node,
                        save_latent, train_node)
from test_det_nodes import adapters_dir, load_adapter_node, write_adapter  # noqa: F401 (fixture)
from test_metrics import tiny_clip_folder, tiny_dino_folder


def test_save_adapter_writes_what_was_trained_and_keeps_existing_files(comfy, adapters_dir):
    g = base_nodes()
    g["train"] = train_node("to_save_src", steps=2, overwrite=True, checkpoint_every=0)
    g["save"] = {"class_type": "DeTSaveAdapter", "inputs": {"adapter": ["train", 0], "name": "saved_copy",
                                                            "overwrite": True}}
    comfy.run(g)
    trained = DeTAdapter.load(os.path.join(adapters_dir, "to_save_src.safetensors"))
    saved = DeTAdapter.load(os.path.join(adapters_dir, "saved_copy.safetensors"))
    assert saved.meta.steps == trained.meta.steps == 2
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in saved.state_dict().items())
    before = os.path.getmtime(os.path.join(adapters_dir, "saved_copy.safetensors"))
    g["save"]["inputs"]["overwrite"] = False
    g["train"]["inputs"]["seed"] = 1  # a new run, so the save node runs again
    with pytest.raises(PromptExecutionError, match=r"saved_copy\.safetensors exists; turn on overwrite"):
        comfy.run(g)
    assert os.path.getmtime(os.path.join(adapters_dir, "saved_copy.safetensors")) == before
    g["save"]["inputs"].update(name="../outside", overwrite=True)
    with pytest.raises(PromptExecutionError, match="'../outside' is not allowed"):
        comfy.run(g)


def test_keep_fraction_applies_the_first_blocks_by_depth(comfy, adapters_dir):
    """keep_fraction 0.5 of an adapter in double blocks 0 and 1 (and single 0, 1) samples exactly what applying
    the first half of the blocks by depth does."""
    write_adapter(adapters_dir, "four_blocks.safetensors", seed=3)
    g = base_nodes()
    g["empty"] = empty_latent()
    g["ad"] = load_adapter_node("four_blocks.safetensors")
    g["half"] = apply_node(("ad", 0), keep_fraction=0.5)
    g["first"] = apply_node(("ad", 0), double_blocks="0,1", single_blocks="none")
    g["all"] = apply_node(("ad", 0))
    for name in ("half", "first", "all"):
        g[f"out_{name}"] = save_latent((name, 0), f"keep_{name}")
    r = comfy.run(g)
    half, first, every = (fetch_latent(comfy, r, f"out_{n}") for n in ("half", "first", "all"))
    assert torch.equal(half, first)
    assert not torch.allclose(half, every)


def test_cfg_above_one_uses_the_negative_prompt(comfy, adapters_dir):
    write_adapter(adapters_dir, "cfg_adapter.safetensors", seed=4)
    g = base_nodes()
    g["empty"] = empty_latent()
    g["ad"] = load_adapter_node("cfg_adapter.safetensors")
    g["one"] = apply_node(("ad", 0))
    g["two"] = apply_node(("ad", 0), cfg=2.0, negative=["cond", 0])
    g["two_swapped"] = apply_node(("ad", 0), cfg=2.0, negative=["cond2", 0])
    for name in ("one", "two", "two_swapped"):
        g[f"out_{name}"] = save_latent((name, 0), f"cfg_{name}")
    r = comfy.run(g)
    one, two, same = (fetch_latent(comfy, r, f"out_{n}") for n in ("one", "two", "two_swapped"))
    assert torch.isfinite(two).all() and not torch.allclose(one, two)
    # with the positive prompt as the negative, cfg changes nothing: uncond = cond
    assert torch.allclose(one, same, atol=1e-5)
    g = base_nodes()
    g["empty"] = empty_latent()
    g["ad"] = load_adapter_node("cfg_adapter.safetensors")
    g["two"] = apply_node(("ad", 0), cfg=2.0)
    g["out"] = save_latent(("two", 0), "cfg_missing")
    with pytest.raises(PromptExecutionError, match="cfg=2.0 needs a negative prompt"):
        comfy.run(g)


def test_pth_track_files_load_like_the_npy(comfy, mtbench_examples, input_dir, comfy_base):
    pth = need_shared(os.path.join(os.path.dirname(mtbench_examples), "mtbench_det_layout", "dog-agility",
                                   "trajectories", "dog-agility.pth"))
    os.makedirs(os.path.join(input_dir, "pth"), exist_ok=True)
    with open(pth, "rb") as src, open(os.path.join(input_dir, "pth", "dog-agility.pth"), "wb") as dst:
        dst.write(src.read())
    g = {"load": {"class_type": "DeTLoadTracks", "inputs": {"path": "pth/dog-agility.pth", "width": 720,
                                                            "height": 480}},
         "save": {"class_type": "DeTSaveTracks", "inputs": {"tracks": ["load", 0], "filename_prefix": "pth_check"}}}
    comfy.run(g)
    (saved,) = glob.glob(os.path.join(comfy_base, "output", "pth_check_*.npy"))
    flat = np.load(os.path.join(mtbench_examples, "dog-agility", "tracks.npy"))
    np.testing.assert_allclose(np.load(saved)[..., :2], flat[..., :2], atol=1e-6)
    assert np.array_equal(np.load(saved)[..., 2] > 0.5, flat[..., 2] > 0.5)


def test_query_frame_and_mask_grid_sampling(comfy, cotracker_file, input_dir):
    """Points sampled on a grid inside the mask, queried on frame 3: on frame 3 every track sits on its query
    point, inside the mask, and the points form a grid."""
    from media import indexed_clip

    indexed_clip(os.path.join(input_dir, "qf.mp4"), frames=9, width=96, height=64)
    mask = np.zeros((64, 96), np.uint8)
    mask[16:48, 24:72] = 255
    Image.fromarray(mask).save(os.path.join(input_dir, "qf_mask.png"))
    g = {"video": load_video_node("qf.mp4"),
         "mask_image": {"class_type": "LoadImage", "inputs": {"image": "qf_mask.png"}},
         "mask": {"class_type": "ImageToMask", "inputs": {"image": ["mask_image", 0], "channel": "red"}},
         "tracker": cotracker_node(cotracker_file),
         "tracks": {"class_type": "DeTCoTrackerTracks", "inputs": {
             "images": ["video", 0], "cotracker": ["tracker", 0], "points": 16, "sampling": "mask-grid",
             "query_frame": 3, "backward_tracking": True, "seed": 0, "mask": ["mask", 0]}},
         "save": {"class_type": "DeTSaveTracks", "inputs": {"tracks": ["tracks", 0], "filename_prefix": "qf_tracks"}}}
    comfy.run(g, timeout=600)
    (saved,) = glob.glob(os.path.join(os.path.dirname(input_dir), "output", "qf_tracks_*.npy"))
    arr = np.load(saved)  # [9, N, 3] x/W, y/H, visibility
    xy = arr[3, :, :2] * np.array([96, 64])
    assert arr.shape[0] == 9 and 8 <= arr.shape[1] <= 16
    assert ((xy[:, 0] >= 24) & (xy[:, 0] < 72) & (xy[:, 1] >= 16) & (xy[:, 1] < 48)).all(), xy
    assert (arr[3, :, 2] > 0.5).all()  # visible where they were asked for
    for axis in (0, 1):  # a regular grid: the distinct coordinates are evenly spaced
        steps = np.diff(np.unique(np.round(xy[:, axis], 3)))
        assert len(steps) >= 1 and np.allclose(steps, steps[0], atol=1e-3), xy


@pytest.fixture(scope="module")
def eval_models(comfy_base):
    folder = os.path.join(comfy_base, "models", "det_eval")
    tiny_clip_folder(os.path.join(folder, "tiny_clip"))
    tiny_dino_folder(os.path.join(folder, "tiny_dino"))
    return folder


def test_eval_models_give_edit_fidelity_and_temporal_consistency(comfy, cotracker_file, input_dir, eval_models):
    from media import indexed_clip

    indexed_clip(os.path.join(input_dir, "ef.mp4"), frames=5, width=64, height=48)
    g = {"video": load_video_node("ef.mp4"),
         "models": {"class_type": "DeTLoadEvalModels", "inputs": {"clip": "tiny_clip", "dino": "tiny_dino",
                                                                  "device": "cpu"}},
         "tracker": cotracker_node(cotracker_file),
         "score": {"class_type": "DeTMotionFidelity", "inputs": {
             "generated": ["video", 0], "cotracker": ["tracker", 0], "mode": "frechet", "alpha": 0.5, "points": 4,
             "prompt": "a grey card", "source": ["video", 0], "eval_models": ["models", 0]}}}
    doc = json.loads(comfy.run(g, timeout=600).outputs["score"]["text"][0])
    # the same numbers as the metrics computed here on the frames the server decoded
    from det_core.video import LoadSettings, load_video

    frames = load_video(os.path.join(input_dir, "ef.mp4"), LoadSettings(snap="off", trim_4k_plus_1=False)).frames
    clip = load_clip(os.path.join(eval_models, "tiny_clip"))
    dino = load_dino(os.path.join(eval_models, "tiny_dino"))
    assert doc["edit_fidelity"] == pytest.approx(edit_fidelity(frames, "a grey card", *clip), abs=1e-3)
    assert doc["temporal_consistency"] == pytest.approx(100 * temporal_consistency(frames, *dino), abs=1e-3)
    g["models"]["inputs"]["clip"] = "no_such_folder"
    with pytest.raises(Exception, match="no folder 'no_such_folder' in models/det_eval/"):
        comfy.run(g, timeout=120)


def test_the_shipped_evaluate_workflow_runs_end_to_end(comfy_server, comfy_base, cotracker_file, input_dir,
                                                      eval_models, tmp_path, capsys):
    """workflows/det_evaluate.json as shipped (UI format, converted by the headless client), with tiny models under
    the file names its Note asks for: the generated video is the reference itself, so motion fidelity is 100."""
    import shutil

    from det_tools.client import main
    from media import indexed_clip

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # the file names the workflow asks for; removed afterwards (other tests check what is missing without them)
    placed = [os.path.join(comfy_base, "models", "cotracker", "scaled_offline.pth"),
              os.path.join(eval_models, "clip-vit-base-patch32"), os.path.join(eval_models, "dino-vitb16")]
    shutil.copy(os.path.join(comfy_base, "models", "cotracker", cotracker_file), placed[0])
    shutil.copytree(os.path.join(eval_models, "tiny_clip"), placed[1], dirs_exist_ok=True)
    shutil.copytree(os.path.join(eval_models, "tiny_dino"), placed[2], dirs_exist_ok=True)
    clip = indexed_clip(os.path.join(input_dir, "det_example.mp4"), frames=9, width=64, height=48)
    shutil.copy(clip, os.path.join(input_dir, "det_generated.mp4"))
    out = tmp_path / "out"
    try:
        rc = main([os.path.join(root, "workflows", "det_evaluate.json"), "--server", comfy_server.url, "--out",
                   str(out), "--quiet", "--set", "DeTMotionFidelity.points=8"])
    finally:
        os.remove(placed[0])
        shutil.rmtree(placed[1])
        shutil.rmtree(placed[2])
        for name in ("det_example.mp4", "det_generated.mp4"):
            os.remove(os.path.join(input_dir, name))
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    reports = [json.loads(open(p).read()) for p in glob.glob(str(out / "text_*.txt"))
               if "motion_fidelity" in open(p).read()]  # the node's own text and the Scores preview
    assert reports and all(r == reports[0] for r in reports)
    scores = reports[0]
    assert scores["motion_fidelity"] == pytest.approx(100.0) and scores["protocol"] == "pack"
    assert -100.0 <= scores["edit_fidelity"] <= 100.0 and 0.0 < scores["temporal_consistency"] <= 100.0 + 1e-6
