"""Every seed of one small-world experiment in one image: the reference, then each seed's base and DeT, so a reader
sees the spread over seeds instead of one picked seed.

    python benchmarks/seed_strip.py --runs OUT --motion grow --out STRIP.png [--arms base det] [--every 4]

OUT is the --out folder of `motion_transfer_mini.py --save-all` (`OUT/<motion>_s<seed>/`). Rows: the reference as
drawn, then for each seed in order one row per arm; every `--every`-th frame from the first; a label at the left of
each row.
"""

import argparse
import glob
import os
import re
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from miniworld import world  # noqa: E402
from miniworld.experiment import load_frames  # noqa: E402

LABEL_W = 86


def labelled(row: np.ndarray, text: str) -> np.ndarray:
    """[H, W, 3] uint8 with a white label column on its left."""
    from PIL import Image, ImageDraw

    label = Image.new("RGB", (LABEL_W, row.shape[0]), (255, 255, 255))
    ImageDraw.Draw(label).text((4, row.shape[0] // 2 - 6), text, fill=(0, 0, 0))
    return np.concatenate([np.asarray(label), row], axis=1)


def seed_strip(runs_dir: str, motion: str, arms: list[str], every: int = 4) -> tuple[np.ndarray, list[int]]:
    """The image [H, W, 3] uint8 and the seeds it shows."""
    folders = {int(m.group(1)): f for f in glob.glob(os.path.join(runs_dir, f"{motion}_s*"))
               if (m := re.fullmatch(rf"{motion}_s(\d+)", os.path.basename(f)))}
    if not folders:
        raise SystemExit(f"{runs_dir}: no saved seeds of {motion} (run motion_transfer_mini.py with --save-all)")
    reference = (np.asarray(world.render(world.reference_scene(motion))) * 255 + 0.5).astype(np.uint8)
    rows = [labelled(np.concatenate(list(reference[::every]), axis=1), "reference")]
    for seed in sorted(folders):
        files = glob.glob(os.path.join(folders[seed], "**", "*.png"), recursive=True)
        for arm in arms:
            clip = load_frames(files, arm)
            if clip is None or len(clip) != world.FRAMES:
                raise SystemExit(f"{folders[seed]}: no {world.FRAMES} frames of the arm {arm!r}")
            rows.append(labelled(np.concatenate(list(clip[::every]), axis=1), f"seed {seed} {arm}"))
    gap = np.full((2, rows[0].shape[1], 3), 255, np.uint8)
    return np.concatenate([x for r in rows for x in (r, gap)][:-1], axis=0), sorted(folders)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/seed_strip.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="motion_transfer_mini.py's --out folder (saved with --save-all)")
    parser.add_argument("--motion", required=True, choices=list(world.TEST_MOTIONS))
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--arms", nargs="+", default=["base", "det"])
    parser.add_argument("--every", type=int, default=4)
    ns = parser.parse_args(argv)
    from PIL import Image

    image, seeds = seed_strip(ns.runs, ns.motion, ns.arms, ns.every)
    Image.fromarray(image).save(ns.out)
    print(f"{ns.out}: {ns.motion}, seeds {', '.join(map(str, seeds))}, rows: reference, then {' and '.join(ns.arms)} "
          f"per seed; every {ns.every}th frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
