"""Train DeT Adapter and Apply DeT Motion with gpus > 1: the job for det_core.dist_train, its torchrun process group,
and its progress forwarded into ComfyUI (progress bar, the live loss curve, the console)."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import time
import uuid
from dataclasses import asdict

import torch

import comfy.model_management as mm
import folder_paths

from ..det_core import dist_train
from ..det_core.adapter import DeTAdapter
from ..det_core.arch import arch_of, patch_size
from ..det_core.comfy_models import model_conds
from ..det_core.processes import end_process_group
from ..det_core.sequence_parallel import check_degree
from ..det_core.train import StepLog

log = logging.getLogger("DeT")
CPU_RANKS_ENV = "DET_DIST_CPU"
"""Set to 1 to run the ranks as CPU processes (gloo) on a machine without CUDA: for tests and the CPU benchmark."""
STOP_GRACE_S = 120.0
"""After an interrupt: how long the ranks may take to finish their step and save before they are killed."""
POLL_S = 0.2
MAX_GPUS = 64
"""The largest `gpus` and `sequence_parallel` the nodes take."""


def node_inputs(verb: str, per_gpu: str = "") -> list:
    """The gpus, sequence_parallel and model_file inputs of a node that can run on several GPUs: `verb` says what it
    does ("Train", "Sample"), `per_gpu` what each GPU does besides holding its shard of the model."""
    from comfy_api.latest import io

    return [
        io.Int.Input("gpus", default=1, min=1, max=MAX_GPUS, optional=True,
                     tooltip=f"{verb} on this many GPUs of this machine with torch.distributed (FSDP2 shards the "
                             f"frozen model per block{per_gpu}). 1: {verb.lower()} here, in ComfyUI's process. More "
                             f"than 1 needs model_file."),
        io.Int.Input("sequence_parallel", default=1, min=1, max=MAX_GPUS, optional=True,
                     tooltip="For gpus > 1: how many GPUs share each video, split between them by rows (Ulysses: an "
                             "all-to-all over heads around attention). It must divide gpus, the model's heads and "
                             "the latent's rows of patches. For clips that do not fit one GPU's memory."),
        io.Combo.Input("model_file", options=["none", *folder_paths.get_filename_list("diffusion_models")],
                       default="none", optional=True,
                       tooltip="For gpus > 1: the file Load Diffusion Model loaded (the worker processes load it "
                               "themselves, in the same weight dtype)."),
    ]


def ranks_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_request(model, gpus: int, model_file: str, swap_blocks: int, sequence_parallel: int = 1,
                  samples: torch.Tensor | None = None, config=None) -> str | None:
    """The model file for a gpus > 1 request (None for gpus 1), or a ValueError saying what to change."""
    for name, value in (("gpus", gpus), ("sequence_parallel", sequence_parallel)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r}: give a whole number, 1 or more")
    if gpus == 1:
        if sequence_parallel != 1:
            raise ValueError(f"sequence_parallel={sequence_parallel} needs as many GPUs at least: set gpus")
        return None
    if gpus % sequence_parallel:
        raise ValueError(f"sequence_parallel={sequence_parallel} does not divide gpus={gpus}")
    if sequence_parallel > 1:
        dm = model.model.diffusion_model
        rows = -(-samples.shape[3] // patch_size(dm)[1])
        check_degree(sequence_parallel, int(dm.num_heads), rows, arch_of(model).label)
        if config is not None and config.feature_block() is not None:
            raise ValueError("sequence_parallel computes the tracking loss on the predicted latent: set "
                             "tracking_features to x0")
    have, unit = (torch.cuda.device_count(), "CUDA GPUs") if torch.cuda.is_available() else (0, "CUDA GPUs")
    if have == 0 and os.environ.get(CPU_RANKS_ENV) == "1":
        have, unit = os.cpu_count() or 1, f"CPU cores for CPU ranks ({CPU_RANKS_ENV}=1)"
    if gpus > have:
        raise ValueError(f"gpus={gpus}: this machine has {have} {unit}; set gpus to {max(1, have)} or fewer")
    if model_file in (None, "", "none"):
        raise ValueError(f"gpus={gpus} needs model_file: the worker processes load the model themselves; choose the "
                         f"file that Load Diffusion Model loaded")
    path = folder_paths.get_full_path("diffusion_models", model_file)
    if path is None:
        raise ValueError(f"model_file={model_file!r} not found in models/diffusion_models/")
    if swap_blocks:
        raise ValueError(f"swap_blocks={swap_blocks} is for one GPU; with gpus={gpus} FSDP2 shards the model "
                         f"instead: set swap_blocks to 0")
    if model.patches:
        raise ValueError(f"gpus={gpus}: the model carries weight patches (a LoRA?), which the worker processes "
                         f"would not see; use gpus=1, or merge the LoRA into the model file first")
    _check_same_model(model, path)
    return path


def _check_same_model(model, path: str) -> None:
    """ValueError when `path` does not hold the connected model: the parameter count must match."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        total = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    ours = sum(p.numel() for p in model.model.diffusion_model.parameters())
    if total != ours:
        raise ValueError(f"model_file {os.path.basename(path)} holds {total:,} weights, the connected model "
                         f"{ours:,}: choose the file that Load Diffusion Model loaded")


