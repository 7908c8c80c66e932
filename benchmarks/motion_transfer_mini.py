"""The DeT experiment in the small world, end to end through the pack's own nodes on a real ComfyUI server.

For each reference motion (a blue square drawn by `miniworld`, moving along a figure-eight, spiral, zig-zag,
stop-and-go or loop path that the pretraining paths do not contain as such) and each seed, one prompt trains and
samples four arms with the target prompt (default "a red disc"): `base` (no adapter), `det_no_track` (DeT
without the tracking loss), `det` (DeT with it) and `finetune` (the base weights fine-tuned on the reference).
The graph and the scores are in `miniworld/experiment.py`.

    python benchmarks/motion_transfer_mini.py --json OUT.json [--quick]
        [--reference CLIP.mp4 --tracks TRACKS.npy --prompt "a red disc"]

Writes OUT.json (`runs`: one record per arm, motion and seed with `motion_fidelity` and `appearance`; `summary`:
per arm the means), prints a table (arm x motion, mean and spread over seeds), and writes a side-by-side video
per motion (reference | base | DeT | fine-tune) into --out.
"""

import argparse
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from det_tools.client import ComfyClient  # noqa: E402
from det_tools.host import ComfyServer, find_host_dir  # noqa: E402
from det_core.video import LoadSettings, load_video  # noqa: E402
from miniworld import world  # noqa: E402
from miniworld.experiment import (ARMS, EXPERIMENT_SEEDS, WEIGHTS, Reference, Settings, base_dir,  # noqa: E402
                                  reference_ceiling, run_case, side_by_side, summarise, target_for, write_reference)

QUICK_STEPS = 200

def check_inputs(ns: argparse.Namespace) -> str | None:
    """What is wrong with the command line's prompts and reference files, before any work starts (None: nothing)."""
    for option, caption in (("--prompt", ns.prompt), ("--reference-caption", ns.reference_caption)):
        if caption is None:  # --prompt left out: each motion's default target
            continue
        try:  # the stand-in text encoder knows only the world's words
            world.parse_caption(caption)
        except ValueError as e:
            return f"{option}: {e}"
    if ns.own_caption and ns.prompt:
        return "--own-caption and --prompt exclude each other"
    if bool(ns.reference) != bool(ns.tracks):
        return "--reference and --tracks go together"
    if not ns.reference:
        return None
    for path in (ns.reference, ns.tracks):
        if not os.path.isfile(path):
            return f"{path}: no such file"
    try:
        arr = np.load(ns.tracks, allow_pickle=False)
    except (ValueError, OSError) as e:
        return f"{ns.tracks}: not a .npy array ({e})"
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.shape[0] < world.FRAMES or not np.isfinite(arr).all():
        return (f"{ns.tracks}: expected finite MTBench tracks [frames >= {world.FRAMES}, points, 3] (x/W, y/H, "
                f"visibility), got shape {arr.shape}")
    return None


def reference_from_files(base: str, clip: str, tracks: str, caption: str) -> Reference:
    """A user's reference clip and its MTBench tracks (checked by `check_inputs`), copied into the server's input
    folder; the tracks are cut to the world's clip length (Load Video (DeT) keeps the clip's first frames)."""
    arr = np.load(tracks, allow_pickle=False)
    name = os.path.splitext(os.path.basename(clip))[0]
    shutil.copy(clip, os.path.join(base, "input", os.path.basename(clip)))
    np.save(os.path.join(base, "input", f"{name}_tracks.npy"), arr[: world.FRAMES])
    # what the server will see, for the side-by-side video (Load Video (DeT) with the same settings)
    frames = load_video(clip, LoadSettings(frame_load_cap=world.FRAMES, width=world.SIZE, height=world.SIZE,
                                           snap="resize")).frames.numpy()
    return Reference(name, os.path.basename(clip), f"{name}_tracks.npy", arr[: world.FRAMES], caption, frames)


def table(runs: list[dict], ceiling: dict | None = None, key: str = "motion_fidelity") -> str:
    """Markdown: `key` (motion fidelity, or pose fidelity on the object-relative motions) per arm and motion
    (mean ± std over seeds), mean appearance and leak; the last row is the reference itself through the stand-in
    VAE (what a perfect transfer would score)."""
    runs = [r for r in runs if key in r]
    motions = list(dict.fromkeys(r["motion"] for r in runs))
    lines = ["| arm | " + " | ".join(motions) + " | mean | appearance | leak |",
             "|---" * (len(motions) + 4) + "|"]
    for arm in ARMS:
        cells = []
        for m in motions:
            v = [r[key] for r in runs if r["arm"] == arm and r["motion"] == m]
            cells.append(f"{np.mean(v):.3f} ± {np.std(v):.3f}" if v else "-")
        mine = [r for r in runs if r["arm"] == arm]
        if mine:
            lines.append(f"| {arm} | " + " | ".join(cells) + f" | {np.mean([r[key] for r in mine]):.3f}"
                         f" | {np.mean([r['appearance'] for r in mine]):.0%} | {np.mean([r['leak'] for r in mine]):.0%} |")
    if ceiling and all(m in ceiling for m in motions):
        lines.append("| reference through the VAE | " + " | ".join(f"{ceiling[m][key]:.3f}" for m in motions)
                     + f" | {np.mean([ceiling[m][key] for m in motions]):.3f} | "
                     f"{np.mean([ceiling[m]['appearance'] for m in motions]):.0%} (its own) | - |")
    return "\n".join(lines)


