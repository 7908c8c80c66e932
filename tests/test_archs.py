"""DeT on every architecture of det_core.arch besides HunyuanVideo (whose own tests are test_patch, test_train and
test_det_nodes): HunyuanVideo 1.5, Wan 2.1 and Wan 2.2 TI2V 5B, as tiny random models saved with the releases' key
names and loaded by ComfyUI's stock UNETLoader; and Wan 2.2 A14B's two experts.

In this process: the adapter sits where det_core.arch says, rebuilt from each block's own sub-modules. Through
the server: a zero adapter is bit-identical to the stock sampler (Apply DeT Motion and Patch Model + KSampler),
training with tracks lowers the loss against the same steps' draws untrained, an interrupted run keeps its
checkpoint and resumes, adapters of another architecture are refused, and the two-expert sampling equals ComfyUI's
two-KSamplerAdvanced split."""

import os

import numpy as np
import pytest
import torch
from safetensors import safe_open

from det_core.adapter import AdapterMeta, DeTAdapter
from det_core.arch import arch_named
from det_tools.client import PromptExecutionError, PromptInterrupted
from det_core.patch import DeTRuntime, forward_patches, install
from devtools.tiny_models import TEXT_WIDTH, TINY, TINY_FILES, TINY_WAN22_LOW_FILE, tiny_transformer, write_tiny
from det_graphs import fetch_latent, load_tracks_node, save_latent, train_node
from test_adapter import randomised

ARCHS = ["hunyuan_video_15", "wan21", "wan22_ti2v"]
EMPTY = {"hunyuan_video_15": "EmptyHunyuanVideo15Latent", "wan21": "EmptyHunyuanLatentVideo", "wan22_ti2v": None}
FRAMES, H, W = 13, 6, 8  # reference latent (49 frames)
SHIFT = 7.0


# -- in this process ------------------------------------------------------------------------------------------

def adapter_for(arch_name, blocks, seed=None, channels=256):
    a = DeTAdapter(AdapterMeta(channels=channels, mid_dim=16, kernel_size=3, blocks=blocks, base_model=arch_name))
    return randomised(a, seed) if seed is not None else a


def inputs_for(arch_name, seed=0, t=3, h=4, w=6):
    g = torch.Generator().manual_seed(seed)
    arch, cfg = arch_named(arch_name), TINY[arch_name]
    in_ch = cfg.get("in_channels", cfg.get("in_dim"))
    x = torch.randn(1, in_ch, t, h, w, generator=g)
    context = torch.randn(1, 5, TEXT_WIDTH[arch_name], generator=g)
    kwargs = {"guidance": torch.tensor([6.0])} if arch.transformer == "hunyuan_video" else {}
    return x, torch.tensor([500.0]), context, kwargs


def run(model, x, t, context, kwargs):
    with torch.no_grad():
        return model(x.clone(), t, context.clone(), **kwargs)


@pytest.mark.parametrize("arch_name", ARCHS)
def test_zero_adapter_changes_nothing_and_a_trained_one_does(comfy_host, arch_name):
    m = tiny_transformer(0, arch_name)
    args = inputs_for(arch_name)
    ref = run(m, *args)
    kind = arch_named(arch_name).groups[0].kind
    for seed, same in ((None, True), (5, False)):
        runtime = DeTRuntime(adapter_for(arch_name, {kind: [0, 1]}, seed), {kind: [0, 1]})
        remove = install(m, forward_patches(m, runtime))
        out = run(m, *args)
        remove()
        assert torch.equal(out, ref) == same
    assert torch.equal(run(m, *args), ref)  # the patches came off


