"""det_core.train on ComfyUI's tiny HunyuanVideo in this process: it learns, resumes exactly, saves on stop."""

import pytest
import torch

from conftest import tiny_inputs
from det_core.adapter import AdapterMeta, DeTAdapter
from det_core.patch import DeTRuntime, forward_patches, install
from det_core.tracking_loss import LatentTracks
from det_core.train import TrainConfig, train_adapter
from det_core.comfy_models import flow_sampling, x0_predictor


def setup(model, seed=0, blocks=(0, 1), mode="train"):
    adapter = DeTAdapter(AdapterMeta(channels=128, mid_dim=16, kernel_size=3, blocks={"double": list(blocks)}))
    torch.manual_seed(seed)
    for a in adapter.double_blocks.values():
        torch.nn.init.normal_(a.down.weight, std=1.0 / 20)
    runtime = DeTRuntime(adapter, {"double": list(blocks)})
    remove = install(model, forward_patches(model, runtime, mode))
    inputs = tiny_inputs(3, 6, 8, seed=11)
    sampling = flow_sampling()
    predict_x0 = x0_predictor(model, sampling, inputs["context"], inputs["y"])
    return adapter, runtime, remove, inputs["x"], sampling, predict_x0


def fixed_eval_loss(predict_x0, sampling, latents, n=6):
    g = torch.Generator().manual_seed(123)
    total = 0.0
    with torch.no_grad():
        for i in range(n):
            sigma = sampling.sigmas[int(torch.randint(0, 1000, (1,), generator=g))].reshape(1)
            noise = torch.randn(latents.shape, generator=g)
            x_t = sampling.noise_scaling(sigma, noise, latents)
            v_hat = (x_t - predict_x0(x_t, sigma)) / sigma
            total += float((v_hat - (noise - latents)).pow(2).mean())
    return total / n


def test_training_fits_the_reference_and_leaves_the_base_frozen(tiny_transformer):
    adapter, runtime, remove, latents, sampling, predict = setup(tiny_transformer)
    base = {k: v.clone() for k, v in tiny_transformer.state_dict().items()}
    before = fixed_eval_loss(predict, sampling, latents)
    cfg = TrainConfig(steps=40, learning_rate=3e-3, tracking_weight=0.0, optimizer="adamw", seed=1)
    result = train_adapter(adapter, predict, sampling, latents, cfg, runtime=runtime)
    after = fixed_eval_loss(predict, sampling, latents)
    remove()
    assert result.steps_done == 40 and len(result.log) == 40
    assert after < 0.9 * before, (before, after)
    assert all(torch.equal(v, tiny_transformer.state_dict()[k]) for k, v in base.items())
    assert all(not p.requires_grad for p in adapter.parameters())
    timesteps = [e.timestep for e in result.log]
    assert min(timesteps) >= 0 and max(timesteps) <= 1000 and len(set(timesteps)) > 20


def test_resume_continues_exactly(tiny_transformer):
    cfg = TrainConfig(steps=6, learning_rate=1e-3, tracking_weight=0.0, optimizer="adamw", seed=2, warmup_steps=3)
    adapter, runtime, remove, latents, sampling, predict = setup(tiny_transformer, seed=5)
    full = train_adapter(adapter, predict, sampling, latents, cfg, runtime=runtime)
    straight = {k: v.clone() for k, v in adapter.state_dict().items()}
    remove()

    adapter, runtime, remove, latents, sampling, predict = setup(tiny_transformer, seed=5)
    saves = []
    stop_after = iter([False, False, False, True])
    first = train_adapter(adapter, predict, sampling, latents, cfg, runtime=runtime,
                          save_checkpoint=lambda step, opt, log: saves.append(step), should_stop=lambda: next(stop_after))
    assert first.stopped_early and first.steps_done == 3 and saves == [3]
    second = train_adapter(adapter, predict, sampling, latents, cfg, runtime=runtime, start_step=3,
                           optimizer_state=first.optimizer_state)
    remove()
    assert [e.step for e in second.log] == [4, 5, 6]
    assert [e.loss for e in first.log + second.log] == pytest.approx([e.loss for e in full.log], rel=1e-5)
    for k, v in straight.items():
        torch.testing.assert_close(adapter.state_dict()[k], v, rtol=1e-6, atol=1e-7)


def saves_of_a_run_that_breaks(model, fault, steps, error, match):
    """Train with checkpoints every 2 steps while the 4th prediction goes wrong (`fault(prediction)`); the steps at
    which checkpoints were saved."""
    adapter, runtime, remove, latents, sampling, predict = setup(model)
    saves = []
    cfg = TrainConfig(steps=steps, learning_rate=1e-3, tracking_weight=0.0, optimizer="adamw", checkpoint_every=2)
    calls = {"n": 0}

    def breaking(x_t, sigma):
        calls["n"] += 1
        out = predict(x_t, sigma)
        return fault(out) if calls["n"] == 4 else out

    with pytest.raises(error, match=match):
        train_adapter(adapter, breaking, sampling, latents, cfg, runtime=runtime,
                      save_checkpoint=lambda step, opt, log: saves.append(step))
    remove()
    return saves


def test_checkpoints_every_n_steps_and_when_a_step_fails(tiny_transformer):
    def out_of_memory(_):
        raise RuntimeError("out of memory (simulated)")

    saves = saves_of_a_run_that_breaks(tiny_transformer, out_of_memory, 5, RuntimeError, "simulated")
    assert saves == [2, 3]  # the periodic save, then the last completed step on the way out


