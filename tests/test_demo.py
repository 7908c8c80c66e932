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
    video = [f for f in files if f.endswith(".mp4")]
    curve = [f for f in files if f.startswith("loss_curve") and f.endswith(".png")]
    latent = [f for f in files if f.endswith(".latent")]
    assert len(video) == 1 and len(curve) == 1 and len(latent) == 1, files
    assert tuple(load_video(str(out / video[0])).frames.shape) == (17, 128, 192, 3)
    adapter = DeTAdapter.load(str(out / "det_demo_adapter.safetensors"))
    assert adapter.meta.steps == 20 and adapter.meta.tracking_weight == 0.1
    sample = load_file(str(out / latent[0]))["latent_tensor"]
    assert tuple(sample.shape) == (1, 16, 5, 16, 24) and torch.isfinite(sample).all()
    assert "SMOKE RUN" in printed and "SMOKE RUN" in (out / "info.txt").read_text()
    for f in (video[0], curve[0], latent[0], "det_demo_adapter.safetensors"):
        assert f in printed
