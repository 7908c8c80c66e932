"""Training jobs for det_core.dist_train on tiny random models (the tests and benchmarks/distributed_scaling.py)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import asdict

import torch

from det_core import dist_train
from det_core.adapter import AdapterMeta, DeTAdapter
from det_core.train import TrainConfig
from devtools.tiny_models import TEXT_WIDTH, TINY, TINY_HV_TWO_HEADS, write_tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_job(comfy_dir: str, folder: str, arch_name: str, draws_per_step: int = 0, steps: int = 3,
             sequence_parallel: int = 1, latent: tuple[int, int, int] = (3, 4, 4), config: dict | None = None,
             device: str = "cpu", flow_shift: float | None = None) -> str:
    """A job folder for a tiny model of `arch_name` (HunyuanVideo: two heads, which sequence parallel over 2 ranks
    splits; `config` for another size), written beside `folder`: a seeded reference latent and tracks, and an
    adapter on every block with random weights (a new adapter's up-projections are zero: random ones give every
    weight a gradient well above AdamW's eps, whose division would magnify float32 rounding in near-zero gradients).
    The tracking loss runs on every step (gate 1000). ComfyUI must be importable (comfy_models.use_comfy)."""
    import comfy.sd

    from det_core.arch import arch_of, block_counts, hidden_size
    from det_core.comfy_models import model_conds
    from det_core.tracking_loss import LatentTracks

    config = config or (TINY_HV_TWO_HEADS if arch_name == "hunyuan_video" else TINY[arch_name])
    name = f"{arch_name}_{hashlib.sha1(repr(sorted(config.items())).encode()).hexdigest()[:8]}.safetensors"
    model_file = os.path.join(os.path.dirname(os.path.abspath(folder)), name)
    if not os.path.exists(model_file):
        write_tiny(arch_name, model_file, seed=0, config=config)
    patcher = comfy.sd.load_diffusion_model(model_file)
    base, arch = patcher.model, arch_of(patcher)
    g = torch.Generator().manual_seed(0)
    t, h, w = latent
    x0 = base.process_latent_in(torch.randn(1, arch.latent_channels, t, h, w, generator=g))
    conditioning = [[torch.randn(1, 5, TEXT_WIDTH[arch_name], generator=g),
                     {"pooled_output": torch.randn(1, 768, generator=g)}]]
    cond = model_conds(base, conditioning, 6.0, x0, arch.spatial_compression)
    tracks = LatentTracks(torch.rand(t, 6, 2, generator=g), (torch.rand(t, 6, generator=g) > 0.2).float(),
                          torch.arange(t))
    dm = base.diffusion_model
    adapter = DeTAdapter(AdapterMeta(channels=hidden_size(arch, dm), mid_dim=8, kernel_size=3,
                                     blocks={k: list(range(n)) for k, n in block_counts(arch, dm).items()},
                                     base_model=arch.name))
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    train = TrainConfig(steps=steps, learning_rate=1e-3, seed=5, checkpoint_every=0, tracking_max_timestep=1000.0)
    job = dist_train.Job(comfy_dir=comfy_dir, model_file=model_file, weight_dtype="float32", config=asdict(train),
                         out_path=os.path.join(folder, "out.safetensors"), device=device,
                         draws_per_step=draws_per_step, sequence_parallel=sequence_parallel,
                         flow_shift=flow_shift)
    return dist_train.write_job(folder, job, adapter, x0, cond, tracks)


def torchrun(job_dirs, ranks: int, timeout: float = 300, threads: int = 1,
             env: dict | None = None) -> subprocess.CompletedProcess:
    """Run job folder(s) on `ranks` processes of this machine, each with `threads` CPU threads (`env`: more
    environment variables)."""
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS=str(threads), **(env or {}))
    return subprocess.run(dist_train.launch_command(job_dirs, ranks), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def step_log(job_dir: str) -> list[dict]:
    """The job's per-step progress lines."""
    lines, _ = dist_train.read_progress(job_dir)
    return [e for e in lines if "step" in e]
