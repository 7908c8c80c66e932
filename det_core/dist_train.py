"""Train one DeT adapter, or sample with one, on several GPUs (or CPU processes) with torch.distributed: the worker.

    python -m torch.distributed.run --standalone --nproc_per_node=N -m det_core.dist_train JOB_DIR [JOB_DIR ...]

(run from the pack's folder, or with it on PYTHONPATH). Train DeT Adapter with `gpus` > 1 writes JOB_DIR and starts
that command as its own process group. On a cluster, copy a job folder the node wrote (ComfyUI's temp/det_jobs/), or
write one with `write_job`, and start the same module from your scheduler (the README has a SLURM line); several
job folders run one after the other in the same process group.

What each rank does:
- The frozen base is built with ComfyUI's own loader code (`comfy.model_detection`, the model config's
  `get_model`, its `process_unet_state_dict`), so its numbers are the one-GPU path's. With more than one rank it is
  built on the meta device, every transformer block and then the transformer are sharded with FSDP2
  (`fully_shard`, one flat mesh over the ranks), and rank 0 alone reads the checkpoint: the others receive their
  shards (`set_model_state_dict(..., broadcast_from_rank0=True)`). No rank holds the whole model on its device.
- The adapter is replicated: each rank patches it into its copy of the transformer (det_core.patch), and the
  gradients are summed over the ranks before every update (det_core.train), so all copies stay equal.
- Data parallel over the draws of the one video: rank r makes draw r of each step, seeded by (seed, step, r)
  (`det_core.train.step_randomness`); N ranks train on N (noise, timestep) draws per step, and one process given
  the same N draws computes the same adapter. With `sequence_parallel` P, each group of P consecutive ranks shares
  one draw, the video split between them by rows (det_core.sequence_parallel).
- Rank 0 writes the checkpoints (the adapter and its optimizer state, as the one-GPU node does) and appends one
  JSON line per step to JOB_DIR/progress.jsonl. A file JOB_DIR/stop asks every rank to stop after the step in
  flight (rank 0 reads it, all ranks agree through the step's all-reduce); rank 0 then saves.
- Each rank writes its PID to JOB_DIR/rank<r>.pid and, when it fails, its error to JOB_DIR/error_rank<r>.txt.

A sampling job (`kind` "sample", written by Apply DeT Motion with `gpus` > 1) holds the noise, the sigmas and the
model's inputs as ComfyUI's KSampler makes them; every rank runs ComfyUI's own sampler (`comfy.samplers`) on the
sharded model, and rank 0 writes the latent to JOB_DIR/samples.safetensors.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field

import torch

JOB_FILE = "job.json"
INPUTS_FILE = "inputs.safetensors"
ADAPTER_FILE = "adapter_start.safetensors"
PROGRESS_FILE = "progress.jsonl"
STOP_FILE = "stop"
JOB_VERSION = 1
PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2}


@dataclass
class Job:
    """What a training job's workers need (JOB_DIR/job.json; tensors in JOB_DIR/inputs.safetensors)."""

    comfy_dir: str
    """The ComfyUI folder whose `comfy` package builds the model."""
    model_file: str
    """The diffusion model's checkpoint (safetensors, as Load Diffusion Model reads it)."""
    weight_dtype: str
    """The dtype its weights are loaded in (a key of DTYPES), as the one-GPU model was loaded."""
    config: dict
    """det_core.train.TrainConfig's fields."""
    out_path: str
    """Where rank 0 writes the adapter (its optimizer state beside it)."""
    optimizer_state: str | None = None
    """A saved optimizer state to continue from (torch.load with weights_only)."""
    history: list = field(default_factory=list)
    """The loss log of the steps before (StepLog fields), kept in the saved state."""
    cond_values: dict = field(default_factory=dict)
    """The model's non-tensor keyword inputs (the tensor ones are `cond.<name>` in the inputs file)."""
    autocast: str | None = None
    offload_activations: bool = False
    draws_per_step: int = 0
    """(noise, timestep) draws per step over all ranks; 0 = one per rank. Rank r makes draws r, r + N, ... of each
    step, so one process with `draws_per_step` N computes what N ranks compute."""
    flow_shift: float | None = None
    """The flow-matching shift of the model's sampling (the MODEL's, ModelSamplingSD3 included); None: the model
    config's own."""
    flow_multiplier: float = 1000.0
    kind: str = "train"
    """`train` (config: TrainConfig fields) or `sample` (sample: see `_sample`): what the ranks do."""
    sample: dict | None = None
    """For kind `sample`: sigmas, sampler_name, cfg, seed, strength and the applied blocks."""
    sequence_parallel: int = 1
    """Ranks that share each draw, the video tokens split between them by space (det_core.sequence_parallel)."""
    device: str = "cuda"
    """`cuda` (one GPU per rank, NCCL) or `cpu` (gloo; tests and the CPU benchmark)."""
    watch_pid: int | None = None
    """A process whose end stops the run like the stop file (ComfyUI's server: the ranks never outlive it)."""
    version: int = JOB_VERSION


