"""Train DeT Adapter: learns the reference video's motion in a DeT adapter, inside ComfyUI."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass, field

import torch

import comfy.model_management as mm
import comfy.utils
import folder_paths
from comfy_api.latest import io, ui

from ..det_core.adapter import AdapterMeta, DeTAdapter, parse_blocks
from ..det_core.arch import block_counts, hidden_size
from ..det_core.comfy_models import model_conds
from ..det_core.lowvram import hidden_parameters, keep_in_ram, last_blocks, streamed_blocks
from ..det_core.patch import make_ordinary
from ..det_core.plot import loss_curve_image
from ..det_core.safe_load import load_weights_only
from ..det_core.tracking_loss import tracks_for_latent
from ..det_core.train import (OPTIMIZERS, TIMESTEP_SAMPLING, StepLog, TrainConfig, optimizer_state_path,
                              save_checkpoint_files, train_adapter)
from . import distributed
from .common import (ADAPTER_FOLDER, DetAdapterType, TracksType, adapter_files, adapter_output_path, attach,
                     check_finite, check_video_latent, not_a_file_name, specs_by_kind,
                     video_transformer)

log = logging.getLogger("DeT")
MESSAGE = "det.train"  # websocket event with the live loss, read by web/det.js


def _send(payload: dict) -> None:
    try:
        from server import PromptServer
        PromptServer.instance.send_sync(MESSAGE, payload)
    except Exception:  # no server (plain Python use): the console log is enough
        pass


def _normal_tree(obj):
    """A copy of a nested optimizer state with every inference tensor made ordinary."""
    if torch.is_tensor(obj):
        return obj.clone()
    if isinstance(obj, dict):
        return {k: _normal_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_normal_tree(v) for v in obj)
    return obj


class DeTTrainAdapter(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DeTTrainAdapter",
            display_name="Train DeT Adapter",
            category="DeT",
            description="Trains a DeT temporal-convolution adapter on one reference video (frozen video model: "
                        "HunyuanVideo, HunyuanVideo 1.5, Wan 2.1 or Wan 2.2; flow matching plus the dense tracking "
                        "loss). Saves into models/det_adapters/ every N steps, at the end and when interrupted.",
            inputs=[
                io.Model.Input("model", tooltip="The video model from Load Diffusion Model (for Wan 2.2 A14B: the "
                                                "high-noise expert, with timestep_min 875)."),
                io.Latent.Input("latent", tooltip="The reference video's latents (VAE Encode of its frames)."),
                io.Conditioning.Input("conditioning", tooltip="The reference video's caption, text-encoded."),
                io.Int.Input("steps", default=500, min=1, max=100000, tooltip="Total training steps (the paper: 500)."),
                io.Float.Input("learning_rate", default=1e-5, min=1e-8, max=1.0, step=1e-6, round=False,
                               tooltip="AdamW learning rate (the paper: 1e-5)."),
                io.Int.Input("mid_dim", default=128, min=1, max=4096, tooltip="Channels inside the adapter (m)."),
                io.Int.Input("kernel_size", default=3, min=1, max=15, step=2, tooltip="Temporal kernel size (odd)."),
                io.String.Input("double_blocks", default="all",
                                tooltip="Blocks that get an adapter: HunyuanVideo's double-stream blocks, Wan's "
                                        "blocks. 'all', 'none' or a list like '0-9'. HunyuanVideo: the DeT authors' "
                                        "benchmark (inference) script puts adapters in all 20 double-stream blocks "
                                        "(this default); their training script train_conv1d_hunyuan.py puts them in "
                                        "the 40 single-stream blocks only (double_blocks none, single_blocks all)."),
                io.String.Input("single_blocks", default="none",
                                tooltip="HunyuanVideo's single-stream blocks that get an adapter: 'none', 'all' or a "
                                        "list. 'all' with double_blocks 'none' is the placement of the DeT authors' "
                                        "HunyuanVideo training script (train_conv1d_hunyuan.py). Wan and HunyuanVideo "
                                        "1.5 have none."),
                io.Float.Input("tracking_weight", default=0.1, min=0.0, max=100.0, step=0.01,
                               tooltip="Weight of the dense tracking loss (the paper: 0.1). Needs TRACKS."),
                io.Combo.Input("tracking_features", options=["x0", "block"], default="x0",
                               tooltip="Where the tracking loss reads features: the predicted clean latent (as the "
                                       "public code) or the video tokens after `feature_block`."),
                io.String.Input("feature_block", default="double:19",
                                tooltip="For tracking_features=block: 'double:<i>' or 'single:<i>' (HunyuanVideo), "
                                        "'blocks:<i>' (Wan)."),
                io.Float.Input("guidance", default=6.0, min=0.0, max=100.0, step=0.1,
                               tooltip="Embedded guidance fed during training (DeT: 6)."),
                io.Int.Input("warmup_steps", default=100, min=0, max=100000,
                             tooltip="Linear learning-rate warm-up (the authors' HunyuanVideo runs: 100)."),
                io.Combo.Input("optimizer", options=list(OPTIMIZERS), default="auto",
                               tooltip="auto: 8-bit AdamW when bitsandbytes and a CUDA GPU are there, else AdamW."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, tooltip="Seeds the adapter init, noise and timesteps."),
                io.String.Input("output_name", default="det_motion",
                                tooltip="Adapter file name in models/det_adapters/ (no folders)."),
                io.Int.Input("checkpoint_every", default=100, min=0, max=100000,
                             tooltip="Save every N steps (0 = only at the end); the end and interrupts always save."),
                io.Boolean.Input("overwrite", default=False, tooltip="Replace an existing adapter of the same name."),
                io.Combo.Input("resume_from", options=["none", *adapter_files()], default="none",
                               tooltip="Continue training this adapter (its step count, and its optimizer state when "
                                       "saved beside it); its shape settings replace mid_dim, kernel and blocks."),
                io.Int.Input("swap_blocks", default=0, min=0, max=200, optional=True,
                             tooltip="Low VRAM: keep the weights of this many transformer blocks (counted from the "
                                     "last) in CPU RAM, streamed to the GPU layer by layer. Slower, smaller."),
                io.Boolean.Input("offload_activations", default=False, optional=True,
                                 tooltip="Low VRAM: keep what backward needs (each checkpointed block's input) in CPU "
                                         "RAM instead of GPU memory. For fp8 base weights load the model with "
                                         "weight_dtype fp8_e4m3fn."),
                TracksType.Input("tracks", optional=True,
                                 tooltip="Point tracks of the reference video (CoTracker3); without them no tracking loss."),
                io.String.Input("caption", default="", optional=True,
                                tooltip="The reference caption, stored in the adapter file's metadata."),
                io.Float.Input("tracking_max_timestep", default=400.0, min=0.0, max=1000.0, step=10.0, optional=True,
                               tooltip="The tracking loss runs only on steps whose timestep (sigma x 1000) is at most "
                                       "this. 400 on HunyuanVideo's shift-7 grid fires on ~9% of steps; the public "
                                       "code's gate (DDPM t <= 400) fires on ~40%, up to sigma ~0.55. See the README's "
                                       "deviations table."),
                io.Combo.Input("memory", options=["auto", "manual"], default="auto", optional=True,
                               tooltip="auto: before the first step, predict the peak VRAM of each low-VRAM setting "
                                       "(python -m det_core.vram) and use the fastest that fits the free VRAM with "
                                       "1 GiB to spare (swap_blocks, offload_activations and optimizer are then "
                                       "chosen here); on the CPU it keeps your settings. manual: your settings."),
                io.Float.Input("vram_budget_gib", default=0.0, min=0.0, max=4096.0, step=0.5, optional=True,
                               tooltip="For memory=auto: the GiB to plan for; 0 reads the free VRAM at run time."),
                io.Combo.Input("timestep_sampling", options=list(TIMESTEP_SAMPLING), default="uniform", optional=True,
                               tooltip="How each step's noise level is drawn from the model's schedule: uniform, or "
                                       "logit-normal (more mid-range noise; the authors' Wan runs)."),
                io.Float.Input("timestep_min", default=0.0, min=0.0, max=1000.0, step=1.0, optional=True,
                               tooltip="Train only on timesteps (sigma x 1000) from this one up: 875 for Wan 2.2 "
                                       "A14B's high-noise expert."),
                io.Float.Input("timestep_max", default=1000.0, min=0.0, max=1000.0, step=1.0, optional=True,
                               tooltip="Train only on timesteps up to this one (875 for a low-noise expert)."),
                *distributed.node_inputs("Train", "; each GPU makes its own noise/timestep draw per step"),
            ],
            outputs=[DetAdapterType.Output(display_name="adapter"), io.Image.Output(display_name="loss_curve"),
                     io.String.Output(display_name="info")],
            hidden=[io.Hidden.unique_id],
            not_idempotent=True,
        )

    @classmethod
    def validate_inputs(cls, resume_from, memory="auto", vram_budget_gib=0.0, gpus=1, model_file="none"):
        wrong = not_a_file_name("resume_from", resume_from, f"an adapter in models/{ADAPTER_FOLDER}/, or \"none\"") \
            or not_a_file_name("model_file", model_file, "a model in models/diffusion_models/, or \"none\"")
        if wrong:
            return wrong
        if model_file != "none" and folder_paths.get_full_path("diffusion_models", model_file) is None:
            return f"model_file={model_file!r} not found in models/diffusion_models/"
        if resume_from != "none" and folder_paths.get_full_path(ADAPTER_FOLDER, resume_from) is None:
            return f"adapter to resume not found: {resume_from}; put it in models/{ADAPTER_FOLDER}/ or choose none"
        if resume_from != "none" and not resume_from.endswith(".safetensors"):
            return (f"resume_from={resume_from!r} is not a pack adapter (.safetensors): to continue an authors' .pth, "
                    f"load it with Load DeT Adapter, save it with Save DeT Adapter and resume from that")
        if memory not in ("auto", "manual"):
            return f"memory={memory!r}: choose auto or manual"
        if not isinstance(vram_budget_gib, (int, float)) or not math.isfinite(vram_budget_gib) or vram_budget_gib < 0:
            return f"vram_budget_gib={vram_budget_gib!r} must be a number of GiB, 0 or more (0 reads the free VRAM)"
        return True

    @classmethod
    def execute(cls, model, latent, conditioning, steps, learning_rate, mid_dim, kernel_size, double_blocks,
                single_blocks, tracking_weight, tracking_features, feature_block, guidance, warmup_steps, optimizer,
                seed, output_name, checkpoint_every, overwrite, resume_from, swap_blocks=0, offload_activations=False,
                tracks=None, caption="", tracking_max_timestep=400.0, memory="auto", vram_budget_gib=0.0,
                timestep_sampling="uniform", timestep_min=0.0, timestep_max=1000.0, gpus=1, model_file="none",
                sequence_parallel=1):
        # 1. check everything before any heavy work
        arch, dm = video_transformer(model)
        check_finite(learning_rate=learning_rate, tracking_weight=tracking_weight, guidance=guidance,
                     tracking_max_timestep=tracking_max_timestep, timestep_min=timestep_min, timestep_max=timestep_max)
        samples = latent["samples"]
        if samples.ndim != 5 or samples.shape[0] != 1:
            raise ValueError(f"the reference latent must be one video [1, C, T, H, W], got {tuple(samples.shape)}; "
                             f"VAE-encode a single clip")
        check_video_latent(arch, dm, samples, "the reference latent")
        out_path = adapter_output_path(output_name)
        resume_path = None if resume_from == "none" else folder_paths.get_full_path_or_raise(ADAPTER_FOLDER, resume_from)
        if os.path.exists(out_path) and not overwrite and out_path != resume_path:
            raise ValueError(f"{out_path} exists; turn on overwrite, resume from it, or choose another output_name")
        config = TrainConfig(steps=steps, learning_rate=learning_rate, warmup_steps=warmup_steps,
                             tracking_weight=tracking_weight, optimizer=optimizer, seed=seed,
                             tracking_max_timestep=tracking_max_timestep, timestep_sampling=timestep_sampling,
                             timestep_min=timestep_min, timestep_max=timestep_max,
                             checkpoint_every=checkpoint_every,
                             tracking_features="x0" if tracking_features == "x0" else feature_block)
        config.check_tracking_gate(tracks is not None)
        model_path = distributed.check_request(model, gpus, model_file, swap_blocks, sequence_parallel, samples,
                                               config)
        notes: list[str] = []
        latent_tracks = _latent_tracks(tracks, samples, arch.spatial_compression, notes)
        # 2. the adapter: new, or the one to resume with its optimizer state and loss log
        if resume_path:
            adapter, opt_state, history = _resume(resume_path, steps, notes)
        else:
            adapter, opt_state, history = _new_adapter(arch, dm, double_blocks, single_blocks, mid_dim, kernel_size,
                                                       seed), None, []
        adapter.check_fits(arch.name, hidden_size(arch, dm), block_counts(arch, dm), os.path.basename(resume_path or
                                                                                                      out_path))
        run = _Run(model, arch, adapter, config, samples, conditioning, guidance, latent_tracks, opt_state, history,
                   swap_blocks, offload_activations, out_path, str(cls.hidden.unique_id), notes)
        if memory == "auto":
            _auto_memory(run, vram_budget_gib, gpus, sequence_parallel)
        adapter.meta.prompt = caption or adapter.meta.prompt
        adapter.meta.tracking_weight = tracking_weight if tracks is not None else 0.0
        adapter.meta.extra.update({"seed": str(seed), "learning_rate": f"{learning_rate:g}",
                                   "tracking_features": config.tracking_features,
                                   "timestep_sampling": timestep_sampling,
                                   "timesteps": f"{timestep_min:g}-{timestep_max:g}"})
        _compare_with_defaults(arch, learning_rate, kernel_size if not resume_path else adapter.meta.kernel_size,
                               timestep_sampling, notes)
        if arch.caution:
            log.warning("[DeT] %s: %s", arch.label, arch.caution)
            notes.insert(0, f"{arch.label}: {arch.caution}")
        # 3. train on a patched clone of the model
        if gpus > 1:
            logs = distributed.train(run, gpus, model_path, _progress, sequence_parallel)
            adapter = run.adapter
        else:
            logs = _train_on_clone(run)
        # 4. outputs
        curve = loss_curve_image([e.loss for e in logs], [e.track for e in logs])
        info = (f"{os.path.basename(out_path)}: {adapter.describe()}; "
                f"final loss {logs[-1].loss:.4g}" + "".join(f"; {n}" for n in notes))
        log.info("[DeT] %s", info)
        image = torch.from_numpy(curve).float().div(255.0)[None]
        return io.NodeOutput(adapter, image, info, ui=ui.PreviewImage(image, cls=cls))


def _compare_with_defaults(arch, learning_rate, kernel_size, timestep_sampling, notes: list[str]) -> None:
    """A note when the main settings differ from the ones given for this model (det_core.arch)."""
    d = arch.defaults
    differ = [f"{name} {ours:g}" if isinstance(ours, float) else f"{name} {ours}"
              for name, ours, given in (("learning_rate", d["learning_rate"], learning_rate),
                                        ("kernel_size", d["kernel_size"], kernel_size),
                                        ("timestep_sampling", d["timestep_sampling"], timestep_sampling))
              if ours != given]
    if differ:
        notes.append(f"{arch.label}: the README's settings for it differ here ({', '.join(differ)})")


@dataclass
class _Run:
    """One training request, checked: what `_auto_memory` plans for and `_train_on_clone` runs."""

    model: object
    arch: object
    adapter: DeTAdapter
    config: TrainConfig
    samples: torch.Tensor
    conditioning: list
    guidance: float
    tracks: object
    """LatentTracks or None."""
    opt_state: dict | None
    history: list
    swap_blocks: int
    offload_activations: bool
    out_path: str
    node_id: str
    notes: list = field(default_factory=list)
    reserve: int = 0
    """Bytes the training needs beside the weights (memory=auto asks ComfyUI to make them free)."""


def _auto_memory(run: _Run, budget_gib: float, gpus: int = 1, sequence_parallel: int = 1) -> None:
    """memory=auto: the run's swap_blocks, offload_activations, optimizer and reserve from the planner for its model,
    latent and adapter, fitting the stated budget or the free VRAM; the user's settings on the CPU without a
    budget. With gpus > 1 the prediction is per rank (FSDP2-sharded base, one band of rows per rank with sequence
    parallel), and the budget is the least free VRAM of the GPUs the ranks use."""
    from ..det_core.vram import GIB, Shape, auto_setting, model_arguments

    arch, adapter, samples, notes = run.arch, run.adapter, run.samples, run.notes
    dm = run.model.model.diffusion_model
    device = mm.get_torch_device()
    if not budget_gib:
        if device.type != "cuda":
            notes.append("memory auto: training on the CPU, no VRAM to plan for; settings as given")
            return
        if gpus > 1:  # the ranks load their own shards: ComfyUI's models leave the GPUs first
            mm.unload_all_models()
            mm.soft_empty_cache()
            budget_gib = min(torch.cuda.mem_get_info(i)[0] for i in range(gpus)) / GIB
        else:
            # free VRAM plus what loaded models hold: the load asks ComfyUI for the training's room beside the
            # weights (memory_required), and ComfyUI unloads models until it has it
            held = sum(m.model_loaded_memory() for m in getattr(mm, "current_loaded_models", [])
                       if getattr(m, "model", None) is not None and m.device == device)
            budget_gib = (mm.get_free_memory(device) + held) / GIB
    config = model_arguments(arch, run.model.model.model_config.unet_config)
    t, h, w = samples.shape[2:]  # patchable: check_video_latent ran before
    sc = arch.spatial_compression
    shape = Shape((t - 1) * arch.temporal_compression + 1, h * sc, w * sc, text_tokens=int(run.conditioning[0][0].shape[1]),
                  arch=arch.name)
    fp8 = any(m.weight.dtype in (torch.float8_e4m3fn, torch.float8_e5m2) for m in dm.modules()
              if isinstance(m, torch.nn.Linear))
    try:
        import bitsandbytes  # noqa: F401
        optimizers = ("adamw", "adamw8bit") if device.type == "cuda" else ("adamw",)
    except ImportError:
        optimizers = ("adamw",)
    saved_optimizer = saved_optimizer_kind(run.opt_state)
    if saved_optimizer is not None:  # a resumed run keeps the optimizer its saved state belongs to
        optimizers = (saved_optimizer,)
    pick = auto_setting(arch, config, shape, {k: adapter.indices(k) for k in arch.kinds}, adapter.meta.mid_dim,
                        adapter.meta.kernel_size, budget_gib, "fp8_e4m3fn" if fp8 else "bf16", optimizers,
                        log=lambda msg: log.info("[DeT] %s", msg), gpus=gpus, sequence_parallel=sequence_parallel)
    s = pick["setting"]
    per_rank = f" per rank of {gpus}" if gpus > 1 else ""
    message = (f"memory auto ({budget_gib:.1f} GiB{per_rank}): {pick['label']}, predicted training peak "
               f"{pick['train_peak_gib']:.1f} GiB")
    log.info("[DeT] %s", message)
    notes.append(message)
    run.swap_blocks, run.offload_activations, run.config.optimizer = s["swap_blocks"], s["offload_activations"], \
        s["optimizer"]
    run.reserve = int(pick["train_beside_weights_gib"] * GIB)


def saved_optimizer_kind(state: dict | None) -> str | None:
    """'adamw8bit' or 'adamw' for a saved optimizer state (by its per-parameter keys), None without one."""
    per_param = list((state or {}).get("state", {}).values())
    if not per_param:
        return None
    return "adamw8bit" if any("state1" in p for p in per_param) else "adamw"


def _latent_tracks(tracks, samples, spatial: int, notes: list[str]):
    """TRACKS on the latent's frames, or None (and a note) without tracks."""
    if tracks is None:
        notes.append("no TRACKS connected: trained without the tracking loss")
        return None
    t_lat, h_lat, w_lat = samples.shape[2:]
    size = tracks.get("image_size") or (w_lat * spatial, h_lat * spatial)
    return tracks_for_latent(tracks["track_path"], tracks["track_visibility"], size, t_lat)


