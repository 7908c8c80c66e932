"""Attach a DeT adapter to a video transformer (ComfyUI's native model) without changing its modules.

Each patch is a replacement `forward` for one existing sub-module, keyed by its dotted name inside the
transformer (ComfyUI's `ModelPatcher.add_object_patch` installs them on a clone and restores the originals
afterwards; plain Python can `install` them directly). Module structure and weights stay as they are, so
weight patches such as LoRAs keep working next to DeT. Where each architecture's adapters attach is listed in
det_core.arch (the placements); this module implements them:

- the patch embedding (`img_in`, Wan's `patch_embedding`): reads the latent's shape and publishes the token grid
  (T, H/p, W/p) for this forward.
- `hv_double` block i: `img_attn.qkv.forward` keeps its input (the modulated, normalised video tokens);
  `img_attn.proj.forward` returns `proj(attn) + strength * adapter(x_mod)`, so the block computes
  `img + gate * (proj(attn) + adapter(x_mod))`. Text tokens have their own qkv/proj and are never touched.
- `hv_single` block i: `linear1.forward` keeps the video part of its input; `linear2.forward` adds the adapter
  output to the attention part of its input (the part that `linear2` projects), video tokens only.
- `wan_self_attn` block i: `self_attn.forward` returns `self_attn(x_mod) + strength * adapter(x_mod)`, so the block
  computes `x + e2 * (self_attn(x_mod) + adapter(x_mod))`.
- a block's `forward` keeps that block's video-token output as features for the tracking loss (optional), and
  for training every block runs with its residual adds out of place (`OutOfPlaceAdds`), gradient-checkpointed.

The original forward is always called through the class (`type(m).forward(m, ...)`), so patches never stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .adapter import AdapterMismatch, DeTAdapter
from .arch import Arch, arch_named, block_counts, hidden_size, patch_size, transformer_class


@dataclass
class DeTRuntime:
    """State that the patched forwards of one transformer share during a forward pass."""

    adapter: DeTAdapter
    applied: dict[str, list[int]]
    """Blocks whose adapter is applied, per block kind (`double`, `single`, `blocks`; see det_core.arch)."""
    strength: float = 1.0
    feature_block: tuple[str, int] | None = None
    """(kind, index) of a block whose video-token output is kept in `features` (tracking loss on DiT features)."""
    grid: tuple[int, int, int] | None = None
    """Token grid (T, H, W) of the forward in progress."""
    taps: dict[tuple[str, int], torch.Tensor] = field(default_factory=dict)
    features: torch.Tensor | None = None
    """(B, T*H*W, C) output of `feature_block` from the last forward."""
    offload: torch.device | None = None
    """Training: where checkpointed blocks keep their input activations between forward and backward (CPU RAM
    for low VRAM); None keeps them on the compute device."""
    parked: list[tuple[str, int, int]] = field(default_factory=list)
    """(kind, index, bytes) of every block input moved to `offload` in the current training step."""

    @property
    def arch(self) -> Arch:
        """The architecture the adapter was made for (its `base_model`)."""
        return arch_named(self.adapter.meta.base_model)

    def need_grid(self) -> tuple[int, int, int]:
        if self.grid is None:
            raise RuntimeError("DeT: the token grid is unknown; the img_in patch did not run before the blocks")
        return self.grid

    def tokens(self) -> int:
        t, h, w = self.need_grid()
        return t * h * w

    def delta(self, kind: str, index: int, x: torch.Tensor | None = None) -> torch.Tensor:
        """strength * adapter(x_mod) for the block, from `x` or the input its tap kept."""
        x = self.taps.pop((kind, index)) if x is None else x
        module = self.adapter.get(kind, index)
        if module.down.weight.device != x.device:  # the adapter follows the model to its device
            self.adapter.to(x.device)
        return self.strength * module(x, self.need_grid())


def _input_tap(module, runtime: DeTRuntime, key: tuple[str, int]) -> Callable:
    def forward(x, *args, **kwargs):
        runtime.taps[key] = x[:, : runtime.tokens()]
        return type(module).forward(module, x, *args, **kwargs)

    return forward


def _double_proj(module, runtime: DeTRuntime, index: int) -> Callable:
    def forward(attn, *args, **kwargs):
        out = type(module).forward(module, attn, *args, **kwargs)
        return out + runtime.delta("double", index).to(out.dtype)

    return forward


def _single_linear2(module, runtime: DeTRuntime, index: int, channels: int) -> Callable:
    def forward(z, *args, **kwargs):
        # z: B (L_img + L_txt) (C + mlp); the adapter output joins the attention part of the video tokens
        d = runtime.delta("single", index).to(z.dtype)  # B L_img C
        z = z + F.pad(d, (0, z.shape[-1] - channels, 0, z.shape[1] - d.shape[1]))
        return type(module).forward(module, z, *args, **kwargs)

    return forward


def _wan_self_attn(module, runtime: DeTRuntime, kind: str, index: int) -> Callable:
    def forward(x, *args, **kwargs):
        out = type(module).forward(module, x, *args, **kwargs)
        n = runtime.tokens()
        d = runtime.delta(kind, index, x[:, :n]).to(out.dtype)  # B L_img C
        return out + (d if out.shape[1] == n else F.pad(d, (0, 0, 0, out.shape[1] - n)))

    return forward


BLOCK_MODES = ("inference", "train")


class OutOfPlaceAdds(TorchFunctionMode):
    """Inside a block that trains, `Tensor.add_` returns a new tensor instead of writing in place.

    ComfyUI's blocks add residuals in place (`img += gate * proj(attn)`, then `img_norm2(img)`, then `img += ...`).
    The first add overwrites a tensor that the block's LayerNorm saved for backward. Plain autograd refuses that,
    and under gradient checkpointing nothing checks it: the saved tensor silently holds the later value and the
    gradient is wrong. It is a few tenths of a percent while the gates are small, and it grows with them (the
    tests compare it with finite differences). `x += y` calls `add_` and rebinds `x` to what it returns, so the
    blocks compute the same values out of place."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.add_:
            return torch.add(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


def run_block_out_of_place(module, *args, **kwargs):
    """The block's own forward with its in-place residual adds made out of place (see `OutOfPlaceAdds`)."""
    with OutOfPlaceAdds():
        return type(module).forward(module, *args, **kwargs)


ACTIVATION_KWARGS = ("img", "txt")
"""A block's per-step activations (double blocks take them by keyword; single blocks take `img` first)."""


def _park(args: tuple, kwargs: dict, runtime: DeTRuntime, kind: str, index: int):
    """Move a checkpointed block's input activations to `runtime.offload` before the checkpoint keeps them;
    returns the new arguments and a wrapper that brings them back to the compute device when the block runs (in
    forward, and again when backward recomputes it). Autograd passes gradients back through both copies."""
    home = runtime.offload
    moved, device, nbytes = set(), None, 0

    def park(t):
        nonlocal device, nbytes
        if not torch.is_tensor(t) or not t.is_floating_point():
            return t
        device = t.device
        nbytes += t.numel() * t.element_size()
        return t.to(home, non_blocking=True)

    args = tuple(park(a) if i == 0 else a for i, a in enumerate(args))
    if args and torch.is_tensor(args[0]):
        moved.add(0)
    for key in ACTIVATION_KWARGS:
        if key in kwargs:
            kwargs = dict(kwargs, **{key: park(kwargs[key])})
            moved.add(key)
    runtime.parked.append((kind, index, nbytes))

    def fetch(run):
        def fetched(*a, **k):
            a = tuple(x.to(device, non_blocking=True) if i in moved and torch.is_tensor(x) else x
                      for i, x in enumerate(a))
            k = {n: (v.to(device, non_blocking=True) if n in moved and torch.is_tensor(v) else v)
                 for n, v in k.items()}
            return run(*a, **k)
        return fetched

    return args, kwargs, fetch


def _block(module, runtime: DeTRuntime, kind: str, index: int, mode: str) -> Callable:
    """A whole block's forward: keeps features, and for training recomputes itself in backward (gradient
    checkpointing) with its residual adds out of place, so its inputs and everything autograd saved keep their
    values (`OutOfPlaceAdds`)."""
    keep = runtime.feature_block == (kind, index)

    def run(*args, **kwargs):
        if mode != "inference":
            return run_block_out_of_place(module, *args, **kwargs)
        return type(module).forward(module, *args, **kwargs)

    def forward(*args, **kwargs):
        if mode == "train" and torch.is_grad_enabled():
            if runtime.offload is not None:
                args, kwargs, fetch = _park(args, kwargs, runtime, kind, index)
                out = torch.utils.checkpoint.checkpoint(fetch(run), *args, use_reentrant=False, **kwargs)
            else:
                out = torch.utils.checkpoint.checkpoint(run, *args, use_reentrant=False, **kwargs)
        else:
            out = run(*args, **kwargs)
        if keep:
            img = out[0] if isinstance(out, (tuple, list)) else out  # double-stream blocks return (img, txt)
            runtime.features = img[:, : runtime.tokens()]
        return out

    return forward


def forward_patches(diffusion_model, runtime: DeTRuntime, mode: str = "inference") -> dict[str, Callable]:
    """Dotted name (inside the transformer) -> replacement forward, for every module DeT needs to see.

    The architecture is the adapter's (`runtime.arch`); `mode`: `inference`, or `train` (every block
    gradient-checkpointed, see `_block`).
    """
    if mode not in BLOCK_MODES:
        raise ValueError(f"mode={mode!r} is not one of {', '.join(BLOCK_MODES)}")
    dm, arch = diffusion_model, runtime.arch
    expected = transformer_class(arch)
    if not isinstance(dm, expected):
        raise AdapterMismatch(f"the adapter was trained on {arch.name} ({expected.__name__}), the transformer is "
                              f"{type(dm).__name__}")
    runtime.adapter.check_fits(arch.name, hidden_size(arch, dm), block_counts(arch, dm))
    unknown = sorted(set(runtime.applied) - set(arch.kinds))
    if unknown and any(runtime.applied[k] for k in unknown):
        raise ValueError(f"{arch.label} has no {unknown[0]} blocks; it has {', '.join(g.label for g in arch.groups)}")
    patches: dict[str, Callable] = {f"{arch.patch_embed}.forward": _grid_tap(dm, arch, runtime)}
    for group in arch.groups:
        blocks = getattr(dm, group.attr)
        for i in runtime.applied.get(group.kind, []):
            if runtime.adapter.get(group.kind, i) is None:
                raise ValueError(f"{group.one} {i} has no trained adapter; trained: "
                                 f"{runtime.adapter.indices(group.kind)}")
            block, key, name = blocks[i], (group.kind, i), f"{group.attr}.{i}"
            if group.placement == "hv_double":
                patches[f"{name}.img_attn.qkv.forward"] = _input_tap(block.img_attn.qkv, runtime, key)
                patches[f"{name}.img_attn.proj.forward"] = _double_proj(block.img_attn.proj, runtime, i)
            elif group.placement == "hv_single":
                patches[f"{name}.linear1.forward"] = _input_tap(block.linear1, runtime, key)
                patches[f"{name}.linear2.forward"] = _single_linear2(block.linear2, runtime, i,
                                                                     runtime.adapter.meta.channels)
            elif group.placement == "wan_self_attn":
                patches[f"{name}.self_attn.forward"] = _wan_self_attn(block.self_attn, runtime, group.kind, i)
            else:
                raise ValueError(f"unknown adapter placement {group.placement!r}")
    if runtime.feature_block is not None:
        kind, i = runtime.feature_block
        n = len(getattr(dm, arch.group(kind).attr))
        if not 0 <= i < n:
            raise ValueError(f"feature block {kind} {i} does not exist; the model has {n} {arch.group(kind).label}")
    for group in arch.groups:
        for i, block in enumerate(getattr(dm, group.attr)):
            if mode != "inference" or runtime.feature_block == (group.kind, i):
                patches[f"{group.attr}.{i}.forward"] = _block(block, runtime, group.kind, i, mode)
    return patches


def _grid_tap(dm, arch: Arch, runtime: DeTRuntime) -> Callable:
    patch = patch_size(dm)
    module = getattr(dm, arch.patch_embed)

    def forward(x, *args, **kwargs):
        if x.ndim == 5:  # B C T H W latent
            runtime.grid = (x.shape[2] // patch[0], x.shape[3] // patch[1], x.shape[4] // patch[2])
        return type(module).forward(module, x, *args, **kwargs)

    return forward


def _resolve(root, dotted: str):
    *path, attr = dotted.split(".")
    obj = root
    for name in path:
        obj = getattr(obj, name)
    return obj, attr


def make_ordinary(module: torch.nn.Module) -> None:
    """Replace the module's inference tensors (everything made under ComfyUI's `torch.inference_mode()`, which
    autograd can neither train nor save for backward) by ordinary copies with the same values; parameters stay
    frozen (`requires_grad=False`)."""
    for name, p in list(module.named_parameters()):
        if p.is_inference():
            owner, attr = _resolve(module, name)
            setattr(owner, attr, torch.nn.Parameter(p.detach().clone(), requires_grad=False))
    for name, b in list(module.named_buffers()):
        if b.is_inference():
            owner, attr = _resolve(module, name)
            setattr(owner, attr, b.clone())


def install(diffusion_model, patches: dict[str, Callable]) -> Callable[[], None]:
    """Install patches directly on a module (plain-Python use); returns a function that removes them."""
    done = []
    for name, fn in patches.items():
        obj, attr = _resolve(diffusion_model, name)
        had = attr in obj.__dict__
        old = obj.__dict__.get(attr)
        setattr(obj, attr, fn)
        done.append((obj, attr, had, old))

    def remove() -> None:
        for obj, attr, had, old in reversed(done):
            if had:
                setattr(obj, attr, old)
            else:
                obj.__dict__.pop(attr, None)

    return remove
