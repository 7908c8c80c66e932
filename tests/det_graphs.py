"""API-format prompt pieces for the DeT node tests on the tiny HunyuanVideo."""

from __future__ import annotations

from devtools.tiny_models import TINY_HV_FILE, TINY_TEXT_DIM


def base_nodes(frames=13, height=6, width=8, latent_seed=0) -> dict:
    return {
        "model": {"class_type": "UNETLoader", "inputs": {"unet_name": TINY_HV_FILE, "weight_dtype": "default"}},
        "cond": {"class_type": "DeTTestConditioning", "inputs": {"seed": 1, "tokens": 6, "width": TINY_TEXT_DIM, "guidance": 6.0}},
        "cond2": {"class_type": "DeTTestConditioning", "inputs": {"seed": 2, "tokens": 7, "width": TINY_TEXT_DIM, "guidance": 6.0}},
        "ref": {"class_type": "DeTTestLatent", "inputs": {"seed": latent_seed, "frames": frames, "height": height, "width": width}},
    }


def train_node(output_name="motion", steps=30, tracks=None, **overrides) -> dict:
    inputs = {"model": ["model", 0], "latent": ["ref", 0], "conditioning": ["cond", 0], "steps": steps,
              "learning_rate": 1e-3, "mid_dim": 16, "kernel_size": 3, "double_blocks": "all", "single_blocks": "none",
              "tracking_weight": 0.1, "tracking_features": "x0", "feature_block": "double:1", "guidance": 6.0,
              "warmup_steps": 0, "optimizer": "auto", "seed": 0, "output_name": output_name, "checkpoint_every": 10,
              "overwrite": False, "resume_from": "none", "caption": "a drifting blob"}
    if tracks is not None:
        inputs["tracks"] = tracks
    inputs.update(overrides)
    return {"class_type": "DeTTrainAdapter", "inputs": inputs}


def load_tracks_node(path: str, width=64, height=48) -> dict:
    return {"class_type": "DeTLoadTracks", "inputs": {"path": path, "width": width, "height": height}}


def apply_node(adapter, latent=("empty", 0), seed=5, steps=3, **overrides) -> dict:
    inputs = {"model": ["model", 0], "adapter": list(adapter), "positive": ["cond2", 0], "latent": list(latent),
              "seed": seed, "steps": steps, "guidance": 6.0, "cfg": 1.0, "flow_shift": 7.0, "sampler_name": "euler",
              "scheduler": "simple", "strength": 1.0, "double_blocks": "trained", "single_blocks": "trained",
              "keep_fraction": 1.0}
    inputs.update(overrides)
    return {"class_type": "DeTApplyMotion", "inputs": inputs}


def empty_latent(frames=9, height=48, width=64) -> dict:
    return {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": width, "height": height, "length": frames,
                                                                "batch_size": 1}}


def save_latent(source, prefix) -> dict:
    return {"class_type": "SaveLatent", "inputs": {"samples": list(source), "filename_prefix": prefix}}


def fetch_latent(comfy, result, node_id):
    from safetensors.torch import load

    (item,) = result.outputs[node_id]["latents"]
    return load(comfy.view(item["filename"], item["subfolder"], item["type"]))["latent_tensor"]


def load_video_node(video: str, **settings) -> dict:
    """Load Video (DeT) of `video` with every frame at its own size unless `settings` say otherwise."""
    inputs = {"video": video, "frame_load_cap": 0, "skip_first_frames": 0, "select_every_nth": 1, "force_rate": 0.0,
              "width": 0, "height": 0, "snap_to_16": "off", "trim_to_4k_plus_1": False}
    inputs.update(settings)
    return {"class_type": "DeTLoadVideo", "inputs": inputs}


def cotracker_node(checkpoint: str) -> dict:
    return {"class_type": "DeTCoTrackerLoader", "inputs": {"checkpoint": checkpoint, "mode": "auto", "device": "cpu",
                                                           "dtype": "fp32"}}
