"""`make demo` end to end: the small world's motion transfer through its own server, and everything it writes."""

import json
import os

from det_core.adapter import DeTAdapter
from det_core.video import LoadSettings, load_video
from devtools import demo
from miniworld import world
from miniworld.experiment import OBJECT_WEIGHTS


def test_demo_runs_the_transfer_and_writes_it_all(comfy_host, tmp_path, capsys):
    out = tmp_path / "demo_output"
    assert demo.main(["--host-dir", comfy_host, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("side_by_side.mp4", "strip.png", "reference.mp4", "base.mp4", "det.mp4", "loss_curve.png",
                 "det_demo_adapter.safetensors", "scores.json", "info.txt"):
        assert (out / name).is_file(), name
        assert str(out / name) in printed
    side = load_video(str(out / "side_by_side.mp4"), LoadSettings(snap="off")).frames
    assert tuple(side.shape) == (world.FRAMES, world.SIZE, 3 * world.SIZE + 4, 3)
    adapter = DeTAdapter.load(str(out / "det_demo_adapter.safetensors"))
    assert adapter.meta.steps == demo.DEMO_STEPS and adapter.meta.tracking_weight > 0
    assert adapter.meta.prompt == "a blue square" and adapter.meta.channels == 256
    scores = json.load(open(out / "scores.json"))["scores"]
    # the measuring chain is sound: the reference's own growth, through the stand-in VAE and the colour
    # segmentation, reads near the drawn one (pose) and its exact tracks (motion)
    assert scores["reference_through_vae"]["pose_fidelity"] > 0.85, scores
    assert scores["reference_through_vae"]["motion_fidelity"] > 0.8, scores
    assert {"pose_fidelity", "motion_fidelity"} <= set(scores["det"]) and {"pose_fidelity"} <= set(scores["base"])
    # both arms drew something, and the adapter changed what was drawn
    assert scores["base"]["motion_fidelity"] != scores["det"]["motion_fidelity"], scores
    assert "SYNTHETIC" in printed and "margin over the base is largest" in printed
    assert demo.MOTION in world.POSE_MOTIONS and os.path.samefile(demo.DEMO_WEIGHTS, OBJECT_WEIGHTS)
