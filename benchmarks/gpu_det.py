"""DeT training and inference speed / memory at HunyuanVideo's full size (random weights cost what real ones do).

    python benchmarks/gpu_det.py [--out DIR]            # on a GPU: the real 13B transformer, 49 x 480 x 720
    python benchmarks/gpu_det.py --tiny [--out DIR]     # on the CPU at toy size, so the script cannot rot

Builds ComfyUI's own HunyuanVideo transformer (hidden 3072, 24 heads, 20 double + 40 single blocks, text width
4096) with random bf16 weights directly on the GPU, attaches DeT adapters to the 20 double-stream blocks, and
measures side by side in one run, for one training step (forward + tracking loss + backward + AdamW; median of
the timed steps after warm-up) and peak GPU memory:

  (a) the public recipe: bf16 weights, every block gradient-checkpointed, no compile;
  (b) our default training path: (a) plus `torch.compile` of each block when --compile (GPU only);
  (c) our low-VRAM path: fp8 e4m3 base weights computed in bf16, the last --swap blocks streamed from CPU RAM,
      checkpointed blocks' inputs kept in CPU RAM;

plus inference seconds per denoising step with and without the adapters. Prints a table and writes JSON to
$OUT (or --out, default benchmarks/results/). It needs only torch, safetensors and ComfyUI's model code
(the host folder, given by --host-dir).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from det_core.adapter import AdapterMeta, DeTAdapter  # noqa: E402
from det_core.lowvram import streamed_blocks, to_fp8  # noqa: E402
from det_core.patch import DeTRuntime, forward_patches, install  # noqa: E402
from det_core.tracking_loss import LatentTracks  # noqa: E402
from det_core.train import TrainConfig, train_adapter  # noqa: E402
from det_core.arch import HUNYUAN_VIDEO, HUNYUAN_VIDEO_13B  # noqa: E402
from det_core.comfy_models import flow_sampling, x0_predictor  # noqa: E402
from det_core.vram import CONTEXT_GIB, Setting, Shape, forward_flops, measure, predict  # noqa: E402
from devtools.tiny_models import TINY_HV  # noqa: E402

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "RTX 4090": 165e12}


def build(cfg: dict, device, dtype, fp8: bool = False):
    import comfy.ops
    from comfy.ldm.hunyuan_video.model import HunyuanVideo

    ops = comfy.ops.manual_cast if fp8 else comfy.ops.disable_weight_init
    with torch.device(device):
        model = HunyuanVideo(operations=ops, dtype=dtype, device=device, **cfg)
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02, generator=g)
    if fp8:
        to_fp8(model)
    return model.eval().requires_grad_(False)


def inputs(cfg, shapes, device, dtype):
    t, h, w = shapes["latent"]
    g = torch.Generator(device="cpu").manual_seed(1)
    return dict(latent=torch.randn(1, 16, t, h, w, generator=g).to(device),
                context=torch.randn(1, shapes["text_tokens"], cfg["context_in_dim"], generator=g).to(device, dtype),
                pooled=torch.randn(1, 768, generator=g).to(device, dtype))


def time_training(model, cfg, shapes, device, dtype, steps, compile_blocks=False, swap=0, offload=False):
    adapter = DeTAdapter(AdapterMeta(channels=cfg["hidden_size"], blocks={"double": list(range(cfg["depth"]))}))
    adapter.to(device)
    runtime = DeTRuntime(adapter, {"double": list(range(cfg["depth"]))})
    remove = install(model, forward_patches(model, runtime, "train"))
    compiled = []
    if compile_blocks:
        for block in list(model.double_blocks) + list(model.single_blocks):
            block.forward = torch.compile(block.forward)  # (installed over the DeT block patch; removed below)
            compiled.append(block)
    sampling = flow_sampling().to(device)
    x = inputs(cfg, shapes, device, dtype)
    t_lat = shapes["latent"][0]
    tracks = LatentTracks(xy=torch.rand(t_lat, 100, 2), visibility=torch.ones(t_lat, 100), frame_ids=torch.arange(t_lat))
    config = TrainConfig(steps=steps, learning_rate=1e-5, tracking_max_timestep=1000.0, optimizer="adamw", seed=0)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with streamed_blocks(model, swap, torch.device("cpu")):
        predict = x0_predictor(model, sampling, x["context"], x["pooled"])
        result = train_adapter(adapter, predict, sampling, x["latent"], config,
                               runtime=runtime, tracks=tracks,
                               autocast_dtype=torch.bfloat16 if device.type == "cuda" else None,
                               offload_activations=offload)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    for block in compiled:
        block.__dict__.pop("forward", None)
    remove()
    timed = [e.seconds for e in result.log[2:]] or [e.seconds for e in result.log]
    return statistics.median(timed), peak


def time_inference(model, cfg, shapes, device, dtype, with_adapter: bool, repeats: int):
    remove = lambda: None
    if with_adapter:
        adapter = DeTAdapter(AdapterMeta(channels=cfg["hidden_size"], blocks={"double": list(range(cfg["depth"]))}))
        for m in adapter.double_blocks.values():  # a trained adapter is not a no-op
            torch.nn.init.normal_(m.up.weight, std=1e-3)
        adapter.to(device)
        remove = install(model, forward_patches(model, DeTRuntime(adapter, {"double": list(range(cfg["depth"]))})))
    sampling = flow_sampling().to(device)
    x = inputs(cfg, shapes, device, dtype)
    predict = x0_predictor(model, sampling, x["context"], x["pooled"])
    sigma = sampling.sigmas[500].reshape(1).to(device)
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            predict(x["latent"], sigma)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - t0)
    remove()
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="toy size on the CPU (what CI runs)")
    p.add_argument("--steps", type=int, default=None, help="training steps per mode (2 warm-up + timed)")
    p.add_argument("--swap", type=int, default=None, help="blocks streamed from CPU RAM in mode (c)")
    p.add_argument("--compile", action="store_true", help="torch.compile the blocks in mode (b)")
    p.add_argument("--host-dir", default=os.path.join(ROOT, ".comfyui"))
    p.add_argument("--out", default=os.environ.get("OUT") or os.path.join(ROOT, "benchmarks", "results"))
    ns = p.parse_args(argv)
    sys.path.insert(0, ns.host_dir)
    from comfy.cli_args import args as comfy_args

    if ns.tiny or not torch.cuda.is_available():
        comfy_args.cpu = True
    if ns.tiny:
        cfg = dict(TINY_HV)
        shapes = {"frames": 17, "size": [64, 96], "latent": [5, 8, 12], "text_tokens": 16}
        device, dtype = torch.device("cpu"), torch.float32
        steps, swap = ns.steps or 4, 1 if ns.swap is None else ns.swap
    else:
        if not torch.cuda.is_available():
            print("no CUDA GPU: run with --tiny on the CPU", file=sys.stderr)
            return 2
        cfg = dict(HUNYUAN_VIDEO_13B)
        shapes = {"frames": 49, "size": [480, 720], "latent": [13, 60, 90], "text_tokens": 256}
        device, dtype = torch.device("cuda"), torch.bfloat16
        steps, swap = ns.steps or 6, 20 if ns.swap is None else ns.swap
    t, h, w = shapes["latent"]
    img_tokens = t * (h // 2) * (w // 2)
    fwd = forward_flops(HUNYUAN_VIDEO, cfg, img_tokens, shapes["text_tokens"])
    results = {"gpu": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
               "shapes": dict(shapes, img_tokens=img_tokens), "forward_flops": fwd}
    # the planner's predictions for the same settings (its allowance for the CUDA context left out: PyTorch's
    # max_memory_allocated does not see the context)
    plan = measure(HUNYUAN_VIDEO, cfg, Shape(shapes["frames"], *shapes["size"], text_tokens=shapes["text_tokens"]))
    for key, setting in (("a", Setting()), ("c", Setting("fp8_e4m3fn", swap, True))):
        results["predicted_gib_" + key] = predict(plan, setting)["train_peak_gib"] - CONTEXT_GIB
    results["predicted_gib_b"] = results["predicted_gib_a"]
    # (a) and (b) share one bf16 model; (c) builds an fp8 one
    model = build(cfg, device, dtype)
    results["step_s_a"], results["peak_gib_a"] = time_training(model, cfg, shapes, device, dtype, steps)
    results["step_s_b"], results["peak_gib_b"] = time_training(model, cfg, shapes, device, dtype, steps,
                                                               compile_blocks=ns.compile and device.type == "cuda")
    results["infer_s_plain"] = time_inference(model, cfg, shapes, device, dtype, False, 3)
    results["infer_s_det"] = time_inference(model, cfg, shapes, device, dtype, True, 3)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    fp8 = build(cfg, device, dtype, fp8=True)
    results["step_s_c"], results["peak_gib_c"] = time_training(fp8, cfg, shapes, device, dtype, steps, swap=swap,
                                                               offload=True)
    del fp8
    name = results["gpu"]
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    results.update(
        speedup_b_over_a=results["step_s_a"] / results["step_s_b"],
        seconds_500_steps=500 * results["step_s_b"],
        lowvram_peak_gib=results["peak_gib_c"],
        mfu_b=(3 * fwd / results["step_s_b"] / peak) if peak else None,
        inference_overhead_pct=100.0 * (results["infer_s_det"] / results["infer_s_plain"] - 1.0),
        settings={"steps": steps, "swap_blocks_c": swap, "compile_b": bool(ns.compile and device.type == "cuda")},
    )
    print(f"DeT benchmark on {name}, torch {torch.__version__}, latent {shapes['latent']} ({img_tokens} video tokens)")
    print(f"{'mode':52s} {'s/step':>9s} {'peak GiB':>9s} {'predicted':>9s}")
    for key, label in (("a", "(a) public recipe: bf16, checkpoint every block"),
                       ("b", "(b) default" + (" + torch.compile" if results["settings"]["compile_b"] else "")),
                       ("c", f"(c) low VRAM: fp8 base, {swap} blocks streamed, offload")):
        print(f"{label:52s} {results['step_s_' + key]:9.3f} {results['peak_gib_' + key]:9.2f} "
              f"{results['predicted_gib_' + key]:9.2f}")
    print(f"speed-up b/a {results['speedup_b_over_a']:.2f}x; 500 steps of (b): {results['seconds_500_steps'] / 60:.1f} min;"
          f" MFU (b): {results['mfu_b'] if results['mfu_b'] is None else round(100 * results['mfu_b'], 1)}"
          f"{'' if results['mfu_b'] is None else ' %'}")
    print(f"inference per step: {results['infer_s_plain']:.3f} s plain, {results['infer_s_det']:.3f} s with DeT "
          f"({results['inference_overhead_pct']:+.1f} %)")
    os.makedirs(ns.out, exist_ok=True)
    path = os.path.join(ns.out, "gpu_det_tiny.json" if ns.tiny else "gpu_det.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
