"""MTBench cases on disk, in either of two layouts; a case that cannot be read is reported with the file and the
reason, never silently dropped.

Published (the DeT authors' `data/` folder; the full MTBench uses the same layout per case):

    <case>/videos.txt        one line: videos/<case>.mp4                the reference video
    <case>/masks.txt         one line: masks/<case>                     per-frame masks 00000.png ... (the first
                                                                        sorted file is the first-frame mask)
    <case>/trajectories.txt  one line: trajectories/<case>.pth          a float tensor [frames, points, 3]
    <case>/prompts.txt       the caption of the reference video
    <case>/eval_prompts.txt  the edit prompts, one a line

Flat (the pack's own): `source.mp4`, `mask_first_frame.png`, `tracks.npy`, `caption.txt`, `eval_prompts.txt`.

Index files are read relative to their case folder, and a path in them that leads outside the case folder is
refused. Tracks are `[frames, points, 3]`: x / W, y / H, visibility. Prompts lose trailing white space (the
published files end lines with spaces); blank lines are skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from det_core.tracks import read_tracks

LAYOUTS = ("published", "flat")
PUBLISHED_INDEX = ("videos.txt", "masks.txt", "trajectories.txt")
FLAT_FILES = ("source.mp4", "mask_first_frame.png", "tracks.npy", "caption.txt", "eval_prompts.txt")


class CaseError(Exception):
    """One case cannot be read: `file` (relative to the case folder) and `reason`."""

    def __init__(self, case: str, file: str, reason: str):
        super().__init__(f"case {case}: {file}: {reason}")
        self.case, self.file, self.reason = case, file, reason


@dataclass
class BenchCase:
    name: str
    folder: str
    layout: str
    video: str
    """Path of the reference video."""
    mask: str
    """Path of the first-frame mask."""
    tracks_file: str
    tracks: np.ndarray = field(repr=False)
    """[frames, points, 3] float32: x / W, y / H, visibility."""
    caption: str
    prompts: list[str]
    size: tuple[int, int] = (0, 0)
    """(width, height) of the reference video."""
    level: str = ""
    clusters: int = 0
    silhouette: float = 0.0


def layout_of(folder: str) -> str | None:
    """'published' when the folder has any published index file, 'flat' when it has any flat file, else None."""
    if any(os.path.isfile(os.path.join(folder, f)) for f in PUBLISHED_INDEX):
        return "published"
    if any(os.path.isfile(os.path.join(folder, f)) for f in FLAT_FILES):
        return "flat"
    return None


def _lines(path: str, case: str = "", rel: str = "") -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return [line.rstrip() for line in f.read().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise CaseError(case, rel or os.path.basename(path), f"cannot be read as UTF-8 text ({type(e).__name__})") from None


def _inside(case: str, folder: str, rel: str, index: str) -> str:
    """The path an index file names, checked to exist inside the case folder."""
    root = os.path.realpath(folder)
    path = os.path.realpath(os.path.join(folder, rel))
    if os.path.commonpath([root, path]) != root:
        raise CaseError(case, index, f"points outside the case folder ({rel!r})")
    if not os.path.exists(path):
        raise CaseError(case, index, f"points to {rel}, which does not exist")
    return path


def _index_target(case: str, folder: str, index: str) -> str:
    path = os.path.join(folder, index)
    if not os.path.isfile(path):
        raise CaseError(case, index, "missing")
    lines = _lines(path, case, index)
    if not lines:
        raise CaseError(case, index, "is empty; it should name one path relative to the case folder")
    return _inside(case, folder, lines[0].strip(), index)


def _first_mask(case: str, path: str) -> str:
    if os.path.isfile(path):
        return path
    pngs = sorted(f for f in os.listdir(path) if f.lower().endswith(".png"))
    if not pngs:
        raise CaseError(case, "masks.txt", f"points to {os.path.basename(path)}/, which holds no .png mask")
    return os.path.join(path, pngs[0])


def _video_size(case: str, path: str, rel: str) -> tuple[int, int]:
    """(width, height) of a readable video; CaseError otherwise."""
    import av

    try:
        with av.open(path) as c:
            if not c.streams.video:
                raise CaseError(case, rel, "has no video stream")
            ctx = c.streams.video[0].codec_context
            return ctx.width, ctx.height
    except CaseError:
        raise
    except Exception as e:  # noqa: BLE001 (av raises its own error types for broken files)
        raise CaseError(case, rel, f"cannot be read as a video ({type(e).__name__}: {e})") from None


def _check_mask(case: str, path: str, rel: str) -> None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as e:  # noqa: BLE001 (PIL raises many types for broken files)
        raise CaseError(case, rel, f"cannot be read as an image ({type(e).__name__})") from None


def read_case(folder: str) -> BenchCase:
    """One case folder in either layout -> BenchCase; CaseError names the file and the reason."""
    name = os.path.basename(os.path.normpath(folder))
    layout = layout_of(folder)
    if layout is None:
        raise CaseError(name, ".", "holds neither the published index files (videos.txt, masks.txt, "
                                   "trajectories.txt) nor the flat files (source.mp4, tracks.npy, ...)")
    if layout == "published":
        video = _index_target(name, folder, "videos.txt")
        mask = _first_mask(name, _index_target(name, folder, "masks.txt"))
        tracks_file = _index_target(name, folder, "trajectories.txt")
        caption_file = "prompts.txt"
    else:
        missing = [f for f in FLAT_FILES if not os.path.isfile(os.path.join(folder, f))]
        if missing:
            raise CaseError(name, missing[0], "missing" + (f" (also missing: {', '.join(missing[1:])})"
                                                           if len(missing) > 1 else ""))
        video, mask, tracks_file = (os.path.join(folder, f) for f in FLAT_FILES[:3])
        caption_file = "caption.txt"
    def rel(path: str) -> str:
        return os.path.relpath(path, folder)

    for text_file in (caption_file, "eval_prompts.txt"):
        if not os.path.isfile(os.path.join(folder, text_file)):
            raise CaseError(name, text_file, "missing")
    caption = " ".join(_lines(os.path.join(folder, caption_file), name, caption_file)).strip()
    prompts = [p.strip() for p in _lines(os.path.join(folder, "eval_prompts.txt"), name, "eval_prompts.txt")]
    if not prompts:
        raise CaseError(name, "eval_prompts.txt", "holds no prompt")
    try:
        tracks = read_tracks(tracks_file)
    except ValueError as e:
        raise CaseError(name, rel(tracks_file), str(e)) from None
    size = _video_size(name, video, rel(video))
    _check_mask(name, mask, rel(mask))
    return BenchCase(name, folder, layout, video, mask, tracks_file, tracks, caption, prompts, size)


def scan(bench_dir: str) -> tuple[list[BenchCase], list[CaseError]]:
    """Every case under `bench_dir` (or `bench_dir` itself when it is one case), sorted by name, and the problems
    of the cases that cannot be read."""
    if not os.path.isdir(bench_dir):
        raise FileNotFoundError(f"benchmark folder not found: {bench_dir}")
    if layout_of(bench_dir) is not None:
        folders = [bench_dir]
    else:
        folders = [os.path.join(bench_dir, n) for n in sorted(os.listdir(bench_dir))
                   if os.path.isdir(os.path.join(bench_dir, n)) and not n.startswith(".")]
    cases, problems = [], []
    for folder in folders:
        try:
            cases.append(read_case(folder))
        except CaseError as e:
            problems.append(e)
    return cases, problems