def test_wan_block_computes_x_plus_gate_times_self_attention_plus_adapter(comfy_host):
    """Wan: x + e2 * (self_attn(x_mod) + strength * adapter(x_mod)), x_mod = norm1(x) * (1 + e1) + e0, then the
    block's cross-attention and feed-forward as they are."""
    m = tiny_transformer(0, "wan21")
    blk = m.blocks[1]
    store = {}
    h = blk.register_forward_pre_hook(lambda mod, a, k: store.update(
        args=[v.clone() if torch.is_tensor(v) else v for v in a],
        kwargs={n: (v.clone() if torch.is_tensor(v) else v) for n, v in k.items()}), with_kwargs=True)
    run(m, *inputs_for("wan21", seed=1, t=3, h=4, w=6))
    h.remove()
    x = store["args"][0] if store["args"] else store["kwargs"]["x"]
    e, freqs, context = store["kwargs"]["e"], store["kwargs"]["freqs"], store["kwargs"]["context"]
    grid = (3, 2, 3)
    adapter = adapter_for("wan21", {"blocks": [1]}, seed=3)
    runtime = DeTRuntime(adapter, {"blocks": [1]}, strength=0.7, grid=grid)
    remove = install(m, forward_patches(m, runtime))
    with torch.no_grad():
        out = blk(x.clone(), e=e, freqs=freqs, context=context)
    remove()
    with torch.no_grad():
        # e: (B, 1, 6, C) from the time embedding, one modulation for every token
        e0, e1, e2, e3, e4, e5 = (blk.modulation.unsqueeze(0) + e).unbind(2)
        x_mod = blk.norm1(x) * (1 + e1) + e0
        delta = 0.7 * adapter.get("blocks", 1)(x_mod, grid)
        y = x + e2 * (blk.self_attn(x_mod, freqs) + delta)
        y = y + blk.cross_attn(blk.norm3(y), context, context_img_len=None)
        ref = y + e5 * blk.ffn(blk.norm2(y) * (1 + e4) + e3)
    assert delta.abs().max() > 1e-3, "the test adapter must not be a no-op"
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_hunyuan_video_15_double_block_places_the_adapter_as_hunyuan_video(comfy_host):
    """HunyuanVideo 1.5: img + gate * (proj(attn) + adapter(x_mod)) on its 1 x 1-patch tokens."""
    m = tiny_transformer(0, "hunyuan_video_15")
    blk = m.double_blocks[1]
    store = {}

    def keep(name):
        return lambda mod, a, k, o=None: store.update({name: (
            [v.clone() if torch.is_tensor(v) else v for v in a],
            {n: (v.clone() if torch.is_tensor(v) else v) for n, v in k.items()}, o)})

    hooks = [blk.register_forward_pre_hook(keep("blk"), with_kwargs=True),
             blk.img_attn.qkv.register_forward_pre_hook(keep("qkv"), with_kwargs=True),
             blk.img_attn.proj.register_forward_hook(keep("proj"), with_kwargs=True)]
    run(m, *inputs_for("hunyuan_video_15", seed=2, t=3, h=4, w=6))
    for hk in hooks:
        hk.remove()
    kwargs = store["blk"][1]
    grid = (3, 4, 6)  # 1 x 1 patches: one token per latent cell
    adapter = adapter_for("hunyuan_video_15", {"double": [1]}, seed=4)
    remove = install(m, forward_patches(m, DeTRuntime(adapter, {"double": [1]}, grid=grid)))
    with torch.no_grad():
        img_out, _ = blk(**{k: (v.clone() if torch.is_tensor(v) else v) for k, v in kwargs.items()})
    remove()
    with torch.no_grad():
        mod1, mod2 = blk.img_mod(kwargs["vec"])
        delta = adapter.get("double", 1)(store["qkv"][0][0], grid)
        ref = kwargs["img"] + mod1.gate * (store["proj"][2] + delta)
        ref = ref + mod2.gate * blk.img_mlp(blk.img_norm2(ref) * (1 + mod2.scale) + mod2.shift)
    assert delta.abs().max() > 1e-3
    torch.testing.assert_close(img_out, ref, rtol=1e-5, atol=1e-5)


# -- through the server ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def arch_models(comfy_base):
    """The tiny models in the session server's models/diffusion_models (removed afterwards: other tests look at
    that folder), and its adapters folder."""
    folder = os.path.join(comfy_base, "models", "diffusion_models")
    written = [write_tiny(name, os.path.join(folder, TINY_FILES[name]), seed=0) for name in ARCHS]
    written.append(write_tiny("wan21", os.path.join(folder, TINY_WAN22_LOW_FILE), seed=1))
    adapters = os.path.join(comfy_base, "models", "det_adapters")
    os.makedirs(adapters, exist_ok=True)
    yield adapters
    for path in written:
        os.remove(path)