def _new_adapter(arch, dm, double_blocks, single_blocks, mid_dim, kernel_size, seed) -> DeTAdapter:
    counts = block_counts(arch, dm)
    blocks = {kind: parse_blocks(spec, counts[kind], f"{arch.label} {arch.group(kind).label}")
              for kind, spec in specs_by_kind(arch, (double_blocks, single_blocks)).items()}
    if not any(blocks.values()):
        raise ValueError("no blocks chosen: set double_blocks (e.g. 'all') or single_blocks")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DeTAdapter(AdapterMeta(channels=hidden_size(arch, dm), mid_dim=mid_dim, kernel_size=kernel_size,
                                      blocks=blocks, base_model=arch.name))


def _resume(path: str, steps: int, notes: list[str]):
    """(adapter, optimizer state or None, loss log) of an adapter to continue."""
    adapter = DeTAdapter.load(path)
    if adapter.meta.steps >= steps:
        raise ValueError(f"{os.path.basename(path)} already has {adapter.meta.steps} steps; set steps above "
                         f"{adapter.meta.steps} to continue")
    state_file = optimizer_state_path(path)
    if not os.path.isfile(state_file):
        notes.append(f"no optimizer state beside {os.path.basename(path)}: AdamW restarts its moments")
        return adapter, None, []
    state = load_weights_only(state_file, "DeT optimizer state (written by Train DeT Adapter beside the adapter)")
    return adapter, state["optimizer"], [StepLog(**e) for e in state.get("log", [])]


