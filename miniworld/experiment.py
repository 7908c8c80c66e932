"""The DeT experiment of the small world as ComfyUI prompts: one graph per reference motion and seed.

For a reference clip (by default a blue square drawn by `world`, moving along one of the named test motions)
and a seed, one API prompt runs every arm through the pack's own nodes:

    Load Video (DeT) -> MiniWorld VAE Encode -> Load Tracks (DeT) (the renderer's exact tracks)
        -> Train DeT Adapter (with tracks)          -> Apply DeT Motion (target prompt) -> arm `det`
        -> Train DeT Adapter (no tracks)            -> Apply DeT Motion                 -> arm `det_no_track`
        -> MiniWorld Fine-tune (baseline, weights)  -> KSampler                         -> arm `finetune`
        (no training)                               -> KSampler                         -> arm `base`
    each -> MiniWorld VAE Decode -> MiniWorld Read Video (object tracks, colour and shape per frame)

The model is the committed small-world HunyuanVideo behind ModelSamplingSD3 (flow shift 3); every arm samples
with the same seed, sampler (euler, simple), steps and embedded guidance, so the arms differ only in what was
trained. `score` turns a Read Video report into motion fidelity (`det_core.metrics`, hybrid with the true
Frechet global part) against the reference tracks, appearance (fraction of frames whose object has the target's
colour and shape) and leak (fraction of frames showing the reference's colour).

Used by `benchmarks/motion_transfer_mini.py`, `make demo` and the tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import dataclasses
from dataclasses import dataclass

import numpy as np

from det_tools.host import prepare_base_dir
from det_core.metrics import motion_fidelity
from det_core.video import write_video

from . import world
from .model import FLOW_SHIFT, MODEL_FILE, VAE_FILE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS = os.path.join(ROOT, "miniworld", "weights")
OBJECT_WEIGHTS = os.path.join(ROOT, "miniworld", "weights_object")
"""The fifth object world (README, The small world): the committed world continued for 3,000 steps on clips with
spin, pulse and swing (`python -m miniworld.train --object-motion --refine-only --refine-steps 3000`); the same VAE."""
ARMS = ("base", "det_no_track", "det", "finetune")
EXPERIMENT_SEEDS = (0, 1, 2, 3, 4)
"""The seeds the experiment reports; settings are picked on others (SELECTION_SEEDS)."""
SELECTION_SEEDS = (7, 8)


@dataclass
class Settings:
    """What one run of the experiment uses (recorded in the JSON)."""

    train_steps: int = 200
    learning_rate: float = 3e-5
    """DeT adapter learning rate; this, the steps and `strength` were picked on held-out seeds (7, 8) by
    `benchmarks/motion_transfer_mini_select.py` (the pack's 13B default is 1e-5)."""
    warmup_steps: int = 20
    mid_dim: int = 64
    kernel_size: int = 3
    double_blocks: str = "all"
    single_blocks: str = "all"
    tracking_weight: float = 0.1
    tracking_max_timestep: float = 400.0
    """The tracking loss's noise gate (sigma x 1000); the pack's default."""
    strength: float = 0.5
    """Apply DeT Motion's strength (the adapter's output scale at sampling)."""
    finetune_learning_rate: float = 1e-4
    sample_steps: int = 20
    flow_shift: float = FLOW_SHIFT
    guidance: float = 6.0

    def update(self, item: str) -> None:
        """Apply one 'field=value' (from a command line)."""
        name, _, value = item.partition("=")
        fields = {f.name: f for f in dataclasses.fields(self)}
        if name not in fields or not value:
            raise ValueError(f"setting {item!r}: write FIELD=VALUE with FIELD one of {', '.join(fields)}")
        kind = type(getattr(self, name))
        setattr(self, name, kind(value))


def prepare(base: str, weights: str = WEIGHTS) -> str:
    """A ComfyUI base directory with the pack, the miniworld nodes and the small world's weights."""
    base = prepare_base_dir(base, {"miniworld": os.path.join(ROOT, "miniworld")})
    for sub, name in (("diffusion_models", MODEL_FILE), ("vae", VAE_FILE)):
        os.makedirs(os.path.join(base, "models", sub), exist_ok=True)
        shutil.copy(os.path.join(weights, name), os.path.join(base, "models", sub, name))
    return base


@contextlib.contextmanager
def base_dir(given: str | None = None, weights: str = WEIGHTS, prefix: str = "det_mini_"):
    """A prepared ComfyUI base directory for one run: `given` (kept), or a new temporary one that is removed when
    the run ends well and kept, with its server log, when it fails."""
    path = prepare(given or tempfile.mkdtemp(prefix=prefix), weights)
    try:
        yield path
    except BaseException:
        if not given:
            print(f"[mini] the run stopped early; its ComfyUI folder is kept: {path}", file=sys.stderr)
        raise
    if not given:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Reference:
    """A reference clip in the server's input folder, with its tracks and caption."""

    name: str
    clip: str
    """File name in the input folder."""
    track_file: str
    """MTBench tracks [F, N, 3] in the input folder."""
    tracks: np.ndarray
    caption: str = "a blue square"
    frames: np.ndarray | None = None
    """[F, H, W, 3] float 0..1 when drawn here (for the side-by-side video)."""
    pose: np.ndarray | None = None
    """Object-relative motions: the reference's own pose [F, 2] (rotation, scale) as `measure.read_video(...,
    pose=True)` reads it from the clip decoded through the stand-in VAE: generated videos are read the same way
    and compared with it (`pose_fidelity`)."""

    @property
    def object_motion(self) -> bool:
        return self.pose is not None


TARGETS = {"spin": "a red square", "pulse": "a red disc", "swing": "a red pendulum", "loop_spin": "a red square",
           "grow": "a red disc", "turn": "a red triangle"}
"""The target prompt of each object-relative motion: an object whose own motion can be seen (a disc's spin
cannot; only a pendulum has a bob). The global paths use the benchmark's prompt ("a red disc"). The turn keeps the
triangle (only the colour changes), so that the image alignment of `benchmarks/rotation_alignment.py`, which
compares the generated object's mask with the decoded reference's, can read it."""
DEFAULT_TARGET = "a red disc"


def target_for(motion: str, prompt: str | None = None) -> str:
    """The target prompt: the one given, else the global paths' "a red disc" or the motion's `TARGETS` entry."""
    return prompt or TARGETS.get(motion, DEFAULT_TARGET)


POSE_PARAMETER = {"spin": 0, "loop_spin": 0, "swing": 0, "pulse": 1, "grow": 1, "turn": 0}
"""Which pose column carries each object-relative motion: rotation (a pendulum's swing reads as a rotation of the
whole mask) or scale."""


def decoded(frames: np.ndarray, weights: str = WEIGHTS) -> np.ndarray:
    """A clip [F, H, W, 3] encoded and decoded by the stand-in VAE (what a perfect transfer could give)."""
    import torch

    from .codec import load_vae

    vae = load_vae(os.path.join(weights, VAE_FILE))
    x = torch.from_numpy(np.asarray(frames, dtype=np.float32))[: world.FRAMES]
    with torch.no_grad():
        return vae.decode(vae.encode(x.permute(3, 0, 1, 2)[None]))[0].permute(1, 2, 3, 0).numpy()


def write_reference(base: str, motion: str, weights: str = WEIGHTS) -> Reference:
    """A blue object along `motion` (a square on the global paths, `world.MOTION_SHAPE` on the object-relative
    motions): clip and exact tracks written into the server's input folder."""
    from .measure import read_video

    scene = world.reference_scene(motion, colour="blue")
    frames, tracks = world.render(scene), world.object_tracks(scene)
    pose = read_video(decoded(frames, weights), pose=True).pose if motion in world.POSE_MOTIONS else None
    ref = Reference(motion, f"mini_{motion}.mp4", f"mini_{motion}_tracks.npy", tracks, scene.caption, frames, pose)
    write_video(frames, os.path.join(base, "input", ref.clip), fps=world.FPS)
    np.save(os.path.join(base, "input", ref.track_file), tracks)
    return ref


def experiment_prompt(ref: Reference, target: str, seed: int, s: Settings, tag: str,
                      arms: tuple[str, ...] = ARMS, save_frames: bool = False) -> dict:
    """The API prompt that runs `arms` for one reference and seed (node ids: `sample_<arm>`, `read_<arm>`, ...)."""
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arms {unknown}; valid: {', '.join(ARMS)}")
    size, frames = world.SIZE, world.FRAMES
    train = {"model": ["shift", 0], "latent": ["encode", 0], "conditioning": ["ref_text", 0],
             "steps": s.train_steps, "learning_rate": s.learning_rate, "mid_dim": s.mid_dim,
             "kernel_size": s.kernel_size, "double_blocks": s.double_blocks, "single_blocks": s.single_blocks,
             "tracking_weight": s.tracking_weight, "tracking_max_timestep": s.tracking_max_timestep,
             "tracking_features": "x0", "feature_block": "double:1",
             "guidance": s.guidance, "warmup_steps": s.warmup_steps, "optimizer": "adamw", "seed": seed,
             "checkpoint_every": 0, "overwrite": True, "resume_from": "none", "caption": ref.caption}
    ksampler = {"seed": seed, "steps": s.sample_steps, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
                "positive": ["target_text", 0], "negative": ["target_text", 0], "latent_image": ["empty", 0],
                "denoise": 1.0}
    apply = {"model": ["shift", 0], "positive": ["target_text", 0], "latent": ["empty", 0], "seed": seed,
             "steps": s.sample_steps, "guidance": s.guidance, "cfg": 1.0, "flow_shift": s.flow_shift,
             "sampler_name": "euler", "scheduler": "simple", "strength": s.strength, "double_blocks": "trained",
             "single_blocks": "trained", "keep_fraction": 1.0}
    node = lambda cls, **inputs: {"class_type": cls, "inputs": inputs}  # noqa: E731
    p = {
        "model": node("UNETLoader", unet_name=MODEL_FILE, weight_dtype="default"),
        "shift": node("ModelSamplingSD3", model=["model", 0], shift=s.flow_shift),
        "load": node("DeTLoadVideo", video=ref.clip, frame_load_cap=frames, skip_first_frames=0, select_every_nth=1,
                     force_rate=0.0, width=size, height=size, snap_to_16="resize", trim_to_4k_plus_1=True),
        "encode": node("MiniWorldVAEEncode", vae_name=VAE_FILE, images=["load", 0]),
        "tracks": node("DeTLoadTracks", path=ref.track_file, width=size, height=size),
        "ref_text": node("MiniWorldTextEncode", text=ref.caption, guidance=s.guidance),
        "target_text": node("MiniWorldTextEncode", text=target, guidance=s.guidance),
        "empty": node("EmptyHunyuanLatentVideo", width=size, height=size, length=frames, batch_size=1),
    }
    if "base" in arms:
        p["sample_base"] = node("KSampler", model=["shift", 0], **ksampler)
    if "det" in arms:
        p["train_det"] = node("DeTTrainAdapter", **train, tracks=["tracks", 0], output_name=f"{tag}_det")
        p["sample_det"] = node("DeTApplyMotion", **apply, adapter=["train_det", 0])
        p["train_info"] = node("PreviewAny", source=["train_det", 2])
        if save_frames:
            p["save_loss"] = node("SaveImage", images=["train_det", 1], filename_prefix=f"{tag}/loss_curve")
    if "det_no_track" in arms:  # the same training without TRACKS: no tracking loss, everything else equal
        p["train_det_no_track"] = node("DeTTrainAdapter", **train, output_name=f"{tag}_det_no_track")
        p["sample_det_no_track"] = node("DeTApplyMotion", **apply, adapter=["train_det_no_track", 0])
    if "finetune" in arms:
        p["finetune"] = node("MiniWorldFinetune", model=["shift", 0], latent=["encode", 0],
                             conditioning=["ref_text", 0], steps=s.train_steps,
                             learning_rate=s.finetune_learning_rate, seed=seed)
        p["sample_finetune"] = node("KSampler", model=["finetune", 0], **ksampler)
    for arm in arms:
        p[f"decode_{arm}"] = node("MiniWorldVAEDecode", vae_name=VAE_FILE, samples=[f"sample_{arm}", 0])
        p[f"read_{arm}"] = node("MiniWorldReadVideo", images=[f"decode_{arm}", 0], label=arm, pose=ref.object_motion)
        if save_frames:
            p[f"save_{arm}"] = node("SaveImage", images=[f"decode_{arm}", 0], filename_prefix=f"{tag}/{arm}")
    return p


def run_case(client, ref: Reference, target: str, seed: int, s: Settings, arms: tuple[str, ...] = ARMS,
             save_dir: str | None = None, timeout: float = 1800.0, on_message=None) -> tuple[list[dict], dict]:
    """Run one reference and seed through the server; (one scored record per arm, {arm: frames uint8} when
    `save_dir` is given, with the files downloaded there)."""
    tag = f"mini_{ref.name}_s{seed}"
    prompt = experiment_prompt(ref, target, seed, s, tag, arms, save_frames=save_dir is not None)
    result = client.run(prompt, timeout=timeout, on_message=on_message)
    target_obj, ref_obj = world.parse_caption(target), world.parse_caption(ref.caption)
    runs = []
    for arm in arms:
        report = json.loads(result.outputs[f"read_{arm}"]["text"][0])
        runs.append({"arm": arm, "motion": ref.name, "seed": seed, "target": target,
                     **score(report, ref.tracks, target_obj, ref_obj, ref)})
    frames = {}
    if save_dir is not None:
        files = client.download_outputs(result, save_dir)
        frames = {arm: load_frames(files, arm) for arm in arms}
        frames["loss_curve"] = [f for f in files if os.path.basename(f).startswith("loss_curve")]
        frames["info"] = result.outputs.get("train_info", {}).get("text", [""])[0]
    return runs, frames


def reference_ceiling(ref: Reference, weights: str = WEIGHTS) -> dict:
    """The reference clip itself through the stand-in VAE (encode, decode) and the same reading and scores: what a
    perfect transfer of its motion would score here (in plain Python; the clip as drawn, or as decoded from its
    file). On an object-relative motion its pose fidelity is against the drawn clip's reading (generated videos are
    compared with the decoded reference's, so what the codec loses cancels)."""
    from .measure import read_video

    reading = read_video(decoded(ref.frames, weights), pose=ref.object_motion)
    report = {"tracks": reading.tracks.tolist(), "pose": None if reading.pose is None else reading.pose.tolist(),
              "frames": [{"found": r.found, "colour": r.colour, "shape": r.shape} for r in reading.frames]}
    obj = world.parse_caption(ref.caption)
    out = score(report, ref.tracks, obj, obj, ref)
    if ref.object_motion:  # against the drawn clip's own reading: what the codec loses of the object's motion
        drawn = read_video(np.asarray(ref.frames)[: world.FRAMES], pose=True).pose
        out["pose_fidelity"] = pose_fidelity(reading.pose, drawn, POSE_PARAMETER[ref.name])
    return out


def pose_fidelity(generated: np.ndarray, reference: np.ndarray, column: int) -> float:
    """How closely the generated object's own motion follows the reference's, from 0 (no better than standing
    still) to 1 (the same): 1 - sum_t |p_gen(t) - p_ref(t)| / sum_t |p_ref(t) - p_ref(0)|, clipped at 0, where p is
    the rotation (radians) or the log of the scale relative to the first frame, both read the same way from
    decoded frames. Needed because MTBench's motion fidelity barely sees motion in place: it scores each
    generated track against its best-matching reference track, so a swinging pendulum's still body points match
    anything still (still tracks score 0.98 against the swing) and a spinning triangle's orbiting centroid
    matches some point on it."""
    gen = np.asarray(generated, dtype=np.float64)[:, column]
    ref = np.asarray(reference, dtype=np.float64)[:, column]
    if column == 1:
        gen, ref = np.log(gen), np.log(ref)
    g, r = gen - gen[0], ref - ref[0]
    travel = np.abs(r).sum()
    return float(max(0.0, 1.0 - np.abs(g - r).sum() / max(travel, 1e-9)))


def score(report: dict, reference_tracks: np.ndarray, target: tuple[str, str], reference: tuple[str, str],
          ref: Reference | None = None) -> dict:
    gen = np.asarray(report["tracks"], dtype=np.float64)  # F N 3
    mf = motion_fidelity(gen[..., :2].transpose(1, 0, 2), reference_tracks[..., :2].transpose(1, 0, 2))
    frames = report["frames"]
    hit = [f["found"] and f["colour"] == target[0] and f["shape"] == target[1] for f in frames]
    colour = [f["found"] and f["colour"] == target[0] for f in frames]
    leak = [f["found"] and f["colour"] == reference[0] for f in frames]
    out = {"motion_fidelity": mf["hybrid"], "local": mf["local"], "global": mf["global"],
           "appearance": float(np.mean(hit)), "target_colour": float(np.mean(colour)), "leak": float(np.mean(leak)),
           "found": float(np.mean([f["found"] for f in frames]))}
    if ref is not None and ref.object_motion:
        out["pose_fidelity"] = pose_fidelity(report["pose"], ref.pose, POSE_PARAMETER[ref.name])
    return out


def load_frames(files: list[str], arm: str) -> np.ndarray | None:
    """The arm's frames (`<arm>_00001_.png`, ...: "det" does not take "det_no_track"'s) as [F, H, W, 3] uint8."""
    import re

    from PIL import Image

    mine = sorted(f for f in files if re.fullmatch(rf"{re.escape(arm)}_\d+_?\.png", os.path.basename(f)))
    if not mine:
        return None
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in mine])


