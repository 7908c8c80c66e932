"""ComfyUI's video transformers outside a sampler: importing ComfyUI, the flow-matching sampling object and the x0
predictor that the tests, the benchmarks and the memory planner call. ComfyUI is imported inside the functions, so
this module loads without it. (Inside ComfyUI the nodes go through `BaseModel.apply_model` instead.)"""

from __future__ import annotations

import torch


def use_comfy(host_dir: str) -> None:
    """Make a ComfyUI folder's `comfy` package importable in this process, on the CPU when there is no CUDA (set
    before comfy.model_management is imported: it picks the device at import)."""
    import sys

    if host_dir not in sys.path:
        sys.path.insert(0, host_dir)
    from comfy.cli_args import args  # parsed from an empty list: this process's argv is not ComfyUI's

    if not torch.cuda.is_available():
        args.cpu = True


def flow_sampling(shift: float = 7.0, model_config=None, multiplier: float = 1000):
    """ComfyUI's discrete flow-matching sampling object (what ModelSamplingSD3 sets) with this shift."""
    import comfy.model_sampling as ms

    class FlowSampling(ms.ModelSamplingDiscreteFlow, ms.CONST):
        pass

    sampling = FlowSampling(model_config)
    sampling.set_parameters(shift=shift, multiplier=multiplier)
    return sampling


def x0_predictor(model, sampling, context, pooled=None, guidance: float | None = 6.0,
                 transformer_options: dict | None = None, extra_channels: int = 0):
    """predict_x0(x_t, sigma) for det_core.train, calling the transformer as ComfyUI's apply_model does: the latent
    goes in at the text features' dtype (with `extra_channels` zero condition channels appended, as a text-to-video
    `concat_cond` gives them), the estimate comes back in float32. HunyuanVideo takes the pooled text and the
    embedded guidance; Wan takes neither (pass None)."""
    extra = {} if transformer_options is None else {"transformer_options": transformer_options}
    if pooled is not None:
        extra["y"] = pooled
    if guidance is not None:
        extra["guidance"] = torch.tensor([guidance], device=context.device)

    def predict_x0(x_t, sigma):
        x_in = x_t.to(context.dtype)
        if extra_channels:
            x_in = torch.cat([x_in, x_in.new_zeros(x_in.shape[0], extra_channels, *x_in.shape[2:])], dim=1)
        out = model(x_in, sampling.timestep(sigma).to(x_t.device), context, **extra)
        return x_t - sigma.reshape(-1, *[1] * (x_t.ndim - 1)).to(x_t.device) * out.float()[:, :x_t.shape[1]]

    return predict_x0


def model_conds(base_model, conditioning, guidance: float, latent: torch.Tensor, spatial: int) -> dict:
    """The keyword arguments of `apply_model` for this conditioning and latent, made by the model's own input
    preparation (`extra_conds`: text, pooled text, attention mask, embedded guidance, and `concat_cond`'s extra
    input channels such as HunyuanVideo 1.5's image-condition and mask channels), as a sampler makes them."""
    if not conditioning:
        raise ValueError("the conditioning is empty; connect a text encoder output (the reference caption)")
    cross_attn, extras = conditioning[0]
    params = dict(extras)
    params.update(cross_attn=cross_attn, guidance=guidance, device=latent.device, noise=latent,
                  width=latent.shape[-1] * spatial, height=latent.shape[-2] * spatial, prompt_type="positive")
    out = base_model.extra_conds(**params)
    return {k: (v.cond.clone() if torch.is_tensor(v.cond) else v.cond) for k, v in out.items()}