@contextlib.contextmanager
def synchronous_offload():
    """While training, ComfyUI's weight casts run on the compute stream: with its async offload streams a cast
    weight that autograd keeps for backward could be overwritten by the next cast on another stream."""
    old = getattr(mm, "NUM_STREAMS", 0)
    mm.NUM_STREAMS = 0
    try:
        yield
    finally:
        mm.NUM_STREAMS = old


def _load(patched, swap_blocks: int, notes: list[str], reserve: int = 0) -> int:
    """Load the patched model for training. The last `swap_blocks` blocks never reach the GPU: they are hidden
    while ComfyUI loads the rest, then left in the state of ComfyUI's own partial loading (in CPU RAM, cast to the
    GPU layer by layer). Blocks that carry weight patches (a LoRA) cannot be kept that way: those are loaded and then
    streamed. `reserve` bytes (what training needs beside the weights) are made free by ComfyUI, which unloads
    other models for it. Returns how many blocks to stream after loading."""
    swapped = last_blocks(patched.model.diffusion_model, swap_blocks)
    lora = sorted({name for name, _ in swapped for k in patched.patches if k.startswith(f"diffusion_model.{name}.")})
    if not swapped or lora:
        mm.load_models_gpu([patched], memory_required=reserve, force_full_load=True)
        if lora:
            notes.append(f"blocks {', '.join(lora[:4])} carry weight patches: loaded whole, then streamed")
        return swap_blocks
    current = getattr(patched.model, "current_weight_patches_uuid", None)
    if current is not None and current != patched.patches_uuid:
        # the shared model still holds another patcher's weight patches (a LoRA sampled before): ComfyUI would
        # undo them on load, reading the hidden weights; undo them first, with everything visible
        patched.unpatch_model(patched.offload_device, unpatch_weights=True)
    with hidden_parameters([block for _, block in swapped]):
        mm.load_models_gpu([patched], memory_required=reserve, force_full_load=True)
    kept = keep_in_ram(patched, swapped)
    notes.append(f"{len(swapped)} blocks ({kept / 2**20:.2f} MiB) kept in CPU RAM, never loaded onto the GPU")
    return 0


