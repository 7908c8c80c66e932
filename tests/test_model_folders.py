"""The pack registers its model folders with ComfyUI and keeps folders a user configured."""

import os

from det_tools.client import ComfyClient
from det_tools.host import ComfyServer, prepare_base_dir

PACK_FOLDERS = ["det_adapters", "cotracker", "grounding-dino", "sams", "sam2", "det_eval"]


def touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()


def test_pack_folders_are_registered_under_models(comfy, comfy_base):
    assert set(PACK_FOLDERS) <= set(comfy.get_json("/models"))
    touch(os.path.join(comfy_base, "models", "det_adapters", "motion_a.safetensors"))
    touch(os.path.join(comfy_base, "models", "det_adapters", "readme.txt"))
    touch(os.path.join(comfy_base, "models", "cotracker", "folder_check.pth"))
    adapters = comfy.get_json("/models/det_adapters")  # other tests share the server and write adapters too
    assert "motion_a.safetensors" in adapters and "readme.txt" not in adapters
    assert "folder_check.pth" in comfy.get_json("/models/cotracker")


def test_folders_a_user_configured_are_kept(comfy_host, tmp_path):
    base = prepare_base_dir(str(tmp_path / "base"))
    user_models = tmp_path / "user_models"
    touch(str(user_models / "my_adapters" / "user_motion.safetensors"))
    touch(os.path.join(base, "models", "det_adapters", "default_motion.safetensors"))
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(f"mine:\n  base_path: {user_models}\n  det_adapters: my_adapters\n")
    server = ComfyServer(comfy_host, base_dir=base, extra_args=["--extra-model-paths-config", str(config)],
                         log_path=str(tmp_path / "server.log"))
    with server:
        listed = ComfyClient(server.url).get_json("/models/det_adapters")
    assert "user_motion.safetensors" in listed, server.log_tail()
    assert "default_motion.safetensors" in listed
