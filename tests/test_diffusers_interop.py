"""DeT on diffusers' transformers (det_core.diffusers_interop), checked against the ComfyUI path on the same weights.

Tiny models of each architecture are built in both libraries: ComfyUI's from the pack's tiny configurations with
seeded weights, diffusers' from the same weights mapped by diffusers' own conversion functions from the original
release's key names (HunyuanVideo's single-block split is hard-coded to width 3072 there, so the tiny model's
`linear1` is split here first). One forward each with the same latents, timestep and unpadded text (HunyuanVideo's
guidance x 1000 on the diffusers side, as its pipeline passes it): equal within 1e-4 without an adapter, then with
a random non-zero one attached by each path; a zero up-projection gives the base output exactly. HunyuanVideo 1.5
has no conversion function in diffusers: its hooks are checked on diffusers' model alone."""

import pytest
import torch

from det_core.adapter import AdapterMeta, AdapterMismatch, DeTAdapter
from det_core.diffusers_interop import apply_det
from det_core.patch import DeTRuntime, forward_patches, install

diffusers = pytest.importorskip("diffusers", reason="diffusers is installed by make setup (requirements-dev.txt)")


def random_adapter(arch, channels, blocks, seed=0, zero_up=False):
    a = DeTAdapter(AdapterMeta(channels=channels, mid_dim=8, kernel_size=3, blocks=blocks, base_model=arch))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in a.named_parameters():
            p.copy_(torch.zeros_like(p) if zero_up and ".up." in name else 0.05 * torch.randn(p.shape, generator=g))
    return a


def comfy_hv(comfy_host):
    from devtools.tiny_models import tiny_transformer

    return tiny_transformer(0, "hunyuan_video")


def diffusers_hv(comfy_model):
    """diffusers' HunyuanVideo with the ComfyUI model's weights (original names -> diffusers' converter)."""
    from diffusers import HunyuanVideoTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_hunyuan_video_transformer_to_diffusers

    from devtools.tiny_models import TINY_HV
    from miniworld.model import to_original

    original = to_original(comfy_model.state_dict(), TINY_HV)
    c = TINY_HV["hidden_size"]
    sd = dict(original)
    for key in [k for k in sd if ".linear1." in k]:  # the converter splits at width 3072: split the tiny width here
        w = sd.pop(key)
        block = key.replace("single_blocks", "single_transformer_blocks").rsplit(".linear1.", 1)[0]
        suffix = key.rsplit(".", 1)[1]
        q, k_, v, mlp = torch.split(w, (c, c, c, w.shape[0] - 3 * c), dim=0)
        for name, t in (("attn.to_q", q), ("attn.to_k", k_), ("attn.to_v", v), ("proj_mlp", mlp)):
            sd[f"{block}.{name}.{suffix}"] = t
    converted = convert_hunyuan_video_transformer_to_diffusers(sd)
    model = HunyuanVideoTransformer3DModel(
        in_channels=16, out_channels=16, num_attention_heads=TINY_HV["num_heads"], attention_head_dim=128,
        num_layers=TINY_HV["depth"], num_single_layers=TINY_HV["depth_single_blocks"], num_refiner_layers=2,
        mlp_ratio=4.0, patch_size=2, patch_size_t=1, qk_norm="rms_norm", guidance_embeds=True,
        text_embed_dim=TINY_HV["context_in_dim"], pooled_projection_dim=768, rope_theta=256.0,
        rope_axes_dim=tuple(TINY_HV["axes_dim"]))
    missing, unexpected = model.load_state_dict(converted, strict=False)
    assert not missing and not unexpected, (missing[:5], unexpected[:5])
    return model.eval().requires_grad_(False)


def hv_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(x=torch.randn(1, 16, 3, 4, 6, generator=g), t=torch.tensor([600.0]),
                text=torch.randn(1, 5, 32, generator=g), pooled=torch.randn(1, 768, generator=g), guidance=6.0)


def run_comfy_hv(model, i):
    with torch.no_grad():
        return model(i["x"], i["t"], i["text"], i["pooled"], guidance=torch.tensor([i["guidance"]]))


