"""Small videos made for the tests (never the shared data): each frame carries its index as a grey level."""

from __future__ import annotations

import numpy as np

from det_core.video import write_video

LEVEL0, LEVEL_STEP = 10, 6


def indexed_clip(path: str, frames: int = 40, width: int = 96, height: int = 64, fps: float = 10.0) -> str:
    """Frame i is a flat grey of level 10 + 6 i, written losslessly (crf 0)."""
    arr = np.empty((frames, height, width, 3), np.uint8)
    for i in range(frames):
        arr[i] = LEVEL0 + LEVEL_STEP * i
    return write_video(arr, path, fps=fps, crf=0)


def frame_indices(frames) -> list[int]:
    """Read the indices back from IMAGE frames (float 0..1) or from per-frame means."""
    means = np.asarray([float(f.mean()) if hasattr(f, "mean") else float(f) for f in frames])
    return [int(round((m * 255.0 - LEVEL0) / LEVEL_STEP)) for m in means]


def empty_video(path: str, width: int = 64, height: int = 64) -> str:
    """A well-formed AVI container with a video stream and no frames (MP4 and MKV drop an empty track)."""
    import av

    if not path.endswith(".avi"):
        raise ValueError("empty_video writes AVI: give a path ending in .avi")
    with av.open(path, mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        container.start_encoding()
    return path
