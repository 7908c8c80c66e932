"""The DeT authors' adapter files: their `.pth` layout (HunyuanVideo's two block prefixes, Wan's, bf16, with and
without accelerate's `module.`) round-trips through the pack's adapter unchanged; the architecture comes from the
key layout and the width; bad files (a pickle payload, CogVideoX, mixed widths, an even kernel, an empty dict) are
refused by name with nothing written; and through the server an authors' file in models/det_adapters/ samples
exactly as the same weights saved in the pack's format."""

import os
import subprocess
import sys

import pytest
import torch

from det_core.adapter import AdapterMismatch, DeTAdapter
from det_core.authors_format import authors_state_dict, from_authors_state, read_authors_file, write_authors_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def authors_file(layout: dict[str, list[int]], c: int, m: int = 4, k: int = 3, seed: int = 0, module: bool = False,
                 dtype=torch.bfloat16) -> dict[str, torch.Tensor]:
    """A state dict as the authors' scripts save it: {prefix.attn: block indices} -> conv1 [m, C, k], conv2 [C, m, k]."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for where, indices in layout.items():
        for i in indices:
            key = f"{'module.' if module else ''}{where.split('/')[0]}.{i}.{where.split('/')[1]}.processor.temporal_emb"
            out[f"{key}.conv1.weight"] = torch.randn(m, c, k, generator=g).to(dtype)
            out[f"{key}.conv2.weight"] = torch.randn(c, m, k, generator=g).to(dtype)
    return out


HV = {"single_transformer_blocks/attn": [0, 3], "transformer_blocks/attn": [1]}
WAN = {"blocks/attn1": [0, 2, 14]}


@pytest.mark.parametrize("layout, width, arch, kinds", [
    (HV, 3072, "hunyuan_video", {"double": [1], "single": [0, 3]}),
    ({"transformer_blocks/attn": [0, 53]}, 2048, "hunyuan_video_15", {"double": [0, 53]}),
    (WAN, 5120, "wan21", {"blocks": [0, 2, 14]}),
    (WAN, 1536, "wan21", {"blocks": [0, 2, 14]}),
    (WAN, 3072, "wan22_ti2v", {"blocks": [0, 2, 14]}),
])
@pytest.mark.parametrize("module", [False, True])
def test_authors_files_round_trip_unchanged(tmp_path, layout, width, arch, kinds, module):
    state = authors_file(layout, width, module=module)
    path = tmp_path / "motion_embedding.pth"
    torch.save(state, path)
    adapter = read_authors_file(str(path))
    assert adapter.meta.base_model == arch and (adapter.meta.channels, adapter.meta.mid_dim,
                                                 adapter.meta.kernel_size) == (width, 4, 3)
    assert {k: adapter.indices(k) for k in kinds} == kinds
    assert "motion_embedding.pth" in adapter.meta.extra["source"]
    # through the pack's file and back to the authors' layout: the same tensors, bit for bit, without `module.`
    adapter.save(str(tmp_path / "pack.safetensors"))
    back = authors_state_dict(DeTAdapter.load(str(tmp_path / "pack.safetensors")))
    assert set(back) == {key.removeprefix("module.") for key in state}
    for key, value in state.items():
        assert back[key.removeprefix("module.")].dtype == torch.bfloat16
        assert torch.equal(back[key.removeprefix("module.")], value)
    # conv1 is the pack's down-projection, conv2 its up-projection
    kind, i = next((k, v[0]) for k, v in kinds.items())
    key = next(k for k in state if k.endswith("conv1.weight") and f".{i}." in k and (kind != "single") ==
               ("single_transformer" not in k))
    assert torch.equal(adapter.get(kind, i).down.weight, state[key].float())


def test_the_convert_tool_goes_both_ways_and_writes_nothing_on_refusal(tmp_path):
    src = tmp_path / "motion_embedding.pth"
    torch.save(authors_file(HV, 3072, module=True), src)
    run = lambda *a: subprocess.run([sys.executable, "-m", "det_tools.convert_adapter", *map(str, a)], cwd=ROOT,  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    done = run(src, tmp_path / "pack.safetensors")
    assert done.returncode == 0 and "hunyuan_video" in done.stdout, done.stderr
    done = run(tmp_path / "pack.safetensors", tmp_path / "again.pth")
    assert done.returncode == 0, done.stderr
    again = torch.load(tmp_path / "again.pth", weights_only=True)
    original = torch.load(src, weights_only=True)
    assert {k: v for k, v in again.items()}.keys() == {k.removeprefix("module.") for k in original}
    assert all(torch.equal(again[k.removeprefix("module.")], v) for k, v in original.items())
    kept = run(src, tmp_path / "pack.safetensors")
    assert kept.returncode == 2 and "exists; pass --overwrite" in kept.stderr
    torch.save({}, tmp_path / "empty.pth")
    empty = run(tmp_path / "empty.pth", tmp_path / "empty.safetensors")
    assert empty.returncode == 2 and "empty.pth holds no adapter weights" in empty.stderr
    assert not (tmp_path / "empty.safetensors").exists()


class Payload:
    """What a malicious pickle would run if it were unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_bad_authors_files_are_refused_by_name(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"blocks.0.attn1.processor.temporal_emb.conv1.weight": Payload(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="evil.pth is not a valid DeT authors' adapter file .*pickled Python objects"):
        read_authors_file(str(tmp_path / "evil.pth"))
    assert not marker.exists()  # nothing was unpickled
    cases = [
        (authors_file({"transformer_blocks/attn1": [0]}, 3072), "is a CogVideoX"),
        ({**authors_file(WAN, 1536), **authors_file({"blocks/attn1": [5]}, 5120)}, "mixes adapter sizes"),
        (authors_file(WAN, 1536, k=4), "kernel 4 is even"),
        ({}, "holds no adapter weights"),
        ({**authors_file(WAN, 64), "blocks.0.attn1.to_q.weight": torch.zeros(2, 2)}, "is not a DeT temporal"),
        ({k: v for k, v in authors_file(WAN, 64).items() if "conv2" not in k or ".2." not in k}, "has no conv2.weight"),
        ({**authors_file(HV, 64), **authors_file(WAN, 64)}, "mixes Wan blocks with HunyuanVideo blocks"),
        ({k: v.float().fill_(float("nan")) for k, v in authors_file(WAN, 64).items()}, "NaN"),
    ]
    for state, phrase in cases:
        with pytest.raises(AdapterMismatch, match=phrase):
            from_authors_state(state, "motion_embedding.pth")
    with pytest.raises(AdapterMismatch, match="base model 'hunyuan_video' is not one of wan21, wan22_ti2v"):
        from_authors_state(authors_file(WAN, 1536), "m.pth", base_model="hunyuan_video")


def test_an_authors_file_samples_as_the_same_weights_in_the_pack_format(comfy, comfy_base):
    """Load DeT Adapter reads an authors' .pth from models/det_adapters/: sampling with it gives exactly what the
    same weights give from the pack's own file (a swapped block kind or convolution would not)."""
    from det_graphs import apply_node, base_nodes, empty_latent, fetch_latent, save_latent

    folder = os.path.join(comfy_base, "models", "det_adapters")
    os.makedirs(folder, exist_ok=True)
    state = authors_file({"single_transformer_blocks/attn": [1], "transformer_blocks/attn": [0, 1]}, 128, m=8,
                         seed=3)
    state = {k: v * (0.05 if "conv2" in k else 1.0) for k, v in state.items()}  # a modest, non-zero adapter
    torch.save(state, os.path.join(folder, "authors_motion.pth"))
    adapter = from_authors_state(state, "authors_motion.pth")
    adapter.save(os.path.join(folder, "authors_motion_pack.safetensors"))
    outs = {}
    for name in ("authors_motion.pth", "authors_motion_pack.safetensors", None):
        g = dict(base_nodes(), empty=empty_latent())
        if name:
            g["ad"] = {"class_type": "DeTLoadAdapter", "inputs": {"adapter_name": name}}
            g["apply"] = apply_node(("ad", 0), strength=1.0 if name else 0.0)
        else:  # the same sampler without any adapter
            g["ad"] = {"class_type": "DeTLoadAdapter", "inputs": {"adapter_name": "authors_motion_pack.safetensors"}}
            g["apply"] = apply_node(("ad", 0), strength=0.0)
        g["out"] = save_latent(("apply", 0), f"authors_{name}")
        outs[name] = fetch_latent(comfy, comfy.run(g), "out")
    assert torch.equal(outs["authors_motion.pth"], outs["authors_motion_pack.safetensors"])
    assert not torch.equal(outs["authors_motion.pth"], outs[None])  # the adapter did something
    write_authors_file(adapter, os.path.join(folder, "exported.pth"))  # and back, for the authors' scripts
    assert all(torch.equal(v, torch.load(os.path.join(folder, "exported.pth"), weights_only=True)[k])
               for k, v in state.items())
