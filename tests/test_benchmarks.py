"""The GPU benchmark's --tiny mode runs the same code on the CPU at toy size, so the script cannot rot."""

import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = ["gpu", "torch", "shapes", "step_s_a", "step_s_b", "step_s_c", "peak_gib_a", "peak_gib_b", "peak_gib_c",
        "speedup_b_over_a", "seconds_500_steps", "lowvram_peak_gib", "mfu_b", "inference_overhead_pct"]


def test_gpu_benchmark_tiny_mode(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/gpu_det.py", "--tiny", "--steps", "3", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.load(open(tmp_path / "gpu_det_tiny.json"))
    assert all(k in result for k in KEYS)
    for k in ("step_s_a", "step_s_b", "step_s_c", "seconds_500_steps"):
        assert result[k] > 0 and math.isfinite(result[k]), k
    assert result["seconds_500_steps"] == 500 * result["step_s_b"]
    assert result["shapes"]["img_tokens"] == 5 * 4 * 6
    assert "(c) low VRAM: fp8 base, 1 blocks streamed" in done.stdout
