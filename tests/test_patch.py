"""det_core.patch on ComfyUI's own HunyuanVideo transformer (tiny, in this process): the adapter sits exactly
where DeT puts it, leaves text tokens alone, starts as a no-op, and comes off cleanly."""

import pytest
import torch

from conftest import tiny_inputs
from det_core.adapter import AdapterMeta, DeTAdapter
from det_core.patch import DeTRuntime, forward_patches, install
from test_adapter import randomised


def run(model, inputs):
    with torch.no_grad():
        i = {k: v.clone() for k, v in inputs.items()}
        return model(i["x"], i["timestep"], i["context"], y=i["y"], guidance=i["guidance"])


def adapter_for(blocks, seed=None):
    a = DeTAdapter(AdapterMeta(channels=128, mid_dim=16, kernel_size=3, blocks=blocks))
    return randomised(a, seed) if seed is not None else a


def capture(module, kind="input", store=None):
    """Hook that keeps a sub-module's input or output (from the unpatched model)."""
    store = {} if store is None else store

    def hook(mod, args, kwargs, out=None):
        # clones: the blocks add their residuals in place
        store["in_args"] = [a.clone() if torch.is_tensor(a) else a for a in args]
        store["in_kwargs"] = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in kwargs.items()}
        if out is not None:
            store["out"] = out
    if kind == "input":
        return store, module.register_forward_pre_hook(lambda m, a, k: hook(m, a, k), with_kwargs=True)
    return store, module.register_forward_hook(lambda m, a, k, o: hook(m, a, k, o), with_kwargs=True)


def test_zero_initialised_adapter_changes_nothing(tiny_transformer):
    inputs = tiny_inputs()
    ref = run(tiny_transformer, inputs)
    runtime = DeTRuntime(adapter_for({"double": [0, 1], "single": [0, 1]}), {"double": [0, 1], "single": [0, 1]})
    remove = install(tiny_transformer, forward_patches(tiny_transformer, runtime))
    assert torch.equal(run(tiny_transformer, inputs), ref)
    remove()


