"""The MTBench runner against real servers with tiny models, on a two-case benchmark folder built from the shared
MTBench examples: outputs, the table, resuming after a kill, two servers sharing the work, and a dry run."""

import csv
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from det_tools.bench import main as bench_main
from det_tools.host import ComfyServer
from det_core.video import LoadSettings, load_video, write_video
from det_graphs import base_nodes, train_node

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
W, H, F, POINTS = 192, 128, 9, 16


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory, pack_cases):
    """Both shared cases cut to 9 frames at 192x128 (tracks and mask to match), 2 prompts each."""
    root = tmp_path_factory.mktemp("mtbench")
    for case in ("world-figure-eight", "world-zig-zag"):
        src, dst = os.path.join(pack_cases, case), root / case
        dst.mkdir()
        frames = load_video(os.path.join(src, "source.mp4"), LoadSettings(frame_load_cap=F, width=W, height=H, snap="off")).frames
        write_video(frames, str(dst / "source.mp4"), fps=8, crf=12)
        np.save(dst / "tracks.npy", np.load(os.path.join(src, "tracks.npy"))[:F, :POINTS])
        Image.open(os.path.join(src, "mask_first_frame.png")).convert("L").resize((W, H)).save(dst / "mask_first_frame.png")
        shutil.copy(os.path.join(src, "caption.txt"), dst / "caption.txt")
        shutil.copy(os.path.join(src, "eval_prompts.txt"), dst / "eval_prompts.txt")
    broken = root / "zz-broken"
    broken.mkdir()
    shutil.copy(os.path.join(pack_cases, "world-zig-zag", "caption.txt"), broken / "caption.txt")
    return str(root)


@pytest.fixture(scope="module")
def workflow(tmp_path_factory, cotracker_file):
    g = base_nodes()
    g.update({
        "video": {"class_type": "DeTLoadVideo", "_meta": {"title": "Reference video"}, "inputs": {
            "video": "", "frame_load_cap": 0, "skip_first_frames": 0, "select_every_nth": 1, "force_rate": 0.0,
            "width": 0, "height": 0, "snap_to_16": "crop", "trim_to_4k_plus_1": True}},
        "encode": {"class_type": "DeTTestPseudoEncode", "inputs": {"frames": ["video", 0]}},
        "tracks": {"class_type": "DeTLoadTracks", "_meta": {"title": "Reference tracks"},
                   "inputs": {"path": "", "width": W, "height": H}},
        "train": train_node("bench", steps=2, tracks=["tracks", 0], latent=["encode", 0], overwrite=True,
                            checkpoint_every=0),
        "empty": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": W, "height": H, "length": F, "batch_size": 1}},
        "apply": {"class_type": "DeTApplyMotion", "_meta": {"title": "Apply DeT Motion"}, "inputs": {
            "model": ["model", 0], "adapter": ["train", 0], "positive": ["cond2", 0], "latent": ["empty", 0], "seed": 0,
            "steps": 2, "guidance": 6.0, "cfg": 1.0, "flow_shift": 7.0, "sampler_name": "euler", "scheduler": "simple",
            "strength": 1.0, "double_blocks": "trained", "single_blocks": "trained", "keep_fraction": 1.0}},
        "decode": {"class_type": "DeTTestPseudoDecode", "inputs": {"samples": ["apply", 0]}},
        "tracker": {"class_type": "DeTCoTrackerLoader", "inputs": {"checkpoint": cotracker_file, "mode": "auto",
                                                                   "device": "cpu", "dtype": "fp32"}},
        "mask_image": {"class_type": "LoadImage", "_meta": {"title": "Reference mask"}, "inputs": {"image": ""}},
        "mask": {"class_type": "ImageToMask", "inputs": {"image": ["mask_image", 0], "channel": "red"}},
        "score": {"class_type": "DeTMotionFidelity", "_meta": {"title": "Motion Fidelity (DeT)"}, "inputs": {
            "generated": ["decode", 0], "cotracker": ["tracker", 0], "mode": "frechet", "alpha": 0.5, "points": 16,
            "prompt": "", "source_tracks": ["tracks", 0], "source": ["video", 0], "source_mask": ["mask", 0],
            "protocol": "pack", "pairing_seed": 0}},
        "clip": {"class_type": "CreateVideo", "inputs": {"images": ["decode", 0], "fps": 8.0}},
        "save": {"class_type": "SaveVideo", "inputs": {"video": ["clip", 0], "filename_prefix": "bench/out",
                                                       "format": "mp4", "codec": "h264"}},
    })
    path = tmp_path_factory.mktemp("wf") / "bench_api.json"
    path.write_text(json.dumps(g))
    return str(path)