def write_job(job_dir: str, job: Job, adapter, latent: torch.Tensor, cond: dict, tracks=None,
              negative: dict | None = None, noise: torch.Tensor | None = None) -> str:
    """Write a job folder: the settings, the starting adapter (its step count says where training resumes), the
    reference latent (as the model takes it: after `process_latent_in`), the model's keyword inputs and the
    latent-frame tracks. Returns `job_dir`."""
    from safetensors.torch import save_file

    os.makedirs(job_dir, exist_ok=True)
    tensors = {"latent": latent.detach().float().cpu().contiguous()}
    if noise is not None:
        tensors["noise"] = noise.detach().float().cpu().contiguous()
    values = {}
    for prefix, inputs in (("cond", cond), ("neg", negative or {})):
        for k, v in inputs.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}.{k}"] = v.detach().cpu().contiguous()
            elif v is None or isinstance(v, (bool, int, float, str)):
                values[f"{prefix}.{k}"] = v
            else:
                raise ValueError(f"the model input {k!r} ({type(v).__name__}) cannot be sent to the worker processes; "
                                 f"use gpus=1")
    if tracks is not None:
        tensors.update({"tracks.xy": tracks.xy.float().cpu().contiguous(),
                        "tracks.visibility": tracks.visibility.float().cpu().contiguous(),
                        "tracks.frame_ids": tracks.frame_ids.cpu().contiguous()})
    save_file(tensors, os.path.join(job_dir, INPUTS_FILE))
    adapter.save(os.path.join(job_dir, ADAPTER_FILE))
    job.cond_values = values
    with open(os.path.join(job_dir, JOB_FILE), "w") as f:
        json.dump(asdict(job), f, indent=1)
    return job_dir


def read_job(job_dir: str) -> Job:
    path = os.path.join(job_dir, JOB_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no job here; Train DeT Adapter (gpus > 1) writes one, or see write_job")
    with open(path) as f:
        data = json.load(f)
    if data.get("version") != JOB_VERSION:
        raise ValueError(f"{path}: job version {data.get('version')}, this pack reads version {JOB_VERSION}")
    return Job(**data)


def launch_command(job_dirs: str | list[str], ranks: int) -> list[str]:
    """The torchrun line that runs one job, or several in turn, on `ranks` processes of this machine (cwd:
    PACK_DIR)."""
    dirs = [job_dirs] if isinstance(job_dirs, str) else list(job_dirs)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
            "-m", "det_core.dist_train", *map(os.path.abspath, dirs)]


def read_progress(job_dir: str, offset: int = 0) -> tuple[list[dict], int]:
    """The complete progress lines after byte `offset`, and the offset after them."""
    path = os.path.join(job_dir, PROGRESS_FILE)
    if not os.path.isfile(path):
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    lines = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
    return lines, offset + end


def rank_errors(job_dir: str) -> list[str]:
    """The errors the ranks wrote, rank by rank."""
    out = []
    for name in sorted(os.listdir(job_dir)):
        if name.startswith("error_rank") and name.endswith(".txt"):
            with open(os.path.join(job_dir, name)) as f:
                out.append(f"{name[6:-4]}: {f.read().strip()}")
    return out


def finished(job_dir: str, done: dict | None) -> bool:
    """Whether a job's work is complete, whatever the group's exit code: rank 0 writes its `done` line (from
    `read_progress`) after the last save (the adapter, or the sampled latent), and a rank that raises writes its
    error first. A gloo rank was seen to abort (SIGABRT) while the process group was torn down after a finished
    run, which made torchrun exit non-zero with every file in place."""
    return done is not None and not rank_errors(job_dir)


