"""What the DeT nodes share: socket types, the model check (det_core.arch), attaching an adapter to a MODEL, the
adapters folder."""

from __future__ import annotations

import math
import os
import re

import torch

import folder_paths
from comfy_api.latest import io

from ..det_core.adapter import DeTAdapter, keep_first_fraction, parse_blocks
from ..det_core.arch import Arch, arch_of, block_counts, hidden_size, patch_size
from ..det_core.patch import DeTRuntime, forward_patches

# Socket types, declared once.
DetAdapterType = io.Custom("DET_ADAPTER")
TracksType = io.Custom("TRACKS")
CoTrackerType = io.Custom("COTRACKER")
GroundingDinoType = io.Custom("GROUNDING_DINO")
SamType = io.Custom("SAM_MODEL")

ADAPTER_FOLDER = "det_adapters"
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]*$")


DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")


def device_input(what: str):
    return io.Combo.Input("device", options=["auto", "cpu", "cuda"], default="auto", tooltip=f"Where {what} runs.")


def dtype_input():
    return io.Combo.Input("dtype", options=list(DTYPE_CHOICES), default="auto",
                          tooltip="auto: fp32 on the CPU, bf16 on a GPU (fp16 where bf16 is missing).")


def torch_dtype(choice: str, device):
    """'auto': fp32 on the CPU, bf16 on a GPU that has it, fp16 otherwise; else the named dtype."""
    import torch

    named = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if choice in named:
        return named[choice]
    if choice != "auto":
        raise ValueError(f"dtype {choice!r} is not one of {', '.join(DTYPE_CHOICES)}")
    if device.type == "cpu":
        return torch.float32
    return torch.bfloat16 if device.type != "cuda" or torch.cuda.is_bf16_supported() else torch.float16


def torch_device(choice: str):
    """'auto' -> ComfyUI's compute device; 'cpu' / 'cuda' as asked."""
    import comfy.model_management as mm
    import torch

    if choice == "auto":
        return mm.get_torch_device()
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was chosen but no CUDA GPU is available; choose 'auto' or 'cpu'")
    return torch.device(choice)


def video_transformer(model) -> tuple[Arch, object]:
    """(architecture, transformer) of a MODEL, or a ValueError naming the supported models."""
    arch = arch_of(model)
    return arch, model.model.diffusion_model


def attach(model, adapter: DeTAdapter, applied: dict[str, list[int]], strength: float = 1.0,
           mode: str = "inference", feature_block: tuple[str, int] | None = None):
    """A clone of `model` with the adapter patched into the chosen blocks (the user's MODEL is not changed)."""
    arch, dm = video_transformer(model)
    adapter.check_fits(arch.name, hidden_size(arch, dm), block_counts(arch, dm), "the DeT adapter")
    runtime = DeTRuntime(adapter, applied, strength, feature_block)
    patched = model.clone()
    for name, fn in forward_patches(dm, runtime, mode).items():
        patched.add_object_patch(f"diffusion_model.{name}", fn)
    return patched, runtime


BLOCK_INPUTS = ("double_blocks", "single_blocks")
"""The block-choice widgets: the first names the architecture's first block group (HunyuanVideo's double-stream
blocks, Wan's blocks), the second its second group (HunyuanVideo's single-stream blocks; Wan has none)."""


def specs_by_kind(arch: Arch, specs: tuple[str, str], empty: tuple[str, ...] = ("", "none")) -> dict[str, str]:
    """Block-choice widget values -> {block kind: spec} for this architecture; a choice for a group the model
    does not have is refused unless it is empty."""
    out = {}
    for k, spec in enumerate(specs):
        if k < len(arch.groups):
            out[arch.groups[k].kind] = spec
        elif (spec or "").strip().lower() not in empty:
            raise ValueError(f"{BLOCK_INPUTS[k]}={spec!r}: {arch.label} has one list of blocks, chosen by "
                             f"{BLOCK_INPUTS[0]}; set {BLOCK_INPUTS[k]} to none")
    return out


