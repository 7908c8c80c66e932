"""Evaluation nodes: MTBench-style scores of a generated video, motion difficulty of tracks."""

from __future__ import annotations

import os

import torch

import folder_paths
from comfy_api.latest import io, ui

from ..det_core.cotracker import track_points
from ..det_core.evaluate import PROTOCOLS, difficulty, report, score_video, score_video_det
from ..det_core.metrics import GLOBAL_MODES, load_clip, load_dino
from ..det_core.tracks import make_tracks, sample_queries
from .common import CoTrackerType, TracksType, check_finite, device_input, not_a_file_name, torch_device

EVAL_FOLDER = "det_eval"
EvalModelsType = io.Custom("DET_EVAL_MODELS")


def eval_folders() -> list[str]:
    out = []
    for root in folder_paths.get_folder_paths(EVAL_FOLDER):
        if os.path.isdir(root):
            out += sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    return out


def eval_folder_path(name: str) -> str:
    for root in folder_paths.get_folder_paths(EVAL_FOLDER):
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    raise FileNotFoundError(f"no folder {name!r} in models/{EVAL_FOLDER}/; put the Hugging Face folders "
                            f"openai/clip-vit-base-patch32 and facebook/dino-vitb16 there")


class DeTLoadEvalModels(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        options = ["none", *eval_folders()]
        return io.Schema(
            node_id="DeTLoadEvalModels",
            display_name="Load Eval Models (DeT)",
            category="DeT/evaluate",
            description="CLIP ViT-B/32 (edit fidelity) and DINO ViT-B/16 (temporal consistency) from Hugging Face "
                        "format folders in models/det_eval/.",
            inputs=[
                io.Combo.Input("clip", options=options, default="none", tooltip="Folder of openai/clip-vit-base-patch32."),
                io.Combo.Input("dino", options=options, default="none", tooltip="Folder of facebook/dino-vitb16."),
                device_input("CLIP and DINO"),
            ],
            outputs=[EvalModelsType.Output(display_name="eval_models")],
        )

    @classmethod
    def validate_inputs(cls, clip, dino):
        for input_name, name in (("clip", clip), ("dino", dino)):
            wrong = not_a_file_name(input_name, name, f"a folder in models/{EVAL_FOLDER}/, or \"none\"")
            if wrong:
                return wrong
            if name != "none" and name not in eval_folders():
                return f"no folder {name!r} in models/{EVAL_FOLDER}/"
        return True

    @classmethod
    def execute(cls, clip, dino, device):
        dev = torch_device(device)
        models = {"clip": load_clip(eval_folder_path(clip), dev) if clip != "none" else None,
                  "dino": load_dino(eval_folder_path(dino), dev) if dino != "none" else None}
        return io.NodeOutput(models)


class DeTMotionFidelity(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DeTMotionFidelity",
            display_name="Motion Fidelity (DeT)",
            category="DeT/evaluate",
            description="MTBench scores of a generated video: motion fidelity against the reference's tracks (the "
                        "generated video is tracked with CoTracker3 from the reference's first-frame points), and "
                        "edit fidelity / temporal consistency when eval models are connected.",
            inputs=[
                io.Image.Input("generated", tooltip="The generated video's frames."),
                CoTrackerType.Input("cotracker", tooltip="Tracks the generated video (and the source video if given)."),
                io.Combo.Input("mode", options=list(GLOBAL_MODES), default="frechet",
                               tooltip="frechet: true discrete Frechet distance (the paper's definition); official: "
                                       "the public code's mean point distance, to reproduce published numbers."),
                io.Float.Input("alpha", default=0.5, min=0.0, max=1.0, step=0.05,
                               tooltip="Weight of the local (direction) part: hybrid = alpha local + (1 - alpha) global."),
                io.Int.Input("points", default=100, min=1, max=4096,
                             tooltip="Points tracked on the source video when it is given as frames."),
                io.String.Input("prompt", default="", multiline=True, tooltip="The prompt of the generated video (edit fidelity)."),
                TracksType.Input("source_tracks", optional=True, tooltip="Tracks of the reference video."),
                io.Image.Input("source", optional=True, tooltip="Or the reference video's frames (tracked here)."),
                io.Mask.Input("source_mask", optional=True, tooltip="Subject mask of the reference (for tracking it)."),
                EvalModelsType.Input("eval_models", optional=True, tooltip="CLIP and DINO from Load Eval Models (DeT)."),
                io.Combo.Input("protocol", options=[*PROTOCOLS, "both"], default="pack", optional=True,
                               tooltip="pack: the pack's scores (above). det: the DeT authors' public evaluation, "
                                       "for numbers beside the paper's: both videos tracked from a 50 x 50 grid "
                                       "in the first-frame mask's box (needs source and source_mask), 50 paired "
                                       "random tracks for the global part. both: the two, pack first."),
                io.Int.Input("pairing_seed", default=0, min=0, max=2**31 - 1, optional=True,
                             tooltip="Seed of the det protocol's 50 random track pairs."),
            ],
            outputs=[io.Float.Output(display_name="motion_fidelity"), io.Float.Output(display_name="edit_fidelity"),
                     io.Float.Output(display_name="temporal_consistency"), io.String.Output(display_name="report")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, generated, cotracker, mode, alpha, points, prompt, source_tracks=None, source=None,
                source_mask=None, eval_models=None, protocol="pack", pairing_seed=0):
        if protocol not in (*PROTOCOLS, "both"):
            raise ValueError(f"protocol {protocol!r} is not one of pack, det, both")
        check_finite(alpha=alpha)
        if source_tracks is not None:
            path = source_tracks["track_path"]
            if path.ndim != 3 or path.shape[0] < 2 or path.shape[1] < 1:
                raise ValueError(f"source_tracks hold {tuple(path.shape)[:2]} (frames, points): motion fidelity needs "
                                 f"at least 2 frames and 1 point of the reference")
            if not torch.isfinite(path).all():
                raise ValueError("source_tracks hold NaN or infinite positions: re-track the reference video")
        models = eval_models or {}
        scores = []
        if protocol in ("pack", "both"):
            scores.append(cls.pack_scores(generated, cotracker, mode, alpha, points, prompt, source_tracks, source,
                                          source_mask, models))
        if protocol in ("det", "both"):
            if source is None or source_mask is None:
                raise ValueError("protocol det tracks both videos from a grid inside the reference's first-frame mask "
                                 "box: connect source (the reference video's frames) and source_mask")
            scores.append(score_video_det(generated, source, source_mask[0], cotracker.model, cotracker.online,
                                          prompt, models.get("clip"), models.get("dino"), pairing_seed))
        text = report(scores)
        first, nan = scores[0], float("nan")
        return io.NodeOutput(first.motion_fidelity, nan if first.edit_fidelity is None else first.edit_fidelity,
                             nan if first.temporal_consistency is None else first.temporal_consistency,
                             text, ui=ui.PreviewText(text))

    @staticmethod
    def pack_scores(generated, cotracker, mode, alpha, points, prompt, source_tracks, source, source_mask, models):
        f, h, w, _ = generated.shape
        if source_tracks is None and source is None:
            raise ValueError("connect the reference: source_tracks, or the source video frames")
        if source_tracks is None:
            sh, sw = source.shape[1:3]
            mask = None if source_mask is None else source_mask[0] > 0.5
            q = sample_queries("mask-weighted" if mask is not None else "grid", points, sh, sw, mask)
            path, vis = track_points(cotracker.model, source, q, online=cotracker.online)
            source_tracks = make_tracks(path, vis, (sw, sh))
        # the generated video is tracked from the reference's first-frame points, moved to its size
        sw, sh = source_tracks["image_size"]
        start = source_tracks["track_path"][0].to(torch.float32) * torch.tensor([w / sw, h / sh])
        q = torch.cat([torch.zeros(len(start), 1), start], dim=1)
        path, vis = track_points(cotracker.model, generated, q, online=cotracker.online)
        gen_tracks = make_tracks(path, vis, (w, h))
        return score_video(generated, gen_tracks, source_tracks, prompt, models.get("clip"), models.get("dino"),
                           mode, alpha)


class DeTMotionDifficulty(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DeTMotionDifficulty",
            display_name="Motion Difficulty (DeT)",
            category="DeT/evaluate",
            description="MTBench difficulty: motion clusters of the tracks (k-means, k by silhouette) and the level "
                        "(1-3 easy, 4-6 medium, 7+ hard).",
            inputs=[TracksType.Input("tracks", tooltip="Tracks of the reference video.")],
            outputs=[io.Int.Output(display_name="clusters"), io.String.Output(display_name="level")],
        )

    @classmethod
    def execute(cls, tracks):
        d = difficulty(tracks)
        return io.NodeOutput(d["clusters"], d["level"], ui=ui.PreviewText(f"{d['clusters']} motion clusters: {d['level']}"))


NODES = [DeTLoadEvalModels, DeTMotionFidelity, DeTMotionDifficulty]
