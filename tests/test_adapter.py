"""det_core.adapter: the temporal convolution, its file format and its checks."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from det_core.adapter import (AdapterMeta, AdapterMismatch, DeTAdapter, TemporalConvAdapter, keep_first_fraction,
                              parse_blocks)


def randomised(module, seed=0, std=0.2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def test_new_adapter_is_an_exact_no_op_and_has_the_published_size():
    a = TemporalConvAdapter(64, mid_dim=8, kernel_size=3)
    x = torch.randn(2, 5 * 3 * 4, 64)
    assert torch.equal(a(x, (5, 3, 4)), torch.zeros_like(x))
    assert a.down.weight.abs().sum() > 0, "the first conv must not start at zero (nothing would train)"
    full = TemporalConvAdapter(3072, 128, 3)
    assert sum(p.numel() for p in full.parameters()) == 2 * 3072 * 128 * 3 == 2_359_296
    assert full.down.bias is None and full.up.bias is None


def test_convolution_runs_along_time_only_with_weights_shared_over_space():
    t, h, w, c = 6, 3, 4, 16
    a = randomised(TemporalConvAdapter(c, mid_dim=5, kernel_size=3))
    x = torch.randn(1, t * h * w, c)
    out = a(x, (t, h, w)).view(t, h, w, c)
    grid = x.view(t, h, w, c)
    for (i, j) in [(0, 0), (2, 3), (1, 2)]:
        series = grid[:, i, j, :].T[None]  # 1 C T: this position's features over time
        expected = F.conv1d(F.gelu(F.conv1d(series, a.down.weight, padding=1)), a.up.weight, padding=1)
        torch.testing.assert_close(out[:, i, j, :], expected[0].T)


def test_one_adapter_runs_at_any_grid():
    a = randomised(TemporalConvAdapter(16, mid_dim=4, kernel_size=5))
    for grid in [(13, 4, 6), (5, 2, 3), (1, 1, 1)]:
        x = torch.randn(1, grid[0] * grid[1] * grid[2], 16)
        assert a(x, grid).shape == x.shape
    with pytest.raises(ValueError, match="token grid"):
        a(torch.randn(1, 10, 16), (2, 2, 2))
    with pytest.raises(ValueError, match="must be odd"):
        TemporalConvAdapter(16, 4, 4)


def make_adapter():
    meta = AdapterMeta(channels=32, mid_dim=8, kernel_size=3, blocks={"double": [0, 2], "single": [1]}, steps=7,
                       prompt="a dancer", tracking_weight=0.1)
    return randomised(DeTAdapter(meta))


def test_file_round_trip_keeps_weights_and_metadata(tmp_path):
    a = make_adapter()
    path = a.save(str(tmp_path / "m.safetensors"), extra_metadata={"det.seed": "3"})
    b = DeTAdapter.load(path)
    assert b.meta.blocks == {"double": [0, 2], "single": [1]} and b.meta.steps == 7 and b.meta.prompt == "a dancer"
    assert b.meta.extra["seed"] == "3"
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert set(a.state_dict()) == {"double_blocks.0.down.weight", "double_blocks.0.up.weight",
                                   "double_blocks.2.down.weight", "double_blocks.2.up.weight",
                                   "single_blocks.1.down.weight", "single_blocks.1.up.weight"}
    assert tuple(a.state_dict()["double_blocks.0.down.weight"].shape) == (8, 32, 3)
    assert tuple(a.state_dict()["double_blocks.0.up.weight"].shape) == (32, 8, 3)
    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        md = f.metadata()
    assert {"det.format_version", "det.base_model", "det.channels", "det.mid_dim", "det.kernel_size", "det.blocks",
            "det.steps", "det.prompt", "det.tracking_weight"} <= set(md)
    assert json.loads(md["det.blocks"]) == {"double": [0, 2], "single": [1]}


def test_loading_says_what_does_not_match(tmp_path):
    plain = str(tmp_path / "lora.safetensors")
    save_file({"x": torch.zeros(2)}, plain)
    with pytest.raises(AdapterMismatch, match="lora.safetensors is not a DeT adapter"):
        DeTAdapter.load(plain)
    a = make_adapter()
    sd = a.state_dict()
    sd["double_blocks.0.down.weight"] = torch.zeros(8, 32, 5)
    bad = str(tmp_path / "bad.safetensors")
    save_file({k: v.contiguous() for k, v in sd.items()}, bad, metadata=a.meta.to_metadata())
    with pytest.raises(AdapterMismatch, match=r"wrong shapes.*double_blocks\.0\.down\.weight \(8, 32, 5\)"):
        DeTAdapter.load(bad)
    with pytest.raises(AdapterMismatch, match="hidden size 32, the model has 3072"):
        a.check_fits("hunyuan_video", 3072, {"double": 20, "single": 40})
    with pytest.raises(AdapterMismatch, match=r"double-stream blocks \[2\], the model has only 2"):
        a.check_fits("hunyuan_video", 32, {"double": 2, "single": 2})
    with pytest.raises(AdapterMismatch, match=r"trained on hunyuan_video \(hidden size 32\), the model is wan21 "
                                              r"\(hidden size 32\)"):
        a.check_fits("wan21", 32, {"blocks": 4})
    a.check_fits("hunyuan_video", 32, {"double": 3, "single": 2})
    with pytest.raises(FileNotFoundError, match="models/det_adapters"):
        DeTAdapter.load(str(tmp_path / "missing.safetensors"))


@pytest.mark.parametrize("field, value, message", [
    ("det.mid_dim", "100000000", r"mid_dim=100000000 \(allowed 1 to 65536\)"),
    ("det.channels", "-3", r"channels=-3 \(allowed 1 to 65536\)"),
    ("det.kernel_size", "4", r"kernel_size=4 \(must be odd\)"),
    ("det.blocks", '{"double": [0, 0, -1]}', r"double blocks \[0, 0, -1\]"),
    ("det.mid_dim", "16", r"tensors do not match its metadata: wrong shapes"),
])
def test_metadata_is_checked_before_anything_is_built(tmp_path, field, value, message):
    """A 2 KB file claiming mid_dim=1e8 must not make the loader allocate 150 GB: bounds and the tensors' own
    shapes are checked first."""
    a = make_adapter()
    md = dict(a.meta.to_metadata(), **{field: value})
    path = str(tmp_path / "claims.safetensors")
    save_file({k: v.contiguous() for k, v in a.state_dict().items()}, path, metadata=md)
    with pytest.raises(AdapterMismatch, match=message):
        DeTAdapter.load(path)


def test_an_adapter_with_nan_weights_is_refused(tmp_path):
    a = make_adapter()
    sd = {k: v.clone() for k, v in a.state_dict().items()}
    sd["double_blocks.0.up.weight"][0, 0, 0] = float("nan")
    path = str(tmp_path / "nan.safetensors")
    save_file(sd, path, metadata=a.meta.to_metadata())
    with pytest.raises(AdapterMismatch, match=r"nan.safetensors: \['double_blocks.0.up.weight'\] hold NaN"):
        DeTAdapter.load(path)


def test_block_lists():
    assert parse_blocks("all", 20) == list(range(20))
    assert parse_blocks("0-3, 7,9-10", 20) == [0, 1, 2, 3, 7, 9, 10]
    assert parse_blocks("none", 20) == [] == parse_blocks("", 5)
    with pytest.raises(ValueError, match=r"\[20\] out of range; this model has 20"):
        parse_blocks("19-20", 20)
    with pytest.raises(ValueError, match="cannot read 'x'"):
        parse_blocks("1,x", 20)
    assert keep_first_fraction(list(range(20)), 0.35) == list(range(7))
    assert keep_first_fraction(list(range(42)), 0.35) == list(range(15))  # the CogVideoX runs: 15 of 42
    assert keep_first_fraction([0, 1], 1.0) == [0, 1] and keep_first_fraction([0, 1], 0.0) == []
