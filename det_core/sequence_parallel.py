"""Ulysses sequence parallel for ComfyUI's video transformers (HunyuanVideo, HunyuanVideo 1.5, Wan), for DeT.

P ranks share one sample. The video tokens are split by space: rank r keeps the r-th band of token rows (H/P rows
of every frame, all their columns), so each rank holds every frame of its positions and DeT's temporal convolution
stays local. Around each video attention call an all-to-all over heads gives every rank all the video tokens of
H/P heads (Ulysses), so the softmax runs over every key, exactly; a second all-to-all brings the output back.

Nothing replaces a forward method. It uses:
- forward hooks: the patch embedding's output and the RoPE table keep this rank's band (and the DeT runtime's token
  grid becomes the band's); the output is gathered again at the end (HunyuanVideo: the final layer's tokens; Wan:
  the transformer's output, after its unpatchify);
- forward pre-hooks that mark the next attention call as video attention (HunyuanVideo's `img_attn.qkv` and
  `linear1`, Wan's `self_attn`); they fire again when gradient checkpointing recomputes a block;
- ComfyUI's attention override (`transformer_options["optimized_attention_override"]`), which does the all-to-alls
  for the marked calls and lets every other call (text refiner, Wan's cross-attention) run as it is.

Text tokens (HunyuanVideo's joint attention puts them after the video tokens) are replicated on every rank: each
rank takes its heads' slice of their queries, keys and values, the padding mask is extended over all the video keys,
and the text output of all heads is gathered back, so every rank keeps the same text stream. In backward, the
slices' gradients are summed over the ranks and each rank keeps its own part of the gathered outputs (whose
gradients are the same on every rank: the loss is computed from the gathered output everywhere).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from .arch import Arch


class SequenceParallelError(ValueError):
    pass


def check_degree(degree: int, heads: int, rows: int, what: str = "the model") -> None:
    """ValueError when `degree` ranks cannot share a sample of `heads` heads and `rows` token rows."""
    if degree < 1:
        raise SequenceParallelError(f"sequence_parallel={degree}: give 1 or more")
    if heads % degree:
        raise SequenceParallelError(f"sequence_parallel={degree} does not divide the {heads} attention heads of "
                                    f"{what}; choose a divisor of {heads}")
    if rows % degree:
        raise SequenceParallelError(f"sequence_parallel={degree} does not divide the latent's {rows} token rows "
                                    f"(height / patch); choose a divisor of {rows} or change the video's height")


def _all_to_all(x: torch.Tensor, group) -> torch.Tensor:
    """x: (P, ...) with chunk j for rank j -> (P, ...) with chunk j from rank j."""
    x = x.contiguous()
    out = torch.empty_like(x)  # (of the contiguous tensor: all_to_all_single writes it as contiguous)
    dist.all_to_all_single(out, x, group=group)
    return out


class _SeqToHeads(torch.autograd.Function):
    """(B, H, L, D) local tokens, all heads -> (B, H/P, P*L, D) all tokens, this rank's heads."""

    @staticmethod
    def forward(ctx, x, group, p):
        ctx.group, ctx.p = group, p
        b, h, n, d = x.shape
        y = _all_to_all(x.reshape(b, p, h // p, n, d).transpose(0, 1), group)  # (P: source rank's tokens) B h n d
        return y.permute(1, 2, 0, 3, 4).reshape(b, h // p, p * n, d)

    @staticmethod
    def backward(ctx, g):
        return _HeadsToSeq.apply(g, ctx.group, ctx.p), None, None


class _HeadsToSeq(torch.autograd.Function):
    """(B, H/P, P*L, D) this rank's heads, all tokens -> (B, H, L, D) all heads, local tokens."""

    @staticmethod
    def forward(ctx, y, group, p):
        ctx.group, ctx.p = group, p
        b, hp, pn, d = y.shape
        n = pn // p
        x = _all_to_all(y.reshape(b, hp, p, n, d).permute(2, 0, 1, 3, 4), group)  # (P: source rank's heads) B hp n d
        return x.transpose(0, 1).reshape(b, p * hp, n, d)

    @staticmethod
    def backward(ctx, g):
        return _SeqToHeads.apply(g, ctx.group, ctx.p), None, None


class _OwnSlice(torch.autograd.Function):
    """This rank's chunk of a tensor every rank holds the same of; backward sums the chunks' gradients over ranks."""

    @staticmethod
    def forward(ctx, x, dim, rank, p, group):
        ctx.dim, ctx.rank, ctx.p, ctx.group, ctx.shape = dim, rank, p, group, x.shape
        return x.chunk(p, dim)[rank].contiguous()

    @staticmethod
    def backward(ctx, g):
        full = g.new_zeros(ctx.shape)
        full.narrow(ctx.dim, ctx.rank * g.shape[ctx.dim], g.shape[ctx.dim]).copy_(g)
        dist.all_reduce(full, group=ctx.group)
        return full, None, None, None, None


@dataclass
class SequenceParallel:
    """One rank's state of a sequence-parallel group; `install` hooks it into a transformer."""

    group: object
    rank: int
    """This rank's index inside the group."""
    degree: int
    arch: Arch
    runtime: object = None
    """The DeT runtime whose token grid becomes this rank's band (None without an adapter)."""
    grid: tuple[int, int, int] | None = None
    """The full token grid (T, H, W) of the forward in progress."""
    pending: int = 0
    """Video attention calls announced by the pre-hooks and not yet run."""
    heads: int = 0
    patch: tuple[int, int, int] = (1, 1, 1)
    """The transformer's heads and patch size (read by `install`)."""
    handles: list = field(default_factory=list)

    @property
    def band(self) -> tuple[int, int]:
        """(first row, rows) of this rank's band."""
        rows = self.grid[1] // self.degree
        return self.rank * rows, rows

    def local_tokens(self) -> int:
        t, h, w = self.grid
        return t * (h // self.degree) * w

    # -- the hooks ---------------------------------------------------------------------------------------------------

    def _start(self, module, args):
        """The transformer's input latent B C T H W: the full token grid of this forward (patches, padded up)."""
        x, patch = args[0], self.patch
        self.grid = tuple(-(-x.shape[2 + i] // patch[i]) for i in range(3))
        check_degree(self.degree, self.heads, self.grid[1], self.arch.label)
        self.pending = 0

    def _embed(self, module, args, out):
        """Patch embedding: this rank's band of its output."""
        t, h, w = self.grid
        start, rows = self.band
        if out.ndim == 5:  # Wan: B C T H W, flattened later by the model
            out = out.narrow(3, start, rows)
        else:  # HunyuanVideo: B (T H W) C
            out = out.reshape(out.shape[0], t, h, w, out.shape[-1]).narrow(2, start, rows).reshape(
                out.shape[0], t * rows * w, out.shape[-1])
        if self.runtime is not None:
            self.runtime.grid = (t, rows, w)
        return out

    def _rope(self, module, args, out):
        """RoPE table (B, 1, L, ...) with the video positions first: this rank's band of them, the rest kept."""
        t, h, w = self.grid
        n = t * h * w
        start, rows = self.band
        video = out.narrow(2, 0, n)
        video = video.reshape(*out.shape[:2], t, h, w, *out.shape[3:]).narrow(3, start, rows).reshape(
            *out.shape[:2], t * rows * w, *out.shape[3:])
        return torch.cat([video, out.narrow(2, n, out.shape[2] - n)], dim=2) if out.shape[2] > n else video

    def _announce(self, module, args):
        self.pending += 1

    def _gather_tokens(self, module, args, out):
        """HunyuanVideo's final layer: every band's tokens, in the model's (t, h, w) order."""
        t, h, w = self.grid
        b, _, f = out.shape
        banded = out.reshape(b, t, (h // self.degree) * w, f)
        full = _gather(banded, 2, self.rank, self.degree, self.group)
        return full.reshape(b, t * h * w, f)

    def _gather_output(self, module, args, out):
        """Wan's output B C T H W: every band's rows."""
        return _gather(out, 3, self.rank, self.degree, self.group)

    # -- the attention override ------------------------------------------------------------------------------------

    def override(self, func, q, k, v, heads, *args, **kwargs):
        if self.pending == 0:  # not a video attention call
            return func(q, k, v, heads, *args, **kwargs)
        self.pending -= 1
        p = self.degree
        if heads % p:
            raise SequenceParallelError(f"sequence_parallel={p} does not divide the {heads} heads of this attention")
        to_bhld = not kwargs.get("skip_reshape", False)
        if to_bhld:  # B L (H D) -> B H L D
            q, k, v = (x.reshape(x.shape[0], x.shape[1], heads, -1).transpose(1, 2) for x in (q, k, v))
        n = self.local_tokens()
        split = [(x[:, :, :n], x[:, :, n:]) for x in (q, k, v)]
        text = q.shape[2] - n
        parts = []
        for video, txt in split:
            video = _SeqToHeads.apply(video, self.group, p)
            if text:
                txt = _OwnSlice.apply(txt, 1, self.rank, p, self.group)
                video = torch.cat([video, txt], dim=2)
            parts.append(video)
        mask = kwargs.get("mask")
        if mask is not None and text:  # padding mask over (video, text) keys: zeros for all the video keys
            keys = mask.shape[-1]
            mask = torch.cat([mask.new_zeros(*mask.shape[:-1], p * n), mask.narrow(-1, keys - text, text)], dim=-1)
        kwargs = dict(kwargs, mask=mask, skip_reshape=True, skip_output_reshape=True)
        out = func(*parts, heads // p, *args, **kwargs)  # B H/P (P*n + text) D
        video = _HeadsToSeq.apply(out[:, :, : p * n], self.group, p)  # B H n D
        if text:
            txt = _gather(out[:, :, p * n:], 1, self.rank, p, self.group)  # B H text D
            video = torch.cat([video, txt], dim=2)
        return video.transpose(1, 2).reshape(video.shape[0], video.shape[2], -1)  # B L (H D)

    # -- install -----------------------------------------------------------------------------------------------------

    def install(self, dm) -> None:
        """Hook this rank into transformer `dm` (removed by `remove`)."""
        arch = self.arch
        self.heads = int(dm.num_heads)
        self.patch = tuple(dm.patch_size)
        embed = getattr(dm, arch.patch_embed)
        h = self.handles
        h.append(dm.register_forward_pre_hook(self._start))
        h.append(embed.register_forward_hook(self._embed))
        if arch.transformer == "wan":
            h.append(dm.rope_embedder.register_forward_hook(self._rope))
            h.append(dm.register_forward_hook(self._gather_output))
            for block in dm.blocks:
                h.append(block.self_attn.register_forward_pre_hook(self._announce))
        else:
            h.append(dm.pe_embedder.register_forward_hook(self._rope))
            h.append(dm.final_layer.register_forward_hook(self._gather_tokens))
            for block in dm.double_blocks:
                h.append(block.img_attn.qkv.register_forward_pre_hook(self._announce))
            for block in getattr(dm, "single_blocks", []):
                h.append(block.linear1.register_forward_pre_hook(self._announce))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def transformer_options(self) -> dict:
        return {"optimized_attention_override": self.override}


def _gather(x, dim, rank, p, group):
    return _GatherChunks.apply(x, dim, rank, p, group)


class _GatherChunks(torch.autograd.Function):
    """Every rank's `x` concatenated along `dim`; backward keeps this rank's chunk of the gradient (the same on every
    rank: each computes the loss from the gathered tensor)."""

    @staticmethod
    def forward(ctx, x, dim, rank, p, group):
        ctx.dim, ctx.rank, ctx.p = dim, rank, p
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(p)]
        dist.all_gather(parts, x, group=group)
        return torch.cat(parts, dim)

    @staticmethod
    def backward(ctx, g):
        return g.chunk(ctx.p, ctx.dim)[ctx.rank].contiguous(), None, None, None, None