def results(out):
    return sorted(os.path.join(dp, f) for dp, _, fs in os.walk(out) for f in fs if f == "result.json")


def test_dry_run_checks_the_folder(bench_dir, tmp_path, capsys):
    out = tmp_path / "dry"
    assert bench_main([bench_dir, "--dry-run", "--protocol", "both", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert ("skipping case zz-broken: source.mp4: missing (also missing: mask_first_frame.png, tracks.npy, "
            "eval_prompts.txt)") in printed
    assert "2 case(s) in the flat layout" in printed
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["case"] for r in rows] == ["world-figure-eight", "world-zig-zag"]
    for r in rows:  # a track set against itself: 100 under the pack's protocol; under the public one only local is
        assert float(r["pack_motion_fidelity"]) == pytest.approx(100.0)
        assert float(r["det_local"]) == pytest.approx(1.0) and float(r["det_global"]) < 0.99
        assert r["det_seed"] == "0" and r["det_tracks"] == str(POINTS) and r["level"] and float(r["silhouette"]) > 0
    table = (out / "table.md").read_text()
    assert "| DeT (HunyuanVideo) (published) | 31.9 | 91.9 | 85.9 |" in table
    det_mf = np.mean([float(r["det_motion_fidelity"]) for r in rows])
    assert f"| shipped tracks vs themselves (dry run), det protocol | - | - | {det_mf:.1f} |" in table
    assert "pack protocol (true Frechet" in table and "det protocol (the public evaluation" in table


def test_runs_every_case_resumes_after_a_kill_and_shares_servers(bench_dir, workflow, comfy_server, comfy_host,
                                                               comfy_base, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "det_tools.bench", bench_dir, "--workflow", workflow, "--server", comfy_server.url,
           "--out", str(out), "--prompts-per-case", "2", "--timeout", "600", "--protocol", "both",
           "--pairing-seed", "3"]
    # 1. start, and kill the runner as soon as one case x prompt is finished
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 400
    while not results(out) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.kill()
    log = proc.communicate()[0]
    first = results(out)
    assert len(first) >= 1, log
    stamps = {p: os.path.getmtime(p) for p in first}
    # 2. resume with a second server beside the first: finished runs are skipped, the rest completes
    with ComfyServer(comfy_host, base_dir=comfy_base, log_path=str(tmp_path / "second.log")) as second:
        done = subprocess.run(cmd + ["--server", second.url], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(first)} already done" in done.stdout
    final = results(out)
    assert len(final) == 4
    assert all(os.path.getmtime(p) == t for p, t in stamps.items()), "a finished run was redone"
    records = [json.load(open(p)) for p in final]
    assert {r["case"] for r in records} == {"world-figure-eight", "world-zig-zag"}
    for r in records:
        assert 0 < r["pack_motion_fidelity"] <= 100 and r["level"] in ("easy", "medium", "hard")
        assert 0 < r["det_motion_fidelity"] <= 100 and r["det_seed"] == 3 and r["det_tracks"] > 0
        assert any(f.endswith(".mp4") for f in r["files"])
        assert os.path.isfile(os.path.join(os.path.dirname(os.path.join(out, r["case"], str(r["prompt_index"]), "x")), r["files"][0]))
    table = (out / "table.md").read_text()
    assert "| DeT (this run) | pack protocol" in table and "| DeT (this run), det protocol | - | - |" in table
    assert "Runs per group: All: 4" in table
    assert len((out / "results.csv").read_text().splitlines()) == 5
