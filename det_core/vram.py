"""Memory planner: the peak GPU memory of a DeT training step and of a sampling step, predicted by running the
pack's real forward and backward on fake tensors (no memory is allocated and no GPU is needed).

    python -m det_core.vram --frames 49 --height 480 --width 720 [--arch NAME[:SIZE]] [--model FILE_OR_CONFIG]
                            [--json OUT] [--budget GIB] [--comfyui DIR]

What runs: ComfyUI's own transformer at the given configuration (`--arch`: hunyuan_video (13B, the default),
hunyuan_video_15 (8.3B), wan21:1.3B, wan21:14B (also each Wan 2.2 A14B expert), wan22_ti2v (5B); `--model` takes a
.safetensors checkpoint, read from its header only and recognised as ComfyUI recognises it, or a JSON of the
model's arguments for `--arch`) built under
`FakeTensorMode` in bf16, with DeT adapters attached by the pack's own patches, then one training step as the node
runs it (`train.step_losses` with the tracking loss, backward through the pack's checkpointed blocks, gradient
clipping, AdamW) and one sampling step (a forward under no_grad). A `MemTracker` reports the activations and
temporaries at the peak; attention is counted as a fused kernel does it (the output and one float32 row statistic
are kept, the score matrix never exists), which is what ComfyUI's attention does on a GPU.

Fake tensors all live on one device, so the device placement of each setting is accounting on top of what was
measured:

    weights     the base model's bytes on the GPU: bf16, or fp8 e4m3 Linear weights (1 byte) with the rest in bf16;
                `swap_blocks` blocks (counted from the last) stay in CPU RAM, plus the largest of them in flight in
                bf16
    adapter     adapter weights and gradients (float32) and AdamW's two moments (float32, or 8-bit)
    activations the measured peak of a training step; with `offload_activations` the checkpointed blocks' inputs
                (measured: what the pack parks) live in CPU RAM, and two of them at a time are on the GPU
    allowance   CONTEXT_GIB for the CUDA context and cuBLAS / attention workspaces, plus FRAGMENTATION of the
                activations for the caching allocator

Sampling counts the whole model on the GPU (ComfyUI's own partial loading lowers that by itself when VRAM is short,
at a speed cost), the adapter's float32 weights and the measured peak of one forward at cfg 1 (HunyuanVideo's
embedded guidance; cfg > 1 runs a batch of two and doubles the activations). The text encoder and the VAE are not
counted: ComfyUI loads them at other times.

Nothing here is a GPU measurement. `benchmarks/gpu_det.py` measures the same settings on a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import torch

from .arch import ARCHS, HUNYUAN_VIDEO, Arch, arch_named, transformer_class, width_key
from .comfy_models import use_comfy

GIB = 2 ** 30
CONTEXT_GIB = 1.0
"""CUDA context, cuBLAS and attention workspaces (a stated allowance, not measured here)."""
FRAGMENTATION = 0.10
"""Share of the activation peak added for the caching allocator's fragmentation."""
MARGIN_GIB = 1.0
"""What `auto` leaves free below the budget on top of the prediction."""
TEXT_TOKENS = 256
TRACK_POINTS = 100
SWAP_CHOICES = (0, 10, 20, 30, 40, 50, 60)


# ---------------------------------------------------------------------------------------------------------------
# the model and the shape

@dataclass
class Shape:
    frames: int
    height: int
    width: int
    text_tokens: int = TEXT_TOKENS
    arch: str = "hunyuan_video"
    """The architecture (det_core.arch name): its VAE's compression and patch size set the latent."""

    def __post_init__(self) -> None:
        for name in ("frames", "height", "width", "text_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive whole number")
        a = arch_named(self.arch)
        m = a.spatial_compression * int(list(a.full_size.values())[0]["patch_size"][1])
        if self.height % m or self.width % m:
            raise ValueError(f"{self.width}x{self.height}: for {a.label} width and height must be multiples of {m} "
                             f"(the VAE's {a.spatial_compression}x and the model's patches); for example "
                             f"{m * round(self.width / m)}x{m * round(self.height / m)}")

    @property
    def latent(self) -> tuple[int, int, int]:
        """(T, H, W) of the latent: the VAE's temporal compression with the first frame alone, its spatial one."""
        a = arch_named(self.arch)
        s = a.spatial_compression
        return (self.frames - 1) // a.temporal_compression + 1, self.height // s, self.width // s


