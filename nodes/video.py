"""Video nodes: Load Video (DeT)."""

from __future__ import annotations

import logging
import os

import folder_paths
from comfy_api.latest import io

from ..det_core.video import SNAP_MODES, LoadSettings, VideoError, load_video
from .common import not_a_file_name

log = logging.getLogger("DeT")


def _input_videos() -> list[str]:
    input_dir = folder_paths.get_input_directory()
    if not os.path.isdir(input_dir):
        return []
    files = [f for f in os.listdir(input_dir) if os.path.isfile(os.path.join(input_dir, f))]
    return sorted(folder_paths.filter_files_content_types(files, ["video"]))


ALLOW_ABSOLUTE = "DET_ALLOW_ABSOLUTE_PATHS"
"""Set to 1 in the server's environment to let Load Video / Load Tracks read absolute paths (off by default: a
server started with --listen would let anyone on the network read any file the server can)."""


def resolve_input_path(name: str, what: str = "file") -> str:
    """A file in ComfyUI's input folder, subfolders included (annotated names such as `x.mp4 [output]` read the
    output or temp folder, as ComfyUI's own loaders do); an absolute path only with DET_ALLOW_ABSOLUTE_PATHS=1.
    A name that resolves anywhere else is refused with the same message whether or not the file exists."""
    if not isinstance(name, str):
        raise ValueError(f"{what} {name!r} is not a file name: give the name (a string) of a {what} in ComfyUI's input "
                         f"folder")
    refusal = (f"{what} {name!r} is not in ComfyUI's input folder: put the file there (subfolders are fine) and give "
               f"its name; absolute paths are read only when the server runs with {ALLOW_ABSOLUTE}=1")
    if os.path.isabs(name.strip()):
        if os.environ.get(ALLOW_ABSOLUTE) == "1":
            return name.strip()
        raise ValueError(refusal)
    path = folder_paths.get_annotated_filepath(name)
    real = os.path.realpath(path)
    roots = [os.path.realpath(r) for r in (folder_paths.get_input_directory(), folder_paths.get_output_directory(),
                                           folder_paths.get_temp_directory())]
    if not any(os.path.commonpath([r, real]) == r for r in roots):
        raise ValueError(refusal)
    return path


class DeTLoadVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DeTLoadVideo",
            display_name="Load Video (DeT)",
            category="DeT/video",
            description="Decodes a reference video into frames, keeping only the frames asked for, "
                        "sized for HunyuanVideo (multiples of 16, 4k+1 frames).",
            inputs=[
                io.Combo.Input("video", options=_input_videos(), upload=io.UploadType.video,
                               tooltip="A video in ComfyUI's input folder (upload one with the button; "
                                       "subfolders work through the API)."),
                io.Int.Input("frame_load_cap", default=0, min=0, max=100000,
                             tooltip="Keep at most this many frames after the other selections (0 = all)."),
                io.Int.Input("skip_first_frames", default=0, min=0, max=1000000,
                             tooltip="Drop this many frames from the start (counted after force_rate)."),
                io.Int.Input("select_every_nth", default=1, min=1, max=1000,
                             tooltip="Keep every n-th frame (1 = all)."),
                io.Float.Input("force_rate", default=0.0, min=0.0, max=240.0, step=0.5,
                               tooltip="Resample to this frame rate before selecting frames (0 = keep the file's rate)."),
                io.Int.Input("width", default=0, min=0, max=8192, step=1,
                             tooltip="Target width in pixels (0 = the file's, or from height keeping the aspect ratio)."),
                io.Int.Input("height", default=0, min=0, max=8192, step=1,
                             tooltip="Target height in pixels (0 = the file's, or from width keeping the aspect ratio)."),
                io.Combo.Input("snap_to_16", options=list(SNAP_MODES), default="crop",
                               tooltip="Make width and height multiples of 16 as HunyuanVideo needs: centre-crop "
                                       "down, resize to the nearest multiple, or leave the size as it is."),
                io.Boolean.Input("trim_to_4k_plus_1", default=True,
                                 tooltip="Drop up to 3 trailing frames so the count is 4k+1 (what the "
                                         "HunyuanVideo VAE encodes without waste)."),
            ],
            outputs=[
                io.Image.Output(display_name="frames", tooltip="Frames [F, H, W, 3], 0..1."),
                io.Float.Output(display_name="fps", tooltip="Frame rate of the returned frames."),
                io.Int.Output(display_name="frame_count"),
                io.String.Output(display_name="info", tooltip="What was loaded and how it was selected."),
            ],
        )

    @classmethod
    def validate_inputs(cls, video: str) -> bool | str:
        # only `video` here: ComfyUI skips its own min/max checks for every input this method receives
        wrong = not_a_file_name("video", video, "a video file in ComfyUI's input folder, such as \"clip.mp4\"")
        if wrong:
            return wrong
        if not video:
            return "no video chosen: upload a video or put one in ComfyUI's input folder"
        try:
            path = resolve_input_path(video, "video")
        except ValueError as e:
            return str(e)
        if not os.path.isfile(path):
            return f"video file not found: {video}; put it in ComfyUI's input folder"
        return True

    @classmethod
    def fingerprint_inputs(cls, video: str, **kwargs):
        try:
            path = resolve_input_path(video, "video")
        except ValueError:
            return video
        try:
            st = os.stat(path)
        except OSError:
            return path
        return (path, st.st_mtime_ns, st.st_size)

    @classmethod
    def execute(cls, video: str, frame_load_cap: int, skip_first_frames: int, select_every_nth: int,
                force_rate: float, width: int, height: int, snap_to_16: str, trim_to_4k_plus_1: bool
                ) -> io.NodeOutput:
        path = resolve_input_path(video, "video")
        try:
            settings = LoadSettings(frame_load_cap=frame_load_cap, skip_first_frames=skip_first_frames,
                                    select_every_nth=select_every_nth, force_rate=force_rate, width=width,
                                    height=height, snap=snap_to_16, trim_4k_plus_1=trim_to_4k_plus_1)
            loaded = load_video(path, settings)
        except VideoError as e:
            msg = str(e)
            raise ValueError(msg if path in msg else f"{path}: {msg}") from None
        info = f"{os.path.basename(path)}: {loaded.info}"
        log.info("[DeT] %s", info)
        return io.NodeOutput(loaded.frames, loaded.fps, int(loaded.frames.shape[0]), info)


NODES = [DeTLoadVideo]
