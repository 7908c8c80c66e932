"""The DeT paper's Fig. 8 effect in miniature: does training with the tracking loss make features along the
reference video's point tracks more alike from frame to frame?

On ComfyUI's tiny random HunyuanVideo (the real architecture at toy size) and the real dance-twirl video and
tracks of MTBench, train one adapter with tracking weight 0 and one with 0.1 (same init, same steps, same seed), and
report the mean cosine similarity of consecutive frames' features along the tracks (visible steps only), for the
video tokens after a double-stream block (DiT features, what Fig. 8 measures) and for the predicted clean latent.
The tiny model's weights are random, so the numbers show the mechanism, not the paper's values.

    .venv/bin/python benchmarks/fig8_track_similarity.py [--steps 300] [--lr 1e-5] [--weights 0,0.1,1,10]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from det_core.adapter import AdapterMeta, DeTAdapter  # noqa: E402
from det_core.patch import DeTRuntime, forward_patches, install  # noqa: E402
from det_core.tracking_loss import mean_track_cosine, tokens_to_features, tracks_for_latent  # noqa: E402
from det_core.tracks import from_mtbench  # noqa: E402
from det_core.train import TrainConfig, train_adapter  # noqa: E402
from det_core.video import LoadSettings, load_video  # noqa: E402
from det_core.comfy_models import flow_sampling, x0_predictor  # noqa: E402
from devtools.tiny_models import import_comfy, tiny_transformer  # noqa: E402

EXAMPLE = os.path.join(os.path.dirname(ROOT), "shared", "mtbench_examples", "dance-twirl")
WIDTH, HEIGHT = 192, 128


def pseudo_latent(frames: torch.Tensor) -> torch.Tensor:
    """Frames [F, H, W, 3] -> a [1, 16, T, H/8, W/8] latent without the VAE: every 4th frame, 8x8 mean, fixed mix."""
    x = frames[::4].permute(3, 0, 1, 2)[None]  # 1 3 T H W
    x = torch.nn.functional.avg_pool3d(x, (1, 8, 8))
    mix = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    return torch.einsum("oc,bcthw->bothw", mix, x - 0.5) * 2.0


def measure(model, runtime, predict, sampling, latent, tracks, sigma_index: int = 40) -> dict:
    """Cosine along tracks at one fixed low-noise level (same noise for every adapter)."""
    g = torch.Generator().manual_seed(7)
    sigma = sampling.sigmas[sigma_index].reshape(1)
    noise = torch.randn(latent.shape, generator=g)
    with torch.no_grad():
        x_t = sampling.noise_scaling(sigma, noise, latent)
        x0_hat = predict(x_t, sigma)
        dit = tokens_to_features(runtime.features, runtime.grid)
    return {"dit": mean_track_cosine(dit, tracks), "x0": mean_track_cosine(x0_hat, tracks),
            "timestep": float(sampling.timestep(sigma))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-5, help="the paper's learning rate by default")
    parser.add_argument("--weights", default="0,0.1,1,10", help="tracking weights to compare (0.1 is the paper's)")
    parser.add_argument("--feature-block", default="double:1", help="block whose video tokens are the DiT features")
    parser.add_argument("--host-dir", default=os.path.join(ROOT, ".comfyui"))
    ns = parser.parse_args(argv)
    import_comfy(ns.host_dir)

    video = load_video(os.path.join(EXAMPLE, "source.mp4"), LoadSettings(width=WIDTH, height=HEIGHT))
    latent = pseudo_latent(video.frames)  # 1 16 13 16 24
    arr = np.load(os.path.join(EXAMPLE, "tracks.npy"))
    t = from_mtbench(arr, WIDTH, HEIGHT)
    tracks = tracks_for_latent(t["track_path"], t["track_visibility"], (WIDTH, HEIGHT), latent.shape[2])
    g = torch.Generator().manual_seed(3)
    context, pooled = torch.randn(1, 8, 32, generator=g), torch.randn(1, 768, generator=g)
    kind, idx = ns.feature_block.split(":")
    rows = []
    runs = [("before training", None)] + [(f"trained, tracking weight {w:g}", w) for w in
                                          (float(x) for x in ns.weights.split(","))]
    for label, weight in runs:
        model = tiny_transformer(0)
        sampling = flow_sampling()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            adapter = DeTAdapter(AdapterMeta(channels=128, mid_dim=32, kernel_size=3, blocks={"double": [0, 1]}))
        runtime = DeTRuntime(adapter, {"double": [0, 1]}, feature_block=(kind, int(idx)))
        remove = install(model, forward_patches(model, runtime, "train"))
        predict = x0_predictor(model, sampling, context, pooled)
        seconds = 0.0
        if weight is not None:
            t0 = time.perf_counter()
            cfg = TrainConfig(steps=ns.steps, learning_rate=ns.lr, tracking_weight=weight, optimizer="adamw", seed=0)
            train_adapter(adapter, predict, sampling, latent, cfg, runtime=runtime, tracks=tracks)
            seconds = time.perf_counter() - t0
        m = measure(model, runtime, predict, sampling, latent, tracks)
        remove()
        rows.append((label, m, seconds))
    print(f"Fig. 8 in miniature: tiny random HunyuanVideo, dance-twirl tracks ({arr.shape[1]} points, 13 latent frames),"
          f" {ns.steps} steps at lr {ns.lr:g}, measured at timestep {rows[0][1]['timestep']:.0f}")
    print(f"{'adapter':34s} {'DiT features (' + ns.feature_block + ')':>26s} {'predicted x0':>14s} {'train s':>8s}")
    for label, m, seconds in rows:
        print(f"{label:34s} {m['dit']:26.4f} {m['x0']:14.4f} {seconds:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