def find_comfyui(explicit: str | None = None) -> str:
    """ComfyUI's folder: --comfyui, $COMFYUI_DIR, the pack's `.comfyui-path` (tests and make setup), or the folder
    two levels above the pack (ComfyUI/custom_nodes/<pack>)."""
    pack = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    candidates = [explicit, os.environ.get("COMFYUI_DIR")]
    marker = os.path.join(pack, ".comfyui-path")
    if os.path.isfile(marker):
        candidates.append(open(marker).read().strip())
    candidates.append(os.path.dirname(os.path.dirname(pack)))
    for path in candidates:
        if path and os.path.isfile(os.path.join(path, "comfy", "ldm", "hunyuan_video", "model.py")):
            return path
    raise FileNotFoundError("ComfyUI not found: give --comfyui DIR (the folder holding comfy/) or set COMFYUI_DIR")


def import_comfy(path: str | None = None) -> None:
    """Make ComfyUI's model code importable in this process (on the CPU: nothing here needs a GPU)."""
    try:
        import comfy.ldm.hunyuan_video.model  # noqa: F401  (already importable: inside a server or the tests)
        return
    except ImportError:
        pass
    use_comfy(find_comfyui(path))


def model_arguments(arch: Arch, detected: dict) -> dict:
    return arch.model_arguments(detected)


def parse_arch(spec: str | None) -> tuple[Arch, dict]:
    """'name' or 'name:size' (det_core.arch) -> (arch, the released size's arguments; the largest by default)."""
    name, _, size = (spec or HUNYUAN_VIDEO.name).partition(":")
    arch = arch_named(name)
    sizes = arch.full_size
    if size and size not in sizes:
        raise ValueError(f"--arch {spec}: {arch.label} comes in sizes {', '.join(sizes)}")
    return arch, dict(sizes[size] if size else list(sizes.values())[-1])


def model_config(spec: str | None, arch_spec: str | None = None) -> tuple[Arch, dict]:
    """(architecture, constructor arguments): a released configuration (`arch_spec`, default HunyuanVideo 13B), a
    JSON file of the arguments for `arch_spec`, or a .safetensors checkpoint whose header ComfyUI's own detection
    reads (no tensor is loaded)."""
    if spec is None:
        return parse_arch(arch_spec)
    if not os.path.isfile(spec):
        raise FileNotFoundError(f"--model {spec}: no such file; give a .safetensors checkpoint or a JSON config")
    if spec.endswith(".json"):
        with open(spec) as f:
            cfg = json.load(f)
        if not isinstance(cfg, dict):
            raise ValueError(f"{spec} must hold a JSON object of the model's arguments")
        arch, _ = parse_arch(arch_spec)
        return arch, arch.model_arguments(cfg)
    if not spec.endswith(".safetensors"):
        raise ValueError(f"--model {spec}: give a .safetensors checkpoint or a .json config")
    import comfy.model_detection
    from safetensors import safe_open

    with safe_open(spec, "pt") as f:
        meta = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
    prefix = comfy.model_detection.unet_prefix_from_state_dict(meta)
    cfg = comfy.model_detection.detect_unet_config(meta, prefix) or {}
    found = comfy.model_detection.model_config_from_unet_config(cfg, meta) if cfg else None
    name = type(found).__name__ if found is not None else "an unknown model"
    for arch in ARCHS:
        if name in arch.config_classes:
            return arch, arch.model_arguments(cfg)
    raise ValueError(f"{os.path.basename(spec)} is {name}; the planner knows {', '.join(a.label for a in ARCHS)}")


# ---------------------------------------------------------------------------------------------------------------
# fake-tensor measurement