def nodes(arch_name, model_file=None) -> dict:
    arch = arch_named(arch_name)
    width = TEXT_WIDTH[arch_name]
    g = {"model": {"class_type": "UNETLoader", "inputs": {"unet_name": model_file or TINY_FILES[arch_name],
                                                          "weight_dtype": "default"}},
         "cond": {"class_type": "DeTTestConditioning", "inputs": {"seed": 1, "tokens": 6, "width": width, "guidance": 6.0}},
         "cond2": {"class_type": "DeTTestConditioning", "inputs": {"seed": 2, "tokens": 7, "width": width, "guidance": 6.0}},
         "ref": {"class_type": "DeTTestLatent", "inputs": {"seed": 0, "frames": FRAMES, "height": H, "width": W,
                                                           "channels": arch.latent_channels}}}
    sc = arch.spatial_compression
    if EMPTY[arch_name]:
        g["empty"] = {"class_type": EMPTY[arch_name], "inputs": {"width": 8 * sc, "height": 6 * sc, "length": 9,
                                                                 "batch_size": 1}}
    else:  # Wan 2.2's latent node needs its (untiny-able) VAE; a seeded latent of the same shape stands in
        g["empty"] = {"class_type": "DeTTestLatent", "inputs": {"seed": 9, "frames": 3, "height": 6, "width": 8,
                                                                "channels": arch.latent_channels}}
    return g


def write_adapter(folder, arch_name, name, seed=None, blocks=(0, 1)):
    kind = arch_named(arch_name).groups[0].kind
    a = adapter_for(arch_name, {kind: list(blocks)})
    if seed is not None:
        randomised(a, seed, std=0.3)
    return a.save(os.path.join(folder, name))


def apply(model=("model", 0), adapter=("ad", 0), steps=3, **extra):
    inputs = {"model": list(model), "adapter": list(adapter), "positive": ["cond2", 0], "latent": ["empty", 0],
              "seed": 5, "steps": steps, "guidance": 6.0, "cfg": 1.0, "flow_shift": SHIFT, "sampler_name": "euler",
              "scheduler": "simple", "strength": 1.0, "double_blocks": "trained", "single_blocks": "trained",
              "keep_fraction": 1.0}
    inputs.update(extra)
    return {"class_type": "DeTApplyMotion", "inputs": inputs}


def shifted(model):
    return {"class_type": "ModelSamplingSD3", "inputs": {"model": list(model), "shift": SHIFT}}


def ksampler_advanced(model, latent, start, end, add_noise, leftover, steps=3):
    return {"class_type": "KSamplerAdvanced", "inputs": {
        "model": list(model), "add_noise": add_noise, "noise_seed": 5, "steps": steps, "cfg": 1.0,
        "sampler_name": "euler", "scheduler": "simple", "positive": ["cond2", 0], "negative": ["cond2", 0],
        "latent_image": list(latent), "start_at_step": start, "end_at_step": end, "return_with_leftover_noise": leftover}}


def load_adapter(name):
    return {"class_type": "DeTLoadAdapter", "inputs": {"adapter_name": name}}


