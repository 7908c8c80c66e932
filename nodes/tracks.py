"""Track nodes: CoTracker3 loader and tracker, MTBench track files in and out."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

import comfy.utils
import folder_paths
from comfy_api.latest import io, ui

from ..det_core.cotracker import CoTracker3, load_cotracker3, track_points
from ..det_core.tracks import (SAMPLING, draw_tracks, from_mtbench, make_tracks, read_tracks, sample_queries,
                               to_mtbench, to_wan_json)
from .common import CoTrackerType, TracksType, device_input, dtype_input, not_a_file_name, torch_device, torch_dtype
from .video import resolve_input_path

log = logging.getLogger("DeT")
FOLDER = "cotracker"


@dataclass
class CoTrackerModel:
    model: CoTracker3
    online: bool
    name: str


class DeTCoTrackerLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DeTCoTrackerLoader",
            display_name="Load CoTracker3 (DeT)",
            category="DeT/tracks",
            description="Loads a CoTracker3 checkpoint from models/cotracker/ (scaled_offline.pth, scaled_online.pth "
                        "or the same weights as .safetensors). Never downloads.",
            inputs=[
                io.Combo.Input("checkpoint", options=folder_paths.get_filename_list(FOLDER),
                               tooltip="scaled_offline.pth (whole video at once) or scaled_online.pth (sliding windows)."),
                io.Combo.Input("mode", options=["auto", "offline", "online"], default="auto",
                               tooltip="auto: online for checkpoints with a 16-frame window, offline otherwise."),
                device_input("the tracker"), dtype_input(),
            ],
            outputs=[CoTrackerType.Output(display_name="cotracker")],
        )

    @classmethod
    def validate_inputs(cls, checkpoint):
        wrong = not_a_file_name("checkpoint", checkpoint, f"a CoTracker3 checkpoint in models/{FOLDER}/, such as "
                                                          f"\"scaled_offline.pth\"")
        if wrong:
            return wrong
        if folder_paths.get_full_path(FOLDER, checkpoint) is None:
            return (f"CoTracker3 checkpoint not found: {checkpoint!r}; put scaled_offline.pth (from the CoTracker3 "
                    f"release) into models/{FOLDER}/")
        return True

    @classmethod
    def execute(cls, checkpoint, mode, device, dtype):
        dev = torch_device(device)
        model = load_cotracker3(folder_paths.get_full_path_or_raise(FOLDER, checkpoint), device=dev,
                                dtype=torch_dtype(dtype, dev))
        online = model.window_len <= 16 if mode == "auto" else mode == "online"
        return io.NodeOutput(CoTrackerModel(model, online, checkpoint))


class DeTCoTrackerTracks(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DeTCoTrackerTracks",
            display_name="CoTracker3 Tracks (DeT)",
            category="DeT/tracks",
            description="Tracks points through the video with CoTracker3. Points come from the subject mask "
                        "(density-weighted so thin parts get points, as DeT samples them) or a grid.",
            inputs=[
                io.Image.Input("images", tooltip="The reference video's frames."),
                CoTrackerType.Input("cotracker", tooltip="From Load CoTracker3 (DeT)."),
                io.Int.Input("points", default=100, min=1, max=10000, tooltip="Number of query points (DeT: about 100)."),
                io.Combo.Input("sampling", options=list(SAMPLING), default="mask-weighted",
                               tooltip="mask-weighted: inside the mask, weight 1 / mask pixels within 5 px; mask-grid: a "
                                       "grid inside the mask; grid: a grid over the frame."),
                io.Int.Input("query_frame", default=0, min=0, max=100000, tooltip="Frame the points are picked on."),
                io.Boolean.Input("backward_tracking", default=False,
                                 tooltip="Also track from the query frame towards the start (for query_frame > 0)."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, tooltip="Seed of the mask-weighted sampling."),
                io.Mask.Input("mask", optional=True, tooltip="Subject mask [F, H, W] (GroundedSAM; its query_frame is used) or a single "
                                       "mask of the query frame."),
            ],
            outputs=[TracksType.Output(display_name="tracks"), io.Image.Output(display_name="preview"),
                     io.String.Output(display_name="info")],
        )

    @classmethod
    def execute(cls, images, cotracker, points, sampling, query_frame, backward_tracking, seed, mask=None):
        f, h, w, _ = images.shape
        if f < 2:
            raise ValueError(f"CoTracker3 needs at least 2 frames, got {f}")
        if query_frame >= f:
            raise ValueError(f"query_frame={query_frame} but the video has {f} frames")
        first = None
        if mask is not None:
            if tuple(mask.shape[-2:]) != (h, w):
                raise ValueError(f"the mask is {mask.shape[-1]}x{mask.shape[-2]} but the video is {w}x{h}; make the "
                                 f"mask from the same frames")
            if mask.ndim == 3 and mask.shape[0] not in (1, f):
                raise ValueError(f"the mask has {mask.shape[0]} frames but the video has {f}: give one mask per frame "
                                 f"or a single mask of the query frame")
            # one mask per frame: the query frame's; a single mask stands for the query frame
            first = (mask[query_frame if mask.shape[0] == f else 0] if mask.ndim == 3 else mask) > 0.5
            if not first.any():
                raise ValueError(f"the mask is empty on frame {query_frame}: lower the detection threshold, change the "
                                 f"prompt, or use sampling 'grid'")
        queries = sample_queries(sampling, points, h, w, first, seed)
        queries[:, 0] = query_frame
        pbar = comfy.utils.ProgressBar(1)
        path, vis = track_points(cotracker.model, images, queries, online=cotracker.online,
                                 backward=backward_tracking or query_frame > 0)
        pbar.update(1)
        tracks = make_tracks(path, vis, (w, h))
        info = (f"{len(queries)} points ({sampling}) over {f} frames with {cotracker.name} "
                f"({'online' if cotracker.online else 'offline'}); {float(vis.float().mean()):.0%} visible")
        log.info("[DeT] %s", info)
        preview = draw_tracks(images, tracks)
        return io.NodeOutput(tracks, preview, info, ui=ui.PreviewImage(preview[::max(1, f // 12)], cls=cls))


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
                                tooltip="A .npy / .pth file in ComfyUI's input folder (subfolders are fine)."),
                io.Int.Input("width", default=720, min=1, max=16384, tooltip="Width of the tracked video in pixels."),
                io.Int.Input("height", default=480, min=1, max=16384, tooltip="Height of the tracked video in pixels."),
            ],
            outputs=[TracksType.Output(display_name="tracks"), io.String.Output(display_name="info")],
        )

    @classmethod
    def fingerprint_inputs(cls, path, width, height):
        try:
            full = resolve_input_path(path, "track file")
        except ValueError:
            return path
        return (full, os.path.getmtime(full) if os.path.isfile(full) else None, width, height)

    @classmethod
    def execute(cls, path, width, height):
        full = resolve_input_path(path, "track file")
        try:
            if not os.path.isfile(full):
                raise ValueError(f"track file not found: {path}; put it in ComfyUI's input folder")
            tracks = from_mtbench(read_tracks(full), width, height)
        except ValueError as e:
            raise ValueError(f"{full}: {e}" if full not in str(e) else str(e)) from None
        f, n = tracks["track_visibility"].shape
        info = f"{os.path.basename(full)}: {n} points over {f} frames, {float(tracks['track_visibility'].float().mean()):.0%} visible"
        return io.NodeOutput(tracks, info)


class DeTSaveTracks(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DeTSaveTracks",
            display_name="Save Tracks (DeT)",
            category="DeT/tracks",
            description="Writes TRACKS to the output folder as MTBench tracks.npy and the JSON of WanTrackToVideo.",
            inputs=[
                TracksType.Input("tracks"),
                io.String.Input("filename_prefix", default="det_tracks", tooltip="Prefix of the files in output/."),
            ],
            outputs=[io.String.Output(display_name="wan_json")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, tracks, filename_prefix):
        w, h = tracks["image_size"]
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), w, h)
        base = os.path.join(folder, f"{name}_{counter:05}_")
        np.save(base + ".npy", to_mtbench(tracks))
        text = to_wan_json(tracks)
        with open(base + ".json", "w") as fh:
            fh.write(text)
        return io.NodeOutput(text, ui=ui.PreviewText(f"saved {base}.npy and {base}.json"))


NODES = [DeTCoTrackerLoader, DeTCoTrackerTracks, DeTLoadTracks, DeTSaveTracks]
