"""Low-VRAM training helpers that work with ComfyUI's layers without importing ComfyUI.

ComfyUI's cast ops (`comfy.ops`) give every Linear / Conv / Norm a `comfy_cast_weights` flag: when it is set, the
layer copies its weights to the input's device and dtype at each call. That copy is what autograd keeps, so the
stored weights can live in CPU RAM (block swapping) or in float8 (fp8 base weights), and backward still works.
"""

from __future__ import annotations

import contextlib

import torch


BLOCK_LISTS = ("double_blocks", "single_blocks", "blocks")
"""The transformers' block lists in the order they run (HunyuanVideo: double then single stream; Wan: blocks)."""


def all_blocks(diffusion_model) -> list[tuple[str, torch.nn.Module]]:
    """Every transformer block in the order they run, with its dotted name inside the transformer."""
    return [(f"{attr}.{i}", b) for attr in BLOCK_LISTS for i, b in enumerate(getattr(diffusion_model, attr, ()))]


def last_blocks(diffusion_model, count: int) -> list[tuple[str, torch.nn.Module]]:
    """The last `count` transformer blocks, counted from the end (HunyuanVideo: single-stream first, then double),
    with their dotted names inside the transformer."""
    return all_blocks(diffusion_model)[::-1][:max(0, count)]


def parameter_bytes(modules) -> int:
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


@contextlib.contextmanager
def hidden_parameters(modules):
    """While inside, the modules' own parameters are invisible (`parameters()`, `state_dict()`, `.to()` skip them),
    so a loader that moves a whole model to the GPU leaves them where they are."""
    stash = []
    for module in modules:
        for m in module.modules():
            if m._parameters:
                stash.append((m, m._parameters))
                m._parameters = type(m._parameters)()
    try:
        yield
    finally:
        for m, params in stash:
            m._parameters = params


def keep_in_ram(model_patcher, blocks: list[tuple[str, torch.nn.Module]]) -> int:
    """After ComfyUI loaded a model with `blocks` hidden: put those blocks' layers in the state ComfyUI's own
    partial loading leaves offloaded layers in (weights on the offload device, cast to the input's device at each
    call, `model_lowvram` set), so ComfyUI goes on managing the model as partially loaded. Returns their bytes."""
    kept = 0
    for _, block in blocks:
        for m in block.modules():
            params = list(m.parameters(recurse=False))
            if not params:
                continue
            m.to(model_patcher.offload_device)  # already there unless an earlier load put the block on the GPU
            kept += sum(p.numel() * p.element_size() for p in params)
            if hasattr(m, "comfy_cast_weights"):
                if not hasattr(m, "prev_comfy_cast_weights"):
                    m.prev_comfy_cast_weights = m.comfy_cast_weights
                m.comfy_cast_weights = True
            if hasattr(m, "comfy_patched_weights"):
                del m.comfy_patched_weights  # never loaded here: a later full load patches and moves it
    inner = model_patcher.model
    inner.model_lowvram = True
    inner.model_loaded_weight_memory = max(0, model_patcher.model_size() - kept)
    return kept


@contextlib.contextmanager
def streamed_blocks(diffusion_model, count: int, offload_device):
    """Keep the weights of the last `count` transformer blocks (counted from the end) on `offload_device`, streamed
    layer by layer; restores devices and flags afterwards. Yields the number of blocks streamed."""
    blocks = [block for _, block in last_blocks(diffusion_model, count)]
    changed = []
    try:
        for block in blocks:
            for m in block.modules():
                params = list(m.parameters(recurse=False))
                if hasattr(m, "comfy_cast_weights") and params:
                    changed.append((m, m.comfy_cast_weights, params[0].device))
                    m.comfy_cast_weights = True
                    m.to(offload_device)
        yield len(blocks)
    finally:
        for m, flag, device in changed:
            m.to(device)
            m.comfy_cast_weights = flag


def to_fp8(module: torch.nn.Module, dtype=torch.float8_e4m3fn) -> int:
    """Store the weight matrices of `module`'s cast-op Linear layers in float8 (computed in the input's dtype);
    returns the number of layers converted."""
    n = 0
    for m in module.modules():
        if isinstance(m, torch.nn.Linear) and hasattr(m, "comfy_cast_weights"):
            m.weight.data = m.weight.data.to(dtype)
            m.comfy_cast_weights = True
            n += 1
    return n