def _progress(run: _Run, logs: list[StepLog]):
    """on_step for train_adapter: the log, the console every 5 %, the live curve's websocket event and ComfyUI's
    progress bar (whose update raises when the user interrupts: the loop saves first)."""
    start, steps = run.adapter.meta.steps, run.config.steps
    pbar = comfy.utils.ProgressBar(steps)
    pbar.update_absolute(start, steps)
    every = max(1, (steps - start) // 20)
    t_start = time.monotonic()

    def on_step(entry: StepLog):
        logs.append(entry)
        track = "-" if entry.track is None else f"{entry.track:.4g}"
        if entry.step % every == 0 or entry.step == steps:
            log.info("[DeT] step %d/%d loss %.4g (flow %.4g, track %s) %.2f s/step", entry.step, steps,
                     entry.loss, entry.flow, track, (time.monotonic() - t_start) / max(1, entry.step - start))
        _send({"node": run.node_id, "step": entry.step, "total": steps, "loss": entry.loss,
               "flow": entry.flow, "track": entry.track, "timestep": entry.timestep})
        pbar.update_absolute(entry.step, steps)

    return on_step


def _saver(run: _Run, logs: list[StepLog]):
    """save_checkpoint for train_adapter: the adapter and, beside it, the optimizer state and the whole loss log."""
    def save(step: int, opt_state_dict: dict, _log) -> None:
        save_checkpoint_files(run.adapter, run.out_path, step, opt_state_dict, logs)
        log.info("[DeT] saved %s at step %d", run.out_path, step)

    return save


def _train_on_clone(run: _Run) -> list[StepLog]:
    """Patch a clone of the model, train the adapter from its step count on, save checkpoints to the run's path;
    returns the whole loss log (history included). Re-raises an interrupt after saving."""
    adapter, arch, config = run.adapter, run.arch, run.config
    patched, runtime = attach(run.model, adapter, {k: adapter.indices(k) for k in arch.kinds}, 1.0,
                              mode="train", feature_block=config.feature_block())
    stream = _load(patched, run.swap_blocks, run.notes, run.reserve)
    device = patched.load_device
    logs: list[StepLog] = list(run.history)
    tracks = run.tracks
    with torch.inference_mode(False), torch.enable_grad():
        make_ordinary(patched.model)  # the transformer and the sampling tables
        make_ordinary(adapter)  # made or loaded under ComfyUI's inference mode
        opt_state = _normal_tree(run.opt_state)
        adapter.to(device)
        x0 = patched.model.process_latent_in(run.samples.clone().to(device, torch.float32))
        cond = model_conds(patched.model, run.conditioning, run.guidance, x0, arch.spatial_compression)
        if tracks is not None:
            tracks.xy, tracks.visibility = tracks.xy.clone(), tracks.visibility.clone()

        def predict_x0(x_t, sigma):
            return patched.model.apply_model(x_t, sigma, **cond)

        try:
            with streamed_blocks(patched.model.diffusion_model, stream, patched.offload_device) as n, \
                    synchronous_offload():
                if n:
                    run.notes.append(f"{n} blocks streamed from CPU RAM")
                result = train_adapter(adapter, predict_x0, patched.model.model_sampling, x0, config,
                                       runtime=runtime, tracks=tracks, start_step=adapter.meta.steps,
                                       optimizer_state=opt_state, save_checkpoint=_saver(run, logs),
                                       on_step=_progress(run, logs), should_stop=mm.processing_interrupted,
                                       autocast_dtype=torch.bfloat16 if device.type == "cuda" else None,
                                       offload_activations=run.offload_activations)
        finally:
            adapter.to("cpu")
    if result.stopped_early:
        mm.throw_exception_if_processing_interrupted()
    return logs

NODES = [DeTTrainAdapter]