def test_a_diverging_run_keeps_the_last_good_checkpoint(tiny_transformer):
    """A NaN loss at step 4 stops the run; the checkpoint of step 2 stays, nothing is written over it."""
    saves = saves_of_a_run_that_breaks(tiny_transformer, lambda out: out * float("nan"), 6, FloatingPointError,
                                       "at step 4; lower the learning rate; the adapter on disk keeps step 2")
    assert saves == [2]
    adapter, runtime, remove, latents, sampling, predict = setup(tiny_transformer)
    cfg = TrainConfig(steps=6, learning_rate=1e-3, tracking_weight=0.0, optimizer="adamw")
    with pytest.raises(ValueError, match="reference latent holds NaN"):
        train_adapter(adapter, predict, sampling, latents * float("nan"), cfg, runtime=runtime)
    remove()


@pytest.mark.parametrize("gate", [400.0, 700.0])
def test_tracking_loss_joins_only_below_the_noise_gate(tiny_transformer, gate):
    adapter, runtime, remove, latents, sampling, predict = setup(tiny_transformer)
    xy = torch.rand(3, 10, 2)
    tracks = LatentTracks(xy=xy, visibility=torch.ones(3, 10), frame_ids=torch.arange(3))
    cfg = TrainConfig(steps=30, learning_rate=1e-4, tracking_weight=0.1, optimizer="adamw", seed=3,
                      tracking_max_timestep=gate)
    result = train_adapter(adapter, predict, sampling, latents, cfg, runtime=runtime, tracks=tracks)
    remove()
    with_track = [e for e in result.log if e.track is not None]
    assert with_track and all(e.timestep <= gate for e in with_track)
    assert all(e.timestep > gate for e in result.log if e.track is None)
    assert any(e.timestep > 400 for e in with_track) == (gate > 400)  # the same seed's steps, another gate
    for e in with_track:
        assert e.loss == pytest.approx(e.flow + 0.1 * e.track, rel=1e-5)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="steps=0"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="tracking_features='block7'"):
        TrainConfig(tracking_features="block7")
    with pytest.raises(ValueError, match="adamw8bit"):
        TrainConfig(optimizer="lion")
    with pytest.raises(ValueError, match="tracking_weight=nan must be a number"):
        TrainConfig(tracking_weight=float("nan"))
    for gate in (float("nan"), -1.0, 1001.0):
        with pytest.raises(ValueError, match="tracking_max_timestep=.* must be a number from 0 to 1000"):
            TrainConfig(tracking_max_timestep=gate)


class _Payload:
    pass


def test_an_optimizer_state_with_pickled_objects_is_refused_by_name(tmp_path):
    from det_core.safe_load import load_weights_only

    path = tmp_path / "det_motion.optim.pt"
    torch.save({"step": 3, "optimizer": _Payload()}, path)
    with pytest.raises(ValueError) as err:
        load_weights_only(str(path), "DeT optimizer state")
    assert "det_motion.optim.pt is not a valid DeT optimizer state" in str(err.value)
    assert "weights_only=False" not in str(err.value)
    good = tmp_path / "good.optim.pt"
    torch.save({"step": 3, "optimizer": {"state": {}, "param_groups": []}}, good)
    assert load_weights_only(str(good), "DeT optimizer state")["step"] == 3


def test_offloaded_activations_park_every_block_input_and_change_nothing(tiny_transformer):
    """offload_activations: each checkpointed block's activations (img and txt of a double block, the joint
    sequence of a single one) go to CPU RAM before the checkpoint keeps them; the trained adapter is the same."""
    cfg = TrainConfig(steps=3, learning_rate=1e-3, tracking_weight=0.0, optimizer="adamw", seed=4)
    adapters = []
    for offload in (False, True):
        adapter, runtime, remove, latents, sampling, predict = setup(tiny_transformer, seed=6)
        train_adapter(adapter, predict, sampling, latents, cfg, runtime=runtime, offload_activations=offload)
        remove()
        adapters.append(adapter.state_dict())
        parked = list(runtime.parked)
        assert runtime.offload is None  # set only while training
    assert all(torch.allclose(adapters[0][k], adapters[1][k], atol=1e-6) for k in adapters[0])
    # the last step: 2 double + 2 single blocks, each parked once in forward (backward recomputes from the copy)
    t, h, w = latents.shape[2], latents.shape[3] // 2, latents.shape[4] // 2
    img, txt = t * h * w * 128 * 4, tiny_inputs(3, 6, 8)["context"].shape[1] * 128 * 4
    assert parked == [("double", 0, img + txt), ("double", 1, img + txt), ("single", 0, img + txt),
                      ("single", 1, img + txt)]


def test_hidden_blocks_are_left_alone_by_a_loader_that_moves_the_whole_model():
    """What keeps swapped blocks off the GPU: while ComfyUI loads the model (state_dict, sizes, .to(device)), their
    parameters are invisible, so a whole-model move cannot take them along (a dtype move stands in for the device)."""
    from det_core.lowvram import hidden_parameters, parameter_bytes

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3)))
    hidden = model[1]
    with hidden_parameters([hidden]):
        assert set(model.state_dict()) == {"0.weight", "0.bias"}
        assert parameter_bytes([model]) == (16 + 4) * 4
        model.to(torch.float64)
    assert model[0].weight.dtype == torch.float64
    assert all(p.dtype == torch.float32 for p in hidden.parameters())
    assert len(model.state_dict()) == 6 and parameter_bytes([hidden]) == (12 + 3 + 3 + 3) * 4
