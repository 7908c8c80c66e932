"""What limits DeT in the small world: attention locality and the position and time a block's tokens carry.

Two measurements on the small world's base model (the committed one, or `--weights DIR`), in this process, on
clips the world draws (no training, about a minute on 2 CPU cores):

1. **Attention locality** (det_core.attention_locality, the figures of the Attention Locality (DeT) node): for the
   five named test motions (a blue square, "a blue square"), at sigma 0.9 / 0.6 / 0.3, per block, the share of each
   video query's attention on video keys that lies on its own position at |dt| <= 1 (`local`), on its own position
   in any frame, and on its own frame; with the uniform figures for scale.
2. **A linear probe of absolute position and time**: DeT's adapter sees, per spatial position, the block's
   modulated video tokens over time (the input of the block's qkv projection) and the same convolution runs at
   every position. To move an object along a path it must know where in the frame and when it is. HunyuanVideo
   gives its tokens no absolute position: RoPE rotates queries and keys by their *relative* offsets, and the patch
   embedding is a convolution. So the only sources are borders (of the frame, of the clip) and content. A ridge
   regression from each block's adapter input to the token's column x, row y and latent frame t, fitted on the
   tokens of 24 random pretraining-like clips and scored (R^2) on 8 others, says how much of each is linearly
   there. The same probe on the noisy latent itself (the model's input, 2 x 2 patches) is the baseline.

    .venv/bin/python benchmarks/small_world_limits.py [--weights DIR] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from det_core.attention_locality import LocalityProbe  # noqa: E402
from det_tools.host import find_host_dir  # noqa: E402
from devtools.tiny_models import import_comfy  # noqa: E402
from miniworld import world  # noqa: E402
from miniworld.codec import CaptionEncoder, load_vae  # noqa: E402
from miniworld.model import CONFIG, GUIDANCE, MODEL_FILE, VAE_FILE  # noqa: E402

SIGMAS = (0.9, 0.6, 0.3)
TRAIN_CLIPS, TEST_CLIPS = 24, 8


def load_model(weights: str, config: dict = CONFIG):
    """The small world's HunyuanVideo from its saved file (original key names), in float32, as ComfyUI maps it."""
    import comfy.supported_models
    from safetensors.torch import load_file

    from miniworld.model import build

    sd = load_file(os.path.join(weights, MODEL_FILE))
    mapped = comfy.supported_models.HunyuanVideo(config).process_unet_state_dict(sd)
    model = build(config)
    model.load_state_dict({k: v.float() for k, v in mapped.items()})
    return model.eval().requires_grad_(False)


def block_labels(model) -> list[tuple[str, torch.nn.Module, torch.nn.Module]]:
    """(label, block, the module whose input is the adapter's input) per block, in the order they run."""
    out = [(f"double {i}", b, b.img_attn.qkv) for i, b in enumerate(model.double_blocks)]
    return out + [(f"single {i}", b, b.linear1) for i, b in enumerate(model.single_blocks)]


def run(model, latent: torch.Tensor, caption: str, sigma: float, seed: int, probe: LocalityProbe | None = None):
    """One forward on the noised latent; returns {label: the adapter's input (N, C)} and the noisy latent."""
    text = CaptionEncoder()
    ctx, pooled = text.encode(caption)
    g = torch.Generator().manual_seed(seed)
    x_t = (1 - sigma) * latent + sigma * torch.randn(latent.shape, generator=g)
    t, h, w = latent.shape[2], latent.shape[3] // 2, latent.shape[4] // 2
    n = t * h * w
    inputs, hooks = {}, []
    for label, block, tap in block_labels(model):
        hooks.append(tap.register_forward_pre_hook(lambda m, a, label=label: inputs.__setitem__(label, a[0][0, :n])))
        if probe is not None:
            hooks.append(block.register_forward_pre_hook(lambda m, a, label=label: setattr(probe, "current", label)))
    options = {"optimized_attention_override": probe.override} if probe is not None else {}
    try:
        with torch.no_grad():
            model(x_t, torch.tensor([sigma * 1000.0]), ctx, pooled, guidance=torch.tensor([GUIDANCE]),
                  transformer_options=options)
    finally:
        for hk in hooks:
            hk.remove()
    return inputs, x_t


def locality(model, vae) -> dict:
    out = {}
    for sigma in SIGMAS:
        per_call: dict[str, list[dict]] = {}
        uniform = None
        for k, motion in enumerate(world.MOTIONS):
            scene = world.reference_scene(motion)
            clip = torch.from_numpy(world.render(scene)).permute(3, 0, 1, 2)[None]
            with torch.no_grad():
                latent = vae.encode(clip)
            t, h, w = latent.shape[2], latent.shape[3] // 2, latent.shape[4] // 2
            probe = LocalityProbe((t, h, w), queries=10_000, seed=0)  # every video token
            run(model, latent, scene.caption, sigma, seed=100 + k, probe=probe)
            report = probe.report()
            uniform = report["uniform"]
            for c in report["calls"]:
                per_call.setdefault(c["block"], []).append(c)
        out[str(sigma)] = {
            "uniform": uniform,
            "blocks": {label: {key: float(np.mean([c[key] for c in cs]))
                               for key in ("local", "same_position", "same_frame", "neighbourhood", "text")}
                       | {"local_by_head": np.mean([c["local_by_head"] for c in cs], axis=0).tolist()}
                       for label, cs in per_call.items()}}
    return out