def side_by_side(path: str, panels: list[np.ndarray]) -> str:
    """Panels [F, H, W, 3] next to each other, 2 white pixels apart, as an mp4."""
    panels = [p / 255.0 if p.dtype == np.uint8 else np.asarray(p, dtype=np.float64) for p in panels]  # 0..1
    f = min(len(p) for p in panels)
    gap = np.ones((f, panels[0].shape[1], 2, 3))
    strips = []
    for p in panels:
        strips += [p[:f], gap]
    return write_video(np.concatenate(strips[:-1], axis=2), path, fps=world.FPS)


def summarise(runs: list[dict]) -> dict:
    out = {}
    for arm in ARMS:
        mine = [r for r in runs if r["arm"] == arm]
        if mine:
            out[arm] = {k: float(np.mean([r[k] for r in mine]))
                        for k in ("motion_fidelity", "local", "global", "appearance", "target_colour", "leak", "found")}
            posed = [r["pose_fidelity"] for r in mine if "pose_fidelity" in r]
            if posed:
                out[arm]["pose_fidelity"] = float(np.mean(posed))
            out[arm]["motion_fidelity_std_over_seeds"] = float(np.mean([
                np.std([r["motion_fidelity"] for r in mine if r["motion"] == m]) for m in {r["motion"] for r in mine}]))
    return out
