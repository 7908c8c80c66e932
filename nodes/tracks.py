"""Track nodes: load MTBench / DeT track files into TRACKS."""

from __future__ import annotations

import os

import numpy as np
import torch
from comfy_api.latest import io

from ..det_core.tracks import from_mtbench
from .common import TracksType
from .video import resolve_input_path


def read_track_array(path: str) -> np.ndarray:
    """`tracks.npy` or a `.pth`/`.pt` holding one tensor (loaded with weights_only=True)."""
    if not os.path.isfile(path):
        raise ValueError(f"track file not found: {path}; put it in ComfyUI's input folder or give an absolute path")
    if path.endswith(".npy"):
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"{path} is not a plain numpy array file ({e})") from None
    if path.endswith((".pth", ".pt")):
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            tensors = [v for v in obj.values() if torch.is_tensor(v)]
            if len(tensors) != 1:
                raise ValueError(f"{path} holds {len(tensors)} tensors; expected one [frames, points, 3] tensor")
            obj = tensors[0]
        if not torch.is_tensor(obj):
            raise ValueError(f"{path} does not hold a tensor")
        return obj.float().numpy()
    raise ValueError(f"{path}: track files are .npy, .pth or .pt")


class DeTLoadTracks(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DeTLoadTracks",
            display_name="Load Tracks (DeT)",
            category="DeT/tracks",
            description="Reads MTBench / DeT tracks ([frames, points, 3]: x/W, y/H, visibility) into TRACKS.",
            inputs=[
                io.String.Input("path", default="tracks.npy",
                                tooltip="A .npy / .pth file in ComfyUI's input folder, or an absolute path."),
                io.Int.Input("width", default=720, min=1, max=16384, tooltip="Width of the tracked video in pixels."),
                io.Int.Input("height", default=480, min=1, max=16384, tooltip="Height of the tracked video in pixels."),
            ],
            outputs=[TracksType.Output(display_name="tracks"), io.String.Output(display_name="info")],
        )

    @classmethod
    def fingerprint_inputs(cls, path, width, height):
        full = resolve_input_path(path)
        return (full, os.path.getmtime(full) if os.path.isfile(full) else None, width, height)

    @classmethod
    def execute(cls, path, width, height):
        full = resolve_input_path(path)
        try:
            tracks = from_mtbench(read_track_array(full), width, height)
        except ValueError as e:
            raise ValueError(f"{full}: {e}" if full not in str(e) else str(e)) from None
        f, n = tracks["track_visibility"].shape
        info = f"{os.path.basename(full)}: {n} points over {f} frames, {float(tracks['track_visibility'].float().mean()):.0%} visible"
        return io.NodeOutput(tracks, info)


NODES = [DeTLoadTracks]
