"""Training and sampling on several ranks (det_core.dist_train, det_core.sequence_parallel, nodes/distributed.py):
2 CPU processes over gloo, tiny models of every supported architecture.

- Two ranks, FSDP2-sharded base, one draw each, give the adapter that one process gives with both draws; two
  sequence-parallel ranks sharing one draw give the adapter of one process with that draw.
- Through the server, Train DeT Adapter with gpus=2 (the session server runs with DET_DIST_CPU=1, so its ranks are
  CPU processes): it finishes and reports each step; an interrupt keeps a resumable checkpoint; a rank killed
  mid-run gives a clear error (its log kept in output/det_logs/), keeps the last checkpoint and leaves no process
  behind; bad requests are refused by name before any work starts. A rank that aborts after the job is done (as a
  gloo rank was seen to do in teardown) does not lose the result.
- Apply DeT Motion with gpus=2 samples the latent ComfyUI's process samples.
"""

import glob
import os
import re
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from det_core import dist_train
from det_core.adapter import DeTAdapter
from det_graphs import base_nodes, fetch_latent, save_latent, train_node
from det_tools.client import PromptExecutionError, PromptInterrupted
from test_archs import apply, arch_models, load_adapter, nodes, train_graph, write_adapter  # noqa: F401 (a fixture)
from devtools.dist_jobs import step_log, tiny_job, torchrun
from devtools.tiny_models import TINY_FILES, TINY_HV_FILE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHS = ["hunyuan_video", "hunyuan_video_15", "wan21", "wan22_ti2v"]


def losses(job_dir):
    return [(e["loss"], e["track"]) for e in step_log(job_dir)]



def same_training(one, two, start_of, what=""):
    """Both runs: the same losses each step (the tracking loss among them) and the same adapter."""
    a, b = load_file(os.path.join(one, "out.safetensors")), load_file(os.path.join(two, "out.safetensors"))
    start = load_file(os.path.join(start_of, dist_train.ADAPTER_FILE))
    assert a.keys() == b.keys() == start.keys()
    la, lb = losses(one), losses(two)
    assert len(la) == len(lb) == 3 and all(t is not None for _, t in la)
    for (fa, ta), (fb, tb) in zip(la, lb):
        assert fb == pytest.approx(fa, rel=1e-5) and tb == pytest.approx(ta, rel=1e-5), what
    moved = min(float((a[k] - start[k]).abs().max()) for k in a)
    assert moved > 1e-3, what  # three steps of lr 1e-3 moved every block's adapter
    # The adapters agree to float32 rounding, but AdamW divides by sqrt(v): on an element whose gradient is near zero,
    # a rounding difference in the gradient becomes a visible difference in the step (one element of 24576 was
    # 1.6e-5 off on one CPU, every other within 1e-6). A wrong gradient changes many elements by up to lr (1e-3) a step.
    diff = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    off = int((diff > 1e-6).sum())
    assert float(diff.max()) < 1e-4 and off <= 8, (what, float(diff.max()), off)