def run_diffusers_hv(model, i):
    with torch.no_grad():
        return model(hidden_states=i["x"], timestep=i["t"], encoder_hidden_states=i["text"],
                     encoder_attention_mask=torch.ones(1, i["text"].shape[1]), pooled_projections=i["pooled"],
                     guidance=torch.tensor([i["guidance"] * 1000.0]), return_dict=False)[0]


def test_hunyuan_video_parity_without_and_with_an_adapter(comfy_host):
    comfy_model = comfy_hv(comfy_host)
    model = diffusers_hv(comfy_model)
    i = hv_inputs()
    ref = run_comfy_hv(comfy_model, i)
    torch.testing.assert_close(run_diffusers_hv(model, i), ref, rtol=1e-4, atol=1e-4)
    blocks = {"double": [0, 1], "single": [1]}
    adapter = random_adapter("hunyuan_video", 128, blocks, seed=1)
    remove = install(comfy_model, forward_patches(comfy_model, DeTRuntime(adapter, blocks, 0.7)))
    want = run_comfy_hv(comfy_model, i)
    remove()
    assert (want - ref).abs().max() > 1e-3  # the adapter changes the output
    hooks = apply_det(model, adapter, strength=0.7)
    got = run_diffusers_hv(model, i)
    assert hooks.grids[0][0] == (3, 2, 3)  # read from the latent at run time
    hooks.remove()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    base = run_diffusers_hv(model, i)
    torch.testing.assert_close(base, ref, rtol=1e-4, atol=1e-4)  # the hooks came off
    zero = apply_det(model, random_adapter("hunyuan_video", 128, blocks, seed=2, zero_up=True))
    assert torch.equal(run_diffusers_hv(model, i), base)  # a zero up-projection: the base output exactly
    zero.remove()


def comfy_wan(seed=0, arch="wan21"):
    from devtools.tiny_models import tiny_transformer

    return tiny_transformer(seed, arch)


def diffusers_wan(comfy_model, in_channels=16):
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    from devtools.tiny_models import TINY_WAN21

    converted = convert_wan_transformer_to_diffusers(dict(comfy_model.state_dict()))
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=TINY_WAN21["num_heads"], attention_head_dim=128,
        in_channels=in_channels, out_channels=in_channels, text_dim=TINY_WAN21["text_dim"],
        freq_dim=TINY_WAN21["freq_dim"], ffn_dim=TINY_WAN21["ffn_dim"], num_layers=TINY_WAN21["num_layers"],
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    assert not missing and not unexpected, (missing[:5], unexpected[:5])
    return model.eval().requires_grad_(False)


def wan_inputs(seed=0, channels=16):
    g = torch.Generator().manual_seed(seed)
    return dict(x=torch.randn(1, channels, 3, 4, 6, generator=g), t=torch.tensor([600.0]),
                text=torch.randn(1, 7, 4096, generator=g))


def run_comfy_wan(model, i):
    with torch.no_grad():
        return model(i["x"], i["t"], i["text"])


def run_diffusers_wan(model, i):
    with torch.no_grad():
        return model(hidden_states=i["x"], timestep=i["t"], encoder_hidden_states=i["text"], return_dict=False)[0]


@pytest.mark.parametrize("arch, channels", [("wan21", 16), ("wan22_ti2v", 48)])
def test_wan_parity_without_and_with_an_adapter(comfy_host, arch, channels):
    comfy_model = comfy_wan(0, arch)
    model = diffusers_wan(comfy_model, channels)
    i = wan_inputs(0, channels)
    ref = run_comfy_wan(comfy_model, i)
    torch.testing.assert_close(run_diffusers_wan(model, i), ref, rtol=1e-4, atol=1e-4)
    blocks = {"blocks": [0, 1]}
    adapter = random_adapter(arch, 256, blocks, seed=3)
    remove = install(comfy_model, forward_patches(comfy_model, DeTRuntime(adapter, blocks, 1.0)))
    want = run_comfy_wan(comfy_model, i)
    remove()
    assert (want - ref).abs().max() > 1e-3
    hooks = apply_det(model, adapter)
    torch.testing.assert_close(run_diffusers_wan(model, i), want, rtol=1e-4, atol=1e-4)
    hooks.remove()
    base = run_diffusers_wan(model, i)
    torch.testing.assert_close(base, ref, rtol=1e-4, atol=1e-4)  # the hooks came off
    zero = apply_det(model, random_adapter(arch, 256, blocks, seed=3, zero_up=True))
    assert torch.equal(run_diffusers_wan(model, i), base)
    zero.remove()