def _dtype_name(dtype: torch.dtype) -> str:
    for name, d in dist_train.DTYPES.items():
        if d == dtype:
            return name
    raise ValueError(f"the model's weights are {dtype}, which the worker processes cannot load; use gpus=1")


def _flow_settings(model) -> dict:
    """The MODEL's flow-matching shift and multiplier (ModelSamplingSD3's patch included), for the job."""
    import comfy.model_sampling as ms

    sampling = model.get_model_object("model_sampling")
    if not isinstance(sampling, ms.ModelSamplingDiscreteFlow):
        raise ValueError(f"gpus > 1 runs flow-matching models; this MODEL samples with {type(sampling).__name__}: "
                         f"use gpus=1")
    return {"flow_shift": float(sampling.shift), "flow_multiplier": float(sampling.multiplier)}


def write(run, model_path: str, sequence_parallel: int = 1) -> str:
    """The job folder for this run (in ComfyUI's temp folder)."""
    base = run.model.model
    samples = run.samples.clone().to(torch.float32)
    with torch.inference_mode(False):
        x0 = base.process_latent_in(samples)
        cond = model_conds(base, run.conditioning, run.guidance, x0, run.arch.spatial_compression)
    job_dir = _job_dir()
    state = None
    if run.opt_state is not None:  # the resumed adapter's optimizer state
        state = os.path.join(job_dir, "optimizer_start.pt")
        torch.save({"optimizer": run.opt_state}, state)
    job = dist_train.Job(
        comfy_dir=_comfy_dir(), model_file=model_path,
        weight_dtype=_dtype_name(base.diffusion_model.dtype), config=asdict(run.config), out_path=run.out_path,
        optimizer_state=state, history=[asdict(e) for e in run.history],
        autocast="bfloat16" if ranks_device() == "cuda" else None, offload_activations=run.offload_activations,
        device=ranks_device(), watch_pid=os.getpid(), sequence_parallel=sequence_parallel,
        **_flow_settings(run.model))
    return dist_train.write_job(job_dir, job, run.adapter, x0, cond, run.tracks)