def test_two_ranks_train_what_one_process_trains_sharded_and_sequence_parallel(comfy_host, tmp_path):
    """On each architecture: FSDP2 with one draw per rank against one process with both draws; then sequence
    parallel (the 2 ranks share each draw, the video split by space) against one process with one draw. The eight
    2-rank jobs run in one torchrun launch (one process group, one after the other)."""
    jobs = {}
    for arch_name in ARCHS:
        jobs[arch_name] = (tiny_job(comfy_host, str(tmp_path / f"{arch_name}_one_dp"), arch_name, draws_per_step=2),
                           tiny_job(comfy_host, str(tmp_path / f"{arch_name}_one_sp"), arch_name, draws_per_step=1),
                           tiny_job(comfy_host, str(tmp_path / f"{arch_name}_two_dp"), arch_name),
                           tiny_job(comfy_host, str(tmp_path / f"{arch_name}_two_sp"), arch_name, sequence_parallel=2))
    # one process (ComfyUI's loader, no FSDP)
    assert dist_train.main([d for four in jobs.values() for d in four[:2]]) == 0
    run = torchrun([d for four in jobs.values() for d in four[2:]], 2, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for arch_name, (one_dp, one_sp, two_dp, two_sp) in jobs.items():
        same_training(one_dp, two_dp, two_dp, arch_name)
        same_training(one_sp, two_sp, two_sp, arch_name)
        assert losses(one_sp) != losses(one_dp)  # the draws differ: one vs two per step


def test_a_job_folder_runs_from_a_shell_and_says_what_is_wrong(comfy_host, tmp_path):
    """The worker without ComfyUI's server: `python -m det_core.dist_train JOB` on one process, and its errors. The
    job's flow shift (a MODEL with ModelSamplingSD3) sets the noise levels drawn, as on one GPU."""
    from det_core.comfy_models import flow_sampling
    from det_core.train import TrainConfig, allowed_sigmas, step_randomness

    job = tiny_job(comfy_host, str(tmp_path / "job"), "hunyuan_video", steps=2, flow_shift=2.5)
    run = subprocess.run([sys.executable, "-m", "det_core.dist_train", job], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert DeTAdapter.load(os.path.join(job, "out.safetensors")).meta.steps == 2
    assert os.path.isfile(os.path.join(job, "out.optim.pt"))
    sampling, config = flow_sampling(2.5), TrainConfig(seed=5)
    allowed = allowed_sigmas(sampling, config)
    expected = [float(sampling.timestep(sampling.sigmas[step_randomness(config, s, allowed, (1,))[0]]))
                for s in range(2)]
    assert [e["timestep"] for e in step_log(job)] == pytest.approx(expected)
    assert expected != pytest.approx([float(flow_sampling(7.0).timestep(flow_sampling(7.0).sigmas[
        step_randomness(config, s, allowed, (1,))[0]])) for s in range(2)])
    run = subprocess.run([sys.executable, "-m", "det_core.dist_train", str(tmp_path / "nothing")], cwd=ROOT,
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=300)
    assert run.returncode != 0 and "no job here" in run.stderr


def test_a_rank_that_aborts_after_the_job_is_done_does_not_lose_the_result(comfy_host, tmp_path):
    """A gloo rank was seen to abort (SIGABRT) in the group's teardown after a finished run: torchrun then exits
    non-zero with the adapter saved. Made to happen here (rank 1 aborts at exit); the job counts as finished, while
    a job whose rank wrote an error, or that never wrote its done line, does not."""
    job = tiny_job(comfy_host, str(tmp_path / "job"), "hunyuan_video", steps=2)
    run = torchrun(job, 2, env={dist_train.ABORT_AT_EXIT_ENV: "1"})
    assert run.returncode != 0 and re.search(r"exitcode\s*: -6", run.stdout + run.stderr)
    done = [e for e in dist_train.read_progress(job)[0] if "done" in e]
    assert done == [{"done": 2, "stopped_early": False}] and dist_train.finished(job, done[0])
    assert DeTAdapter.load(os.path.join(job, "out.safetensors")).meta.steps == 2
    assert not dist_train.finished(job, None)
    with open(os.path.join(job, "error_rank1.txt"), "w") as f:
        f.write("RuntimeError: a rank failed\n")
    assert not dist_train.finished(job, done[0])


# -- through the server -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def adapters(comfy_base):
    path = os.path.join(comfy_base, "models", "det_adapters")
    os.makedirs(path, exist_ok=True)
    return path


def graph(name, steps, **overrides):
    g = base_nodes()
    g["train"] = train_node(name, steps=steps, double_blocks="all", single_blocks="all", gpus=2,
                            model_file=TINY_HV_FILE, **overrides)
    g["info"] = {"class_type": "PreviewAny", "inputs": {"source": ["train", 2]}}
    return g


def newest_job(comfy_base):
    jobs = glob.glob(os.path.join(comfy_base, "temp", "det_jobs", "*"))
    return max(jobs, key=os.path.getmtime)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def rank_pids(job_dir):
    return [int(open(p).read()) for p in glob.glob(os.path.join(job_dir, "rank*.pid"))]


def test_train_node_on_two_ranks_reports_progress_survives_an_interrupt_and_resumes(comfy, comfy_base, adapters):
    result = comfy.run(graph("dist_done", 4, overwrite=True), timeout=600)
    steps = [d["step"] for t, d in result.messages if t == "det.train"]
    assert steps == [1, 2, 3, 4]
    assert "dist_done.safetensors" in result.outputs["info"]["text"][0]
    job = newest_job(comfy_base)
    assert len(rank_pids(job)) == 2 and not any(alive(p) for p in rank_pids(job))
    done = DeTAdapter.load(os.path.join(adapters, "dist_done.safetensors")).meta
    assert done.steps == 4 and (done.extra["ranks"], done.extra["draws_per_step"]) == ("2", "2")

    def stop_at_two(mtype, data):
        if mtype == "det.train" and data["step"] == 2:
            comfy.interrupt()

    with pytest.raises(PromptInterrupted):
        comfy.run(graph("dist_stop", 100000, overwrite=True, checkpoint_every=0), on_message=stop_at_two, timeout=600)
    job = newest_job(comfy_base)
    assert not any(alive(p) for p in rank_pids(job))
    done = DeTAdapter.load(os.path.join(adapters, "dist_stop.safetensors")).meta.steps
    assert 2 <= done < 100
    result = comfy.run(graph("dist_stop", done + 2, resume_from="dist_stop.safetensors"), timeout=600)
    assert [d["step"] for t, d in result.messages if t == "det.train"] == [done + 1, done + 2]
    log = torch.load(os.path.join(adapters, "dist_stop.optim.pt"), weights_only=True)["log"]
    assert [e["step"] for e in log] == list(range(1, done + 3))


def test_a_rank_that_dies_mid_run_gives_a_clear_error_and_keeps_the_checkpoint(comfy, comfy_base, adapters):
    killed = []

    def kill_rank_one(mtype, data):
        if mtype == "det.train" and data["step"] == 3 and not killed:
            pid = int(open(os.path.join(newest_job(comfy_base), "rank1.pid")).read())
            os.kill(pid, 9)
            killed.append(pid)

    t0 = time.monotonic()
    with pytest.raises(PromptExecutionError, match=r"DeT training on 2 ranks failed .*keeps step [2-9]") as failed:
        comfy.run(graph("dist_killed", 100000, overwrite=True, checkpoint_every=2), on_message=kill_rank_one,
                  timeout=600)
    assert killed and time.monotonic() - t0 < 300
    # the ranks' log is kept where ComfyUI's start and stop do not empty it, and it names the killed rank
    kept = re.search(r"the ranks' log: (\S+\.txt)", str(failed.value)).group(1)
    assert os.path.dirname(kept) == os.path.join(comfy_base, "output", "det_logs")
    assert re.search(rf"exitcode\s*: -9 \(pid: {killed[0]}\)", open(kept).read())
    assert not any(alive(p) for p in rank_pids(newest_job(comfy_base)))
    assert DeTAdapter.load(os.path.join(adapters, "dist_killed.safetensors")).meta.steps >= 2


@pytest.mark.parametrize("overrides, message", [
    ({"gpus": 64}, r"gpus=64: this machine has \d+"),
    ({"model_file": "none"}, "gpus=2 needs model_file"),
    ({"swap_blocks": 1}, "swap_blocks=1 is for one GPU"),
])
def test_bad_distributed_requests_are_refused_by_name(comfy, comfy_base, overrides, message):
    before = set(glob.glob(os.path.join(comfy_base, "temp", "det_jobs", "*")))
    g = graph("dist_bad", 2, overwrite=True)
    g["train"]["inputs"].update(overrides)
    with pytest.raises(PromptExecutionError, match=message):
        comfy.run(g)
    assert set(glob.glob(os.path.join(comfy_base, "temp", "det_jobs", "*"))) == before  # no job was started


def test_sequence_parallel_through_the_server_and_what_it_refuses(comfy, arch_models, input_dir):
    """HunyuanVideo 1.5 (2 heads, 6 rows of patches) trains on 2 ranks that share each sample; degrees that do not
    divide the heads (the 1-head tiny HunyuanVideo), the rows (Wan's 3) or the GPUs are refused by name."""
    g = train_graph("hunyuan_video_15", input_dir, tracks=False, output_name="hv15_sp", steps=3, overwrite=True,
                    gpus=2, sequence_parallel=2, model_file=TINY_FILES["hunyuan_video_15"])
    result = comfy.run(g, timeout=600)
    assert [d["step"] for t, d in result.messages if t == "det.train"] == [1, 2, 3]
    assert DeTAdapter.load(os.path.join(arch_models, "hv15_sp.safetensors")).meta.steps == 3
    for arch_name, overrides, message in (
            ("wan21", {}, r"sequence_parallel=2 does not divide the latent's 3 token rows"),
            ("hunyuan_video_15", {"gpus": 2, "sequence_parallel": 3}, "sequence_parallel=3 does not divide gpus=2"),
            ("hunyuan_video_15", {"tracking_features": "block"}, "set tracking_features to x0")):
        settings = dict(gpus=2, sequence_parallel=2, model_file=TINY_FILES[arch_name])
        settings.update(overrides)
        g = train_graph(arch_name, input_dir, tracks=False, output_name="sp_bad", steps=2, overwrite=True,
                        **settings)
        with pytest.raises(PromptExecutionError, match=message):
            comfy.run(g)
    g = graph("sp_bad", 2, overwrite=True, sequence_parallel=2)  # the tiny HunyuanVideo has one head
    with pytest.raises(PromptExecutionError, match=r"sequence_parallel=2 does not divide the 1 attention heads"):
        comfy.run(g)


@pytest.mark.parametrize("arch_name, extra", [
    ("wan21", {}),  # FSDP2 over 2 ranks, euler, cfg 1
    ("hunyuan_video_15", {"sequence_parallel": 2, "cfg": 2.0, "negative": ["cond", 0],
                          "sampler_name": "dpmpp_2m"}),  # the video split in two, guidance with a negative
])
def test_apply_det_motion_on_two_ranks_samples_what_comfyui_samples(comfy, arch_models, arch_name, extra):
    """The same adapter, prompt, seed and sampler through Apply DeT Motion in ComfyUI's process and on 2 ranks (the
    steps run by ComfyUI's own sampler in the ranks): the same latent."""
    write_adapter(arch_models, arch_name, f"{arch_name}_dist_sample.safetensors", seed=4)
    g = dict(nodes(arch_name), ad=load_adapter(f"{arch_name}_dist_sample.safetensors"))
    g["one"] = apply(**{k: v for k, v in extra.items() if k != "sequence_parallel"})
    g["two"] = apply(gpus=2, model_file=TINY_FILES[arch_name], **extra)
    g["out1"], g["out2"] = save_latent(("one", 0), f"{arch_name}_one"), save_latent(("two", 0), f"{arch_name}_two")
    result = comfy.run(g, timeout=600)
    one, two = fetch_latent(comfy, result, "out1"), fetch_latent(comfy, result, "out2")
    assert one.shape == two.shape and one.abs().max() > 0.1
    assert torch.allclose(one, two, atol=1e-4), float((one - two).abs().max())


def test_bad_distributed_sampling_is_refused_by_name(comfy, arch_models):
    write_adapter(arch_models, "wan21", "wan21_dist_bad.safetensors", seed=4)
    for extra, message in (({"sampler_name": "euler_cfg_pp"}, "the cfg\\+\\+ samplers need ComfyUI's guider"),
                           ({"low_noise_model": ["model", 0]}, "gpus=2 samples one model"),
                           ({"model_file": "none"}, "gpus=2 needs model_file")):
        g = dict(nodes("wan21"), ad=load_adapter("wan21_dist_bad.safetensors"))
        g["two"] = apply(**dict({"gpus": 2, "model_file": TINY_FILES["wan21"]}, **extra))
        g["out"] = save_latent(("two", 0), "wan21_bad")
        with pytest.raises(PromptExecutionError, match=message):
            comfy.run(g)
