"""`make demo` end to end: the demo starts its own server, trains a tiny adapter, samples with it, and writes it all."""

import os

import torch
from safetensors.torch import load_file

from det_core.adapter import DeTAdapter
from det_core.video import load_video
from devtools import demo


def test_demo_writes_the_whole_smoke_run(comfy_host, tmp_path, capsys):
    out = tmp_path / "demo_output"
    assert demo.main(["--host-dir", comfy_host, "--out", str(out), "--timeout", "300"]) == 0
    printed = capsys.readouterr().out
    files = set(os.listdir(out))
    pick = lambda prefix, ext: [f for f in files if f.startswith(prefix) and f.endswith(ext)]
    video, output = pick("input", ".mp4"), pick("output_", ".mp4")
    curve, latent = pick("loss_curve", ".png"), pick("output_latent", ".latent")
    mask, tracks = pick("mask_preview", ".webp"), pick("tracks", ".webp")
    assert all(len(x) == 1 for x in (video, output, curve, latent, mask, tracks)), files
    assert not [f for f in files if f.startswith("ComfyUI_temp")], "temporary previews are not outputs"
    assert tuple(load_video(str(out / video[0])).frames.shape) == (17, 128, 192, 3)
    assert tuple(load_video(str(out / output[0])).frames.shape) == (17, 128, 192, 3)
    from PIL import Image
    with Image.open(out / tracks[0]) as im:
        assert im.n_frames == 17 and im.size == (192, 128)
    adapter = DeTAdapter.load(str(out / "det_demo_adapter.safetensors"))
    assert adapter.meta.steps == 20 and adapter.meta.tracking_weight == 0.1
    sample = load_file(str(out / latent[0]))["latent_tensor"]
    assert tuple(sample.shape) == (1, 16, 5, 16, 24) and torch.isfinite(sample).all()
    assert "SMOKE RUN" in printed and "SMOKE RUN" in (out / "info.txt").read_text()
    for f in (video[0], output[0], curve[0], latent[0], mask[0], tracks[0], "det_demo_adapter.safetensors"):
        assert f in printed