@pytest.mark.parametrize("arch_name", ARCHS)
def test_zero_adapter_is_bit_identical_to_the_stock_sampler(comfy, arch_models, arch_name):
    write_adapter(arch_models, arch_name, f"{arch_name}_zero.safetensors")
    write_adapter(arch_models, arch_name, f"{arch_name}_rnd.safetensors", seed=1)
    g = nodes(arch_name)
    stock = dict(g, ms=shifted(("model", 0)), ks=ksampler_advanced(("ms", 0), ("empty", 0), 0, 10000, "enable", "disable"),
                 out=save_latent(("ks", 0), f"{arch_name}_stock"))
    ref = fetch_latent(comfy, comfy.run(stock), "out")
    det = dict(g, ad=load_adapter(f"{arch_name}_zero.safetensors"), apply=apply(),
               out=save_latent(("apply", 0), f"{arch_name}_zero"),
               patch={"class_type": "DeTPatchModel", "inputs": {"model": ["model", 0], "adapter": ["ad", 0],
                      "strength": 1.0, "double_blocks": "trained", "single_blocks": "trained", "keep_fraction": 1.0}},
               ms=shifted(("patch", 0)), ks=ksampler_advanced(("ms", 0), ("empty", 0), 0, 10000, "enable", "disable"),
               out2=save_latent(("ks", 0), f"{arch_name}_zero_patch"))
    result = comfy.run(det)
    assert torch.equal(fetch_latent(comfy, result, "out"), ref)
    assert torch.equal(fetch_latent(comfy, result, "out2"), ref)
    rnd = dict(g, ad=load_adapter(f"{arch_name}_rnd.safetensors"), apply=apply(),
               out=save_latent(("apply", 0), f"{arch_name}_rnd"))
    moved = fetch_latent(comfy, comfy.run(rnd), "out")
    assert torch.isfinite(moved).all() and (moved - ref).abs().max() > 1e-3


def tracks_file(input_dir, name="archs_blob.npy"):
    """Tracks of the blob DeTTestLatent draws (left to right along the middle row), on its 13 latent frames."""
    t = np.arange(FRAMES)[:, None]
    xs = (W - 1) * t / (FRAMES - 1) + np.linspace(-0.8, 0.8, 5)[None]  # latent cells
    ys = np.full_like(xs, H / 2) + np.linspace(-0.5, 0.5, 5)[None]
    arr = np.stack([(xs + 0.5) / W, (ys + 0.5) / H, np.ones_like(xs)], -1).astype(np.float32)  # x/W, y/H, visible
    np.save(os.path.join(input_dir, name), arr)
    return name


def train_graph(arch_name, input_dir, tracks=True, **kw):
    g = nodes(arch_name)
    arch = arch_named(arch_name)
    if tracks:
        g["tracks"] = load_tracks_node(tracks_file(input_dir), width=W * arch.spatial_compression,
                                       height=H * arch.spatial_compression)
    overrides = dict(feature_block=f"{arch.groups[0].kind}:1", checkpoint_every=5)
    overrides.update(kw)
    g["train"] = train_node(tracks=["tracks", 0] if tracks else None, **overrides)
    g["info"] = {"class_type": "PreviewAny", "inputs": {"source": ["train", 2]}}
    return g


def train_log(folder, name):
    return torch.load(os.path.join(folder, f"{name}.optim.pt"), weights_only=True)["log"]


@pytest.mark.parametrize("arch_name", ARCHS)
def test_training_with_tracks_lowers_the_loss(comfy, arch_models, input_dir, arch_name):
    """The same seed draws the same noise level and noise at each step, so a run at a learning rate too small to
    move the adapter gives each step's loss untrained: the trained run's losses over its last steps are lower."""
    steps = 30
    result = comfy.run(train_graph(arch_name, input_dir, output_name=f"{arch_name}_fit", steps=steps,
                                   overwrite=True, tracking_max_timestep=1000.0), timeout=600)
    comfy.run(train_graph(arch_name, input_dir, output_name=f"{arch_name}_still", steps=steps, overwrite=True,
                          learning_rate=1e-8, tracking_max_timestep=1000.0), timeout=600)
    fit, still = train_log(arch_models, f"{arch_name}_fit"), train_log(arch_models, f"{arch_name}_still")
    assert [e["timestep"] for e in fit] == [e["timestep"] for e in still]
    assert all(e["track"] is not None for e in fit), "the tracking loss runs on every step with the gate at 1000"
    late = slice(steps - 10, steps)
    trained = np.mean([e["loss"] for e in fit][late])
    untrained = np.mean([e["loss"] for e in still][late])
    assert trained < 0.9 * untrained, (trained, untrained)
    path = os.path.join(arch_models, f"{arch_name}_fit.safetensors")
    with safe_open(path, "pt") as f:
        md, keys = f.metadata(), set(f.keys())
    arch = arch_named(arch_name)
    assert md["det.base_model"] == arch_name and md["det.channels"] == "256"
    prefix = arch.groups[0].attr
    assert keys == {f"{prefix}.{i}.{w}.weight" for i in (0, 1) for w in ("down", "up")}
    info = result.outputs["info"]["text"][0]
    assert f"DeT adapter ({arch_name})" in info
    # Wan: the DeT author found DeT does not run properly there; the info says so and where to look first
    said = "experimental on Wan" in info and "Attention Locality (DeT)" in info and "DeT issue #2" in info
    assert said == (arch.transformer == "wan"), info


