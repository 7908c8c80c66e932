"""Training a DeT adapter on one reference video: flow matching plus the dense tracking loss.

A plain loop with `try/finally`: whatever ends it (the last step, an interrupt, an error), the state after the
last completed step is handed to `save_checkpoint`, so a run never loses more than the step in flight.

The host (the ComfyUI node) provides the model side as three callables, so nothing here imports ComfyUI:
- `predict_x0(x_t, sigma)` runs the (patched) transformer and returns the denoised estimate x0_hat;
- `sampling` has the model's sigma grid `sigmas` and its `timestep(sigma)` and `noise_scaling(sigma, noise, x0)`.

Per step (seeded by (seed, step), so a resumed run draws what an uninterrupted one would; several ranks or
`draws` make several such draws per step, seeded by (seed, step, draw), and average their losses):
    sigma  ~ the model's (shifted) sigma grid, uniform over its entries or logit-normal over their index (as
             diffusers' training scripts draw it), within [timestep_min, timestep_max]
                                                                     t = timestep(sigma) on the 0..1000 scale
    x_t    = noise_scaling(sigma, e, x0) = sigma e + (1 - sigma) x0
    v_hat  = (x_t - x0_hat) / sigma                                    flow loss = mean (v_hat - (e - x0))^2
    track  = tracking_loss(x0_hat or a block's video features, tracks)   only when t <= tracking_max_timestep
    loss   = flow + tracking_weight * track
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol

import torch

from .adapter import DeTAdapter
from .patch import DeTRuntime
from .tracking_loss import LatentTracks, tokens_to_features, tracking_loss

OPTIMIZERS = ("auto", "adamw", "adamw8bit")
TIMESTEP_SAMPLING = ("uniform", "logit_normal")


@dataclass
class TrainConfig:
    steps: int = 500
    """Total optimizer steps (a resumed run counts the steps done before)."""
    learning_rate: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    """Max global grad norm (0 = no clipping)."""
    warmup_steps: int = 0
    """Linear warm-up from 0 to the learning rate over this many steps, then constant (the authors used 100)."""
    tracking_weight: float = 0.1
    tracking_max_timestep: float = 400.0
    """Tracking loss only when the sampled timestep (0..1000 scale) is at most this (low noise)."""
    tracking_features: str = "x0"
    """`x0` (the predicted clean latent, as the public code) or `double:<i>` / `single:<i>` / `blocks:<i>` (a block's
    video features)."""
    timestep_sampling: str = "uniform"
    """How the training noise level is drawn from the model's sigma grid: `uniform` over its entries, or
    `logit_normal` over their index (the authors' Wan runs)."""
    timestep_min: float = 0.0
    timestep_max: float = 1000.0
    """Train only on noise levels whose timestep (sigma x 1000) lies in [timestep_min, timestep_max]: one expert of
    a two-expert model (Wan 2.2 A14B's high-noise expert: 875 to 1000)."""
    optimizer: str = "auto"
    """`auto` (8-bit AdamW when bitsandbytes and CUDA are there, else AdamW), `adamw`, `adamw8bit`."""
    seed: int = 0
    checkpoint_every: int = 100
    """Save every this many steps (0 = only at the end); the end and interrupts always save."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps={self.steps}: train at least 1 step")
        if self.learning_rate <= 0 or not math.isfinite(self.learning_rate):
            raise ValueError(f"learning_rate={self.learning_rate} must be a positive number")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if not (math.isfinite(self.tracking_weight) and self.tracking_weight >= 0):
            raise ValueError(f"tracking_weight={self.tracking_weight} must be a number, 0 or more (0 turns the "
                             f"tracking loss off)")
        if not (math.isfinite(self.tracking_max_timestep) and 0 <= self.tracking_max_timestep <= 1000):
            raise ValueError(f"tracking_max_timestep={self.tracking_max_timestep} must be a number from 0 to 1000 "
                             f"(the timestep scale, sigma x 1000)")
        if self.timestep_sampling not in TIMESTEP_SAMPLING:
            raise ValueError(f"timestep_sampling={self.timestep_sampling!r} is not one of {', '.join(TIMESTEP_SAMPLING)}")
        if not (math.isfinite(self.timestep_min) and math.isfinite(self.timestep_max)
                and 0 <= self.timestep_min < self.timestep_max <= 1000):
            raise ValueError(f"timestep range {self.timestep_min}-{self.timestep_max}: give 0 <= timestep_min < "
                             f"timestep_max <= 1000 (sigma x 1000)")
        self.feature_block()  # validates the spelling

    def check_tracking_gate(self, has_tracks: bool) -> None:
        """ValueError when tracks are given but the tracking loss could never run: the gate lies below the range
        of timesteps this run trains on."""
        if has_tracks and self.tracking_weight > 0 and self.timestep_min > self.tracking_max_timestep:
            raise ValueError(f"the tracking loss would never run: it runs at timesteps up to tracking_max_timestep="
                             f"{self.tracking_max_timestep:g}, training draws {self.timestep_min:g}-"
                             f"{self.timestep_max:g}; raise tracking_max_timestep (to {self.timestep_max:g} for the "
                             f"whole range) or set tracking_weight to 0")

    def feature_block(self) -> tuple[str, int] | None:
        spec = self.tracking_features.strip().lower()
        if spec == "x0":
            return None
        kind, _, idx = spec.partition(":")
        if kind in ("double", "single", "blocks") and idx.isdigit():
            return kind, int(idx)
        raise ValueError(f"tracking_features={self.tracking_features!r}: use 'x0', 'double:<block>' or 'single:<block>' "
                         f"(HunyuanVideo), 'blocks:<block>' (Wan)")


class Sampling(Protocol):
    sigmas: torch.Tensor

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor: ...

    def noise_scaling(self, sigma: torch.Tensor, noise: torch.Tensor, latent_image: torch.Tensor) -> torch.Tensor: ...


@dataclass
class StepLog:
    step: int
    """1-based number of the completed step."""
    loss: float
    flow: float
    track: float | None
    """None when the step's timestep was above the tracking gate (or no tracks)."""
    timestep: float
    lr: float
    seconds: float


@dataclass
class TrainResult:
    log: list[StepLog] = field(default_factory=list)
    steps_done: int = 0
    optimizer_state: dict | None = None
    stopped_early: bool = False


def make_optimizer(params, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    kind = config.optimizer
    if kind in ("auto", "adamw8bit"):
        try:
            import bitsandbytes as bnb  # optional
        except ImportError:
            bnb = None
        if bnb is not None and device.type == "cuda":
            return bnb.optim.AdamW8bit(params, lr=config.learning_rate, betas=config.betas,
                                       weight_decay=config.weight_decay)
        if kind == "adamw8bit":
            raise ValueError("optimizer 'adamw8bit' needs the bitsandbytes package and a CUDA GPU; "
                             "pip install bitsandbytes, or choose 'adamw'")
    return torch.optim.AdamW(params, lr=config.learning_rate, betas=config.betas, weight_decay=config.weight_decay)


def lr_factor(step: int, warmup: int) -> float:
    """Multiplier of the learning rate for 0-based `step`: linear warm-up, then constant."""
    return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


def allowed_sigmas(sampling: Sampling, config: TrainConfig) -> torch.Tensor:
    """Indices of the sigma grid inside the training timestep range; ValueError when none is."""
    sigmas = sampling.sigmas.detach().to(torch.float32)
    t = sampling.timestep(sigmas).to(torch.float32)
    idx = torch.nonzero((t >= config.timestep_min) & (t <= config.timestep_max)).flatten()
    if idx.numel() == 0:
        raise ValueError(f"no noise level of the model lies in timesteps {config.timestep_min:g}-"
                         f"{config.timestep_max:g}; widen the range")
    return idx


DRAW_STRIDE = 1_000_000_007
"""Seed offset between the draws of one step (several ranks, each its own draw; see `step_randomness`)."""


def step_randomness(config: TrainConfig, step: int, allowed: torch.Tensor, shape, draw: int = 0) -> tuple[int, torch.Tensor]:
    """(index into the sigma grid, noise) of 0-based `step`, seeded by (seed, step, draw). Draw 0 is the one-GPU
    run's draw; with N ranks, rank r makes draw r, so N ranks train on N (noise, timestep) draws per step."""
    g = torch.Generator().manual_seed(config.seed * 1_000_003 + step + draw * DRAW_STRIDE)
    n = allowed.numel()
    if config.timestep_sampling == "logit_normal":
        u = torch.sigmoid(torch.randn(1, generator=g))
        k = min(int(u * n), n - 1)
    else:
        k = int(torch.randint(0, n, (1,), generator=g))
    return int(allowed[k]), torch.randn(shape, generator=g)


def step_losses(predict_x0, sampling: Sampling, latents: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
                timestep: float, config: TrainConfig, runtime: DeTRuntime | None = None,
                tracks: LatentTracks | None = None, autocast_dtype: torch.dtype | None = None):
    """(loss, flow, track or None) of one step at noise level `sigma`: the model's prediction and both losses,
    with nothing read back to Python (so it also runs on fake tensors)."""
    x_t = sampling.noise_scaling(sigma, noise, latents)
    with torch.autocast(latents.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        x0_hat = predict_x0(x_t, sigma).float()
    v_hat = (x_t.float() - x0_hat) / sigma.float().reshape(-1, *[1] * (x_t.ndim - 1))
    flow = (v_hat - (noise - latents).float()).pow(2).mean()
    track = None
    if tracks is not None and config.tracking_weight > 0 and timestep <= config.tracking_max_timestep:
        feature_block = config.feature_block()
        features = x0_hat if feature_block is None else tokens_to_features(runtime.features, runtime.need_grid())
        track = tracking_loss(features, tracks)
    loss = flow + config.tracking_weight * track if track is not None else flow
    return loss, flow, track


def check_training(latents: torch.Tensor, config: TrainConfig, start_step: int, runtime: DeTRuntime | None,
                   tracks: LatentTracks | None) -> None:
    """ValueError for a run that cannot start or could not do what it is asked, before any step."""
    if not torch.isfinite(latents).all():
        raise ValueError("the reference latent holds NaN or infinite values: check what VAE Encode was given (the "
                         "reference frames)")
    if start_step >= config.steps:
        raise ValueError(f"the adapter already has {start_step} steps; ask for more than {start_step} steps to continue")
    feature_block = config.feature_block()
    if feature_block is not None and (runtime is None or runtime.feature_block != feature_block):
        raise ValueError("tracking on block features needs the runtime patched with that feature block")
    config.check_tracking_gate(tracks is not None)


@dataclass
class _Steps:
    """One training run's state between steps: the adapter's parameters, the optimizer, the sigma grid."""

    params: list
    optimizer: torch.optim.Optimizer
    sigmas: torch.Tensor
    allowed: torch.Tensor
    predict_x0: Callable
    sampling: Sampling
    latents: torch.Tensor
    config: TrainConfig
    runtime: DeTRuntime | None
    tracks: LatentTracks | None
    autocast_dtype: torch.dtype | None
    offload_activations: bool
    draws: tuple[int, ...] = (0,)
    """The draws of each step this process makes (see `step_randomness`)."""
    total_draws: int = 1
    """Draws per step over all processes: each draw's loss counts 1/total_draws."""
    all_reduce: Callable[[torch.Tensor], None] | None = None
    """Sums a tensor over the processes in place (several ranks); None in one process."""
    replicas: int = 1
    """How many ranks compute each draw together (sequence parallel): each reports the draw's whole loss."""

    def draw(self, step: int, draw: int, device) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(sigma, noise, timestep) of one draw of 0-based `step`, seeded by (seed, step, draw)."""
        index, noise = step_randomness(self.config, step, self.allowed, self.latents.shape, draw)
        sigma = self.sigmas[index].reshape(1)
        return sigma, noise.to(device=device, dtype=self.latents.dtype), float(self.sampling.timestep(sigma))

    def run(self, step: int) -> StepLog:
        """0-based `step`: per draw, predict, both losses and backward; then (over ranks) the summed gradients,
        clip, update; its log entry (losses averaged over the draws, the first draw's timestep)."""
        config, latents, device = self.config, self.latents, self.latents.device
        t0 = time.perf_counter()
        if self.runtime is not None:
            self.runtime.parked.clear()  # what this step moves to CPU RAM (kept for inspection until the next step)
        for group in self.optimizer.param_groups:
            group["lr"] = config.learning_rate * lr_factor(step, config.warmup_steps)
        self.optimizer.zero_grad(set_to_none=True)
        # the other tensors autograd keeps for backward wait in CPU RAM too when asked
        keep = torch.autograd.graph.save_on_cpu(pin_memory=device.type == "cuda") if self.offload_activations \
            else contextlib.nullcontext()
        stats = torch.zeros(4, dtype=torch.float64)  # loss, flow, track sums; how many draws ran the tracking loss
        timestep = None
        for d in self.draws:
            # 1. this draw's noise level and noise
            sigma, noise, t = self.draw(step, d, device)
            timestep = t if timestep is None else timestep
            # 2. prediction, losses, backward (gradients add up over the draws)
            with keep:
                loss, flow, track = step_losses(self.predict_x0, self.sampling, latents, sigma, noise, t, config,
                                                self.runtime, self.tracks, self.autocast_dtype)
            (loss / self.total_draws).backward()
            stats += torch.tensor([float(loss.detach()), float(flow.detach()),
                                   0.0 if track is None else float(track.detach()), float(track is not None)],
                                  dtype=torch.float64)
        # 3. over ranks: the losses (every rank sees the same, so all stop together), then the gradients
        if self.all_reduce is not None:
            self.all_reduce(stats)
        stats /= self.replicas
        mean = stats[0].item() / self.total_draws
        if not math.isfinite(mean):
            raise FloatingPointError(f"DeT training: the loss became {mean} at step {step + 1}; lower the learning "
                                     f"rate")
        if self.all_reduce is not None:
            grads = [p.grad for p in self.params if p.grad is not None]
            flat = torch.cat([g.reshape(-1) for g in grads])
            self.all_reduce(flat)
            for g, summed in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
                g.copy_(summed)
        # 4. update
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, config.grad_clip)
        self.optimizer.step()
        if self.runtime is not None:
            self.runtime.features = None
        track_n = stats[3].item()
        return StepLog(step=step + 1, loss=mean, flow=stats[1].item() / self.total_draws,
                       track=stats[2].item() / track_n if track_n else None, timestep=timestep,
                       lr=self.optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - t0)


def train_adapter(
    adapter: DeTAdapter,
    predict_x0: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sampling: Sampling,
    latents: torch.Tensor,
    config: TrainConfig,
    runtime: DeTRuntime | None = None,
    tracks: LatentTracks | None = None,
    start_step: int = 0,
    optimizer_state: dict | None = None,
    save_checkpoint: Callable[[int, dict, list[StepLog]], None] | None = None,
    on_step: Callable[[StepLog], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    autocast_dtype: torch.dtype | None = None,
    offload_activations: bool = False,
    draws: tuple[int, ...] = (0,),
    total_draws: int = 1,
    all_reduce: Callable[[torch.Tensor], None] | None = None,
    replicas: int = 1,
) -> TrainResult:
    """Train `adapter` (in place) from `start_step` to `config.steps`; see the module doc for one step.

    Several ranks (det_core.dist_train) each pass their own `draws`, `total_draws` = the draws of all ranks and an
    `all_reduce` that sums over them: the gradients are summed before the update, so every rank's adapter stays the
    same, and one process with all the draws computes the same steps. With sequence parallel, `replicas` ranks
    share each draw (det_core.sequence_parallel): each holds part of the video tokens and reports the whole loss.
    `should_stop` is asked on every rank; the run stops when any rank says so."""
    check_training(latents, config, start_step, runtime, tracks)
    params = list(adapter.parameters())
    for p in params:
        p.requires_grad_(True)
    optimizer = make_optimizer(params, config, latents.device)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    steps = _Steps(params, optimizer, sampling.sigmas.detach().to(device=latents.device, dtype=torch.float32).clone(),
                   allowed_sigmas(sampling, config), predict_x0, sampling, latents, config, runtime, tracks,
                   autocast_dtype, offload_activations, tuple(draws), total_draws, all_reduce, replicas)
    result = TrainResult(steps_done=start_step)
    saved_at, diverged = start_step, False
    adapter.train()
    if offload_activations and runtime is not None:
        runtime.offload = torch.device("cpu")  # the checkpointed blocks' inputs wait in CPU RAM
    try:
        for step in range(start_step, config.steps):
            stop = should_stop is not None and should_stop()
            if all_reduce is not None:  # every rank takes the same decision
                flag = torch.tensor([float(stop)], dtype=torch.float64)
                all_reduce(flag)
                stop = flag.item() > 0
            if stop:
                result.stopped_early = True
                break
            entry = steps.run(step)
            result.steps_done = step + 1
            result.log.append(entry)
            if on_step is not None:
                on_step(entry)
            if save_checkpoint and config.checkpoint_every and result.steps_done % config.checkpoint_every == 0:
                save_checkpoint(result.steps_done, optimizer.state_dict(), result.log)
                saved_at = result.steps_done
    except FloatingPointError as e:
        diverged = True  # a diverged run never writes over the last good checkpoint
        kept = f"the adapter on disk keeps step {saved_at}" if saved_at else "no adapter was saved"
        raise FloatingPointError(f"{e}; {kept}") from None
    finally:
        if runtime is not None:
            runtime.offload = None
        for p in params:
            p.requires_grad_(False)
        adapter.eval()
        result.optimizer_state = optimizer.state_dict()
        finite = all(bool(torch.isfinite(p).all()) for p in params)
        if save_checkpoint and result.steps_done > saved_at and not diverged and finite:
            save_checkpoint(result.steps_done, result.optimizer_state, result.log)
    return result


def save_checkpoint_files(adapter, out_path: str, step: int, optimizer_state: dict, logs: list) -> None:
    """The adapter at `step` and, beside it, its optimizer state and the whole loss log (what resuming reads)."""
    adapter.meta.steps = step
    adapter.save(out_path)
    state_path = optimizer_state_path(out_path)
    tmp = state_path + ".tmp"
    torch.save({"step": step, "optimizer": optimizer_state, "log": [asdict(e) for e in logs]}, tmp)
    os.replace(tmp, state_path)


def optimizer_state_path(adapter_path: str) -> str:
    """Where an adapter's optimizer state and loss log are kept: beside it."""
    return adapter_path[: -len(".safetensors")] + ".optim.pt"
