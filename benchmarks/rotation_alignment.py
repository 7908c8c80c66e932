"""Is a generated object turned like the reference's, frame by frame? A check of the rotation reading, by masks.

The small world's pose fidelity reads each frame's rotation from the object's mask (`miniworld.measure`: complex
moments now; an outline search before, which lost track of rounded blobs on clips whose frames look like the
reference's) and compares the readings over time. This script measures the same thing another way, as a check:
for every frame it centres the generated object's mask and the decoded reference's mask (the experiment compares
with the decoded reference too), turns the generated one by each angle in +-60 degrees (3-degree steps) and keeps
the angle with the largest overlap. That angle is how far the generated object is turned away from the reference
on that frame. Only meaningful when both show the same shape (a fit under the reference's own caption).

    python benchmarks/rotation_alignment.py --frames DIR --weights W [--motion spin] [--json OUT.json]
    python benchmarks/rotation_alignment.py --runs OUT --weights W --motion turn [--json OUT.json]

DIR holds the generated frames as PNGs (the `finetune_*.png` that `object_world_rule.py --out` writes under
`fit/spin_s7/mini_spin_s7/`; `--prefix` picks another arm). Prints each frame's angle, the reading's pose fidelity
and the alignment's (1 - sum |angle off| / sum |reference's turn so far|, the pose fidelity formula with the
alignment's angles as the error). The triangle repeats every 120 degrees, so a clip that does not follow the turn
at all is about 30 degrees off on average and still scores about 0.83: read the angle first.

`--runs OUT` reads a whole experiment instead: every arm and seed that `motion_transfer_mini.py --save-all --out OUT`
saved for the motion (`OUT/<motion>_s<seed>/`), prints each one's mean angle off and, per arm, how many seeds follow
the turn (mean angle off <= `FOLLOWS_DEG`) and miss it (>= `MISSES_DEG`). For the steady `turn`, whose target
("a red triangle") keeps the reference's shape, so the masks can be compared.
"""

import argparse
import glob
import json
import os
import sys

import numpy as np
from scipy import ndimage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from miniworld import world  # noqa: E402
from miniworld.experiment import POSE_PARAMETER, WEIGHTS, decoded, pose_fidelity  # noqa: E402

SEARCH_DEG = tuple(range(-60, 61, 3))
FOLLOWS_DEG, MISSES_DEG, READING_POSE = 15.0, 25.0, 0.5
"""The plan's confirmation (written before the fifth world was measured): the reading is confirmed on a clip when
the alignment and the reading agree: within `FOLLOWS_DEG` and pose fidelity >= `READING_POSE`, or `MISSES_DEG` or
more and below it. Between the two angles the alignment itself cannot tell, and nothing is confirmed."""


def object_mask(clip: np.ndarray) -> np.ndarray:
    """[F, H, W, 3] 0..1 -> [F, H, W] bool: the coloured object against the grey background."""
    return (clip.max(-1) - clip.min(-1)) > 0.25


def centred(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    if not mask.any():
        return mask.astype(np.float64)
    cy, cx = ndimage.center_of_mass(mask)
    return ndimage.shift(mask.astype(np.float64), ((h - 1) / 2 - cy, (w - 1) / 2 - cx), order=1)


def angle_off(generated: np.ndarray, reference: np.ndarray) -> float:
    """Degrees to turn the generated mask (counter-clockwise in image coordinates, scipy's sense) so that it
    overlaps the reference mask most; both are centred first."""
    g, r = centred(generated), centred(reference)
    return float(max(SEARCH_DEG, key=lambda t: np.minimum(ndimage.rotate(g, t, reshape=False, order=1), r).sum()))


def alignment(generated: np.ndarray, reference: np.ndarray, reference_angle: np.ndarray) -> dict:
    """Per-frame angles off (degrees) and the pose-fidelity-form score against the reference's turn (radians)."""
    offs = np.array([angle_off(g, r) for g, r in zip(object_mask(generated), object_mask(reference))])
    travel = np.abs(np.asarray(reference_angle) - reference_angle[0]).sum()
    score = max(0.0, 1.0 - np.radians(np.abs(offs)).sum() / max(travel, 1e-9))
    return {"angles_off_deg": offs.tolist(), "mean_abs_off_deg": float(np.abs(offs).mean()), "fidelity": score}


def confirms(mean_abs_off_deg: float, reading_pose_fidelity: float) -> bool:
    """Whether the alignment confirms the reading on one clip (`FOLLOWS_DEG`'s rule)."""
    if mean_abs_off_deg <= FOLLOWS_DEG:
        return reading_pose_fidelity >= READING_POSE
    return mean_abs_off_deg >= MISSES_DEG and reading_pose_fidelity < READING_POSE


def load_clip(files: list[str]) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files]) / 255.0


