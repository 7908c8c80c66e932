"""The DeT nodes through a real ComfyUI server on the tiny HunyuanVideo: sampling with adapters, training,
interrupting and resuming, and the errors users get for bad input."""

import os
import re

import numpy as np
import pytest
import torch
from safetensors import safe_open

from det_core.adapter import AdapterMeta, DeTAdapter
from det_tools.client import PromptExecutionError, PromptInterrupted, PromptValidationError
from det_graphs import apply_node, base_nodes, empty_latent, fetch_latent, load_tracks_node, save_latent, train_node
from test_adapter import randomised


@pytest.fixture(scope="module")
def adapters_dir(comfy_base):
    path = os.path.join(comfy_base, "models", "det_adapters")
    os.makedirs(path, exist_ok=True)
    return path


def write_adapter(folder, name, channels=128, blocks=None, seed=None):
    blocks = blocks or {"double": [0, 1], "single": [0, 1]}
    a = DeTAdapter(AdapterMeta(channels=channels, mid_dim=16, kernel_size=3, blocks=blocks))
    if seed is not None:
        randomised(a, seed, std=0.3)
    return a.save(os.path.join(folder, name))


def load_adapter_node(name):
    return {"class_type": "DeTLoadAdapter", "inputs": {"adapter_name": name}}


def ksampler(model, seed=5, latent=("empty", 0)):
    return {"class_type": "KSampler", "inputs": {"model": list(model), "positive": ["cond2", 0], "negative": ["cond2", 0],
            "latent_image": list(latent), "seed": seed, "steps": 3, "cfg": 1.0, "sampler_name": "euler",
            "scheduler": "simple", "denoise": 1.0}}


def test_zero_adapter_is_bit_identical_and_the_users_model_is_untouched(comfy, adapters_dir):
    write_adapter(adapters_dir, "zero.safetensors")
    write_adapter(adapters_dir, "random.safetensors", seed=1)
    g = base_nodes()
    g["empty"] = empty_latent()
    # 1. the stock sampler on the user's model
    plain = dict(g, ks=ksampler(("model", 0)), out=save_latent(("ks", 0), "plain"))
    ref = fetch_latent(comfy, comfy.run(plain), "out")
    # 2. Apply DeT Motion and Patch Model with a zero adapter: the same latent, bit for bit
    det = dict(g, ad=load_adapter_node("zero.safetensors"), apply=apply_node(("ad", 0)), out=save_latent(("apply", 0), "zero"),
               patch={"class_type": "DeTPatchModel", "inputs": {"model": ["model", 0], "adapter": ["ad", 0], "strength": 1.0,
                      "double_blocks": "trained", "single_blocks": "trained", "keep_fraction": 1.0}},
               ks2=ksampler(("patch", 0)), out2=save_latent(("ks2", 0), "zero_patch"))
    result = comfy.run(det)
    assert torch.equal(fetch_latent(comfy, result, "out"), ref)
    assert torch.equal(fetch_latent(comfy, result, "out2"), ref)
    # 3. a random adapter changes the result
    rnd = dict(g, ad=load_adapter_node("random.safetensors"), apply=apply_node(("ad", 0)), out=save_latent(("apply", 0), "rnd"))
    moved = fetch_latent(comfy, comfy.run(rnd), "out")
    assert torch.isfinite(moved).all() and (moved - ref).abs().max() > 1e-3
    # 4. afterwards the user's model samples exactly as before (a new graph, so nothing comes from the cache)
    again = dict(g, ms={"class_type": "ModelSamplingSD3", "inputs": {"model": ["model", 0], "shift": 7.0}},
                 ks=ksampler(("ms", 0)), out=save_latent(("ks", 0), "again"))
    assert torch.equal(fetch_latent(comfy, comfy.run(again), "out"), ref)


def test_one_adapter_at_two_sizes_and_frame_counts(comfy, adapters_dir):
    write_adapter(adapters_dir, "sizes.safetensors", seed=2)
    g = dict(base_nodes(), ad=load_adapter_node("sizes.safetensors"),
             e1=empty_latent(9, 48, 64), e2=empty_latent(13, 32, 96))
    g.update(a1=apply_node(("ad", 0), ("e1", 0)), a2=apply_node(("ad", 0), ("e2", 0)),
             o1=save_latent(("a1", 0), "s1"), o2=save_latent(("a2", 0), "s2"))
    result = comfy.run(g)
    one, two = fetch_latent(comfy, result, "o1"), fetch_latent(comfy, result, "o2")
    assert tuple(one.shape) == (1, 16, 3, 6, 8) and tuple(two.shape) == (1, 16, 4, 4, 12)
    assert torch.isfinite(one).all() and torch.isfinite(two).all()


