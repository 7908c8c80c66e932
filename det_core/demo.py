"""`make demo`: run the pack headless through a real ComfyUI server and write what it produces.

A smoke run of the pipeline on a short synthetic clip that the pack makes itself (no downloads, no real
weights): the clip goes through Load Video (DeT), and the frames and a preview video come back.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

from .client import ComfyClient
from .host import ComfyServer, prepare_base_dir
from .video import synthetic_clip, write_video

CLIP_NAME = "det_demo_clip.mp4"


def demo_prompt(clip: str) -> dict:
    return {
        "load": {"class_type": "DeTLoadVideo", "_meta": {"title": "Load Video (DeT)"}, "inputs": {
            "video": clip, "frame_load_cap": 0, "skip_first_frames": 0, "select_every_nth": 1, "force_rate": 0.0,
            "width": 0, "height": 0, "snap_to_16": "crop", "trim_to_4k_plus_1": True}},
        "frames": {"class_type": "SaveImage", "inputs": {"images": ["load", 0], "filename_prefix": "det_demo/frame"}},
        "video": {"class_type": "CreateVideo", "inputs": {"images": ["load", 0], "fps": ["load", 1]}},
        "save": {"class_type": "SaveVideo", "inputs": {"video": ["video", 0], "filename_prefix": "det_demo/preview",
                                                       "format": "mp4", "codec": "h264"}},
        "info": {"class_type": "PreviewAny", "inputs": {"source": ["load", 3]}},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m det_core.demo", description=__doc__)
    parser.add_argument("--host-dir", required=True, help="the ComfyUI folder (make setup writes it to .comfyui-path)")
    parser.add_argument("--out", default="demo_output", help="where the outputs go")
    parser.add_argument("--timeout", type=float, default=600.0)
    ns = parser.parse_args(argv)

    out = os.path.abspath(ns.out)
    shutil.rmtree(out, ignore_errors=True)
    base = prepare_base_dir(os.path.join(out, "comfy_base"))
    print("[DeT demo] smoke run of the pipeline on a synthetic clip made here (no real model weights)")

    # 1. the input: a short synthetic clip, written into the server's input folder
    clip = write_video(synthetic_clip(frames=17, height=128, width=192), os.path.join(base, "input", CLIP_NAME), fps=8)

    # 2. a real ComfyUI server with the pack, queued over HTTP
    t0 = time.monotonic()
    with ComfyServer(ns.host_dir, base_dir=base, log_path=os.path.join(out, "comfyui.log")) as server:
        client = ComfyClient(server.url)
        progress = lambda t, d: t == "executing" and d.get("node") and print(f"[DeT demo] running node {d['node']}")
        result = client.run(demo_prompt(os.path.basename(clip)), timeout=ns.timeout, on_message=progress)
        files = client.download_outputs(result, out)
    info = result.outputs.get("info", {}).get("text", [""])[0]
    with open(os.path.join(out, "info.txt"), "w") as f:
        f.write(info + "\n")
    with open(os.path.join(out, "prompt.json"), "w") as f:
        json.dump(demo_prompt(CLIP_NAME), f, indent=2)

    print(f"[DeT demo] finished in {time.monotonic() - t0:.1f} s: {info}")
    print(f"[DeT demo] input clip:    {clip}")
    frames = sorted(p for p in files if p.endswith(".png"))
    if frames:
        print(f"[DeT demo] frames:        {len(frames)} PNG files, {frames[0]} .. {os.path.basename(frames[-1])}")
    for path in sorted(set(files) - set(frames)):
        print(f"[DeT demo] output:        {path}")
    print(f"[DeT demo] info:          {os.path.join(out, 'info.txt')}")
    print(f"[DeT demo] server log:    {os.path.join(out, 'comfyui.log')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
