"""Low-VRAM training helpers that work with ComfyUI's layers without importing ComfyUI.

ComfyUI's cast ops (`comfy.ops`) give every Linear / Conv / Norm a `comfy_cast_weights` flag: when it is set, the
layer copies its weights to the input's device and dtype at each call. That copy is what autograd keeps, so the
stored weights can live in CPU RAM (block swapping) or in float8 (fp8 base weights), and backward still works.
"""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def streamed_blocks(diffusion_model, count: int, offload_device):
    """Keep the weights of the last `count` transformer blocks (double then single stream, counted from the end)
    on `offload_device`, streamed layer by layer; restores devices and flags afterwards. Yields the number of
    blocks streamed."""
    blocks = (list(diffusion_model.double_blocks) + list(diffusion_model.single_blocks))[::-1][:count]
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