def train_graph(tracks_path=None, **train_kw):
    g = base_nodes()
    tracks = None
    if tracks_path:
        g["tracks"] = load_tracks_node(tracks_path)
        tracks = ["tracks", 0]
    g["train"] = train_node(tracks=tracks, **train_kw)
    g["curve"] = {"class_type": "DeTTestInspect", "inputs": {"value": ["train", 1], "label": "curve"}}
    g["info"] = {"class_type": "PreviewAny", "inputs": {"source": ["train", 2]}}
    return g


def test_training_writes_an_adapter_with_metadata_and_a_falling_loss(comfy, adapters_dir, pack_cases):
    tracks = os.path.join(pack_cases, "world-figure-eight", "tracks.npy")
    result = comfy.run(train_graph(tracks, output_name="trained", steps=40), timeout=300)
    path = os.path.join(adapters_dir, "trained.safetensors")
    with safe_open(path, "pt") as f:
        md = f.metadata()
        keys = set(f.keys())
    assert md["det.steps"] == "40" and md["det.base_model"] == "hunyuan_video" and md["det.channels"] == "128"
    assert md["det.mid_dim"] == "16" and md["det.kernel_size"] == "3" and md["det.prompt"] == "a drifting blob"
    assert float(md["det.tracking_weight"]) == pytest.approx(0.1)
    assert keys == {f"double_blocks.{i}.{w}.weight" for i in (0, 1) for w in ("down", "up")}
    log = torch.load(path.replace(".safetensors", ".optim.pt"), weights_only=True)["log"]
    losses = [e["loss"] for e in log]
    assert len(losses) == 40 and np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10]), losses
    assert any(e["track"] is not None for e in log), "no step ran the tracking loss"
    live = [d for t, d in result.messages if t == "det.train"]
    assert [d["step"] for d in live] == list(range(1, 41)) and live[-1]["loss"] == pytest.approx(losses[-1])
    curve = result.outputs["curve"]["text"][0]
    assert '"shape": [1, 320, 640, 3]' in curve
    assert "trained.safetensors" in result.outputs["info"]["text"][0]
    assert "experimental" not in result.outputs["info"]["text"][0]  # only Wan's info warns (test_archs)
    trained = DeTAdapter.load(path)
    assert all(float(m.up.weight.detach().abs().sum()) > 0 for m in trained.double_blocks.values()), "up convs never left zero"


def test_training_on_block_features_and_without_tracks(comfy, adapters_dir, pack_cases):
    tracks = os.path.join(pack_cases, "world-figure-eight", "tracks.npy")
    comfy.run(train_graph(tracks, output_name="features", steps=25, tracking_features="block", feature_block="double:1"))
    log = torch.load(os.path.join(adapters_dir, "features.optim.pt"), weights_only=True)["log"]
    assert any(e["track"] is not None for e in log)
    # on the single-stream blocks only: the placement of the DeT authors' HunyuanVideo training script
    result = comfy.run(train_graph(None, output_name="no_tracks", steps=3, double_blocks="none", single_blocks="all"))
    assert "no TRACKS connected" in result.outputs["info"]["text"][0]
    with safe_open(os.path.join(adapters_dir, "no_tracks.safetensors"), "pt") as f:
        assert float(f.metadata()["det.tracking_weight"]) == 0.0
        assert set(f.keys()) == {f"single_blocks.{i}.{w}.weight" for i in (0, 1) for w in ("down", "up")}
    single = DeTAdapter.load(os.path.join(adapters_dir, "no_tracks.safetensors"))
    assert single.indices("double") == [] and single.indices("single") == [0, 1]
    assert all(float(m.up.weight.detach().abs().sum()) > 0 for m in single.single_blocks.values()), \
        "no gradient reached the single-stream adapters"


def test_interrupt_keeps_a_loadable_checkpoint_and_resume_continues(comfy, adapters_dir):
    def stop_after_five(mtype, data):
        if mtype == "det.train" and data["step"] == 5:
            comfy.interrupt()

    with pytest.raises(PromptInterrupted):
        comfy.run(train_graph(None, output_name="interrupted", steps=100000, checkpoint_every=0),
                  on_message=stop_after_five, timeout=300)
    path = os.path.join(adapters_dir, "interrupted.safetensors")
    done = DeTAdapter.load(path).meta.steps
    assert 5 <= done < 1000
    state = torch.load(path.replace(".safetensors", ".optim.pt"), weights_only=True)
    assert state["step"] == done and len(state["log"]) == done
    result = comfy.run(train_graph(None, output_name="interrupted", steps=done + 4, resume_from="interrupted.safetensors"))
    assert [d["step"] for t, d in result.messages if t == "det.train"] == [done + 1, done + 2, done + 3, done + 4]
    assert DeTAdapter.load(path).meta.steps == done + 4
    log = torch.load(path.replace(".safetensors", ".optim.pt"), weights_only=True)["log"]
    assert [e["step"] for e in log] == list(range(1, done + 5))