def _run_group(job_dir: str, gpus: int, on_line, graceful: bool) -> tuple[int, dict | None, bool]:
    """Start the torchrun group on the job and follow it: each progress line goes to `on_line` (which may raise
    ComfyUI's interrupt). On an interrupt a `graceful` job is asked to stop after its step (the ranks save), any
    other is ended at once. Returns (exit code, the final progress line or None, interrupted); the process group
    never outlives this call."""
    if ranks_device() == "cuda":  # the ranks load their own shards: ComfyUI's models leave the GPUs first
        mm.unload_all_models()
        mm.soft_empty_cache()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([dist_train.PACK_DIR, os.environ.get("PYTHONPATH", "")]))
    command = dist_train.launch_command(job_dir, gpus)
    log.info("[DeT] %d %s ranks: %s", gpus, ranks_device(), " ".join(command))
    with open(os.path.join(job_dir, "log.txt"), "wb") as out:
        proc = subprocess.Popen(command, cwd=dist_train.PACK_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    offset, stop_at, done, interrupted = 0, None, None, False
    try:
        while True:
            finished = proc.poll() is not None
            lines, offset = dist_train.read_progress(job_dir, offset)
            for line in lines:
                if "done" in line:
                    done = line
                    continue
                try:
                    on_line(line)
                except mm.InterruptProcessingException:  # the progress bar noticed the interrupt (and reset it)
                    interrupted = True
            interrupted = interrupted or mm.processing_interrupted()
            if interrupted and not graceful:
                break
            if stop_at is None and interrupted:
                open(os.path.join(job_dir, dist_train.STOP_FILE), "w").close()
                stop_at = time.monotonic()
                log.info("[DeT] interrupt: asking the %d ranks to stop after this step", gpus)
            if finished:
                break
            if stop_at is not None and time.monotonic() - stop_at > STOP_GRACE_S:
                break
            time.sleep(POLL_S)
    finally:  # torchrun passes SIGTERM to the ranks; ranks that outlive it share its group
        end_process_group(proc, 15.0, kill_stragglers=True)
    return proc.returncode, done, interrupted


LOG_DIR = "det_logs"
"""Where a failed job's log is kept, in ComfyUI's output folder (its temp folder, which holds the job, is emptied
when the server starts and stops)."""


def finished(job_dir: str, gpus: int, code: int, done: dict | None) -> bool:
    """Whether the job's work is complete (`dist_train.finished`); a complete job whose group exited non-zero is
    logged with its kept log, and its result is used."""
    if not dist_train.finished(job_dir, done):
        return False
    if code != 0:
        log.warning("[DeT] the %d ranks finished the job and saved, then their group exited with code %s (%s); the "
                    "result is kept. The ranks' log: %s", gpus, code, _exit_lines(job_dir), _keep_log(job_dir))
    return True


def _failure(job_dir: str, gpus: int, what: str, code: int, kept: str = "") -> RuntimeError:
    errors = dist_train.rank_errors(job_dir)
    why = errors[0].splitlines()[0] if errors else _exit_lines(job_dir)
    return RuntimeError(f"DeT {what} on {gpus} ranks failed (exit code {code}): {why}{kept}; the ranks' log: "
                        f"{_keep_log(job_dir)}")


def _keep_log(job_dir: str) -> str:
    """Copy the job's log and the ranks' errors to output/det_logs/<job id>.txt; returns where it is (the job's own
    log when the copy fails)."""
    src = os.path.join(job_dir, "log.txt")
    try:
        out_dir = os.path.join(folder_paths.get_output_directory(), LOG_DIR)
        os.makedirs(out_dir, exist_ok=True)
        dst = os.path.join(out_dir, os.path.basename(job_dir) + ".txt")
        with open(dst, "w") as out:
            for part in dist_train.rank_errors(job_dir):
                out.write(f"== error_{part}\n\n")
            out.write("== log.txt\n")
            with open(src, errors="replace") as f:
                out.write(f.read())
        return dst
    except OSError as e:
        log.warning("[DeT] could not keep the ranks' log of %s: %s", job_dir, e)
        return src


def train(run, gpus: int, model_path: str, progress, sequence_parallel: int = 1) -> list[StepLog]:
    """Run the job on `gpus` ranks; forwards each step to `progress(run, logs)`'s callback. Returns the whole loss
    log; `run.adapter` becomes the trained adapter. An interrupt asks the ranks to stop (they save), a failure
    raises with the ranks' errors."""
    job_dir = write(run, model_path, sequence_parallel)
    logs: list[StepLog] = list(run.history)
    on_step = progress(run, logs)
    start = run.adapter.meta.steps
    code, done, _ = _run_group(job_dir, gpus, lambda line: on_step(StepLog(**line)), graceful=True)
    if not finished(job_dir, gpus, code, done):
        raise _failure(job_dir, gpus, "training", code, f"; {_saved_step(run.out_path, start)}")
    if os.path.isfile(run.out_path):
        run.adapter = DeTAdapter.load(run.out_path)
    if done["stopped_early"]:
        raise mm.InterruptProcessingException()
    return logs


def sample(model, adapter, applied: dict, strength: float, positive, negative, latent: dict, seed: int, steps: int,
           cfg: float, sampler_name: str, scheduler: str, guidance: float, gpus: int, model_path: str,
           sequence_parallel: int = 1) -> dict:
    """Apply DeT Motion on `gpus` ranks: the noise, the sigmas and the model's inputs made here as ComfyUI's
    KSampler makes them, the steps run by ComfyUI's sampler in the ranks; returns the LATENT."""
    import comfy.sample
    import comfy.samplers
    import comfy.utils

    if "cfg_pp" in sampler_name:
        raise ValueError(f"sampler_name={sampler_name}: the cfg++ samplers need ComfyUI's guider; with gpus > 1 "
                         f"choose another sampler")
    base = model.model
    latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    noise = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps)
    with torch.inference_mode(False):
        x = base.process_latent_in(latent_image.clone().float())
        spatial = arch_of(model).spatial_compression
        cond = model_conds(base, positive, guidance, x, spatial)
        neg = model_conds(base, negative, guidance, x, spatial) if cfg != 1.0 else {}
    job_dir = _job_dir()
    job = dist_train.Job(
        comfy_dir=_comfy_dir(), model_file=model_path, weight_dtype=_dtype_name(base.diffusion_model.dtype), config={},
        out_path="", device=ranks_device(), watch_pid=os.getpid(), sequence_parallel=sequence_parallel, kind="sample",
        sample={"sigmas": [float(s) for s in sigmas], "sampler_name": sampler_name, "cfg": cfg, "seed": seed,
                "strength": strength, "applied": applied},
        **_flow_settings(model))
    dist_train.write_job(job_dir, job, adapter, x, cond, negative=neg, noise=noise)
    pbar = comfy.utils.ProgressBar(steps)
    code, done, interrupted = _run_group(job_dir, gpus, lambda line: pbar.update_absolute(line["sample_step"], steps),
                                         graceful=False)
    if interrupted:
        raise mm.InterruptProcessingException()
    if not finished(job_dir, gpus, code, done):
        raise _failure(job_dir, gpus, "sampling", code)
    from safetensors.torch import load_file

    samples = load_file(os.path.join(job_dir, dist_train.SAMPLES_FILE))["samples"]
    out = dict(latent)
    out["samples"] = base.process_latent_out(samples)
    return out


