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


PACK_CASES = {"world-figure-eight": ("figure_eight", "blue", "square"), "world-zig-zag": ("zig_zag", "red", "disc")}
"""The pack's own MTBench cases (flat layout), drawn by the small world's renderer at the real cases' size: name ->
(motion, colour, shape)."""


def world_case(folder: str, name: str, frames: int = 49, width: int = 720, height: int = 480, points: int = 100) -> str:
    """A flat MTBench case drawn here (`PACK_CASES[name]`): `source.mp4` (one object moving along the named path on a
    grey background, `frames` frames at `width` x `height`), `mask_first_frame.png` (the object on frame 0),
    `tracks.npy` ([frames, points, 3]: x / W, y / H, visibility; exact points on the object), `caption.txt` and
    `eval_prompts.txt`. Returns the case folder."""
    import os

    import torch
    from PIL import Image

    from miniworld import world

    motion, colour, shape = PACK_CASES[name]
    side = min(width, height)
    path = world.reference_path(motion, frames, side) + np.array([(width - side) / 2, (height - side) / 2])
    half = 0.125 * side
    yy, xx = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    p = torch.from_numpy(path)
    dist = world.shape_distance(shape, xx[None] - p[:, 0, None, None], yy[None] - p[:, 1, None, None], half)
    alpha = (0.5 - dist).clamp(0.0, 1.0)[..., None]  # F H W 1
    rgb = torch.tensor(world.COLOURS[colour], dtype=torch.float64)
    clip = (0.2 * (1 - alpha) + rgb * alpha).clamp(0, 1)
    case = os.path.join(folder, name)
    os.makedirs(case, exist_ok=True)
    write_video((clip.numpy() * 255).round().astype(np.uint8), os.path.join(case, "source.mp4"), fps=8.0, crf=12)
    Image.fromarray(((alpha[0, ..., 0] > 0.5).numpy() * 255).astype(np.uint8)).save(
        os.path.join(case, "mask_first_frame.png"))
    offsets = world.object_points(shape, half, points)
    pts = path[:, None, :] + offsets[None]  # F N 2
    tracks = np.concatenate([pts / np.array([width, height]), np.ones(pts.shape[:2] + (1,))], -1).astype(np.float32)
    np.save(os.path.join(case, "tracks.npy"), tracks)
    with open(os.path.join(case, "caption.txt"), "w") as f:
        f.write(f"{world.caption(colour, shape)} moving on a grey background\n")
    with open(os.path.join(case, "eval_prompts.txt"), "w") as f:
        f.write("a green triangle moving on a grey background\na white disc moving on a grey background\n")
    return case


def published_case(flat_case: str, folder: str) -> str:
    """A flat case (`world_case`) rewritten in the DeT authors' published layout under `folder`: the index files
    `videos.txt`, `masks.txt`, `trajectories.txt` pointing at `videos/<case>.mp4`, `masks/<case>/00000.png` (the
    first-frame mask) and `trajectories/<case>.pth` (one [frames, points, 3] tensor), plus `prompts.txt` and
    `eval_prompts.txt`. Returns the new case folder."""
    import os
    import shutil

    import torch

    name = os.path.basename(flat_case.rstrip("/"))
    case = os.path.join(folder, name)
    for sub in ("videos", os.path.join("masks", name), "trajectories"):
        os.makedirs(os.path.join(case, sub), exist_ok=True)
    shutil.copy(os.path.join(flat_case, "source.mp4"), os.path.join(case, "videos", f"{name}.mp4"))
    shutil.copy(os.path.join(flat_case, "mask_first_frame.png"), os.path.join(case, "masks", name, "00000.png"))
    torch.save(torch.from_numpy(np.load(os.path.join(flat_case, "tracks.npy"))),
               os.path.join(case, "trajectories", f"{name}.pth"))
    for index, target in (("videos.txt", f"videos/{name}.mp4"), ("masks.txt", f"masks/{name}"),
                          ("trajectories.txt", f"trajectories/{name}.pth")):
        with open(os.path.join(case, index), "w") as f:
            f.write(target + "\n")
    shutil.copy(os.path.join(flat_case, "caption.txt"), os.path.join(case, "prompts.txt"))
    shutil.copy(os.path.join(flat_case, "eval_prompts.txt"), os.path.join(case, "eval_prompts.txt"))
    return case