def expect_error(comfy, graph, pattern, kind=PromptExecutionError):
    with pytest.raises(kind) as err:
        comfy.run(graph)
    text = str(err.value)
    assert re.search(pattern, text), text


def test_bad_input_gets_clear_errors(comfy, adapters_dir, input_dir, comfy_server):
    g = base_nodes()
    g["empty"] = empty_latent()
    # an adapter for another width, and one for more blocks than the model has
    write_adapter(adapters_dir, "wide.safetensors", channels=256)
    write_adapter(adapters_dir, "deep.safetensors", blocks={"double": [0, 1, 2, 3, 4]})
    for name, pattern in (("wide", "hidden size 256, the model has 128"),
                          ("deep", r"double-stream blocks \[2, 3, 4\], the model has only 2")):
        expect_error(comfy, dict(g, ad=load_adapter_node(f"{name}.safetensors"), apply=apply_node(("ad", 0)),
                                 out=save_latent(("apply", 0), name)), pattern)
    # a MODEL that is not HunyuanVideo
    write_adapter(adapters_dir, "ok.safetensors")
    expect_error(comfy, dict(g, other={"class_type": "DeTTestOtherModel", "inputs": {}}, ad=load_adapter_node("ok.safetensors"),
                             patch={"class_type": "DeTPatchModel", "inputs": {"model": ["other", 0], "adapter": ["ad", 0],
                                    "strength": 1.0, "double_blocks": "trained", "single_blocks": "trained", "keep_fraction": 1.0}},
                             ks=ksampler(("patch", 0)), out=save_latent(("ks", 0), "other")),
                 r"DeT does not support this model yet \(Linear\); supported are: HunyuanVideo")
    # tracks whose frame count fits neither the latent nor 4k+1 pixel frames; tracks with no visible point
    arr = np.random.default_rng(0).random((20, 8, 3)).astype(np.float32)
    np.save(os.path.join(input_dir, "tracks20.npy"), arr)
    expect_error(comfy, train_graph("tracks20.npy", output_name="t20", steps=2),
                 "20 frames, which fits neither the latent's 13 frames nor its 49 pixel frames")
    arr = np.zeros((49, 8, 3), np.float32)
    np.save(os.path.join(input_dir, "hidden.npy"), arr)
    expect_error(comfy, train_graph("hidden.npy", output_name="hidden", steps=2), "no visible point")
    # steps 0, a name that leaves the folder, an existing name without overwrite
    expect_error(comfy, train_graph(None, output_name="zero_steps", steps=0), "smaller than min of 1: steps", PromptValidationError)
    expect_error(comfy, train_graph(None, output_name="../escape", steps=2), "'../escape' is not allowed")
    expect_error(comfy, train_graph(None, output_name="ok", steps=2), r"ok\.safetensors exists; turn on overwrite")
    assert not os.path.exists(os.path.join(adapters_dir, "..", "escape.safetensors"))
    # NaN in float inputs (API calls send what a widget would stop; NaN passes every min / max comparison)
    expect_error(comfy, train_graph(None, output_name="nan_w", steps=2, tracking_weight=float("nan")),
                 r"tracking_weight=nan: must be a finite number")
    expect_error(comfy, dict(g, ad=load_adapter_node("ok.safetensors"), apply=apply_node(("ad", 0), strength=float("nan")),
                             out=save_latent(("apply", 0), "nan")), r"strength=nan: must be a finite number")
    # a latent of another model, one the 2x2 patches cannot tile, and a name too long for a file: before any step
    ltx = train_graph(None, output_name="ltx", steps=2)
    ltx["ref"] = {"class_type": "EmptyLTXVLatentVideo", "inputs": {"width": 64, "height": 64, "length": 9, "batch_size": 1}}
    expect_error(comfy, ltx, "the reference latent has 128 channels but HunyuanVideo takes 16")
    odd = train_graph(None, output_name="odd", steps=2)
    odd["ref"]["inputs"]["height"] = 5
    expect_error(comfy, odd, r"the reference latent is 8x5 latent cells, which the model's 2x2 patches do not tile")
    expect_error(comfy, train_graph(None, output_name="n" * 300, steps=2), "adapter name of 300 characters is too long")
    assert not any(f.startswith(("nan_w", "ltx", "odd", "nnn")) for f in os.listdir(adapters_dir))
    assert comfy_server.alive()
    # the prompts that held NaN stay in the server's history, whose JSON (with NaN) the browser cannot parse
    comfy.post_json("/history", {"clear": True})


