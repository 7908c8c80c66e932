"""How far the rotation reading (`miniworld.measure`, complex moments) is off the drawn angle, on the spinning
references alone (no model): the figures the README quotes for the reading.

    python benchmarks/rotation_reading.py [--weights DIR] [--json OUT.json]

For spin and loop + spin: the largest and the mean error in degrees of the reading on the drawn clip, and the mean
error on the clip encoded and decoded by the VAE in --weights (default: the committed world's); and the largest turn
read on a disc drawn with the spin's turn (a disc has no turn to see). Plain Python, seconds on 2 cores.
"""

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from miniworld import world  # noqa: E402
from miniworld.experiment import WEIGHTS, decoded  # noqa: E402
from miniworld.measure import read_video  # noqa: E402


def errors(motion: str, weights: str) -> dict:
    scene = world.reference_scene(motion)
    truth = scene.angle - scene.angle[0]
    drawn = world.render(scene)
    off = np.degrees(np.abs(read_video(drawn, pose=True).pose[:, 0] - truth))
    through = np.degrees(np.abs(read_video(decoded(drawn, weights), pose=True).pose[:, 0] - truth))
    return {"motion": motion, "drawn_max_deg": float(off.max()), "drawn_mean_deg": float(off.mean()),
            "decoded_mean_deg": float(through.mean())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=WEIGHTS, help="folder with the world's VAE")
    p.add_argument("--json", help="also write the figures here")
    ns = p.parse_args(argv)
    rows = [errors(m, ns.weights) for m in ("spin", "loop_spin")]
    disc = read_video(world.render(world.reference_scene("spin", shape="disc")), pose=True).pose[:, 0]
    out = {"weights": ns.weights, "rows": rows, "disc_max_deg": float(np.degrees(np.abs(disc)).max())}
    for r in rows:
        print(f"{r['motion']:>9}: drawn off by {r['drawn_max_deg']:.2f} deg at most ({r['drawn_mean_deg']:.2f} mean); "
              f"through the VAE {r['decoded_mean_deg']:.2f} deg mean")
    print(f"     disc: read turning {out['disc_max_deg']:.2f} deg at most")
    if ns.json:
        with open(ns.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