@pytest.mark.parametrize("arch_name", ARCHS)
def test_interrupt_keeps_a_checkpoint_and_resume_continues(comfy, arch_models, input_dir, arch_name):
    name = f"{arch_name}_interrupted"

    def stop_after_three(mtype, data):
        if mtype == "det.train" and data["step"] == 3:
            comfy.interrupt()

    with pytest.raises(PromptInterrupted):
        comfy.run(train_graph(arch_name, input_dir, tracks=False, output_name=name, steps=100000, checkpoint_every=0,
                              overwrite=True), on_message=stop_after_three, timeout=300)
    path = os.path.join(arch_models, f"{name}.safetensors")
    done = DeTAdapter.load(path).meta.steps
    assert 3 <= done < 1000 and len(train_log(arch_models, name)) == done
    result = comfy.run(train_graph(arch_name, input_dir, tracks=False, output_name=name, steps=done + 3,
                                   resume_from=f"{name}.safetensors"))
    assert [d["step"] for t, d in result.messages if t == "det.train"] == [done + 1, done + 2, done + 3]
    assert [e["step"] for e in train_log(arch_models, name)] == list(range(1, done + 4))


def test_adapters_of_another_architecture_are_refused_by_name(comfy, arch_models, input_dir):
    write_adapter(arch_models, "hunyuan_video_15", "hv15_on_wan.safetensors", seed=2)
    g = dict(nodes("wan21"), ad=load_adapter("hv15_on_wan.safetensors"), apply=apply(),
             out=save_latent(("apply", 0), "wrong_arch"))
    with pytest.raises(PromptExecutionError, match=r"trained on hunyuan_video_15 \(hidden size 256\), the model is "
                                                   r"wan21 \(hidden size 256\)"):
        comfy.run(g)
    g = train_graph("wan21", input_dir, tracks=False, output_name="wan_resumes_hv15", steps=5,
                    resume_from="hv15_on_wan.safetensors")
    with pytest.raises(PromptExecutionError, match="trained on hunyuan_video_15"):
        comfy.run(g)
    g = train_graph("wan21", input_dir, tracks=False, output_name="wan_single", steps=2, single_blocks="0")
    with pytest.raises(PromptExecutionError, match="single_blocks='0': Wan 2.1 has one list of blocks"):
        comfy.run(g)


