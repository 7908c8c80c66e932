"""How much of each object-relative reference motion a stand-in VAE keeps, by object size: the next world's design
question (the first object-relative world failed its rule at the codec, README: The small world).

    python benchmarks/object_codec_sizes.py [--weights DIR] [--fractions 0.125 0.1875 0.25] [--json OUT.json]

For each motion of `miniworld.world.OBJECT_MOTIONS` and each object half-size (a fraction of the 96-pixel frame;
the global paths use 1/8, the object-relative test motions 3/16), the reference is drawn, encoded and decoded by
the VAE in --weights (default: the committed world's), and read as the experiment reads generated videos: pose
fidelity against the drawn clip's own reading (1 = the motion kept, 0 = no better than standing still), the share
of frames where the object is found, and where its own shape is read. Plain Python, about a minute on 2 cores.
"""

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from miniworld import world  # noqa: E402
from miniworld.experiment import POSE_PARAMETER, WEIGHTS, decoded, pose_fidelity  # noqa: E402
from miniworld.measure import read_video  # noqa: E402


def codec_row(motion: str, fraction: float, weights: str) -> dict:
    scene = world.reference_scene(motion, half_fraction=fraction)
    drawn = world.render(scene)
    through = decoded(drawn, weights)
    ours, theirs = read_video(through, pose=True), read_video(drawn, pose=True)
    return {"motion": motion, "half_fraction": fraction, "shape": scene.shape,
            "pose_fidelity": pose_fidelity(ours.pose, theirs.pose, POSE_PARAMETER[motion]),
            "found": float(np.mean([r.found for r in ours.frames])),
            "own_shape": float(np.mean([r.found and r.shape == scene.shape for r in ours.frames]))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=WEIGHTS)
    p.add_argument("--fractions", type=float, nargs="+", default=[0.125, 0.1875, 0.25])
    p.add_argument("--json")
    ns = p.parse_args(argv)
    if any(not 0.05 <= f <= 0.3 for f in ns.fractions):
        print("--fractions: each between 0.05 and 0.3 of the frame (larger objects leave the frame)", file=sys.stderr)
        return 2
    rows = [codec_row(m, f, ns.weights) for m in world.OBJECT_MOTIONS for f in ns.fractions]
    print(f"{'motion':10s} {'half-size':>9s} {'pose fidelity':>13s} {'found':>6s} {'own shape':>9s}")
    for r in rows:
        print(f"{r['motion']:10s} {r['half_fraction']:9.4f} {r['pose_fidelity']:13.2f} {r['found']:6.0%} "
              f"{r['own_shape']:9.0%}")
    if ns.json:
        with open(ns.json, "w") as f:
            json.dump({"weights": os.path.relpath(ns.weights, ROOT), "frame": world.SIZE, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
