"""The memory planner: ComfyUI's HunyuanVideo at the real 13B size, one DeT training step and one sampling step
through the pack's own patch and training code on fake tensors; the fake run checked against a real one at a
small size; the predictions and the settings chosen for common budgets."""

import json
import subprocess
import sys

import pytest

from det_core.arch import HUNYUAN_VIDEO, HUNYUAN_VIDEO_13B
from det_core.vram import Setting, Shape, choose, measure, predict, settings, what_would_fit

GB13 = dict(HUNYUAN_VIDEO_13B)


@pytest.fixture(scope="module")
def full(comfy_host):
    """One training step (tracking loss, backward, AdamW) and one sampling step at 49 x 480 x 720."""
    return measure(HUNYUAN_VIDEO, GB13, Shape(49, 480, 720))


def test_full_size_step_runs_and_holds_what_it_should(full):
    # the real configuration: 20 double + 40 single blocks of width 3072
    assert 12.5e9 < full.parameters < 13.2e9 and full.latent == [13, 60, 90]
    assert len(full.block_bytes_bf16) == 60 and full.weight_bytes_bf16 == 2 * full.parameters
    assert full.weight_bytes_bf16 / 2 < full.weight_bytes_fp8 < 0.55 * full.weight_bytes_bf16
    # adapters in the 20 double blocks: down [128, 3072, 3] and up [3072, 128, 3] each
    assert full.adapter_parameters == 20 * 2 * 3072 * 128 * 3
    # every checkpointed block kept its input (video and text tokens, bf16 under autocast) for backward
    tokens = 13 * 30 * 45 + 256
    assert full.parked_bytes == 60 * tokens * 3072 * 2 and full.parked_max_bytes == tokens * 3072 * 2
    assert full.train_activation_bytes > full.parked_bytes > full.sample_activation_bytes > 0


def test_low_vram_setting_fits_a_24_gib_card_and_budgets_get_sensible_choices(full):
    low = predict(full, Setting("fp8_e4m3fn", 20, True))
    assert low["train_peak_gib"] <= 22.0
    plain = predict(full, Setting())
    assert plain["train_peak_gib"] > low["train_peak_gib"] + 10
    for part in ("weights_gib", "adapter_and_optimizer_gib", "activations_gib", "allowance_gib"):
        assert low["train"][part] <= plain["train"][part]
    picks = {b: choose(full, b) for b in (16, 24, 48, 80)}
    assert all(p is not None and p["train_peak_gib"] + 1.0 <= b for b, p in picks.items())
    assert picks[80]["setting"] == picks[48]["setting"] == {"weights": "bf16", "swap_blocks": 0,
                                                            "offload_activations": False, "optimizer": "adamw"}
    assert picks[16]["setting"] != picks[24]["setting"] != picks[48]["setting"]
    assert picks[16]["train_peak_gib"] < picks[24]["train_peak_gib"] < picks[48]["train_peak_gib"]
    assert choose(full, 4) is None and "nothing fits 4 GiB" in what_would_fit(full, 4)


def test_the_fake_run_measures_what_a_real_run_holds(comfy_host):
    """Several heads, a non-square latent and an odd number of latent frames, with real tensors and fake ones."""
    cfg = dict(GB13, hidden_size=384, num_heads=3, depth=2, depth_single_blocks=1, context_in_dim=32)
    shape = Shape(17, 48, 80, text_tokens=7)  # latent 5 x 6 x 10
    fake = measure(HUNYUAN_VIDEO, cfg, shape, mid_dim=8)
    real = measure(HUNYUAN_VIDEO, cfg, shape, mid_dim=8, fake=False)
    assert fake.latent == [5, 6, 10]
    assert fake.parked_bytes == real.parked_bytes == 3 * (5 * 3 * 5 + 7) * 384 * 2
    assert fake.train_activation_bytes == real.train_activation_bytes
    assert fake.sample_activation_bytes == real.sample_activation_bytes


def test_bad_sizes_are_refused_before_any_work():
    with pytest.raises(ValueError, match="multiples of 16 .*for example 720x480"):
        Shape(49, 478, 721)
    with pytest.raises(ValueError, match="frames=0 must be a positive whole number"):
        Shape(0, 480, 720)


