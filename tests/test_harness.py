"""The test harness itself: a real ComfyUI loads the tiny HunyuanVideo checkpoint with stock nodes and samples it."""


import torch
from safetensors.torch import load

from devtools.tiny_models import TINY_HV_FILE, TINY_TEXT_DIM


def sample_prompt(seed: int) -> dict:
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": TINY_HV_FILE, "weight_dtype": "default"}},
        "2": {"class_type": "DeTTestConditioning", "inputs": {"seed": 1, "tokens": 6, "width": TINY_TEXT_DIM, "guidance": 6.0}},
        "3": {"class_type": "DeTTestConditioning", "inputs": {"seed": 2, "tokens": 6, "width": TINY_TEXT_DIM, "guidance": 6.0}},
        "4": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 64, "height": 48, "length": 9, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "seed": seed, "steps": 3, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "6": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": f"harness_{seed}"}},
    }


def run_and_fetch_latent(comfy, seed: int) -> torch.Tensor:
    result = comfy.run(sample_prompt(seed), timeout=300)
    (item,) = result.outputs["6"]["latents"]
    data = comfy.view(item["filename"], item["subfolder"], item["type"])
    return load(data)["latent_tensor"]


def test_stock_nodes_sample_the_tiny_checkpoint(comfy):
    a = run_and_fetch_latent(comfy, seed=1)
    b = run_and_fetch_latent(comfy, seed=2)
    # EmptyHunyuanLatentVideo: 16 channels, (length-1)/4+1 latent frames, /8 spatially
    assert tuple(a.shape) == (1, 16, 3, 6, 8)
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    assert a.abs().mean() > 1e-3, "the sampler returned a blank latent"
    assert (a - b).abs().max() > 1e-3, "two seeds gave the same latent"


def test_the_tiny_checkpoint_is_detected_as_hunyuan_video(comfy, comfy_server):
    run_and_fetch_latent(comfy, seed=3)
    assert "model_type FLOW" in comfy_server.log_text()
    info = comfy.object_info("UNETLoader")["UNETLoader"]["input"]["required"]["unet_name"]
    options = info[1]["options"] if len(info) > 1 and "options" in info[1] else info[0]
    assert TINY_HV_FILE in options
