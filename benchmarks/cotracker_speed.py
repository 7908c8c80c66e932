"""CoTracker3 time per video on this machine: ours (det_core.cotracker) and the reference implementation side by side,
same random weights, same video and queries (49 frames of dance-twirl at the model's 384 x 512, 100 points from
its first-frame mask plus the 6 x 6 support grid, 6 iterations, offline model).

    .venv/bin/python benchmarks/cotracker_speed.py [--frames 49] [--points 100] [--iters 6]

The reference is Meta's code from the PyPI wheel napari-cotrack==0.1.7, fetched into the git-ignored .cache/
(CC-BY-NC: never committed, never imported by the pack).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from det_core.cotracker import SUPPORT_GRID, grid_points, load_cotracker3  # noqa: E402
from det_core.tracks import sample_mask_weighted  # noqa: E402
from det_core.video import LoadSettings, load_video  # noqa: E402
from reference_cotracker import reference_dir  # noqa: E402

CASE = os.path.join(os.path.dirname(ROOT), "shared", "mtbench_examples", "dance-twirl")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=49)
    p.add_argument("--points", type=int, default=100)
    p.add_argument("--iters", type=int, default=6)
    ns = p.parse_args(argv)
    sys.path.insert(0, reference_dir())
    with torch.random.fork_rng(devices=[]):
        from cotracker.models.core.cotracker.cotracker3_offline import CoTrackerThreeOffline
        torch.manual_seed(0)
        ref = CoTrackerThreeOffline(stride=4, corr_radius=3, window_len=60).eval()
    ours = load_cotracker3(ref.state_dict())
    v = load_video(os.path.join(CASE, "source.mp4"), LoadSettings(frame_load_cap=ns.frames, width=512, height=384,
                                                                   snap="off", trim_4k_plus_1=False))
    video = (v.frames.permute(0, 3, 1, 2) * 255.0)[None]  # 1 T 3 384 512
    mask = torch.from_numpy(np.array(Image.open(os.path.join(CASE, "mask_first_frame.png")).convert("L").resize((512, 384))) > 127)
    xy = torch.cat([sample_mask_weighted(mask, ns.points, seed=0), grid_points(SUPPORT_GRID, 384, 512)])
    queries = torch.cat([torch.zeros(len(xy), 1), xy], dim=1)[None]
    rows = []
    with torch.no_grad():
        for name, model in (("reference (napari-cotrack 0.1.7)", ref), ("ours (det_core.cotracker)", ours)):
            t0 = time.perf_counter()
            tracks, vis, conf = model(video, queries, iters=ns.iters)[:3]
            rows.append((name, time.perf_counter() - t0, tracks))
    diff = (rows[0][2] - rows[1][2]).abs().max().item()
    print(f"CoTracker3 offline, {ns.frames} frames at 384x512, {len(xy)} points ({ns.points} + support grid), "
          f"{ns.iters} iterations, {torch.get_num_threads()} CPU threads")
    for name, seconds, _ in rows:
        print(f"{name:36s} {seconds:8.1f} s")
    print(f"ours / reference: {rows[1][1] / rows[0][1]:.2f}; tracks differ by at most {diff:.2e} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