def test_cli_writes_each_settings_peaks(tmp_path, comfy_host):
    out = tmp_path / "plan.json"
    cfg = tmp_path / "small.json"
    cfg.write_text(json.dumps({"hidden_size": 256, "num_heads": 2, "depth": 2, "depth_single_blocks": 2,
                               "context_in_dim": 32}))
    done = subprocess.run([sys.executable, "-m", "det_core.vram", "--frames", "17", "--height", "64", "--width", "96",
                           "--model", str(cfg), "--json", str(out), "--comfyui", comfy_host, "--budget", "8"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert len(doc["settings"]) == 2 * 2 * 2 * 2  # weights x swap (none, all 4 blocks) x offload x optimizer
    assert all({"train_peak_gib", "sample_peak_gib"} <= set(s) for s in doc["settings"])
    assert doc["auto"]["8.0"]["setting"]["weights"] == "bf16" and "8 GiB free: bf16" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "det_core.vram", "--height", "100", "--comfyui", comfy_host],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "multiples of 16" in bad.stderr


FULL_SIZES = [  # (arch, size, released parameter count in billions, frames, height, width)
    ("wan21", "1.3B", 1.42, 17, 480, 832), ("wan21", "14B", 14.29, 17, 480, 832),
    ("wan22_ti2v", "5B", 5.00, 17, 704, 1280), ("hunyuan_video_15", "8.3B", 8.33, 17, 480, 848)]


@pytest.mark.parametrize("arch_name,size,billions,frames,height,width", FULL_SIZES)
def test_full_size_step_of_each_architecture(comfy_host, arch_name, size, billions, frames, height, width):
    """The real configuration of Wan 2.1 1.3B / 14B (also each Wan 2.2 A14B expert), Wan 2.2 TI2V 5B and
    HunyuanVideo 1.5 8.3B: one training and one sampling step, adapters in every block of the first group."""
    from det_core.arch import arch_named
    from det_core.vram import parse_arch

    arch, config = parse_arch(f"{arch_name}:{size}")
    m = measure(arch, config, Shape(frames, height, width, arch=arch_name))
    assert abs(m.parameters / 1e9 - billions) < 0.01 * billions
    width_c = config.get("hidden_size", config.get("dim"))
    blocks = config.get("depth", config.get("num_layers"))
    assert m.adapter_parameters == blocks * 2 * width_c * 128 * 3
    sc = arch_named(arch_name).spatial_compression
    t_lat, h_lat, w_lat = (frames - 1) // 4 + 1, height // sc, width // sc
    assert m.latent == [t_lat, h_lat, w_lat]
    patch = config["patch_size"]
    video = t_lat * (h_lat // patch[1]) * (w_lat // patch[2])
    # each checkpointed block kept its input for backward: Wan its video tokens, HunyuanVideo 1.5's double-stream
    # blocks the video and the text tokens (bf16)
    tokens = video if arch.transformer == "wan" else video + 256
    assert m.parked_bytes == blocks * tokens * width_c * 2 and m.parked_max_bytes == tokens * width_c * 2
    assert m.train_activation_bytes > m.parked_bytes > m.sample_activation_bytes > 0
    assert choose(m, 80)["setting"]["weights"] == "bf16"


def test_per_rank_plan_shards_the_weights_and_bands_the_video(full):
    """--gpus N: each rank keeps 1/N of every block plus the blocks FSDP2 gathers in flight; --sequence-parallel P:
    each rank runs its band of H/P rows; degrees that do not divide the heads or the rows are refused by name."""
    from dataclasses import asdict

    from det_core.vram import FSDP_BLOCKS_IN_FLIGHT, GIB, Measurement, for_ranks, rank_shape

    one = predict(full, Setting())
    blocks = full.block_bytes_bf16
    for n in (2, 8):
        ranks = for_ranks(Measurement(**asdict(full)), n, 1)
        assert [s.swap_blocks for s in settings(ranks)] == [0] * len(settings(ranks))  # sharding, not swapping
        p = predict(ranks, Setting())
        expected = full.weight_bytes_bf16 - sum(blocks) + sum(blocks) / n + FSDP_BLOCKS_IN_FLIGHT * max(blocks)
        assert p["train"]["weights_gib"] == pytest.approx(expected / GIB, abs=0.01)
        assert p["train"]["activations_gib"] == one["train"]["activations_gib"]  # the same sample on every rank
    assert predict(for_ranks(Measurement(**asdict(full)), 8, 1), Setting())["train_peak_gib"] < \
        one["train_peak_gib"] / 2
    assert rank_shape(Shape(49, 480, 720), HUNYUAN_VIDEO, GB13, 2).latent == (13, 30, 90)
    with pytest.raises(ValueError, match="sequence_parallel=5 does not divide the 24 attention heads"):
        rank_shape(Shape(49, 480, 720), HUNYUAN_VIDEO, GB13, 5)
    with pytest.raises(ValueError, match="does not divide the latent's 30 token rows"):
        rank_shape(Shape(49, 480, 720), HUNYUAN_VIDEO, GB13, 4)
    with pytest.raises(ValueError, match="--gpus 3: give a multiple of --sequence-parallel 2"):
        for_ranks(Measurement(**asdict(full)), 3, 2)