def score_runs(runs_dir: str, motion: str, weights: str) -> dict:
    """Every saved arm and seed of `motion` under `runs_dir`: {"runs": [{arm, seed, mean_abs_off_deg, ...}],
    "arms": {arm: summary}}."""
    import re

    scene = world.reference_scene(motion, colour="blue")
    ref = decoded(np.asarray(world.render(scene)), weights)
    runs = []
    for folder in sorted(glob.glob(os.path.join(runs_dir, f"{motion}_s*"))):
        seed = int(re.fullmatch(rf"{motion}_s(\d+)", os.path.basename(folder)).group(1))
        files = sorted(glob.glob(os.path.join(folder, "**", "*.png"), recursive=True))
        for arm in sorted({re.sub(r"_\d+_?\.png$", "", os.path.basename(f)) for f in files}):
            mine = [f for f in files if re.fullmatch(rf"{re.escape(arm)}_\d+_?\.png", os.path.basename(f))]
            if len(mine) != world.FRAMES:
                continue  # not a clip of this world (a loss curve, say)
            result = alignment(load_clip(mine), ref, scene.angle)
            runs.append({"arm": arm, "seed": seed, **result})
    if not runs:
        raise SystemExit(f"{runs_dir}: no saved clips of {motion} (run motion_transfer_mini.py with --save-all)")
    arms = {}
    for arm in sorted({r["arm"] for r in runs}):
        offs = [r["mean_abs_off_deg"] for r in runs if r["arm"] == arm]
        arms[arm] = {"mean_abs_off_deg": float(np.mean(offs)), "std": float(np.std(offs)), "seeds": len(offs),
                     "follows": sum(o <= FOLLOWS_DEG for o in offs), "misses": sum(o >= MISSES_DEG for o in offs)}
    return {"runs": runs, "arms": arms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/rotation_alignment.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", help="folder with the generated frames (PNG)")
    parser.add_argument("--runs", help="an experiment's --out folder saved with --save-all: score every arm and seed")
    parser.add_argument("--prefix", default="finetune_", help="the frames' file-name prefix (the arm)")
    parser.add_argument("--motion", default="spin", choices=("spin", "loop_spin", "turn"))
    parser.add_argument("--weights", default=WEIGHTS, help="folder with the world's VAE (for the decoded reference)")
    parser.add_argument("--json", help="write the figures here")
    ns = parser.parse_args(argv)
    from miniworld.measure import read_video

    if (ns.frames is None) == (ns.runs is None):
        parser.error("give --frames (one clip) or --runs (every arm and seed of an experiment)")
    if ns.runs:
        result = score_runs(ns.runs, ns.motion, ns.weights)
        for r in result["runs"]:
            print(f"{r['arm']:14s} seed {r['seed']}: mean |angle off| {r['mean_abs_off_deg']:5.1f} degrees")
        for arm, a in result["arms"].items():
            print(f"{arm:14s} {a['mean_abs_off_deg']:5.1f} +- {a['std']:4.1f} degrees over {a['seeds']} seeds; follows "
                  f"the turn (<= {FOLLOWS_DEG:g}) on {a['follows']}, misses it (>= {MISSES_DEG:g}) on {a['misses']}")
        result.update(runs_dir=os.path.abspath(ns.runs), motion=ns.motion, weights=os.path.abspath(ns.weights))
        if ns.json:
            with open(ns.json, "w") as f:
                json.dump(result, f, indent=2)
        return 0
    files = sorted(glob.glob(os.path.join(ns.frames, f"{ns.prefix}*.png")))
    if len(files) != world.FRAMES:
        parser.error(f"{ns.frames}: {len(files)} frames named {ns.prefix}*.png, the world's clips have "
                     f"{world.FRAMES}; give the folder of one run (e.g. OUT/fit/spin_s7/mini_spin_s7)")
    gen = load_clip(files)
    scene = world.reference_scene(ns.motion, colour="blue")
    ref = decoded(np.asarray(world.render(scene)), ns.weights)
    result = alignment(gen, ref, scene.angle)
    column = POSE_PARAMETER[ns.motion]
    result["reading_pose_fidelity"] = pose_fidelity(read_video(gen, pose=True).pose, read_video(ref, pose=True).pose,
                                                    column)
    result["confirms_reading"] = confirms(result["mean_abs_off_deg"], result["reading_pose_fidelity"])
    result.update(frames=os.path.abspath(ns.frames), motion=ns.motion, weights=os.path.abspath(ns.weights))
    print("angle off the decoded reference per frame (degrees): " + " ".join(f"{a:g}" for a in
                                                                            result["angles_off_deg"]))
    print(f"mean |angle off| {result['mean_abs_off_deg']:.1f} degrees; alignment fidelity {result['fidelity']:.2f}; "
          f"the reading's pose fidelity {result['reading_pose_fidelity']:.2f}; the two "
          f"{'agree: the reading is confirmed' if result['confirms_reading'] else 'do not agree: not confirmed'}")
    if ns.json:
        with open(ns.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
