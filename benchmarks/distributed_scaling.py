"""Step time of DeT training on 1 and several ranks (det_core.dist_train), side by side in one run.

    python benchmarks/distributed_scaling.py [--ranks 1 2] [--arch hunyuan_video] [--latent 5 8 8] [--steps 6]
                                             [--json OUT.json]

Per rank count N it runs the same job three ways: one process with N draws per step (the reference: what N ranks
compute), N ranks with one draw each (FSDP2, data parallel), and N ranks sharing one draw (sequence parallel, when N
divides the heads and the rows). It prints seconds per step (the first step, which warms up, left out), draws per
second and each run's last loss, and says which backend ran: gloo on the CPU (each rank one thread), NCCL with one
GPU per rank where CUDA has N GPUs. The model is a small random one of the chosen architecture (its width and depth
set by --hidden/--depth), so the figures show the overheads of sharding and of the all-to-alls, not a real model's
speed; on a CPU with fewer cores than ranks they also show the cores being shared. No GPU figure is claimed here
without a GPU run of this script.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from det_tools.host import find_host_dir  # noqa: E402
from devtools.dist_jobs import step_log, tiny_job, torchrun  # noqa: E402
from devtools.tiny_models import TINY, TINY_HV_TWO_HEADS  # noqa: E402


def seconds_per_step(job_dir: str) -> float:
    steps = step_log(job_dir)[1:]  # the first step warms up
    return sum(e["seconds"] for e in steps) / max(1, len(steps))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=int, nargs="+", default=[2])
    p.add_argument("--arch", default="hunyuan_video", choices=list(TINY))
    p.add_argument("--hidden", type=int, default=256, help="model width (a multiple of 128: the head width)")
    p.add_argument("--depth", type=int, default=2, help="blocks (HunyuanVideo: double and single each)")
    p.add_argument("--latent", type=int, nargs=3, default=[5, 8, 8], metavar=("T", "H", "W"))
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--json")
    ns = p.parse_args(argv)
    import torch

    from det_core.comfy_models import use_comfy

    comfy_dir = find_host_dir()
    use_comfy(comfy_dir)
    base = TINY_HV_TWO_HEADS if ns.arch == "hunyuan_video" else TINY[ns.arch]
    width, depth = ("hidden_size", "depth") if ns.arch.startswith("hunyuan") else ("dim", "num_layers")
    config = dict(base, **{width: ns.hidden, depth: ns.depth, "num_heads": ns.hidden // 128})
    if ns.arch == "hunyuan_video":
        config["depth_single_blocks"] = ns.depth
    cuda = torch.cuda.is_available() and torch.cuda.device_count() >= max(ns.ranks)
    device, backend = ("cuda", "nccl") if cuda else ("cpu", "gloo")
    heads, rows = ns.hidden // 128, ns.latent[1] // int(config["patch_size"][1])
    work = tempfile.mkdtemp(prefix="det_dist_bench_")
    rows_out = []
    try:
        for n in ns.ranks:
            runs = [("1 process, %d draws" % n, 1, dict(draws_per_step=n))]
            if n > 1:
                runs.append((f"{n} ranks FSDP2, 1 draw each", n, {}))
                if heads % n == 0 and rows % n == 0:
                    runs.append((f"{n} ranks sequence parallel, 1 draw", n, dict(sequence_parallel=n)))
            for label, ranks, kw in runs:
                folder = os.path.join(work, f"{n}_{len(rows_out)}")
                job = tiny_job(comfy_dir, folder, ns.arch, steps=ns.steps, latent=tuple(ns.latent), config=config,
                               device=device, **kw)
                t0 = time.monotonic()
                run = torchrun(job, ranks, timeout=3600)
                if run.returncode:
                    print(run.stderr[-3000:], file=sys.stderr)
                    return 1
                draws = kw.get("draws_per_step") or (1 if kw.get("sequence_parallel") else ranks)
                sps = seconds_per_step(job)
                rows_out.append({"run": label, "ranks": ranks, "draws_per_step": draws, "seconds_per_step": sps,
                                 "draws_per_second": draws / sps, "last_loss": step_log(job)[-1]["loss"],
                                 "wall_seconds": time.monotonic() - t0})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"DeT training, {ns.arch} width {ns.hidden} depth {ns.depth}, latent {ns.latent}, backend {backend} "
          f"({'one GPU per rank' if cuda else f'CPU, one thread per rank, {os.cpu_count()} cores'})")
    print(f"{'run':42s} {'s/step':>8s} {'draws/s':>8s} {'last loss':>10s}")
    for r in rows_out:
        print(f"{r['run']:42s} {r['seconds_per_step']:8.3f} {r['draws_per_second']:8.2f} {r['last_loss']:10.4f}")
    if ns.json:
        with open(ns.json, "w") as f:
            json.dump({"backend": backend, "device": device, "cpu_count": os.cpu_count(), "arch": ns.arch,
                       "config": config, "latent": ns.latent, "steps": ns.steps, "runs": rows_out}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