class _FusedAttention(torch.autograd.Function):
    """Attention as a fused kernel holds it: forward keeps q, k, v, the output and a float32 row statistic; backward
    returns gradients of q, k and v. Values are not computed (the tensors are fake)."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = torch.empty_like(q)
        stats = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, stats)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def fused_attention(func, q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
                    skip_output_reshape=False, **kwargs):
    """An `optimized_attention_override` for ComfyUI's attention functions (transformer_options)."""
    if not skip_reshape:
        b, n, _ = q.shape
        q, k, v = (t.view(b, -1, heads, t.shape[-1] // heads).transpose(1, 2) for t in (q, k, v))
    out = _FusedAttention.apply(q, k, v)  # B H N D
    if skip_output_reshape:
        return out
    b, h, n, d = out.shape
    return out.transpose(1, 2).reshape(b, n, h * d)


def _tracker():
    from torch.distributed._tools.mem_tracker import _TOTAL_KEY as _TOTAL, MemTracker

    class FrozenBaseTracker(MemTracker):
        """MemTracker without gradient hooks on parameters (it cannot hook the frozen base's)."""

        def _track_module_params_and_buffers(self, module, install_grad_hooks=True):
            return super()._track_module_params_and_buffers(module, install_grad_hooks=False)

        def _update_peak_stats(self, peak_state) -> None:
            # only the global peak is read here (get_tracker_snapshot("peak")); MemTracker's per-module peaks cost a
            # pass over every module at every op, which made a 54-block model take minutes
            for dev, dev_snap in self._curr_mem_snap.items():
                if self._peak_mem.get(dev, 0) < dev_snap[_TOTAL]:
                    self._peak_mem[dev] = dev_snap[_TOTAL]
                    self._peak_mem_snap[dev] = dict(dev_snap)

    return FrozenBaseTracker()


def _non_parameter_peak(tracker) -> int:
    snap = tracker.get_tracker_snapshot("peak")
    total = 0
    for stats in snap.values():
        total += sum(v for k, v in stats.items() if str(getattr(k, "value", k)) not in ("Parameter", "Buffer", "Total"))
    return int(total)


@dataclass
class Measurement:
    """What the fake-tensor run measured (bytes) for one model, shape and adapter."""

    config: dict
    shape: dict
    latent: list[int]
    adapter_blocks: dict
    mid_dim: int
    kernel_size: int
    parameters: int
    """Base model parameters."""
    weight_bytes_bf16: int
    weight_bytes_fp8: int
    block_bytes_bf16: list[int]
    """Per block in swap order (last single block first), bf16."""
    block_bytes_fp8: list[int]
    adapter_parameters: int
    train_activation_bytes: int
    """Peak of everything but the base weights during a training step (adapter state included)."""
    parked_bytes: int
    """The checkpointed blocks' inputs held between forward and backward (what offloading moves)."""
    parked_max_bytes: int
    sample_activation_bytes: int
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    gpus: int = 1
    """Ranks training together (det_core.dist_train): the base is sharded over them with FSDP2."""
    sequence_parallel: int = 1
    """Ranks sharing each sample: the shape measured is one rank's band of rows (see `plan_for_ranks`)."""


def _weights(model) -> tuple[int, int, list[int], list[int]]:
    """(bf16 bytes, fp8 bytes, per-block bf16 bytes, per-block fp8 bytes) of the base model; fp8 stores the weight
    matrices of Linear layers in one byte (what UNETLoader's fp8_e4m3fn does), everything else in bf16."""
    def sizes(module) -> tuple[int, int]:
        bf16 = fp8 = 0
        for m in module.modules():
            for name, p in m.named_parameters(recurse=False):
                bf16 += p.numel() * 2
                fp8 += p.numel() * (1 if isinstance(m, torch.nn.Linear) and name == "weight" else 2)
        return bf16, fp8

    from .lowvram import all_blocks

    total_bf16, total_fp8 = sizes(model)
    blocks = [b for _, b in all_blocks(model)][::-1]
    per = [sizes(b) for b in blocks]
    return total_bf16, total_fp8, [a for a, _ in per], [b for _, b in per]


def measure(arch: Arch, config: dict, shape: Shape, applied: dict[str, list[int]] | None = None, mid_dim: int = 128,
            kernel_size: int = 3, fake: bool = True, log=print) -> Measurement:
    """Build the model on fake tensors, run one DeT training step and one sampling step, report what they hold.
    `applied`: adapter blocks per kind (default: every block of the first group). `fake` False does the same with
    real (uninitialised) tensors: for checking the fake run at a small size."""
    import comfy.ops
    from torch._subclasses.fake_tensor import FakeTensorMode

    from .adapter import AdapterMeta, DeTAdapter
    from .comfy_models import flow_sampling, x0_predictor
    from .patch import DeTRuntime, forward_patches, install
    from .tracking_loss import LatentTracks
    from .train import TrainConfig, step_losses

    t0 = time.monotonic()
    t_lat, h_lat, w_lat = shape.latent
    hv = arch.transformer == "hunyuan_video"
    # (inside a ComfyUI node the caller runs under inference mode; a training step needs autograd)
    with torch.inference_mode(False), torch.enable_grad(), \
            FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext():
        model = transformer_class(arch)(operations=comfy.ops.disable_weight_init, dtype=torch.bfloat16, device="cpu",
                                        **config).eval().requires_grad_(False)
        emb = getattr(model, "cond_type_embedding", None)
        if emb is not None:  # HunyuanVideo 1.5 moves it to the text's device in forward: a no-op on one device, but
            emb.to = lambda *a, **k: emb  # a tracked fake parameter cannot be swapped for its (same) copy
        if applied is None:
            first = arch.groups[0]
            applied = {first.kind: list(range(len(getattr(model, first.attr))))}
        applied = {g.kind: list(applied.get(g.kind, [])) for g in arch.groups}
        weights = _weights(model)
        adapter = DeTAdapter(AdapterMeta(channels=config[width_key(arch)], mid_dim=mid_dim, kernel_size=kernel_size,
                                         blocks=applied, base_model=arch.name))
        params = list(adapter.parameters())
        for p in params:
            p.requires_grad_(True)
        runtime = DeTRuntime(adapter, applied, offload=torch.device("cpu"))
        options = {"optimized_attention_override": fused_attention}
        sampling = flow_sampling(7.0)
        latent = torch.randn(1, arch.latent_channels, t_lat, h_lat, w_lat)
        in_channels = config["in_channels"] if hv else config["in_dim"]
        text_width = config["context_in_dim"] if hv else config["text_dim"]
        context = torch.randn(1, shape.text_tokens, text_width, dtype=torch.bfloat16)
        pooled = torch.randn(1, config["vec_in_dim"], dtype=torch.bfloat16) if hv and config["vec_in_dim"] else None
        guidance = 6.0 if hv and config["guidance_embed"] else None
        predict = x0_predictor(model, sampling, context, pooled, guidance, transformer_options=options,
                               extra_channels=in_channels - arch.latent_channels)
        tracks = LatentTracks(xy=torch.rand(t_lat, TRACK_POINTS, 2), visibility=torch.ones(t_lat, TRACK_POINTS),
                              frame_ids=torch.arange(t_lat))
        optimizer = torch.optim.AdamW(params, lr=1e-5)
        # 1. a training step, as train_adapter runs it (sigma 0.3: under the tracking gate, so the loss runs)
        remove = install(model, forward_patches(model, runtime, "train"))
        tracker = _tracker()
        tracker.track_external(model, adapter, optimizer)
        with tracker:
            sigma = torch.tensor([0.3])
            loss, _, _ = step_losses(predict, sampling, latent, sigma, torch.randn_like(latent), 300.0,
                                     TrainConfig(steps=1), runtime, tracks, torch.bfloat16)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
        train_bytes = _non_parameter_peak(tracker)
        remove()
        parked = [b for _, _, b in runtime.parked]
        # 2. a sampling step with the adapter applied
        remove = install(model, forward_patches(model, DeTRuntime(adapter, applied), "inference"))
        tracker = _tracker()
        tracker.track_external(model, adapter)
        with tracker, torch.no_grad():
            predict(latent, torch.tensor([0.5]))
        sample_bytes = _non_parameter_peak(tracker)
        remove()
    m = Measurement(config=config, shape=asdict(shape), latent=[t_lat, h_lat, w_lat],
                    adapter_blocks=applied, mid_dim=mid_dim, kernel_size=kernel_size,
                    parameters=weights[0] // 2, weight_bytes_bf16=weights[0], weight_bytes_fp8=weights[1],
                    block_bytes_bf16=weights[2], block_bytes_fp8=weights[3],
                    adapter_parameters=sum(p.numel() for p in params), train_activation_bytes=train_bytes,
                    parked_bytes=sum(parked), parked_max_bytes=max(parked, default=0),
                    sample_activation_bytes=sample_bytes, seconds=time.monotonic() - t0)
    log(f"[vram] measured in {m.seconds:.0f} s: {m.parameters / 1e9:.2f} B parameters, latent {m.latent}, "
        f"training step {train_bytes / GIB:.1f} GiB beside the weights, sampling {sample_bytes / GIB:.1f} GiB")
    return m


# ---------------------------------------------------------------------------------------------------------------
# settings and predictions

@dataclass(frozen=True)
class Setting:
    weights: str = "bf16"
    """bf16 or fp8_e4m3fn (UNETLoader's weight_dtype)."""
    swap_blocks: int = 0
    offload_activations: bool = False
    optimizer: str = "adamw"
    """adamw (32-bit moments) or adamw8bit."""

    def label(self) -> str:
        parts = [self.weights]
        if self.swap_blocks:
            parts.append(f"swap {self.swap_blocks}")
        if self.offload_activations:
            parts.append("offload")
        if self.optimizer == "adamw8bit":
            parts.append("8-bit AdamW")
        return ", ".join(parts)


FSDP_BLOCKS_IN_FLIGHT = 2
"""Blocks whose FSDP2 shards are gathered at once on a rank (the one running and the one prefetched)."""


def predict(m: Measurement, s: Setting) -> dict:
    """Predicted peak GiB of a training and a sampling step under setting `s`, split into parts (per rank when the
    measurement is for several ranks)."""
    fp8 = s.weights == "fp8_e4m3fn"
    blocks = m.block_bytes_fp8 if fp8 else m.block_bytes_bf16
    total = m.weight_bytes_fp8 if fp8 else m.weight_bytes_bf16
    if m.gpus > 1:  # FSDP2: each rank keeps 1/N of every block, the gathered blocks in flight, the rest whole
        rest = total - sum(blocks)
        weights = rest + sum(blocks) / m.gpus + FSDP_BLOCKS_IN_FLIGHT * max(blocks, default=0)
    else:
        swap = min(s.swap_blocks, len(blocks))
        in_flight = max(m.block_bytes_bf16[:swap], default=0)
        weights = total - sum(blocks[:swap]) + in_flight
    moments = 2 if s.optimizer == "adamw8bit" else 8
    adapter = m.adapter_parameters * (4 + 4 + moments)
    # the measured peak (in backward, before the first optimizer step made any moments; the adapter's weights are
    # filed as parameters) holds the adapter's gradients: count them once, above
    activations = max(0, m.train_activation_bytes - m.adapter_parameters * 4)
    if s.offload_activations:
        activations = max(0, activations - m.parked_bytes) + 2 * m.parked_max_bytes
    allowance = CONTEXT_GIB * GIB + FRAGMENTATION * activations
    train = weights + adapter + activations + allowance
    sample_weights = total
    sample_allowance = CONTEXT_GIB * GIB + FRAGMENTATION * m.sample_activation_bytes
    sample = sample_weights + m.adapter_parameters * 4 + m.sample_activation_bytes + sample_allowance
    g = lambda b: round(b / GIB, 2)  # noqa: E731
    if m.gpus > 1:  # sampling runs in ComfyUI's process on one GPU (plan it with --gpus 1)
        sample = None
    return {"setting": asdict(s), "label": s.label(), "train_peak_gib": g(train),
            "sample_peak_gib": None if sample is None else g(sample),
            "train_beside_weights_gib": g(train - weights),
            "train": {"weights_gib": g(weights), "adapter_and_optimizer_gib": g(adapter),
                      "activations_gib": g(activations), "allowance_gib": g(allowance)},
            "sample": None if sample is None else {
                "weights_gib": g(sample_weights + m.adapter_parameters * 4),
                "activations_gib": g(m.sample_activation_bytes), "allowance_gib": g(sample_allowance)}}


def settings(m: Measurement) -> list[Setting]:
    n = len(m.block_bytes_bf16)
    swaps = sorted({min(k, n) for k in SWAP_CHOICES}) if m.gpus == 1 else [0]  # FSDP2 shards instead of swapping
    return [Setting(w, k, off, opt) for w in ("bf16", "fp8_e4m3fn") for k in swaps for off in (False, True)
            for opt in ("adamw", "adamw8bit")]


def preference(s: Setting) -> tuple:
    """Fastest first: full bf16 weights, then offloaded activations (a copy per block per step), then fp8 weights
    (a cast per layer), then the fewest swapped blocks (a transfer per block per step); 32-bit AdamW before 8-bit."""
    return (s.swap_blocks, s.weights != "bf16", s.offload_activations, s.optimizer != "adamw")


def choose(m: Measurement, budget_gib: float, margin_gib: float = MARGIN_GIB, eight_bit: bool = True) -> dict | None:
    """The fastest setting whose predicted training peak fits `budget_gib` with `margin_gib` to spare; None when
    none does. `eight_bit` False leaves out the 8-bit optimizer (it needs bitsandbytes and CUDA)."""
    fits = [predict(m, s) for s in sorted(settings(m), key=preference)
            if eight_bit or s.optimizer == "adamw"]
    fits = [p for p in fits if p["train_peak_gib"] + margin_gib <= budget_gib]
    return fits[0] if fits else None


def what_would_fit(m: Measurement, budget_gib: float) -> str:
    """A sentence for a budget nothing fits: the smallest prediction, and what to change."""
    best = min((predict(m, s) for s in settings(m)), key=lambda p: p["train_peak_gib"])
    t, h, w = m.latent
    return (f"nothing fits {budget_gib:g} GiB: the smallest setting ({best['label']}) needs about "
            f"{best['train_peak_gib']:.1f} GiB to train at {m.shape['frames']} frames, {m.shape['width']}x"
            f"{m.shape['height']} (latent {t}x{h}x{w}); use fewer frames or a lower resolution (activations grow "
            f"with both), fp8 weights, or more swapped blocks")


_CACHE: dict[str, Measurement] = {}


def rank_shape(shape: Shape, arch: Arch, config: dict, sequence_parallel: int) -> Shape:
    """The shape one rank runs with `sequence_parallel` ranks per sample: its band of the latent's rows (the
    all-to-all gives its attention all the tokens of 1/P of the heads, the same size as its band of all heads)."""
    if sequence_parallel == 1:
        return shape
    from .sequence_parallel import check_degree

    patch = int(config["patch_size"][1])
    rows = shape.latent[1] // patch
    check_degree(sequence_parallel, int(config["num_heads"]), rows, arch.label)
    return Shape(shape.frames, shape.height // sequence_parallel, shape.width, shape.text_tokens, shape.arch)


def for_ranks(m: Measurement, gpus: int, sequence_parallel: int) -> Measurement:
    """The measurement `m` (of one rank's shape) as one of `gpus` ranks."""
    if gpus < 1 or gpus % sequence_parallel:
        raise ValueError(f"--gpus {gpus}: give a multiple of --sequence-parallel {sequence_parallel}")
    m.gpus, m.sequence_parallel = gpus, sequence_parallel
    return m


def auto_setting(arch: Arch, config: dict, shape: Shape, applied: dict[str, list[int]], mid_dim: int,
                 kernel_size: int, budget_gib: float, weights: str, optimizers: tuple[str, ...] = ("adamw",),
                 log=print, gpus: int = 1, sequence_parallel: int = 1) -> dict:
    """What Train DeT Adapter's `memory=auto` uses: the fastest setting with the loaded weights' dtype whose
    predicted training peak (per rank, for `gpus` ranks) fits `budget_gib` with MARGIN_GIB to spare (measured once
    per model, shape and adapter, then cached), using one of `optimizers`. ValueError, naming what would fit, when
    none does."""
    local = rank_shape(shape, arch, config, sequence_parallel)
    key = json.dumps([arch.name, config, asdict(local), applied, mid_dim, kernel_size], sort_keys=True, default=str)
    if key not in _CACHE:
        _CACHE[key] = measure(arch, config, local, applied, mid_dim, kernel_size, log=log)
    m = for_ranks(Measurement(**asdict(_CACHE[key])), gpus, sequence_parallel)
    fits = [predict(m, s) for s in sorted(settings(m), key=preference)
            if s.weights == weights and s.optimizer in optimizers]
    for p in fits:
        if p["train_peak_gib"] + MARGIN_GIB <= budget_gib:
            return p
    smallest = min(fits, key=lambda p: p["train_peak_gib"])
    hint = "" if weights != "bf16" else " Loading the model with weight_dtype fp8_e4m3fn halves its weights."
    raise ValueError(f"memory=auto: nothing fits {budget_gib:.1f} GiB with {weights} weights: the smallest setting "
                     f"({smallest['label']}) needs about {smallest['train_peak_gib']:.1f} GiB (+{MARGIN_GIB:g} GiB "
                     f"margin) at {shape.frames} frames, {shape.width}x{shape.height}. Use fewer frames or a lower "
                     f"resolution.{hint}")


# ---------------------------------------------------------------------------------------------------------------
# command line

def table(m: Measurement) -> str:
    rows = [predict(m, s) for s in settings(m) if s.optimizer == "adamw"]
    rows.sort(key=lambda p: p["train_peak_gib"], reverse=True)
    head = (f"{'setting':34s} {'train GiB':>9s} {'weights':>8s} {'adapter':>8s} {'activ.':>8s} {'allow.':>7s} "
            f"{'sample GiB':>10s}")
    lines = [head, "-" * len(head)]
    for p in rows:
        tr = p["train"]
        lines.append(f"{p['label']:34s} {p['train_peak_gib']:9.1f} {tr['weights_gib']:8.1f} "
                     f"{tr['adapter_and_optimizer_gib']:8.2f} {tr['activations_gib']:8.1f} {tr['allowance_gib']:7.1f} "
                     + (f"{p['sample_peak_gib']:10.1f}" if p["sample_peak_gib"] is not None else f"{'-':>10s}"))
    eight = predict(m, Setting(optimizer="adamw8bit"))["train"]["adapter_and_optimizer_gib"]
    thirty_two = predict(m, Setting())["train"]["adapter_and_optimizer_gib"]
    lines.append(f"(8-bit AdamW: adapter and optimizer {eight:.2f} GiB instead of {thirty_two:.2f} GiB)")
    return "\n".join(lines)


def forward_flops(arch: Arch, config: dict, img_tokens: int, txt_tokens: int) -> float:
    """Matmul FLOPs of one transformer forward (linear layers and attention), the usual 2 x multiply-adds."""
    if arch.transformer == "wan":
        d, ffn, n = config["dim"], config["ffn_dim"], img_tokens
        linear = 2 * n * (4 * d * d + 2 * d * d + 2 * d * ffn) + 2 * txt_tokens * 2 * d * d  # self q,k,v,o; cross q,o; ffn; cross k,v
        attention = 4 * n * n * d + 4 * n * txt_tokens * d
        return config["num_layers"] * (linear + attention)
    d, mlp = config["hidden_size"], int(config["hidden_size"] * config["mlp_ratio"])
    n = img_tokens + txt_tokens
    double = 2 * n * (4 * d * d + 2 * d * mlp)  # qkv, proj, mlp for both streams
    single = 2 * n * (d * (3 * d + mlp) + (d + mlp) * d)  # linear1, linear2
    attention = 4 * n * n * d  # QK^T and AV
    return config["depth"] * (double + attention) + config["depth_single_blocks"] * (single + attention)


def flops_per_step(arch: Arch, config: dict, latent: list[int], text_tokens: int = TEXT_TOKENS) -> float:
    """FLOPs of one training step as the pack runs it: forward, the checkpointed blocks' recompute and backward
    (twice a forward) make four forwards."""
    t, h, w = latent
    patch = config["patch_size"]
    img = (t // patch[0]) * (h // patch[1]) * (w // patch[2])
    return 4.0 * forward_flops(arch, config, img, text_tokens)


GPUS = {"H100": 989e12, "A100": 312e12, "RTX 4090": 165e12, "RTX 3090": 71e12}
"""Dense bf16 tensor throughput (FLOP/s) from the vendors' sheets."""
UTILISATION = 0.35


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m det_core.vram", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=49)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=720)
    p.add_argument("--arch", help="hunyuan_video (default), hunyuan_video_15, wan21:1.3B, wan21:14B, wan22_ti2v")
    p.add_argument("--model", help="a .safetensors checkpoint, or a JSON of the --arch model's arguments")
    p.add_argument("--double-blocks", default="all",
                   help="adapter blocks (HunyuanVideo's double-stream blocks, Wan's blocks): all, none or e.g. 0-9")
    p.add_argument("--mid-dim", type=int, default=128)
    p.add_argument("--budget", type=float, action="append", default=[],
                   help="GiB of free VRAM to choose settings for (repeatable; default 16, 24, 48, 80)")
    p.add_argument("--json", help="write every setting's prediction here")
    p.add_argument("--comfyui", help="ComfyUI's folder (default: $COMFYUI_DIR or the folder above the pack)")
    p.add_argument("--gpus", type=int, default=1,
                   help="ranks training together (Train DeT Adapter's gpus): the peak is per rank, the base sharded "
                        "over them by FSDP2")
    p.add_argument("--sequence-parallel", type=int, default=1,
                   help="ranks sharing each sample (Ulysses); must divide --gpus, the heads and the rows of patches")
    ns = p.parse_args(argv)
    try:
        import_comfy(ns.comfyui)
        arch, config = model_config(ns.model, ns.arch)
        shape = Shape(ns.frames, ns.height, ns.width, arch=arch.name)
        from .adapter import parse_blocks

        first = arch.groups[0]
        count = config["depth"] if arch.transformer == "hunyuan_video" else config["num_layers"]
        blocks = parse_blocks(ns.double_blocks, count, "--double-blocks")
        local = rank_shape(shape, arch, config, ns.sequence_parallel)
        m = for_ranks(measure(arch, config, local, {first.kind: blocks}, mid_dim=ns.mid_dim), ns.gpus,
                      ns.sequence_parallel)
    except (ValueError, FileNotFoundError) as e:
        print(f"[vram] {e}", file=sys.stderr)
        return 2
    t, h, w = m.latent
    print(f"DeT memory plan: {arch.label} {m.parameters / 1e9:.1f} B, {ns.frames} frames at {ns.width}x{ns.height} "
          f"(latent {t}x{h}x{w}), adapters in {len(blocks)} {first.label} ({m.adapter_parameters / 1e6:.1f} M "
          f"parameters); predictions, not GPU measurements" + (
              f"; per rank of {ns.gpus} (FSDP2-sharded base, {ns.sequence_parallel} rank(s) per sample, each "
              f"measured on its band of {local.height} pixel rows)" if ns.gpus > 1 else ""))
    print(table(m))
    budgets = ns.budget or [16.0, 24.0, 48.0, 80.0]
    picks = {}
    for b in budgets:
        pick = choose(m, b)
        picks[str(b)] = pick
        print(f"{b:g} GiB free: " + (f"{pick['label']} (predicted {pick['train_peak_gib']:.1f} GiB)" if pick
                                      else what_would_fit(m, b)))
    flops = flops_per_step(arch, config, m.latent)
    speed = {name: flops / (peak * UTILISATION) for name, peak in GPUS.items()}
    print("seconds per training step at " + f"{100 * UTILISATION:.0f} % of peak bf16 throughput: " +
          ", ".join(f"{k} {v:.1f}" for k, v in speed.items()) + " (FLOP count, not measured)")
    if ns.json:
        doc = {"measurement": asdict(m), "settings": [predict(m, s) for s in settings(m)], "auto": picks,
               "seconds_per_step": speed, "utilisation": UTILISATION, "flops_per_step": flops,
               "allowance": {"context_gib": CONTEXT_GIB, "fragmentation": FRAGMENTATION, "margin_gib": MARGIN_GIB}}
        with open(ns.json, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"[vram] wrote {ns.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
