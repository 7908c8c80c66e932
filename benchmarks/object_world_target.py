"""Does the object-relative experiment meet issue 20's target? Reads the JSON of `motion_transfer_mini.py`.

The target was written down before the experiment was run (`docs/miniworld/object_world_plan.md`):

- on every object-relative motion, DeT's mean pose fidelity over the seeds is above the base arm's by more than
  the base arm's standard deviation over the same seeds;
- DeT keeps the target's look (its colour and shape read) on >= 80 % of frames, over all its runs;
- the fine-tune's leak (frames showing the reference's colour) is reported beside it;
- a spin motion whose rotation reading `benchmarks/rotation_alignment.py` did not confirm (`confirms_reading`
  false in its JSON, given with --alignment) is not measured: it is listed as such and left out of the verdict and
  of the look (the fifth world's rule in the plan).

    python benchmarks/object_world_target.py --json EXPERIMENT.json [--alignment ALIGN.json ...] [--out TARGET.json]

Prints one row per motion (base and DeT mean ± std, the margin, whether it holds) and the verdict.
"""

import argparse
import json
import sys

import numpy as np

LOOK = 0.8
MEASURE = "pose_fidelity"


def target(runs: list[dict], not_measured: tuple[str, ...] = ()) -> dict:
    """The rule of the module docstring over the runs (records with arm, motion, seed and scores), leaving out the
    motions in `not_measured`."""
    posed = [r for r in runs if MEASURE in r and r["motion"] not in not_measured]
    motions = list(dict.fromkeys(r["motion"] for r in posed))
    if not motions:
        raise ValueError("no measured object-relative runs (pose_fidelity) in this JSON: run "
                         "motion_transfer_mini.py with --motions spin pulse swing loop_spin"
                         + (f" (not measured: {', '.join(not_measured)})" if not_measured else ""))
    rows = []
    for m in motions:
        base = [r[MEASURE] for r in posed if r["arm"] == "base" and r["motion"] == m]
        det = [r[MEASURE] for r in posed if r["arm"] == "det" and r["motion"] == m]
        if not base or not det:
            raise ValueError(f"motion {m!r} needs both the base and the det arm (run with --arms including both)")
        margin = float(np.mean(det) - np.mean(base))
        rows.append({"motion": m, "base_mean": float(np.mean(base)), "base_std": float(np.std(base)),
                     "det_mean": float(np.mean(det)), "det_std": float(np.std(det)), "margin": margin,
                     "seeds": len(det), "holds": margin > float(np.std(base))})

    def mean_of(arm: str, key: str) -> float | None:
        v = [r[key] for r in posed if r["arm"] == arm]
        return float(np.mean(v)) if v else None

    look = mean_of("det", "appearance")
    out = {"rows": rows, "not_measured": sorted({r["motion"] for r in runs if r["motion"] in not_measured}),
           "motions_above": sum(r["holds"] for r in rows), "det_look": look,
           "look_holds": look is not None and look >= LOOK,
           "leak": {arm: mean_of(arm, "leak") for arm in ("base", "det_no_track", "det", "finetune")}}
    out["met"] = out["motions_above"] == len(rows) and out["look_holds"]
    out["largest_margin"] = max(rows, key=lambda r: r["margin"])["motion"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/object_world_target.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True, help="the experiment's JSON (motion_transfer_mini.py --json)")
    parser.add_argument("--alignment", nargs="+", default=[], metavar="ALIGN.json",
                        help="rotation_alignment.py's JSON for a spin motion; one whose reading is not confirmed "
                             "is not measured")
    parser.add_argument("--out", help="write the verdict here as JSON")
    ns = parser.parse_args(argv)
    unconfirmed = []
    for path in ns.alignment:
        try:
            with open(path) as f:
                align = json.load(f)
            if not align["confirms_reading"]:
                unconfirmed.append(align["motion"])
        except (OSError, ValueError, KeyError) as e:
            parser.error(f"--alignment {path}: not a rotation_alignment.py JSON with motion and confirms_reading "
                         f"({e})")
    try:
        with open(ns.json) as f:
            result = target(json.load(f)["runs"], tuple(unconfirmed))
    except (OSError, ValueError, KeyError) as e:
        parser.error(f"{ns.json}: {e}")
    for r in result["rows"]:
        print(f"{r['motion']:10s} base {r['base_mean']:.3f} ± {r['base_std']:.3f}  det {r['det_mean']:.3f} ± "
              f"{r['det_std']:.3f}  margin {r['margin']:+.3f} -> {'above' if r['holds'] else 'NOT above'} the "
              "base's spread")
    for m in result["not_measured"]:
        print(f"{m:10s} not measured: the rotation reading is not confirmed on it")
    leak = ", ".join(f"{a} {v:.0%}" for a, v in result["leak"].items() if v is not None)
    print(f"DeT keeps the target's look on {result['det_look']:.0%} of frames (>= {LOOK:.0%}: "
          f"{'yes' if result['look_holds'] else 'no'}); leak: {leak}")
    print(f"target met: {'yes' if result['met'] else 'no'} ({result['motions_above']} of {len(result['rows'])} "
          f"motions above); largest margin: {result['largest_margin']}")
    if ns.out:
        with open(ns.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
