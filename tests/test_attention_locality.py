"""Attention Locality: the probe's figures against a brute-force reading of the full attention matrix, in both of
ComfyUI's q/k layouts and with a text-padding mask; uniform attention gives the uniform figures; the override passes
every call through unchanged. Through the server: the node on the tiny model of every supported architecture."""

import json
import math

import pytest
import torch

from det_core.attention_locality import LocalityProbe, heatmap, summary

GRID = (4, 3, 5)  # T H W: 60 video tokens
TEXT = 7


def reference_figures(q, k, grid, queries, mask=None):
    """Mean figures over `queries` from the whole softmax matrix, by loops over key positions. q, k: B heads L D."""
    t, h, w = grid
    n = t * h * w
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # B heads L L
    if mask is not None:
        logits = logits + mask
    p = logits.softmax(-1)
    out = dict(local=0.0, same_position=0.0, same_frame=0.0, neighbourhood=0.0, self=0.0, text=0.0)
    count = 0
    for b in range(p.shape[0]):
        for head in range(p.shape[1]):
            for i in queries.tolist():
                row = p[b, head, i]
                video = float(row[:n].sum())
                ti, hi, wi = i // (h * w), (i // w) % h, i % w
                sums = dict.fromkeys(out, 0.0)
                for j in range(n):
                    tj, hj, wj = j // (h * w), (j // w) % h, j % w
                    v = float(row[j]) / video
                    same = hj == hi and wj == wi
                    sums["local"] += v * (same and abs(tj - ti) <= 1)
                    sums["same_position"] += v * same
                    sums["same_frame"] += v * (tj == ti)
                    sums["neighbourhood"] += v * (abs(tj - ti) <= 1 and abs(hj - hi) <= 1 and abs(wj - wi) <= 1)
                    sums["self"] += v * (j == i)
                sums["text"] = 1 - video
                for key in out:
                    out[key] += sums[key]
                count += 1
    return {key: v / count for key, v in out.items()}


def qk(seed=0, batch=1, heads=2, d=8, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    n = GRID[0] * GRID[1] * GRID[2] + TEXT
    return (torch.randn(batch, heads, n, d, generator=g) * scale, torch.randn(batch, heads, n, d, generator=g))


@pytest.mark.parametrize("skip_reshape", [True, False])
def test_figures_equal_a_brute_force_reading_of_the_attention_matrix(skip_reshape):
    q, k = qk(batch=2)
    mask = torch.zeros(1, 1, q.shape[2])
    mask[..., -3:] = -torch.finfo(torch.float32).max  # padded text tokens, as HunyuanVideo masks them
    probe = LocalityProbe(GRID, queries=17, seed=3)
    heads = q.shape[1]
    if skip_reshape:
        probe.measure("double 0", q, k, heads, mask, skip_reshape=True)
    else:
        flat = lambda x: x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1)  # B L (heads D)
        probe.measure("double 0", flat(q), flat(k), heads, mask, skip_reshape=False)
    (got,) = probe.report()["calls"]
    want = reference_figures(q, k, GRID, probe.index, mask[:, :, None])
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-5), key
    assert got["text"] > 0.01  # the unmasked text tokens took some attention, the masked ones none
    assert sum(got["dt_profile"]) == pytest.approx(got["same_position"], abs=1e-6)
    t = GRID[0]
    assert sum(got["dt_profile"][t - 2:t + 1]) == pytest.approx(got["local"], abs=1e-6)
    assert len(got["local_by_head"]) == q.shape[1]  # one per head


def test_uniform_attention_gives_the_uniform_figures():
    q, k = qk()
    probe = LocalityProbe(GRID, queries=1000, seed=0)  # more than the 60 tokens: all of them
    probe.measure("single 1", torch.zeros_like(q), k, q.shape[1], None, skip_reshape=True)
    report = probe.report()
    assert report["queries"] == 60
    (got,) = report["calls"]
    uni = report["uniform"]
    for key in ("local", "same_position", "same_frame", "neighbourhood", "self"):
        assert got[key] == pytest.approx(uni[key], rel=1e-5), key
    # the uniform local figure by counting: interior frames have 3 neighbours in time, the two end frames 2
    assert uni["local"] == pytest.approx((2 * 2 + 2 * 3) / 4 / 60)


def test_a_query_that_looks_only_at_itself_is_fully_local():
    n = GRID[0] * GRID[1] * GRID[2]
    eye = torch.eye(n)[None, None] * 100.0  # q_i . k_j = 100 [i == j] * sqrt(d) / sqrt(d)
    probe = LocalityProbe(GRID, queries=10, seed=1)
    probe.measure("block 0", eye * math.sqrt(n), eye, 1, None, skip_reshape=True)
    (got,) = probe.report()["calls"]
    for key in ("local", "same_position", "same_frame", "neighbourhood", "self"):
        assert got[key] == pytest.approx(1.0, abs=1e-6)


def test_the_override_passes_calls_through_and_measures_only_labelled_ones():
    q, k = qk()
    v = torch.randn_like(q)
    seen = []

    def attention(q, k, v, heads, mask=None, skip_reshape=False, **kwargs):
        seen.append(kwargs.get("_inside_attn_wrapper"))
        return (q * 2).sum() + v.sum()

    probe = LocalityProbe(GRID, queries=5)
    assert probe.override(attention, q, k, v, 2, skip_reshape=True, _inside_attn_wrapper=True) == (q * 2).sum() + v.sum()
    assert probe.report()["calls"] == []  # no label: not measured
    probe.current = "block 3"
    probe.override(attention, q, k, v, 2, skip_reshape=True)
    probe.override(attention, q, k[:, :, :9], v, 2, skip_reshape=True)  # the block's cross-attention: not measured
    assert [c["block"] for c in probe.report()["calls"]] == ["block 3"] and len(seen) == 3
    probe.current = "block 4"
    probe.override(attention, q[:, :, :20], k[:, :, :20], v, 2, skip_reshape=True)  # fewer tokens than the video
    assert "block 4" in probe.report()["skipped"][0]