def target(ns: argparse.Namespace, ref: Reference) -> str:
    """The target prompt of one reference: its own caption (--own-caption), --prompt, or the motion's default."""
    return ref.caption if ns.own_caption else target_for(ref.name, ns.prompt)


def run(ns: argparse.Namespace) -> dict:
    with base_dir(ns.base_dir, ns.weights) as base:
        return run_in(ns, base)


def run_in(ns: argparse.Namespace, base: str) -> dict:
    s = Settings()
    if ns.quick:
        s.train_steps = QUICK_STEPS
    for item in ns.set:
        s.update(item)
    motions = ["figure_eight"] if ns.quick else list(ns.motions)
    seeds = [EXPERIMENT_SEEDS[0]] if ns.quick else list(ns.seeds)
    out = os.path.abspath(ns.out)
    os.makedirs(out, exist_ok=True)
    if ns.reference:  # any clip with MTBench tracks: Load Video (DeT) resizes it and keeps its first frames
        refs = [reference_from_files(base, ns.reference, ns.tracks, ns.reference_caption)]
    else:
        refs = [write_reference(base, m, ns.weights) for m in motions]
    runs, t0 = [], time.monotonic()
    with ComfyServer(find_host_dir(), base_dir=base, log_path=os.path.join(out, "comfyui.log")) as server:
        client = ComfyClient(server.url)
        for ref in refs:
            for seed in seeds:
                t1 = time.monotonic()
                save = os.path.join(out, f"{ref.name}_s{seed}") if seed == seeds[0] or ns.save_all else None
                case, frames = run_case(client, ref, target(ns, ref), seed, s, tuple(ns.arms), save, ns.timeout)
                runs += case
                print(f"[mini] {ref.name} seed {seed} ({time.monotonic() - t1:.0f} s): " + ", ".join(
                    f"{r['arm']} {r['motion_fidelity']:.3f} / {r['appearance']:.0%}" for r in case), flush=True)
                if save and seed == seeds[0] and {"base", "det", "finetune"} <= set(ns.arms):
                    side_by_side(os.path.join(out, f"{ref.name}_reference_base_det_finetune.mp4"),
                                 [ref.frames, frames["base"], frames["det"], frames["finetune"]])
    # the ceiling needs an object the world's reading understands: drawn references only
    ceiling = {ref.name: reference_ceiling(ref, ns.weights) for ref in refs
               if ref.name in world.TEST_MOTIONS}
    return {"settings": asdict(s), "ceiling": ceiling, "prompt": ns.prompt, "weights": ns.weights,
            "own_caption": ns.own_caption, "targets": {r.name: target(ns, r) for r in refs},
            "motions": [r.name for r in refs],
            "seeds": seeds,
            "clip": {"frames": world.FRAMES, "size": world.SIZE}, "seconds": time.monotonic() - t0,
            "runs": runs, "summary": summarise(runs)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python benchmarks/motion_transfer_mini.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True, help="where the results go")
    parser.add_argument("--quick", action="store_true", help="one motion (figure-eight), one seed, 200 steps")
    parser.add_argument("--motions", nargs="+", default=list(world.MOTIONS),
                        choices=list(world.TEST_MOTIONS),
                        help="global paths (default: the five that turn or halt; drift: a steady one) and/or "
                             "object-relative motions "
                             f"({', '.join(world.POSE_MOTIONS)}; these need a base model pretrained with "
                             "miniworld.train --object-motion, given with --weights)")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(EXPERIMENT_SEEDS))
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="change one experiment setting (miniworld.experiment.Settings), e.g. train_steps=300")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--prompt", default=None,
                        help="the target prompt (default: 'a red disc' on the global paths, on the object-relative "
                             "motions one whose motion can be seen: miniworld.experiment.TARGETS)")
    parser.add_argument("--own-caption", action="store_true",
                        help="sample each reference with its own caption (nothing to decouple: can the arm fit the "
                             "reference's motion at all?)")
    parser.add_argument("--reference", help="a reference clip (any size: Load Video (DeT) resizes it)")
    parser.add_argument("--tracks", help="its MTBench tracks [frames, points, 3] (.npy)")
    parser.add_argument("--reference-caption", default="a blue square", help="caption of --reference")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "motion_transfer_mini"))
    parser.add_argument("--save-all", action="store_true",
                        help="save every seed's frames under --out (<motion>_s<seed>/), not only the first seed's")
    parser.add_argument("--base-dir", help="ComfyUI base directory to use and keep (default: a temporary one, removed when the run ends well)")
    parser.add_argument("--weights", default=WEIGHTS, help="folder with the small world's weights")
    parser.add_argument("--timeout", type=float, default=1800.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    # a terminated run stops its server too (the `with` block's exit), instead of leaving it training
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    problem = check_inputs(ns)
    if problem:
        parser.error(problem)
    record = run(ns)
    with open(ns.json, "w") as f:
        json.dump(record, f, indent=2)
    print(table(record["runs"], record["ceiling"]))
    if any("pose_fidelity" in r for r in record["runs"]):
        print("pose fidelity (the object's own rotation or scale against the reference's):")
        print(table(record["runs"], record["ceiling"], "pose_fidelity"))
    print(json.dumps(record["summary"], indent=2))
    print(f"[mini] {len(record['runs'])} runs in {record['seconds'] / 60:.1f} min; JSON: {ns.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