def test_wan22_two_experts_sample_as_comfyuis_two_sampler_split(comfy, arch_models, input_dir):
    """Wan 2.2 A14B: the high-noise expert (with the adapter) samples the steps whose sigma is at least the boundary,
    the low-noise expert the rest; with a zero adapter that is bit for bit the stock two-KSamplerAdvanced graph.
    The high-noise expert's adapter trains on its own noise range."""
    steps, boundary = 6, 0.875
    write_adapter(arch_models, "wan21", "wan22_high_zero.safetensors")
    g = nodes("wan21")
    g["low"] = {"class_type": "UNETLoader", "inputs": {"unet_name": TINY_WAN22_LOW_FILE, "weight_dtype": "default"}}
    from comfy.samplers import calculate_sigmas  # (plain `import comfy...` would hide the `comfy` client)

    from det_core.comfy_models import flow_sampling

    sigmas = calculate_sigmas(flow_sampling(SHIFT), "simple", steps)
    switch = int((sigmas[:steps] >= boundary).sum())  # Wan 2.2: the high-noise expert while sigma >= boundary
    assert 0 < switch < steps
    stock = dict(g, hi=shifted(("model", 0)), lo=shifted(("low", 0)),
                 k1=ksampler_advanced(("hi", 0), ("empty", 0), 0, switch, "enable", "enable", steps),
                 k2=ksampler_advanced(("lo", 0), ("k1", 0), switch, 10000, "disable", "disable", steps),
                 out=save_latent(("k2", 0), "wan22_stock"))
    ref = fetch_latent(comfy, comfy.run(stock), "out")
    det = dict(g, ad=load_adapter("wan22_high_zero.safetensors"),
               apply=apply(steps=steps, low_noise_model=["low", 0], boundary=boundary),
               out=save_latent(("apply", 0), "wan22_det"))
    assert torch.equal(fetch_latent(comfy, comfy.run(det), "out"), ref)
    only_high = dict(g, ms=shifted(("model", 0)),
                     ks=ksampler_advanced(("ms", 0), ("empty", 0), 0, 10000, "enable", "disable", steps),
                     out=save_latent(("ks", 0), "wan22_high_only"))
    assert not torch.equal(fetch_latent(comfy, comfy.run(only_high), "out"), ref)  # the low expert did take over
    # the high-noise expert's adapter: trained only at timesteps >= 875, with the tracking loss on that range
    comfy.run(train_graph("wan21", input_dir, output_name="wan22_high", steps=8, overwrite=True, timestep_min=875.0,
                          tracking_max_timestep=1000.0))
    log = train_log(arch_models, "wan22_high")
    assert min(e["timestep"] for e in log) >= 875 and all(e["track"] is not None for e in log)
    with pytest.raises(PromptExecutionError, match="the tracking loss would never run"):
        comfy.run(train_graph("wan21", input_dir, output_name="wan22_gate", steps=2, overwrite=True,
                              timestep_min=875.0))
    trained = dict(g, ad=load_adapter("wan22_high.safetensors"),
                   apply=apply(steps=steps, low_noise_model=["low", 0], boundary=boundary),
                   out=save_latent(("apply", 0), "wan22_trained"))
    out = fetch_latent(comfy, comfy.run(trained), "out")
    assert torch.isfinite(out).all() and not torch.equal(out, ref)


def test_wan_low_vram_options_and_memory_auto_train_the_same_adapter(comfy, arch_models, input_dir):
    """Wan blocks take their activations positionally (HunyuanVideo's by keyword): streaming the last block from
    CPU RAM and parking each block's input in CPU RAM give the adapter plain training gives, and memory=auto plans
    for the Wan model it was given."""
    common = dict(tracks=False, steps=3, overwrite=True, optimizer="adamw")
    comfy.run(train_graph("wan21", input_dir, output_name="wan_plain", memory="manual", **common))
    low = comfy.run(train_graph("wan21", input_dir, output_name="wan_low", memory="manual", swap_blocks=1,
                                offload_activations=True, **common))
    assert "1 blocks" in low.outputs["info"]["text"][0]
    auto = comfy.run(train_graph("wan21", input_dir, output_name="wan_auto", memory="auto", vram_budget_gib=80.0,
                                 **common))
    assert "memory auto (80.0 GiB): bf16, predicted training peak" in auto.outputs["info"]["text"][0]
    a = DeTAdapter.load(os.path.join(arch_models, "wan_plain.safetensors")).state_dict()
    for other in ("wan_low", "wan_auto"):
        b = DeTAdapter.load(os.path.join(arch_models, f"{other}.safetensors")).state_dict()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_an_adapter_on_another_transformer_is_refused_in_plain_python(comfy_host):
    from det_core.adapter import AdapterMismatch

    hv = tiny_transformer(0, "hunyuan_video")
    with pytest.raises(AdapterMismatch, match="trained on wan21 \\(WanModel\\), the transformer is HunyuanVideo"):
        forward_patches(hv, DeTRuntime(adapter_for("wan21", {"blocks": [0]}), {"blocks": [0]}))
    with pytest.raises(AdapterMismatch, match="hidden size 256, the model has 128"):
        forward_patches(hv, DeTRuntime(adapter_for("hunyuan_video", {"double": [0]}), {"double": [0]}))
