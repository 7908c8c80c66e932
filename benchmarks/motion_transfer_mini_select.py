"""Pick the small-world experiment's DeT and fine-tune settings on held-out seeds, by a rule fixed beforehand.

The experiment (`benchmarks/motion_transfer_mini.py`) reports seeds 0 to 4. Its settings are chosen here on
other seeds (default 7 and 8), on all five reference motions, through the same server graph (`miniworld.experiment`):

- DeT (the arm with the tracking loss; `det_no_track` then uses the same settings): training learning rate and
  steps from `DET_TRAINING` (and `OBJECT_DET_TRAINING` when an object-relative motion is among the motions), and
  Apply DeT Motion's strength from `STRENGTHS`;
- the fine-tune baseline: its learning rate from `FINETUNE_LEARNING_RATES` (at the experiment's 200 steps).

The rule, the same for both: a candidate *keeps the object* when the object is found on at least
`KEEP_OBJECT` (95 %) of the frames, averaged over the held-out cases. Among the candidates that keep it, the one
with the highest mean score wins; when none keeps it, the one that finds the object most often (ties: score). The
score of a case is its motion fidelity on a global path and its pose fidelity on an object-relative motion
(MTBench's motion fidelity barely sees motion in place: `miniworld.experiment.pose_fidelity`). The target's colour
and shape, and the leak of the reference's colour, are printed but take no part in the choice.

    python benchmarks/motion_transfer_mini_select.py --json OUT.json [--seeds 7 8] [--motions ...]

Writes OUT.json: every candidate's runs, its means, and the picks (`picks.det`, `picks.finetune`: the settings
to pass to the experiment as `--set FIELD=VALUE`).
"""

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import asdict, replace

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from det_tools.client import ComfyClient  # noqa: E402
from det_tools.host import ComfyServer, find_host_dir  # noqa: E402
from miniworld import world  # noqa: E402
from miniworld.experiment import (EXPERIMENT_SEEDS, SELECTION_SEEDS, WEIGHTS, Settings, base_dir,  # noqa: E402
                                  run_case, target_for, write_reference)

DET_TRAINING = ({"learning_rate": 1e-4, "train_steps": 200}, {"learning_rate": 1e-4, "train_steps": 100},
                {"learning_rate": 3e-5, "train_steps": 200})
OBJECT_DET_TRAINING = ({"learning_rate": 3e-4, "train_steps": 600},)
"""Added for the object-relative motions (written into `docs/miniworld/object_world_plan.md` before it ran): the
setting under which DeT fit the pulse to 0.69 under the reference's own caption; `DET_TRAINING` was chosen for the
global paths."""
STRENGTHS = (1.0, 0.75, 0.5)
FINETUNE_LEARNING_RATES = (1e-4, 3e-4, 1e-3)
KEEP_OBJECT = 0.95
RULE = "The rule" + __doc__.split("The rule")[1].split("    python benchmarks")[0].rstrip()
MEANS = ("score", "motion_fidelity", "found", "appearance", "target_colour", "leak")


def candidates(motions: list[str] | tuple[str, ...] = world.MOTIONS) -> list[tuple[str, dict]]:
    """(arm, settings changes), the strengths innermost: consecutive prompts then differ only in Apply DeT Motion,
    and the server reuses the trained adapter from its cache."""
    training = DET_TRAINING + (OBJECT_DET_TRAINING if set(motions) & set(world.POSE_MOTIONS) else ())
    out = [("base", {})]
    out += [("det", {**t, "strength": s}) for t in training for s in STRENGTHS]
    out += [("finetune", {"finetune_learning_rate": lr}) for lr in FINETUNE_LEARNING_RATES]
    return out


def pick(results: list[dict], arm: str) -> dict:
    """The rule of the module docstring over the candidates of one arm."""
    mine = [r for r in results if r["arm"] == arm]
    keep = [r for r in mine if r["means"]["found"] >= KEEP_OBJECT]
    if keep:
        return max(keep, key=lambda r: r["means"]["score"])
    return max(mine, key=lambda r: (r["means"]["found"], r["means"]["score"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/motion_transfer_mini_select.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SELECTION_SEEDS))
    parser.add_argument("--motions", nargs="+", default=list(world.MOTIONS),
                        choices=list(world.TEST_MOTIONS))
    parser.add_argument("--prompt", default=None, help="the target prompt (default: each motion's, as the experiment)")
    parser.add_argument("--weights", default=WEIGHTS, help="folder with the small world's weights")
    parser.add_argument("--timeout", type=float, default=1800.0)
    ns = parser.parse_args(argv)
    if set(ns.seeds) & set(EXPERIMENT_SEEDS):
        parser.error(f"seeds {', '.join(map(str, EXPERIMENT_SEEDS))} are the experiment's; pick settings on other "
                     f"seeds (default {' '.join(map(str, SELECTION_SEEDS))})")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with base_dir(weights=ns.weights, prefix="det_mini_select_") as base:
        refs = [write_reference(base, m, ns.weights) for m in ns.motions]
        todo = candidates(ns.motions)
        runs: dict[int, list[dict]] = {i: [] for i in range(len(todo))}
        t0 = time.monotonic()
        with ComfyServer(find_host_dir(), base_dir=base, log_path=os.path.join(base, "comfyui.log")) as server:
            client = ComfyClient(server.url)
            for ref in refs:
                for seed in ns.seeds:
                    for i, (arm, changes) in enumerate(todo):
                        s = replace(Settings(), **changes)
                        case, _ = run_case(client, ref, target_for(ref.name, ns.prompt), seed, s, (arm,),
                                           timeout=ns.timeout)
                        r = case[0]
                        r["score"] = r.get("pose_fidelity", r["motion_fidelity"])
                        runs[i] += case
                        print(f"[select] {ref.name} seed {seed} {arm} {changes}: score {r['score']:.3f} found "
                              f"{r['found']:.0%} appearance {r['appearance']:.0%} leak {r['leak']:.0%} "
                              f"({time.monotonic() - t0:.0f} s)", flush=True)
    results = [{"arm": arm, "changes": changes, "runs": runs[i],
                "means": {k: float(np.mean([r[k] for r in runs[i]])) for k in MEANS}}
               for i, (arm, changes) in enumerate(todo)]
    picks = {arm: pick(results, arm)["changes"] for arm in ("det", "finetune")}
    record = {"rule": RULE, "seeds": ns.seeds,
              "motions": ns.motions, "prompt": ns.prompt, "weights": ns.weights, "defaults": asdict(Settings()),
              "seconds": time.monotonic() - t0, "candidates": results, "picks": picks}
    with open(ns.json, "w") as f:
        json.dump(record, f, indent=2)
    print("| arm | settings | score | motion fidelity | found | target appearance | leak |\n" + "|---" * 7 + "|")
    for r in results:
        m = r["means"]
        print(f"| {r['arm']} | {r['changes']} | {m['score']:.3f} | {m['motion_fidelity']:.3f} | {m['found']:.0%} | "
              f"{m['appearance']:.0%} | {m['leak']:.0%} |")
    print(f"[select] picks: {json.dumps(picks)}; {record['seconds'] / 60:.1f} min; JSON: {ns.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