def test_double_block_computes_img_plus_gate_times_proj_plus_adapter(tiny_transformer):
    m, inputs = tiny_transformer, tiny_inputs(seed=1)
    blk = m.double_blocks[1]
    # 1. the unpatched block: its inputs, its attention output projection, its outputs
    blk_in, h1 = capture(blk, "input")
    qkv_in, h2 = capture(blk.img_attn.qkv, "input")
    proj_out, h3 = capture(blk.img_attn.proj, "output")
    blk_out, h4 = capture(blk, "output")
    run(m, inputs)
    for h in (h1, h2, h3, h4):
        h.remove()
    img, vec = blk_in["in_kwargs"]["img"], blk_in["in_kwargs"]["vec"]
    x_mod, attn_proj = qkv_in["in_args"][0], proj_out["out"]
    # 2. the patched block on the same inputs
    adapter = adapter_for({"double": [1]}, seed=3)
    runtime = DeTRuntime(adapter, {"double": [1]}, strength=0.7, grid=(3, 3, 4))
    remove = install(m, forward_patches(m, runtime))
    kwargs = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in blk_in["in_kwargs"].items()}
    with torch.no_grad():
        img_out, txt_out = blk(**kwargs)
    remove()
    # 3. the reference formula from the block's own sub-modules
    with torch.no_grad():
        mod1, mod2 = blk.img_mod(vec)
        delta = 0.7 * adapter.get("double", 1)(x_mod, (3, 3, 4))
        ref = img + mod1.gate * (attn_proj + delta)
        ref = ref + mod2.gate * blk.img_mlp(blk.img_norm2(ref) * (1 + mod2.scale) + mod2.shift)
    assert delta.abs().max() > 1e-3, "the test adapter must not be a no-op"
    torch.testing.assert_close(img_out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(txt_out, blk_out["out"][1], rtol=0, atol=0)  # text stream untouched


def test_single_block_adds_the_adapter_to_the_video_attention_part_of_linear2(tiny_transformer):
    m, inputs = tiny_transformer, tiny_inputs(seed=2)
    blk = m.single_blocks[0]
    blk_in, h1 = capture(blk, "input")
    l1_in, h2 = capture(blk.linear1, "input")
    l2_in, h3 = capture(blk.linear2, "input")
    run(m, inputs)
    for h in (h1, h2, h3):
        h.remove()
    x = blk_in["in_args"][0] if blk_in["in_args"] else blk_in["in_kwargs"]["x"]
    vec = blk_in["in_kwargs"]["vec"]
    n_video = 3 * 3 * 4
    adapter = adapter_for({"single": [0]}, seed=4)
    runtime = DeTRuntime(adapter, {"single": [0]}, grid=(3, 3, 4))
    remove = install(m, forward_patches(m, runtime))
    args = [a.clone() if torch.is_tensor(a) else a for a in blk_in["in_args"]]
    with torch.no_grad():
        out = blk(*args, **blk_in["in_kwargs"])
    remove()
    with torch.no_grad():
        mod, _ = blk.modulation(vec)
        delta = adapter.get("single", 0)(l1_in["in_args"][0][:, :n_video], (3, 3, 4))  # B L_img C
        z = l2_in["in_args"][0].clone()
        z[:, :n_video, :128] += delta
        ref = x + mod.gate * blk.linear2(z)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # text tokens of this block's input to linear2 were not changed: only the first n_video rows differ
    assert torch.equal((z - l2_in["in_args"][0])[:, n_video:], torch.zeros_like(z[:, n_video:]))


def test_one_adapter_at_two_sizes_and_frame_counts(tiny_transformer):
    adapter = adapter_for({"double": [0, 1]}, seed=5)
    runtime = DeTRuntime(adapter, {"double": [0, 1]})
    remove = install(tiny_transformer, forward_patches(tiny_transformer, runtime))
    for (t, h, w) in [(3, 6, 8), (5, 4, 10)]:
        inputs = tiny_inputs(t, h, w)
        out = run(tiny_transformer, inputs)
        assert out.shape == inputs["x"].shape and torch.isfinite(out).all()
        assert runtime.grid == (t, h // 2, w // 2)
    remove()


def test_patches_come_off_and_check_the_model(tiny_transformer):
    inputs = tiny_inputs()
    ref = run(tiny_transformer, inputs)
    runtime = DeTRuntime(adapter_for({"double": [0]}, seed=6), {"double": [0]})
    remove = install(tiny_transformer, forward_patches(tiny_transformer, runtime))
    assert not torch.equal(run(tiny_transformer, inputs), ref)
    remove()
    assert torch.equal(run(tiny_transformer, inputs), ref)
    assert "forward" not in tiny_transformer.double_blocks[0].img_attn.qkv.__dict__
    with pytest.raises(ValueError, match=r"double-stream block 1 has no trained adapter; trained: \[0\]"):
        forward_patches(tiny_transformer, DeTRuntime(adapter_for({"double": [0]}), {"double": [0, 1]}))
    wide = DeTAdapter(AdapterMeta(channels=3072, mid_dim=4, blocks={"double": [0]}))
    with pytest.raises(ValueError, match="hidden size 3072, the model has 128"):
        forward_patches(tiny_transformer, DeTRuntime(wide, {"double": [0]}))


def test_training_gradient_equals_finite_differences(tiny_transformer):
    """The training path (every block checkpointed) gives the true gradient. ComfyUI's blocks add residuals in place
    into tensors their LayerNorms saved; under checkpointing nothing checks that, so before the out-of-place fix the
    adapter's gradient was silently wrong (and pretraining a model through the same path collapsed)."""
    m = tiny_transformer.double()
    # ComfyUI computes the rotary table in float32 (comfy.ldm.flux.math.rope) and rounds q and k to it: steps of
    # float32 size in the loss, which the central difference divides by eps (with the float32 table the numeric
    # derivative did not settle as eps shrank, and the check failed on an AVX-512 machine). In double it settles.
    m.pe_embedder.register_forward_hook(lambda module, args, table: table.double())
    inputs = {k: v.double() for k, v in tiny_inputs(seed=3).items()}
    adapter = adapter_for({"double": [0, 1], "single": [0, 1]}, seed=4).double()
    runtime = DeTRuntime(adapter, {"double": [0, 1], "single": [0, 1]})
    remove = install(m, forward_patches(m, runtime, mode="train"))
    g = torch.Generator().manual_seed(5)
    direction = {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in adapter.named_parameters()}

    def loss():
        i = {k: v.clone() for k, v in inputs.items()}
        out = m(i["x"], i["timestep"], i["context"], y=i["y"], guidance=i["guidance"])
        return out.pow(2).sum()

    def shifted(eps):
        with torch.no_grad():
            for n, p in adapter.named_parameters():
                p.add_(eps * direction[n])

    for p in adapter.parameters():
        p.requires_grad_(True)
    loss().backward()
    analytic = sum(float((p.grad * direction[n]).sum()) for n, p in adapter.named_parameters())
    with torch.no_grad():
        eps = 1e-5  # the truncation error is about 1e-8 of the derivative here (1e-6 at eps 1e-4)
        shifted(eps)
        up = float(loss())
        shifted(-2 * eps)
        down = float(loss())
        shifted(eps)
    remove()
    numeric = (up - down) / (2 * eps)
    assert abs(analytic - numeric) <= 1e-6 * abs(numeric), (analytic, numeric)
