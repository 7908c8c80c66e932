"""`python -m miniworld.train`: reproduce the small world's committed weights on a CPU, seeded.

Two stages, each a plain loop over clips the world draws on the fly (no clip is ever repeated):
1. the stand-in VAE (`MiniVAE`): pixel MSE weighted towards the object (x21 on its pixels), noise of std 0.1 on the
   latent so the decoder tolerates imperfect latents, a small penalty on the latent's size; then the per-channel
   mean and std of the latents over held-out clips are stored, so encoded latents are standardised;
2. the base model (ComfyUI's HunyuanVideo at `miniworld.model.CONFIG`), in two phases (phase 1: 4,000 steps from
   scratch, cosine schedule; phase 2: 2,500 steps at a constant learning rate of 1e-4 from phase 1's EMA weights,
   added because after phase 1 the sampled object was still missing from about half the frames): flow matching on
   the standardised latents
   (`x_t = (1 - s) x0 + s e`, target `e - x0`, s logit-normal), the squared error weighted 5x on the latent cells
   the object covers (`--object-weight 4`: the object is about a tenth of the cells, and without the weight the
   sampled object was missing from a quarter of the frames), the caption as the only condition, embedded
   guidance fixed at 6, AdamW (lr 2e-4, betas 0.9 / 0.95) with warm-up and cosine decay, bf16 autocast, every
   block gradient-checkpointed with its residual adds out of place (the pack's training path), an EMA of the
   weights, which is what is saved (float16, the original release's key names).

Writes `miniworld_vae.safetensors`, `miniworld_hunyuan_video.safetensors` and `train_log.json` (seed, settings,
seconds per stage, losses, reconstruction error, sha256 of each file) into `--out`.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import sys
import time

import numpy as np
import torch

from . import world
from .codec import CaptionEncoder, MiniVAE, load_vae
from .model import CONFIG, GUIDANCE, MODEL_FILE, VAE_FILE, build, checkpoint_blocks, to_original

HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS = os.path.join(HERE, "weights")


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def batch(rng: np.random.Generator, n: int, object_motion: bool = False
          ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """n random clips [n, 3, F, H, W], their object coverage [n, 1, F, H, W] and captions (`object_motion`: with
    the object-relative motion kinds, see world.random_scene)."""
    scenes = [world.random_scene(rng, object_motion=object_motion) for _ in range(n)]
    clips, alphas = zip(*(world.render_with_alpha(s) for s in scenes))
    return (torch.stack(clips).permute(0, 4, 1, 2, 3), torch.stack(alphas)[:, None], [s.caption for s in scenes])


def cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train_vae(steps: int, seed: int, batch_size: int = 8, log=print, object_motion: bool = False
              ) -> tuple[MiniVAE, dict]:
    torch.manual_seed(seed)
    vae = MiniVAE()
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    t0, losses = time.monotonic(), []
    for step in range(steps):
        x, alpha, _ = batch(rng, batch_size, object_motion)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, 2e-3, 50)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z = vae.encode_raw(x)
            rec = vae.decode_raw(z + 0.1 * torch.randn_like(z))
        loss = ((rec.float() - x).pow(2) * (1 + 20 * alpha)).mean() + 1e-4 * z.float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if (step + 1) % 100 == 0 or step + 1 == steps:
            log(f"[miniworld] VAE step {step + 1}/{steps} loss {np.mean(losses[-100:]):.5f} "
                f"({time.monotonic() - t0:.0f} s)")
    # standardise: per-channel statistics of held-out clips
    vae.eval().requires_grad_(False)
    held = np.random.default_rng(seed + 10_000)
    with torch.no_grad():
        zs = torch.cat([vae.encode_raw(batch(held, 8, object_motion)[0]) for _ in range(8)])
        vae.shift.copy_(zs.mean(dim=(0, 2, 3, 4)))
        vae.scale.copy_(zs.std(dim=(0, 2, 3, 4)).clamp_min(1e-3))
        errors = [float((vae.decode(vae.encode(x)) - x).abs().mean())
                  for x, _, _ in (batch(held, 8, object_motion) for _ in range(4))]
    stats = {"steps": steps, "object_motion": object_motion, "seconds": time.monotonic() - t0,
             "final_loss": float(np.mean(losses[-100:])),
             "reconstruction_mae": float(np.mean(errors))}
    log(f"[miniworld] VAE done: mean absolute reconstruction error {stats['reconstruction_mae']:.4f} (0..1 scale)")
    return vae, stats


def object_cover(alpha: torch.Tensor) -> torch.Tensor:
    """The object's coverage [B, 1, F, H, W] on the latent grid [B, 1, (F-1)/4+1, H/8, W/8]: the frames the latent
    frames take their place from (every 4th), and whether any pixel of an 8 x 8 cell is on the object."""
    return torch.nn.functional.max_pool3d(alpha[:, :, ::4], kernel_size=(1, 8, 8))


def train_dit(vae: MiniVAE, steps: int, seed: int, batch_size: int = 8, lr: float = 2e-4, log=print,
              save_every: int = 0, save=None, start: dict | None = None, schedule: str = "cosine",
              object_weight: float = 0.0, config: dict = CONFIG, object_motion: bool = False
              ) -> tuple[torch.nn.Module, dict]:
    """Flow-matching training of the base model; `start`: weights to continue from (else a fresh init);
    `schedule`: `cosine` (warm-up 200, decay to 10 %) or `constant` (warm-up 100); `object_weight`: latent cells on
    the object count 1 + this in the loss (a weighted mean; 0 = plain mean)."""
    model = build(config, seed)
    if start is not None:
        model.load_state_dict(start)
    ema = copy.deepcopy(model).requires_grad_(False)  # before the checkpoint wrappers, which hold the blocks
    checkpoint_blocks(model)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    text = CaptionEncoder()
    rng = np.random.default_rng(seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    t0, losses = time.monotonic(), []
    for step in range(steps):
        x, alpha, captions = batch(rng, batch_size, object_motion)
        with torch.no_grad():
            x0 = vae.encode(x)  # B 16 T h w, standardised
        ctx, pooled = (torch.cat(t) for t in zip(*(text.encode(c) for c in captions)))
        # sigma: logit-normal, with one draw in ten uniform so both ends of the schedule are seen
        u = torch.sigmoid(torch.randn(batch_size, generator=g))
        u = torch.where(torch.rand(batch_size, generator=g) < 0.1, torch.rand(batch_size, generator=g), u)
        s = u.view(-1, 1, 1, 1, 1)
        e = torch.randn(x0.shape, generator=g)
        x_t = (1 - s) * x0 + s * e
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, 200) if schedule == "cosine" else lr * min(1.0, (step + 1) / 100)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            v = model(x_t, u * 1000.0, ctx, pooled, guidance=torch.full((batch_size,), GUIDANCE))
        weight = 1.0 + object_weight * object_cover(alpha)  # B 1 T h w
        loss = ((v.float() - (e - x0)).pow(2) * weight).mean() / weight.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(0.999, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        losses.append(float(loss.detach()))
        if (step + 1) % 100 == 0 or step + 1 == steps:
            log(f"[miniworld] model step {step + 1}/{steps} loss {np.mean(losses[-100:]):.4f} "
                f"({time.monotonic() - t0:.0f} s)")
        if save is not None and save_every and (step + 1) % save_every == 0:
            save(ema)
    stats = {"steps": steps, "batch_size": batch_size, "learning_rate": lr, "schedule": schedule,
             "object_weight": object_weight, "object_motion": object_motion,
             "seconds": time.monotonic() - t0,
             "final_loss": float(np.mean(losses[-200:]))}
    return ema, stats


def save_model(model, path: str, config: dict = CONFIG) -> str:
    from safetensors.torch import save_file

    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    tmp = path + ".tmp"
    save_file(to_original(sd, config), tmp, metadata={"miniworld": "small-world HunyuanVideo (see miniworld/model.py)"})
    os.replace(tmp, path)
    return path


def save_vae(vae: MiniVAE, path: str) -> str:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m miniworld.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=WEIGHTS, help="folder for the weights (default: miniworld/weights)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-steps", type=int, default=1200)
    parser.add_argument("--model-steps", type=int, default=4000)
    parser.add_argument("--refine-steps", type=int, default=2500, help="phase 2 steps (constant lr 1e-4)")
    parser.add_argument("--object-weight", type=float, default=4.0,
                        help="latent cells on the object count 1 + this in the model's loss")
    parser.add_argument("--reuse-vae", action="store_true",
                        help="load the VAE from --out instead of training it (same seed: the same VAE, 5 min sooner)")
    parser.add_argument("--refine-only", action="store_true",
                        help="run phase 2 alone from the weights phase 1 left in --out")
    parser.add_argument("--depth", type=int, default=CONFIG["depth"],
                        help="double-stream blocks (the committed model: 2; other sizes are for experiments)")
    parser.add_argument("--single-depth", type=int, default=CONFIG["depth_single_blocks"], help="single-stream blocks")
    parser.add_argument("--object-motion", action="store_true",
                        help="train the VAE and the model on clips with the object-relative motion kinds too (spin, "
                             "pulse, a swinging pendulum; see miniworld.world.random_scene); the committed weights "
                             "were trained without")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--comfyui", default=None, help="ComfyUI folder (default: COMFYUI_DIR or .comfyui-path)")
    ns = parser.parse_args(argv)

    if ns.depth < 1 or ns.single_depth < 0:
        parser.error("--depth must be >= 1 and --single-depth >= 0")
    config = dict(CONFIG, depth=ns.depth, depth_single_blocks=ns.single_depth)
    torch.set_num_threads(ns.threads)
    root = os.path.dirname(HERE)
    sys.path.insert(0, root)
    from det_tools.host import find_host_dir
    from devtools.tiny_models import import_comfy

    host = find_host_dir(ns.comfyui)

    import_comfy(host)
    os.makedirs(ns.out, exist_ok=True)
    t0 = time.monotonic()
    vae_path, model_path = os.path.join(ns.out, VAE_FILE), os.path.join(ns.out, MODEL_FILE)
    if ns.refine_only:  # phase 2 alone, from the files phase 1 wrote (what a resumed run does)
        from safetensors.torch import load_file

        import comfy.supported_models

        vae, vae_stats = load_vae(vae_path), {"reused": VAE_FILE}
        start = comfy.supported_models.HunyuanVideo(config).process_unet_state_dict(load_file(model_path))
        model_stats = {"reused": MODEL_FILE}
    else:
        if ns.reuse_vae:
            vae, vae_stats = load_vae(vae_path), {"reused": VAE_FILE}
        else:
            vae, vae_stats = train_vae(ns.vae_steps, ns.seed, object_motion=ns.object_motion)
            save_vae(vae, vae_path)
        model, model_stats = train_dit(vae, ns.model_steps, ns.seed, save_every=500, config=config,
                                       save=lambda m: save_model(m, model_path, config), object_weight=ns.object_weight,
                                       object_motion=ns.object_motion)
        save_model(model, model_path, config)
        start = {k: v.to(torch.float16) for k, v in model.state_dict().items()}  # as phase 2 reads it from the file
    # phase 2: a constant learning rate from phase 1's EMA weights (float16, as saved), a new EMA
    refined, refine_stats = train_dit(vae, ns.refine_steps, ns.seed + 100, lr=1e-4, schedule="constant",
                                      start={k: v.float() for k, v in start.items()}, save_every=500,
                                      save=lambda m: save_model(m, model_path, config), object_weight=ns.object_weight,
                                      config=config, object_motion=ns.object_motion)
    save_model(refined, model_path, config)
    model_stats = {"phase1": model_stats, "phase2": refine_stats}
    record = {
        "seed": ns.seed, "threads": ns.threads, "torch": torch.__version__, "seconds": time.monotonic() - t0,
        "clip": {"frames": world.FRAMES, "size": world.SIZE}, "blocks": {"double": ns.depth, "single": ns.single_depth},
        "object_motion": ns.object_motion,
        "vae": vae_stats, "model": model_stats,
        "files": {os.path.basename(p): {"sha256": sha256(p), "bytes": os.path.getsize(p)} for p in (vae_path, model_path)},
    }
    with open(os.path.join(ns.out, "train_log.json"), "w") as f:
        json.dump(record, f, indent=2)
    print(f"[miniworld] done in {record['seconds'] / 60:.1f} min: " + ", ".join(
        f"{k} sha256 {v['sha256'][:16]}..." for k, v in record["files"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