def test_wan22_a14b_takes_the_low_noise_adapter_on_transformer_2_and_wrong_adapters_are_refused(comfy_host):
    from types import SimpleNamespace

    high, low = diffusers_wan(comfy_wan(0)), diffusers_wan(comfy_wan(1))
    pipe = SimpleNamespace(transformer=high, transformer_2=low)
    i = wan_inputs(1)
    base_high, base_low = run_diffusers_wan(high, i), run_diffusers_wan(low, i)
    hooks = apply_det(pipe, random_adapter("wan21", 256, {"blocks": [1]}, seed=4),
                      low_noise_adapter=random_adapter("wan21", 256, {"blocks": [0]}, seed=5))
    assert not torch.equal(run_diffusers_wan(high, i), base_high)
    assert not torch.equal(run_diffusers_wan(low, i), base_low)
    hooks.remove()
    only_high = apply_det(pipe, random_adapter("wan21", 256, {"blocks": [1]}, seed=4))
    assert torch.equal(run_diffusers_wan(low, i), base_low)  # without a low-noise adapter the expert is as released
    only_high.remove()
    with pytest.raises(AdapterMismatch, match="trained on hunyuan_video"):
        apply_det(high, random_adapter("hunyuan_video", 256, {"double": [0]}))
    with pytest.raises(AdapterMismatch, match="hidden size 512, the model has 256"):
        apply_det(high, random_adapter("wan21", 512, {"blocks": [0]}))
    with pytest.raises(AdapterMismatch, match="blocks \\[5\\], the model has only 2"):
        apply_det(high, random_adapter("wan21", 256, {"blocks": [5]}))
    with pytest.raises(ValueError, match="needs a pipeline with a transformer_2"):
        apply_det(high, random_adapter("wan21", 256, {"blocks": [0]}),
                  low_noise_adapter=random_adapter("wan21", 256, {"blocks": [0]}))
    assert torch.equal(run_diffusers_wan(high, i), base_high)  # a refused attach leaves no hook behind


def test_hunyuan_video_15_hooks_on_diffusers_model():
    """No conversion function from the release's names exists in diffusers for 1.5: the hooks alone, on a tiny
    diffusers model (zero adapter = the model's output exactly; a random one changes it; the grid is read at run
    time at any size)."""
    from diffusers import HunyuanVideo15Transformer3DModel

    torch.manual_seed(0)
    model = HunyuanVideo15Transformer3DModel(
        in_channels=65, out_channels=32, num_attention_heads=2, attention_head_dim=128, num_layers=2,
        num_refiner_layers=1, mlp_ratio=2.0, patch_size=1, patch_size_t=1, text_embed_dim=32,
        text_embed_2_dim=32, image_embed_dim=64, rope_axes_dim=(16, 56, 56)).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)

    def run(t=3, h=4, w=6):
        with torch.no_grad():
            return model(hidden_states=torch.randn(1, 65, t, h, w, generator=torch.Generator().manual_seed(1)),
                         timestep=torch.tensor([500.0]),
                         encoder_hidden_states=torch.randn(1, 5, 32, generator=g.manual_seed(2)),
                         encoder_attention_mask=torch.ones(1, 5),
                         encoder_hidden_states_2=torch.randn(1, 4, 32, generator=g.manual_seed(3)),
                         encoder_attention_mask_2=torch.ones(1, 4),
                         image_embeds=torch.zeros(1, 3, 64), return_dict=False)[0]

    base = run()
    zero = apply_det(model, random_adapter("hunyuan_video_15", 256, {"double": [0, 1]}, zero_up=True))
    assert torch.equal(run(), base)
    zero.remove()
    hooks = apply_det(model, random_adapter("hunyuan_video_15", 256, {"double": [0, 1]}, seed=7))
    assert not torch.equal(run(), base)
    run(t=2, h=6, w=4)
    assert hooks.grids[0][0] == (2, 6, 4)
    hooks.remove()
    assert torch.equal(run(), base)
