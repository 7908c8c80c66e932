"""`make demo` end to end: the demo module starts its own server and writes its outputs."""

import os

from det_core import demo
from det_core.video import load_video


def test_demo_writes_frames_and_preview(comfy_host, tmp_path, capsys):
    out = tmp_path / "demo_output"
    assert demo.main(["--host-dir", comfy_host, "--out", str(out), "--timeout", "300"]) == 0
    printed = capsys.readouterr().out
    pngs = sorted(p for p in os.listdir(out) if p.endswith(".png"))
    videos = [p for p in os.listdir(out) if p.endswith(".mp4")]
    assert len(pngs) == 17 and len(videos) == 1
    preview = load_video(str(out / videos[0]))
    assert tuple(preview.frames.shape) == (17, 128, 192, 3)
    assert "17 frames 192x128" in (out / "info.txt").read_text()
    assert str(out / videos[0]) in printed