def test_summary_and_heatmap_read_the_report():
    q, k = qk()
    probe = LocalityProbe(GRID, queries=30)
    for i in range(3):
        probe.measure(f"double {i}", q * (i + 1), k, 2, None, skip_reshape=True)
    report = probe.report()
    text = summary(report)
    best = max(report["calls"], key=lambda c: c["local"])
    assert f"most local {best['block']} {best['local']:.3f}" in text
    img = heatmap(report)
    assert img.dtype.name == "uint8" and img.shape[0] > 3 * 14 and img.shape[2] == 3
    # the darkest cell of each row sits at the row's largest same-position offset
    row = report["calls"][0]
    col = max(range(len(row["dt_profile"])), key=lambda j: row["dt_profile"][j])
    cells = img[22 + 7, 86 + 7::14][: len(row["dt_profile"]), 1]
    assert int(cells.argmin()) == col


# -- through the server ---------------------------------------------------------------------------------------------

def locality_graph(arch_name, **overrides):
    from det_core.arch import arch_named
    from devtools.tiny_models import TEXT_WIDTH, TINY_FILES

    inputs = {"model": ["model", 0], "latent": ["ref", 0], "conditioning": ["cond", 0], "sigmas": "0.9, 0.3",
              "queries": 64, "seed": 0, "guidance": 6.0}
    inputs.update(overrides)
    return {
        "model": {"class_type": "UNETLoader", "inputs": {"unet_name": TINY_FILES[arch_name], "weight_dtype": "default"}},
        "cond": {"class_type": "DeTTestConditioning", "inputs": {"seed": 1, "tokens": 6, "width": TEXT_WIDTH[arch_name],
                                                               "guidance": 6.0}},
        "ref": {"class_type": "DeTTestLatent", "inputs": {"seed": 0, "frames": 13, "height": 6, "width": 8,
                                                          "channels": arch_named(arch_name).latent_channels}},
        "loc": {"class_type": "DeTAttentionLocality", "inputs": inputs},
        "json": {"class_type": "PreviewAny", "inputs": {"source": ["loc", 0]}},
    }


@pytest.fixture(scope="module")
def locality_models(comfy_base):
    """The tiny models of the other architectures beside the session's tiny HunyuanVideo (removed afterwards)."""
    import os

    from devtools.tiny_models import TINY_FILES, write_tiny

    folder = os.path.join(comfy_base, "models", "diffusion_models")
    written = [write_tiny(name, os.path.join(folder, TINY_FILES[name]), seed=0)
               for name in ("hunyuan_video_15", "wan21", "wan22_ti2v")]
    yield
    for path in written:
        os.remove(path)


@pytest.mark.parametrize("arch_name", ["hunyuan_video", "hunyuan_video_15", "wan21", "wan22_ti2v"])
def test_node_reports_every_block_of_every_architecture(comfy, locality_models, arch_name):
    from det_core.arch import arch_named
    from devtools.tiny_models import TINY

    result = comfy.run(locality_graph(arch_name))
    report = json.loads(result.outputs["json"]["text"][0])
    assert result.outputs["loc"]["images"]  # the heat map is shown on the node
    arch, cfg = arch_named(arch_name), TINY[arch_name]
    assert report["model"] == arch_name and [r["sigma"] for r in report["by_sigma"]] == [0.9, 0.3]
    for r in report["by_sigma"]:
        labels = [c["block"] for c in r["calls"]]
        if arch.transformer == "wan":
            assert labels == [f"block {i}" for i in range(cfg["num_layers"])]
        else:
            assert labels == [f"double {i}" for i in range(cfg["depth"])] + \
                             [f"single {i}" for i in range(cfg["depth_single_blocks"])]
        t, h, w = r["grid"]
        assert r["queries"] == 64 and t == 13 and r["video_tokens"] == t * h * w and not r["skipped"]
        for c in r["calls"]:
            assert 0 <= c["self"] <= c["local"] <= c["same_position"] <= 1 + 1e-6
            assert c["local"] <= c["neighbourhood"] + 1e-6 and len(c["dt_profile"]) == 2 * t - 1
            if arch.transformer == "wan":
                assert c["text"] < 1e-6  # Wan's self-attention sees video tokens only
            else:
                assert 0 < c["text"] < 1  # HunyuanVideo's joint attention also looks at the caption
    assert report["by_sigma"][0]["calls"] != report["by_sigma"][1]["calls"]  # the noise level matters


@pytest.mark.parametrize("overrides, message", [
    ({"sigmas": "0.9, nan"}, "outside \\(0, 1\\]"), ({"sigmas": "1.5"}, "outside"), ({"sigmas": "0.5, x"}, "is not a number"),
    ({"sigmas": ", ".join(["0.5"] * 9)}, "1 to 8 noise levels"), ({"guidance": float("nan")}, "guidance=nan"),
    ({"sigmas": 7}, "sigmas='7': 7 is outside")])  # ComfyUI passes a number given to a text input as text
def test_node_refuses_bad_input_by_name(comfy, overrides, message):
    from det_tools.client import PromptExecutionError, PromptValidationError

    with pytest.raises((PromptExecutionError, PromptValidationError), match=message):
        comfy.run(locality_graph("hunyuan_video", **overrides))