ABORT_AT_EXIT_ENV = "DET_DIST_TEST_ABORT_AT_EXIT"
"""For the tests: the rank (a number) that aborts after its jobs are done, as a gloo rank was seen to do."""


# -- the worker ------------------------------------------------------------------------------------------------------

def _header_state_dict(path: str) -> tuple[dict, dict]:
    """The checkpoint's keys as meta tensors of the right shapes and dtypes, and its metadata (what ComfyUI's
    model detection reads), without reading the weights."""
    from safetensors import safe_open

    names = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
             "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64, "I32": torch.int32,
             "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
    sd = {}
    with safe_open(path, framework="pt") as f:
        for k in f.keys():
            s = f.get_slice(k)
            sd[k] = torch.empty(s.get_shape(), dtype=names.get(s.get_dtype(), torch.float32), device="meta")
        metadata = f.metadata() or {}
    return sd, metadata


def build_model(job: Job, device: torch.device, rank: int, world: int):
    """ComfyUI's model (BaseModel) for the job's checkpoint. One rank: loaded whole on `device`, as ComfyUI loads
    it. Several: built on the meta device, sharded per block with FSDP2, the weights sent from rank 0."""
    import comfy.model_detection as md
    import comfy.model_management as mm
    import comfy.utils

    if rank == 0 or world == 1:
        sd, metadata = comfy.utils.load_torch_file(job.model_file, return_metadata=True)
    else:
        sd, metadata = _header_state_dict(job.model_file)
    prefix = md.unet_prefix_from_state_dict(sd)
    stripped = comfy.utils.state_dict_prefix_replace(sd, {prefix: ""}, filter_keys=True)
    sd = stripped or sd
    model_config = md.model_config_from_unet(sd, "", metadata=metadata)
    if model_config is None:
        raise ValueError(f"{job.model_file}: ComfyUI does not recognise this diffusion model")
    dtype = DTYPES[job.weight_dtype]
    manual_cast = mm.unet_manual_cast(dtype, device, model_config.supported_inference_dtypes)
    model_config.set_inference_dtype(dtype, manual_cast)
    if world == 1:
        base = model_config.get_model(sd, "")
        base.load_model_weights(sd, "")
        base.diffusion_model.requires_grad_(False).to(device)
        return base
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    base = model_config.get_model(sd, "", device="meta")
    dm = base.diffusion_model.requires_grad_(False)
    arch = _arch(base)
    mesh = init_device_mesh(device.type, (world,))
    for group in arch.groups:
        for block in getattr(dm, group.attr):
            fully_shard(block, mesh=mesh)
    fully_shard(dm, mesh=mesh)
    dm.to_empty(device=device)
    full = model_config.process_unet_state_dict(dict(sd)) if rank == 0 else {}
    set_model_state_dict(dm, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    del full, sd
    return base


def _alive(pid: int | None) -> bool:
    """Whether process `pid` still runs (True without one)."""
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _arch(base):
    """The det_core.arch architecture of a ComfyUI BaseModel."""
    from types import SimpleNamespace

    from .arch import arch_of

    return arch_of(SimpleNamespace(model=base))


def _all_reduce(device: torch.device):
    import torch.distributed as dist

    def reduce(t: torch.Tensor) -> None:
        if t.device == device:
            dist.all_reduce(t)
            return
        moved = t.to(device)
        dist.all_reduce(moved)
        t.copy_(moved)

    return reduce


def run_jobs(job_dirs: list[str]) -> int:
    """This rank's part of each job in turn, in one process group (set up from torchrun's environment). Returns
    the exit code."""
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    jobs = [read_job(d) for d in job_dirs]
    for d in job_dirs:
        with open(os.path.join(d, f"rank{rank}.pid"), "w") as f:
            f.write(str(os.getpid()))
    if jobs[0].device == "cuda":
        torch.cuda.set_device(local)  # before ComfyUI picks its device
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
    try:
        from .comfy_models import use_comfy

        use_comfy(jobs[0].comfy_dir)
        if device.type == "cpu":
            from comfy.cli_args import args
            args.cpu = True
        for d, job in zip(job_dirs, jobs):
            try:
                (_sample if job.kind == "sample" else _train)(job, d, device, rank, world)
            except BaseException as e:
                with open(os.path.join(d, f"error_rank{rank}.txt"), "w") as f:
                    f.write(f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}")
                raise
        if world > 1:  # every rank done (rank 0's file saved) before any tears the group down: a gloo rank that
            dist.barrier()  # left while its peer still worked was seen to abort (SIGABRT) after a finished run
        return 0
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _setup(job: Job, job_dir: str, device, rank: int, world: int, applied=None, strength=1.0,
           mode="train", feature_block=None):
    """The model (sharded over the ranks), the adapter patched in, sequence parallel hooked in when asked, and the
    job's inputs: (base, runtime, transformer options, inputs, cond, negative cond, data-parallel rank, size)."""
    from safetensors.torch import load_file

    from .adapter import DeTAdapter
    from .patch import DeTRuntime, forward_patches, install

    p = job.sequence_parallel
    if p < 1 or world % p:
        raise ValueError(f"sequence_parallel={p} does not divide the {world} ranks")
    dp_rank, dp_size = rank // p, world // p  # data parallel: one draw per group of p ranks
    base = build_model(job, device, rank, world)
    if job.flow_shift is not None:  # the noise levels the one-GPU path uses
        from .comfy_models import flow_sampling

        base.model_sampling = flow_sampling(job.flow_shift, base.model_config, job.flow_multiplier)
    dm = base.diffusion_model
    arch = _arch(base)
    adapter = DeTAdapter.load(os.path.join(job_dir, ADAPTER_FILE))
    applied = applied or {k: adapter.indices(k) for k in arch.kinds}
    runtime = DeTRuntime(adapter, applied, strength, feature_block)
    install(dm, forward_patches(dm, runtime, mode))
    options = {}
    if p > 1:
        import torch.distributed as dist

        from .sequence_parallel import SequenceParallel

        if feature_block is not None:
            raise ValueError("sequence parallel computes the tracking loss on the predicted latent: set "
                             "tracking_features to x0")
        groups = [dist.new_group(list(range(g * p, (g + 1) * p))) for g in range(dp_size)]  # every rank makes all
        sp = SequenceParallel(groups[dp_rank], rank % p, p, arch, runtime)
        sp.install(dm)
        options = {"transformer_options": sp.transformer_options()}
    inputs = load_file(os.path.join(job_dir, INPUTS_FILE))
    conds = []
    for prefix in ("cond.", "neg."):
        c = {k[len(prefix):]: v for k, v in job.cond_values.items() if k.startswith(prefix)}
        c.update({k[len(prefix):]: v.to(device) for k, v in inputs.items() if k.startswith(prefix)})
        conds.append(c)
    adapter.to(device)
    return base, runtime, options, inputs, conds[0], conds[1], dp_rank, dp_size


def _train(job: Job, job_dir: str, device, rank: int, world: int) -> int:
    from .safe_load import load_weights_only
    from .tracking_loss import LatentTracks
    from .train import StepLog, TrainConfig, save_checkpoint_files, train_adapter

    config = TrainConfig(**{k: tuple(v) if k == "betas" else v for k, v in job.config.items()})
    base, runtime, options, inputs, cond, _, dp_rank, dp_size = _setup(
        job, job_dir, device, rank, world, feature_block=config.feature_block())
    adapter, p = runtime.adapter, job.sequence_parallel
    total = job.draws_per_step or dp_size
    if total % dp_size:
        raise ValueError(f"draws_per_step={total} is not a multiple of the {dp_size} rank groups")
    x0 = inputs["latent"].to(device)
    tracks = None
    if "tracks.xy" in inputs:
        tracks = LatentTracks(inputs["tracks.xy"].to(device), inputs["tracks.visibility"].to(device),
                              inputs["tracks.frame_ids"])
    opt_state = None
    if job.optimizer_state:
        opt_state = load_weights_only(job.optimizer_state, "DeT optimizer state")["optimizer"]
    # the record of how it was trained: rank r of each group makes draws r, r + groups, ... seeded by (seed, step, draw)
    adapter.meta.extra.update({"ranks": str(world), "draws_per_step": str(total), "sequence_parallel": str(p)})
    history = [StepLog(**e) for e in job.history]
    logs = list(history)
    stop_path = os.path.join(job_dir, STOP_FILE)
    progress_path = os.path.join(job_dir, PROGRESS_FILE)

    def progress(entry: StepLog) -> None:
        logs.append(entry)
        with open(progress_path, "a") as f:
            f.write(json.dumps(asdict(entry)) + "\n")

    def save(step: int, opt_state_dict: dict, _log) -> None:
        save_checkpoint_files(adapter, job.out_path, step, opt_state_dict, logs)

    def predict_x0(x_t, sigma):
        return base.apply_model(x_t, sigma, **cond, **options)

    result = train_adapter(adapter, predict_x0, base.model_sampling, x0, config, runtime=runtime, tracks=tracks,
                           start_step=adapter.meta.steps, optimizer_state=opt_state,
                           save_checkpoint=save if rank == 0 else None, on_step=progress if rank == 0 else None,
                           should_stop=(lambda: os.path.exists(stop_path) or not _alive(job.watch_pid))
                           if rank == 0 else None,
                           autocast_dtype=DTYPES[job.autocast] if job.autocast else None,
                           offload_activations=job.offload_activations, draws=tuple(range(dp_rank, total, dp_size)),
                           total_draws=total, replicas=p,
                           all_reduce=_all_reduce(device) if world > 1 else None)
    if rank == 0:
        with open(progress_path, "a") as f:
            f.write(json.dumps({"done": result.steps_done, "stopped_early": result.stopped_early}) + "\n")
    return 0


SAMPLES_FILE = "samples.safetensors"


def _sample(job: Job, job_dir: str, device, rank: int, world: int) -> int:
    """Sample one video with ComfyUI's own sampler (comfy.samplers.sampler_object) on the sharded model: every rank
    (or sequence-parallel group) runs the same steps from the same noise; rank 0 writes the samples."""
    import comfy.samplers
    from safetensors.torch import save_file

    s = job.sample
    base, _, options, inputs, cond, negative, _, _ = _setup(
        job, job_dir, device, rank, world, applied={k: list(v) for k, v in s["applied"].items()},
        strength=s["strength"], mode="inference")
    cfg = float(s["cfg"])

    class Denoiser:
        """What ComfyUI's KSAMPLER calls: the denoised latent, with classifier-free guidance as ComfyUI combines it."""
        inner_model = base

        def __call__(self, x, sigma, **_):
            pos = base.apply_model(x, sigma, **cond, **options)
            if cfg == 1.0:  # as ComfyUI, which never evaluates the negative at cfg 1
                return pos
            neg = base.apply_model(x, sigma, **negative, **options)
            return neg + (pos - neg) * cfg

    sigmas = torch.tensor(s["sigmas"], dtype=torch.float32, device=device)
    progress_path = os.path.join(job_dir, PROGRESS_FILE)

    def callback(i, denoised, x, total):  # (an interrupt ends the group from outside: there is nothing to save)
        if rank == 0:
            with open(progress_path, "a") as f:
                f.write(json.dumps({"sample_step": i + 1, "total": total}) + "\n")

    sampler = comfy.samplers.sampler_object(s["sampler_name"])
    with torch.no_grad():
        samples = sampler.sample(Denoiser(), sigmas, {"seed": int(s["seed"]), "model_options": {}}, callback,
                                 inputs["noise"].to(device), inputs["latent"].to(device), None, True)
    if rank == 0:
        save_file({"samples": samples.float().cpu().contiguous()}, os.path.join(job_dir, SAMPLES_FILE))
        with open(progress_path, "a") as f:
            f.write(json.dumps({"done": len(s["sigmas"]) - 1, "stopped_early": False}) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or any(a.startswith("-") for a in argv):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        for d in argv:
            read_job(d)
    except (OSError, ValueError) as e:
        print(f"[DeT] {e}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    code = run_jobs(argv)
    print(f"[DeT] rank {os.environ.get('RANK', '0')}: {len(argv)} job(s) done in {time.monotonic() - t0:.1f} s",
          file=sys.stderr)
    return code


if __name__ == "__main__":
    exit_code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    if os.environ.get(ABORT_AT_EXIT_ENV) == os.environ.get("RANK", "0"):
        os.abort()
    # Every file is written and closed, and the process group is destroyed: skip the interpreter's teardown, where
    # threads of gloo and of the imported ComfyUI modules can still run (a rank was seen to abort there).
    os._exit(exit_code)
