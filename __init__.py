"""DeT motion transfer for ComfyUI (V3 extension).

ComfyUI imports this file as a custom node pack and calls `comfy_entrypoint`; that is when the pack
registers its model folders. Plain `import det_core` has no side effects.
"""

from __future__ import annotations

import os

# The pack's model folders under ComfyUI's models/ and the files each accepts.
MODEL_FOLDERS: dict[str, set[str]] = {
    "det_adapters": {".safetensors", ".pth"},   # .pth: the DeT authors' motion_embedding.pth, converted on load
    "cotracker": {".pth", ".pt", ".safetensors"},
    "grounding-dino": set(),   # Hugging Face format folders
    "sams": {".pth", ".safetensors"},
    "sam2": set(),
    "det_eval": set(),        # CLIP / DINO Hugging Face folders for the MTBench scores
}

WEB_DIRECTORY = "./web"


def register_model_folders() -> None:
    """Add models/<name> for each pack folder, keeping folders a user configured (extra_model_paths.yaml)."""
    import folder_paths

    for name, extensions in MODEL_FOLDERS.items():
        default = os.path.join(folder_paths.models_dir, name)
        configured = name in folder_paths.folder_names_and_paths
        folder_paths.add_model_folder_path(name, default, is_default=False)
        paths, exts = folder_paths.folder_names_and_paths[name]
        if not configured and isinstance(exts, set):
            exts.update(extensions)


async def comfy_entrypoint():
    from comfy_api.latest import ComfyExtension, io

    from .nodes import adapter, evaluate, locality, sample, segment, tracks, train, video

    class DeTExtension(ComfyExtension):
        async def get_node_list(self) -> list[type[io.ComfyNode]]:
            return [*video.NODES, *tracks.NODES, *train.NODES, *sample.NODES, *adapter.NODES, *evaluate.NODES,
                    *segment.NODES, *locality.NODES]

    register_model_folders()
    return DeTExtension()