def _job_dir() -> str:
    job_dir = os.path.join(folder_paths.get_temp_directory(), "det_jobs", uuid.uuid4().hex[:12])
    os.makedirs(job_dir)
    return job_dir


def _comfy_dir() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(mm.__file__)))


def _saved_step(out_path: str, start: int) -> str:
    if not os.path.isfile(out_path):
        return "no adapter was saved"
    steps = DeTAdapter.load(out_path).meta.steps
    if steps <= start:
        return f"{os.path.basename(out_path)} keeps step {steps} (from before this run)"
    return f"the adapter on disk, {os.path.basename(out_path)}, keeps step {steps}"


def _exit_lines(job_dir: str) -> str:
    """The lines of torchrun's log that say which rank ended how."""
    try:
        with open(os.path.join(job_dir, "log.txt"), errors="replace") as f:
            text = f.read()
    except OSError:
        return "no log"
    keep = [ln.strip() for ln in text.splitlines()
            if "exitcode" in ln or "Signal" in ln or ("rank" in ln.lower() and "error" in ln.lower())]
    # what a process that aborted printed before it died (a C++ exception from gloo or NCCL, say)
    keep += [ln.strip() for ln in text.splitlines() if ln.startswith(("terminate called", "  what():"))][:2]
    return "; ".join(keep[:6]) or "a rank ended without saying why"