def applied_blocks(arch: Arch, adapter: DeTAdapter, double_spec: str, single_spec: str,
                   keep_fraction: float) -> dict[str, list[int]]:
    """Blocks to apply at inference: the chosen trained blocks, then only the first `keep_fraction` by depth
    (HunyuanVideo's double-stream blocks come before its single-stream ones), as the DeT authors' 'drop ratio'
    does."""
    chosen = {}
    for kind, spec in specs_by_kind(arch, (double_spec, single_spec), ("", "none", "trained", "all")).items():
        trained = adapter.indices(kind)
        if (spec or "").strip().lower() in ("trained", "all"):
            chosen[kind] = trained
            continue
        top = max(trained, default=-1) + 1
        picked = parse_blocks(spec, max(top, 1000), f"applied {arch.group(kind).label}")
        missing = [i for i in picked if i not in trained]
        if missing:
            raise ValueError(f"applied {arch.group(kind).label} {missing} have no trained adapter; trained: {trained}")
        chosen[kind] = picked
    order = [(kind, i) for kind in arch.kinds for i in chosen.get(kind, [])]
    kept = {order[k] for k in keep_first_fraction(list(range(len(order))), keep_fraction)}
    return {kind: [i for i in chosen.get(kind, []) if (kind, i) in kept] for kind in arch.kinds}


def adapter_files(authors: bool = False) -> list[str]:
    """The pack's adapters (.safetensors) in models/det_adapters/; with `authors`, also the DeT authors' .pth files
    (Load DeT Adapter converts them)."""
    return [f for f in folder_paths.get_filename_list(ADAPTER_FOLDER) if authors or f.endswith(".safetensors")]


MAX_NAME = 120
"""Longest adapter name (file systems allow 255 bytes; the optimizer state adds '.optim.pt.tmp')."""


def check_finite(**values: float) -> None:
    """ValueError naming the first input that is NaN or infinite (API calls reach nodes without the widgets'
    limits, and NaN passes every min / max comparison)."""
    for name, value in values.items():
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name}={value!r}: must be a finite number (NaN and infinity are refused)")


def not_a_file_name(input_name: str, value, what: str) -> str | None:
    """The message for a file-name input that is not a string, else None: for `validate_inputs` of the file and
    folder choices. An API prompt can send any JSON value (`video: 123`), and ComfyUI skips its own option-list
    check for every input a node's `validate_inputs` receives, so without this a number reaches the path code and
    fails there with a raw error ("'int' object has no attribute 'strip'")."""
    if isinstance(value, str):
        return None
    return f"{input_name}={value!r} is not a file name: give the name (a string) of {what}"


def check_video_latent(arch: Arch, dm, samples, what: str) -> None:
    """The latent must be [B, C, T, H, W] with the model's latent channels and a size its patches tile."""
    if samples.ndim != 5:
        raise ValueError(f"{what} must be a video latent [B, C, T, H, W], got {tuple(samples.shape)}")
    channels = arch.latent_channels
    if samples.shape[1] != channels:
        raise ValueError(f"{what} has {samples.shape[1]} channels but {arch.label} takes {channels}: encode it with "
                         f"{arch.label}'s VAE (or its empty-latent node)")
    _, ph, pw = patch_size(dm)
    h, w = samples.shape[3:]
    if h % ph or w % pw:
        raise ValueError(f"{what} is {w}x{h} latent cells, which the model's {pw}x{ph} patches do not tile: use a "
                         f"video size in multiples of {arch.spatial_compression * max(ph, pw)} pixels")
    if not torch.isfinite(samples).all():
        raise ValueError(f"{what} holds NaN or infinite values: check what VAE Encode was given")


def adapter_output_path(name: str) -> str:
    """Where an adapter called `name` is written: inside the first det_adapters folder, never outside it."""
    name = name.strip()
    if name.endswith(".safetensors"):
        name = name[: -len(".safetensors")]
    if len(name) > MAX_NAME:
        raise ValueError(f"adapter name of {len(name)} characters is too long: use at most {MAX_NAME}")
    if not _NAME_OK.match(name) or ".." in name:
        raise ValueError(f"adapter name {name!r} is not allowed: use letters, digits, '.', '_', '-' and spaces, "
                         f"without folders (it is saved in models/{ADAPTER_FOLDER}/)")
    folder = os.path.abspath(folder_paths.get_folder_paths(ADAPTER_FOLDER)[0])
    path = os.path.abspath(os.path.join(folder, name + ".safetensors"))
    if os.path.dirname(path) != folder:
        raise ValueError(f"adapter name {name!r} would leave models/{ADAPTER_FOLDER}/")
    os.makedirs(folder, exist_ok=True)
    return path