def test_low_vram_options_train_the_same_adapter(comfy, adapters_dir):
    """Streaming the last blocks' weights from CPU RAM and keeping backward's tensors in CPU RAM change where
    tensors live, not the maths: the same seed gives the same adapter. fp8 base weights (UNETLoader weight_dtype
    fp8_e4m3fn) train too."""
    sample = dict(base_nodes(), empty=empty_latent(), ks=ksampler(("model", 0)))
    sample["out"] = save_latent(("ks", 0), "before_low_vram")
    before = fetch_latent(comfy, comfy.run(sample), "out")
    comfy.run(train_graph(None, output_name="plain", steps=4, overwrite=True))
    low = comfy.run(train_graph(None, output_name="low", steps=4, overwrite=True, swap_blocks=3, offload_activations=True,
                                memory="manual"))
    # the last 3 blocks (single 1, single 0, double 1) were hidden from ComfyUI's loader and kept in CPU RAM
    from devtools.tiny_models import TINY_HV_FILE
    with safe_open(os.path.join(os.path.dirname(adapters_dir), "diffusion_models", TINY_HV_FILE), "pt") as f:
        kept = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys()
                   if k.startswith(("single_blocks.1.", "single_blocks.0.", "double_blocks.1.")))
    info = low.outputs["info"]["text"][0]
    assert f"3 blocks ({kept * 4 / 2**20:.2f} MiB) kept in CPU RAM, never loaded onto the GPU" in info, info
    # ComfyUI goes on managing the model as partially loaded: sampling afterwards (a sampler node that is not
    # cached, on the same loaded model) gives what it gave before
    ks = sample["ks"]["inputs"]
    sample["ks"] = {"class_type": "KSamplerAdvanced", "inputs": {
        "model": ks["model"], "add_noise": "enable", "noise_seed": ks["seed"], "steps": ks["steps"], "cfg": ks["cfg"],
        "sampler_name": ks["sampler_name"], "scheduler": ks["scheduler"], "positive": ks["positive"],
        "negative": ks["negative"], "latent_image": ks["latent_image"], "start_at_step": 0, "end_at_step": 10000,
        "return_with_leftover_noise": "disable"}}
    sample["out"] = save_latent(("ks", 0), "after_low_vram")
    assert torch.equal(fetch_latent(comfy, comfy.run(sample), "out"), before)
    a = DeTAdapter.load(os.path.join(adapters_dir, "plain.safetensors")).state_dict()
    b = DeTAdapter.load(os.path.join(adapters_dir, "low.safetensors")).state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    g = train_graph(None, output_name="fp8", steps=3, overwrite=True)
    g["model"]["inputs"]["weight_dtype"] = "fp8_e4m3fn"
    comfy.run(g)
    fp8 = DeTAdapter.load(os.path.join(adapters_dir, "fp8.safetensors"))
    assert fp8.meta.steps == 3 and all(torch.isfinite(v).all() for v in fp8.state_dict().values())


def test_memory_auto_plans_before_training_and_trains_what_manual_trains(comfy, adapters_dir):
    """memory=auto with a stated budget: the planner's choice is printed and returned in info, the adapter equals
    the one trained with the same settings by hand, and a budget nothing fits stops before the first step."""
    auto = comfy.run(train_graph(None, output_name="auto_mem", steps=3, overwrite=True, memory="auto",
                                 vram_budget_gib=80.0, swap_blocks=2, offload_activations=True))
    info = auto.outputs["info"]["text"][0]
    assert "memory auto (80.0 GiB): bf16, predicted training peak" in info, info
    assert "blocks streamed" not in info  # the user's swap_blocks=2 was replaced by the plan's 0
    manual = comfy.run(train_graph(None, output_name="manual_mem", steps=3, overwrite=True, memory="manual",
                                   swap_blocks=0, offload_activations=False, optimizer="adamw"))
    assert "memory auto" not in manual.outputs["info"]["text"][0]
    a = DeTAdapter.load(os.path.join(adapters_dir, "auto_mem.safetensors")).state_dict()
    b = DeTAdapter.load(os.path.join(adapters_dir, "manual_mem.safetensors")).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    expect_error(comfy, train_graph(None, output_name="tight_mem", steps=3, overwrite=True, vram_budget_gib=0.5),
                 r"memory=auto: nothing fits 0\.5 GiB with bf16 weights: the smallest setting .* Use fewer frames")
    assert not os.path.exists(os.path.join(adapters_dir, "tight_mem.safetensors"))
    expect_error(comfy, train_graph(None, output_name="nan_mem", steps=3, overwrite=True, vram_budget_gib=float("nan")),
                 "vram_budget_gib=nan must be a number of GiB", PromptValidationError)
