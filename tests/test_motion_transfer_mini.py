"""The small-world DeT experiment, short version (one motion, one seed, 200 training steps) through a real server:
the JSON the README describes, every arm scored, a sound measuring chain, and DeT above the base model. The full
experiment (README, 5 seeds) found DeT above the base on figure-eight by 0.044 in motion fidelity averaged over
the seeds (4 of 5 seeds); this case (figure-eight, seed 0) must show at least that margin. Every run is seeded, so
the case scores as the full experiment's record of it says, which is checked too."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARMS = {"base", "det_no_track", "det", "finetune"}
MARGIN = 0.044
"""DeT's mean margin over the base model on figure-eight in the full experiment (docs/miniworld)."""
RECORD = os.path.join(ROOT, "docs", "miniworld", "motion_transfer_mini.json")


def test_quick_experiment_through_the_server(comfy_host, tmp_path):
    out = tmp_path / "mini.json"
    scratch = tmp_path / "scratch"  # the run's temporary ComfyUI folder goes here, and must be gone at the end
    scratch.mkdir()
    env = dict(os.environ, COMFYUI_DIR=comfy_host, TMPDIR=str(scratch))
    done = subprocess.run([sys.executable, "benchmarks/motion_transfer_mini.py", "--json", str(out), "--quick",
                           "--out", str(tmp_path / "videos")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    record = json.load(open(out))
    assert {r["arm"] for r in record["runs"]} == ARMS and len(record["runs"]) == 4
    for r in record["runs"]:
        assert set(r) >= {"arm", "motion", "seed", "motion_fidelity", "appearance"}
        assert r["motion"] == "figure_eight" and r["seed"] == 0 and 0 <= r["appearance"] <= 1
        assert r["found"] > 0, r  # every arm drew an object on some frames
    assert set(record["summary"]) == ARMS and record["settings"]["train_steps"] == 200
    assert record["ceiling"]["figure_eight"]["motion_fidelity"] > 0.95
    by_arm = {r["arm"]: r for r in record["runs"]}
    # same seed and sampler everywhere: the arms differ only by what was trained, and each training changed the video
    scores = {a: by_arm[a]["motion_fidelity"] for a in ARMS}
    assert len(set(scores.values())) == 4, scores
    assert scores["det"] >= scores["base"] + MARGIN, scores
    full = json.load(open(RECORD))
    assert full["settings"] == record["settings"]
    for arm in ARMS:  # the full experiment's own record of this case
        [was] = [r for r in full["runs"] if r["arm"] == arm and r["motion"] == "figure_eight" and r["seed"] == 0]
        assert abs(was["motion_fidelity"] - scores[arm]) < 1e-4 and was["found"] == by_arm[arm]["found"], (arm, was)
    assert (tmp_path / "videos" / "figure_eight_reference_base_det_finetune.mp4").is_file()
    assert "| det |" in done.stdout and "reference through the VAE" in done.stdout
    assert not [p.name for p in scratch.iterdir() if p.name.startswith("det_mini_")], list(scratch.iterdir())


SELECTION = os.path.join(ROOT, "docs", "miniworld", "selection.json")


def test_experiment_settings_are_the_held_out_picks():
    """The experiment's defaults are what the selection on held-out seeds picked (re-select when changing them)."""
    sys.path.insert(0, ROOT)
    from miniworld.experiment import Settings

    picks = json.load(open(SELECTION))["picks"]
    s = Settings()
    for name, value in {**picks["det"], **picks["finetune"]}.items():
        assert getattr(s, name) == value, (name, getattr(s, name), value)


def test_selection_rerun_matches_its_record_and_follows_its_rule(comfy_host, tmp_path):
    """One motion and seed of the held-out selection, rerun through a real server: every candidate scores as the
    committed record says (so the record is reproducible by its command), and the picks follow the stated rule."""
    out = tmp_path / "select.json"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = dict(os.environ, COMFYUI_DIR=comfy_host, TMPDIR=str(scratch))
    done = subprocess.run([sys.executable, "benchmarks/motion_transfer_mini_select.py", "--json", str(out),
                           "--motions", "stop_and_go", "--seeds", "7"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    mine, committed = json.load(open(out)), json.load(open(SELECTION))
    assert [(c["arm"], c["changes"]) for c in mine["candidates"]] == \
        [(c["arm"], c["changes"]) for c in committed["candidates"]]
    for new, old in zip(mine["candidates"], committed["candidates"]):
        [run] = new["runs"]
        [was] = [r for r in old["runs"] if r["motion"] == "stop_and_go" and r["seed"] == 7]
        assert abs(run["motion_fidelity"] - was["motion_fidelity"]) < 1e-4, (new["changes"], run, was)
        assert run["found"] == was["found"] and run["leak"] == was["leak"], (new["changes"], run, was)
    # the rule, written out: among candidates finding the object on >= 95 % of frames, the best motion fidelity;
    # if none does, the one finding it most often
    for arm in ("det", "finetune"):
        cands = [c for c in committed["candidates"] if c["arm"] == arm]
        keep = [c for c in cands if c["means"]["found"] >= 0.95]
        best = (sorted(keep, key=lambda c: -c["means"]["motion_fidelity"]) if keep
                else sorted(cands, key=lambda c: (-c["means"]["found"], -c["means"]["motion_fidelity"])))[0]
        assert committed["picks"][arm] == best["changes"], arm
    assert not [p.name for p in scratch.iterdir() if p.name.startswith("det_mini_")], list(scratch.iterdir())
    refused = subprocess.run([sys.executable, "benchmarks/motion_transfer_mini_select.py", "--json",
                              str(tmp_path / "x.json"), "--seeds", "1"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2 and "experiment's" in refused.stderr


def test_a_reference_clip_of_another_size_and_length_with_its_tracks(comfy_host, tmp_path):
    """`--reference CLIP --tracks TRACKS`: a clip at twice the world's size and 8 frames longer, with MTBench tracks
    as long. Load Video (DeT) resizes the clip and keeps its first 33 frames; the tracks are cut to match. The base
    arm samples without looking at the reference, and its score depends only on the tracks: after the cut they are
    the figure-eight's, so it must score exactly as the full experiment's record of figure-eight, seed 0. DeT,
    trained on the resized clip, must score close to that record too."""
    sys.path.insert(0, ROOT)
    import numpy as np

    from det_core.video import write_video
    from miniworld import world

    extra = 8
    big = world.reference_scene("figure_eight", size=2 * world.SIZE)
    frames = world.render(big, size=2 * world.SIZE)
    write_video(np.concatenate([frames, frames[-1:].repeat(extra, 0)]), str(tmp_path / "big_eight.mp4"),
                fps=world.FPS)
    tracks = world.object_tracks(world.reference_scene("figure_eight"))
    np.save(tmp_path / "big_eight_tracks.npy", np.concatenate([tracks, tracks[-1:].repeat(extra, 0)]))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = dict(os.environ, COMFYUI_DIR=comfy_host, TMPDIR=str(scratch))
    out = tmp_path / "ref.json"
    done = subprocess.run([sys.executable, "benchmarks/motion_transfer_mini.py", "--json", str(out),
                           "--reference", str(tmp_path / "big_eight.mp4"), "--tracks", str(tmp_path / "big_eight_tracks.npy"),
                           "--arms", "base", "det", "--seeds", "0", "--out", str(tmp_path / "videos")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    record = json.load(open(out))
    assert record["motions"] == ["big_eight"] and {r["arm"] for r in record["runs"]} == {"base", "det"}
    by_arm = {r["arm"]: r for r in record["runs"]}
    was = {r["arm"]: r for r in json.load(open(RECORD))["runs"] if r["motion"] == "figure_eight" and r["seed"] == 0}
    assert abs(by_arm["base"]["motion_fidelity"] - was["base"]["motion_fidelity"]) < 1e-4, (by_arm["base"], was)
    assert by_arm["det"]["found"] > 0 and by_arm["det"]["motion_fidelity"] != by_arm["base"]["motion_fidelity"]
    # the clip drawn at twice the size and resized back trains nearly the same adapter as the world's own clip:
    # DeT transfers as in the record (there 0.350 vs the base's 0.264), within a fraction of its margin
    det_was = was["det"]
    assert abs(by_arm["det"]["motion_fidelity"] - det_was["motion_fidelity"]) < 0.02, (by_arm["det"], det_was)
    assert not [p.name for p in scratch.iterdir() if p.name.startswith("det_mini_")], list(scratch.iterdir())


def test_bad_reference_inputs_are_refused_before_any_work(tmp_path):
    import numpy as np

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not looked at: the tracks are checked first")
    cases = [
        (np.zeros((33, 4, 2), np.float32), [], "expected finite MTBench tracks"),
        (np.zeros((20, 4, 3), np.float32), [], "frames >= 33"),
        (np.full((33, 4, 3), np.nan, np.float32), [], "finite"),
        (np.zeros((33, 4, 3), np.float32), ["--prompt", "a purple disc"], "--prompt: colour 'purple' is not one of red"),
        (np.zeros((33, 4, 3), np.float32), ["--reference-caption", "a dancer"], "--reference-caption: caption 'a dancer': write 'a <colour> <shape>'"),
        (np.zeros((33, 4, 3), np.float32), ["--own-caption", "--prompt", "a red disc"], "--own-caption and --prompt exclude each other"),
    ]
    for i, (arr, extra, phrase) in enumerate(cases):
        np.save(tmp_path / f"t{i}.npy", arr)
        done = subprocess.run([sys.executable, "benchmarks/motion_transfer_mini.py", "--json", str(tmp_path / "x.json"),
                               "--reference", str(clip), "--tracks", str(tmp_path / f"t{i}.npy"), *extra],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and phrase in done.stderr, (phrase, done.stderr[-2000:])
    alone = subprocess.run([sys.executable, "benchmarks/motion_transfer_mini.py", "--json", str(tmp_path / "x.json"),
                            "--reference", str(clip)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert alone.returncode == 2 and "--reference and --tracks go together" in alone.stderr
    assert not (tmp_path / "x.json").exists()