def probe_clips(vae, count: int, seed: int):
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(count):
        scene = world.random_scene(rng)
        clip = torch.from_numpy(world.render(scene)).permute(3, 0, 1, 2)[None]
        with torch.no_grad():
            clips.append((vae.encode(clip), scene.caption))
    return clips


def token_targets(t: int, h: int, w: int) -> np.ndarray:
    """(N, 3): column x, row y, latent frame t of each video token, in (t, h, w) order."""
    tt, yy, xx = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    return np.stack([xx.ravel(), yy.ravel(), tt.ravel()], axis=-1).astype(np.float64)


def ridge_r2(train_x, train_y, test_x, test_y, lam: float = 1e-2) -> list[float]:
    """R^2 on the test tokens of a ridge regression (features standardised on the training tokens)."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mu) / sd, (test_x - mu) / sd
    a = np.concatenate([a, np.ones((len(a), 1))], axis=1)
    b = np.concatenate([b, np.ones((len(b), 1))], axis=1)
    reg = lam * len(a) * np.eye(a.shape[1])
    reg[-1, -1] = 0.0
    coef = np.linalg.solve(a.T @ a + reg, a.T @ train_y)
    pred = b @ coef
    sse = ((pred - test_y) ** 2).sum(0)
    sst = ((test_y - test_y.mean(0)) ** 2).sum(0)
    return (1 - sse / sst).tolist()


def patches(x_t: torch.Tensor) -> np.ndarray:
    """The noisy latent as the patch embedding sees it: (N, 16 * 2 * 2), tokens in (t, h, w) order."""
    b, c, t, h, w = x_t.shape
    p = x_t.reshape(c, t, h // 2, 2, w // 2, 2).permute(1, 2, 4, 0, 3, 5)  # t h w c 2 2
    return p.reshape(t * (h // 2) * (w // 2), -1).numpy()


def position_probe(model, vae) -> dict:
    train, test = probe_clips(vae, TRAIN_CLIPS, seed=900), probe_clips(vae, TEST_CLIPS, seed=901)
    out = {}
    for sigma in SIGMAS:
        feats: dict[str, list[list[np.ndarray]]] = {}
        for split, clips in (("train", train), ("test", test)):
            for k, (latent, caption) in enumerate(clips):
                inputs, x_t = run(model, latent, caption, sigma, seed=2000 + k + (0 if split == "train" else 500))
                inputs["noisy latent (input)"] = torch.from_numpy(patches(x_t))
                for label, x in inputs.items():
                    feats.setdefault(label, [[], []])[split == "test"].append(x.numpy().astype(np.float64))
        t, h, w = train[0][0].shape[2], train[0][0].shape[3] // 2, train[0][0].shape[4] // 2
        target = token_targets(t, h, w)
        rows = {}
        for label, (tr, te) in feats.items():
            r2 = ridge_r2(np.concatenate(tr), np.tile(target, (len(tr), 1)), np.concatenate(te),
                          np.tile(target, (len(te), 1)))
            rows[label] = {"x": r2[0], "y": r2[1], "t": r2[2]}
        out[str(sigma)] = rows
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=os.path.join(ROOT, "miniworld", "weights"))
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    import_comfy(find_host_dir(None))
    t0 = time.monotonic()
    model, vae = load_model(args.weights), load_vae(os.path.join(args.weights, VAE_FILE))
    loc = locality(model, vae)
    print("attention locality (five test motions, every video token as a query; share of attention on video keys)")
    for sigma, r in loc.items():
        u = r["uniform"]
        print(f"  sigma {sigma}: uniform local {u['local']:.4f}, same position {u['same_position']:.3f}, "
              f"same frame {u['same_frame']:.3f}")
        for label, c in r["blocks"].items():
            heads = ", ".join(f"{v:.3f}" for v in c["local_by_head"])
            print(f"    {label:9s} local {c['local']:.3f} (heads {heads})  same position {c['same_position']:.3f}  "
                  f"same frame {c['same_frame']:.3f}  3x3x3 {c['neighbourhood']:.3f}  text {c['text']:.3f}")
    pos = position_probe(model, vae)
    print(f"linear probe of the token's column x, row y and latent frame t (R^2 on {TEST_CLIPS} held-out clips; "
          f"1 = fully readable, 0 = not at all)")
    for sigma, rows in pos.items():
        print(f"  sigma {sigma}")
        for label, r in rows.items():
            print(f"    {label:22s} x {r['x']:6.3f}  y {r['y']:6.3f}  t {r['t']:6.3f}")
    seconds = time.monotonic() - t0
    print(f"({seconds:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"weights": args.weights, "sigmas": SIGMAS, "locality": loc, "position_probe": pos,
                       "train_clips": TRAIN_CLIPS, "test_clips": TEST_CLIPS, "seconds": seconds}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
