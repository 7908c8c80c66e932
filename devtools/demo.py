"""`make demo`: the whole pipeline headless through a real ComfyUI server, on tiny models and a clip made here.

A SMOKE RUN of the pipeline with untrained tiny models (random GroundingDINO, SAM, CoTracker3 and HunyuanVideo
weights; random text features): it shows that every stage runs and what each writes, not what DeT output looks
like. Stages: Load Video (DeT) -> GroundedSAM Mask (DeT) -> CoTracker3 Tracks (DeT) -> (stand-ins for VAE Encode
and the text encoder, which cannot be made tiny) -> Train DeT Adapter (20 steps) -> Apply DeT Motion with a new
"prompt" -> (stand-in for VAE Decode) -> Save Video. Everything lands in demo_output/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time


from det_core.client import ComfyClient
from det_core.host import ComfyServer, prepare_base_dir
from det_core.video import synthetic_clip, write_video
from devtools.tiny_models import (TINY_HV_FILE, TINY_TEXT_DIM, import_comfy, tiny_grounding_dino, tiny_sam,
                                  write_random_cotracker3, write_tiny_hunyuan_video)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIP_NAME = "det_demo_clip.mp4"
FRAMES, HEIGHT, WIDTH = 17, 128, 192


def demo_prompt(clip: str) -> dict:
    return {
        "load": {"class_type": "DeTLoadVideo", "inputs": {
            "video": clip, "frame_load_cap": 0, "skip_first_frames": 0, "select_every_nth": 1, "force_rate": 0.0,
            "width": 0, "height": 0, "snap_to_16": "crop", "trim_to_4k_plus_1": True}},
        "video": {"class_type": "CreateVideo", "inputs": {"images": ["load", 0], "fps": ["load", 1]}},
        "save_video": {"class_type": "SaveVideo", "inputs": {"video": ["video", 0], "filename_prefix": "det_demo/input",
                                                             "format": "mp4", "codec": "h264"}},
        "model": {"class_type": "UNETLoader", "inputs": {"unet_name": TINY_HV_FILE, "weight_dtype": "default"}},
        "encode": {"class_type": "DeTTestPseudoEncode", "inputs": {"frames": ["load", 0]}},
        "caption": {"class_type": "DeTTestConditioning", "inputs": {"seed": 1, "tokens": 8, "width": TINY_TEXT_DIM, "guidance": 6.0}},
        "prompt": {"class_type": "DeTTestConditioning", "inputs": {"seed": 2, "tokens": 8, "width": TINY_TEXT_DIM, "guidance": 6.0}},
        "dino": {"class_type": "DeTGroundingDinoLoader", "inputs": {"model_name": "tiny-grounding-dino", "device": "cpu",
                                                                    "dtype": "fp32"}},
        "sam": {"class_type": "DeTSAMLoader", "inputs": {"model_name": "tiny-sam", "device": "cpu", "dtype": "fp32"}},
        "mask": {"class_type": "DeTGroundedSAMMask", "inputs": {
            "images": ["load", 0], "grounding_dino": ["dino", 0], "sam_model": ["sam", 0], "prompt": "ball",
            "box_threshold": 0.0, "text_threshold": 0.0}},
        "save_mask": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["mask", 1], "filename_prefix": "det_demo/mask_preview",
                                                                   "fps": 8.0, "lossless": False, "quality": 85, "method": "default"}},
        "cotracker": {"class_type": "DeTCoTrackerLoader", "inputs": {"checkpoint": "random_cotracker3.pth", "mode": "auto",
                                                                     "device": "cpu", "dtype": "fp32"}},
        "tracks": {"class_type": "DeTCoTrackerTracks", "inputs": {
            "images": ["load", 0], "cotracker": ["cotracker", 0], "mask": ["mask", 0], "points": 24,
            "sampling": "mask-weighted", "query_frame": 0, "backward_tracking": False, "seed": 0}},
        "save_tracks": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["tracks", 1], "filename_prefix": "det_demo/tracks",
                                                                     "fps": 8.0, "lossless": False, "quality": 85, "method": "default"}},
        "train": {"class_type": "DeTTrainAdapter", "inputs": {
            "model": ["model", 0], "latent": ["encode", 0], "conditioning": ["caption", 0], "tracks": ["tracks", 0],
            "steps": 20, "learning_rate": 1e-3, "mid_dim": 16, "kernel_size": 3, "double_blocks": "all",
            "single_blocks": "none", "tracking_weight": 0.1, "tracking_features": "x0", "feature_block": "double:1",
            "guidance": 6.0, "warmup_steps": 0, "optimizer": "auto", "seed": 0, "output_name": "det_demo_adapter",
            "checkpoint_every": 10, "overwrite": True, "resume_from": "none", "caption": "smoke run: an orange disc"}},
        "save_curve": {"class_type": "SaveImage", "inputs": {"images": ["train", 1], "filename_prefix": "det_demo/loss_curve"}},
        "empty": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": WIDTH, "height": HEIGHT, "length": FRAMES,
                                                                      "batch_size": 1}},
        "apply": {"class_type": "DeTApplyMotion", "inputs": {
            "model": ["model", 0], "adapter": ["train", 0], "positive": ["prompt", 0], "latent": ["empty", 0],
            "seed": 0, "steps": 4, "guidance": 6.0, "cfg": 1.0, "flow_shift": 7.0, "sampler_name": "euler",
            "scheduler": "simple", "strength": 1.0, "double_blocks": "trained", "single_blocks": "trained",
            "keep_fraction": 1.0}},
        "save_latent": {"class_type": "SaveLatent", "inputs": {"samples": ["apply", 0], "filename_prefix": "det_demo/output_latent"}},
        "decode": {"class_type": "DeTTestPseudoDecode", "inputs": {"samples": ["apply", 0]}},
        "out_video": {"class_type": "CreateVideo", "inputs": {"images": ["decode", 0], "fps": ["load", 1]}},
        "save_output": {"class_type": "SaveVideo", "inputs": {"video": ["out_video", 0], "filename_prefix": "det_demo/output",
                                                              "format": "mp4", "codec": "h264"}},
        "info": {"class_type": "PreviewAny", "inputs": {"source": ["load", 3]}},
        "train_info": {"class_type": "PreviewAny", "inputs": {"source": ["train", 2]}},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__)
    parser.add_argument("--host-dir", required=True, help="the ComfyUI folder (make setup writes it to .comfyui-path)")
    parser.add_argument("--out", default="demo_output", help="where the outputs go")
    parser.add_argument("--timeout", type=float, default=600.0)
    ns = parser.parse_args(argv)

    out = os.path.abspath(ns.out)
    shutil.rmtree(out, ignore_errors=True)
    base = prepare_base_dir(os.path.join(out, "comfy_base"),
                            {"det_test_nodes": os.path.join(ROOT, "tests", "comfy_test_nodes")})
    print("[DeT demo] SMOKE RUN of the pipeline with untrained tiny models and a synthetic clip; "
          "it shows that every stage runs, not what DeT output looks like")

    # 1. inputs made here: the clip and tiny random models in the real checkpoint formats
    clip = write_video(synthetic_clip(frames=FRAMES, height=HEIGHT, width=WIDTH), os.path.join(base, "input", CLIP_NAME), fps=8)
    import_comfy(ns.host_dir)
    models = os.path.join(base, "models")
    write_tiny_hunyuan_video(os.path.join(models, "diffusion_models", TINY_HV_FILE))
    tiny_grounding_dino(os.path.join(models, "grounding-dino", "tiny-grounding-dino"))
    tiny_sam(os.path.join(models, "sams", "tiny-sam"))
    write_random_cotracker3(os.path.join(models, "cotracker", "random_cotracker3.pth"))

    # 2. a real ComfyUI server with the pack, queued over HTTP
    t0 = time.monotonic()
    with ComfyServer(ns.host_dir, base_dir=base, log_path=os.path.join(out, "comfyui.log")) as server:
        client = ComfyClient(server.url)

        def progress(mtype, data):
            if mtype == "executing" and data.get("node"):
                print(f"[DeT demo] running {data['node']}")
            elif mtype == "det.train" and (data["step"] % 5 == 0):
                print(f"[DeT demo]   training step {data['step']}/{data['total']} loss {data['loss']:.4f}")

        result = client.run(demo_prompt(CLIP_NAME), timeout=ns.timeout, on_message=progress)
        files = client.download_outputs(result, out)
    adapter = os.path.join(out, "det_demo_adapter.safetensors")
    shutil.copy(os.path.join(base, "models", "det_adapters", "det_demo_adapter.safetensors"), adapter)
    texts = {k: result.outputs.get(k, {}).get("text", [""])[0] for k in ("info", "train_info")}
    with open(os.path.join(out, "info.txt"), "w") as f:
        f.write("SMOKE RUN with untrained tiny models\n" + texts["info"] + "\n" + texts["train_info"] + "\n")
    with open(os.path.join(out, "prompt.json"), "w") as f:
        json.dump(demo_prompt(CLIP_NAME), f, indent=2)

    print(f"[DeT demo] finished in {time.monotonic() - t0:.1f} s")
    print(f"[DeT demo] input clip:   {clip}")
    for path in sorted(files) + [adapter]:
        print(f"[DeT demo] output:       {path}")
    print(f"[DeT demo] info:         {os.path.join(out, 'info.txt')}")
    print(f"[DeT demo] API prompt:   {os.path.join(out, 'prompt.json')}")
    print(f"[DeT demo] server log:   {os.path.join(out, 'comfyui.log')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
