"""det_core.metrics: motion fidelity (local, Frechet, official), motion difficulty, edit fidelity and temporal
consistency. Expected values come from hand derivations, brute-force references written here, or scipy."""

import math
import os
import shutil
from functools import lru_cache

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from conftest import need_shared
from det_core.metrics import (align_frames, clip_similarity_score, consistency_score, difficulty_level,
                              dino_features, edit_fidelity, frechet_distances, kmeans, load_clip, load_dino, motion_difficulty,
                              motion_fidelity, silhouette, temporal_consistency)

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "shared",
                        "mtbench_examples")


def real_tracks(case: str) -> np.ndarray:
    """An MTBench tracks.npy [49, 100, 3] (x/W, y/H, visibility) as [100, 49, 2]."""
    path = need_shared(os.path.join(EXAMPLES, case, "tracks.npy"))
    return np.load(path)[..., :2].transpose(1, 0, 2).astype(np.float64)


def drawn_tracks(pack_cases: str, case: str) -> np.ndarray:
    """The tracks.npy of one of the pack's drawn MTBench cases (tests/media.py: 100 points over 49 frames, as real
    ones) as [100, 49, 2]: for checks of formulas, which need tracks of MTBench's size but not real motion."""
    return np.load(os.path.join(pack_cases, case, "tracks.npy"))[..., :2].transpose(1, 0, 2).astype(np.float64)


def random_tracks(k=20, t=13, seed=0) -> np.ndarray:
    """Smooth-ish random walks in [0, 1]."""
    rng = np.random.default_rng(seed)
    start = rng.random((k, 1, 2))
    steps = rng.normal(0, 0.02, (k, t - 1, 2))
    return np.concatenate([start, start + np.cumsum(steps, axis=1)], axis=1)


# ----------------------------------------------------------------------------------------------- motion fidelity

@pytest.mark.parametrize("tracks", [random_tracks(), random_tracks(k=7, t=49, seed=3)])
def test_identical_tracks_score_one(tracks):
    out = motion_fidelity(tracks, tracks.copy())
    assert out["local"] == pytest.approx(1.0, abs=1e-12)
    assert out["global"] == pytest.approx(1.0, abs=1e-12)
    assert out["hybrid"] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("case", ["dance-twirl", "dog-agility"])
def test_real_tracks_score_one_against_themselves_and_lower_when_motion_is_broken(case):
    tracks = real_tracks(case)
    rng = np.random.default_rng(0)
    broken = {
        "reversed": tracks[:, ::-1],
        "shuffled": tracks[:, rng.permutation(tracks.shape[1])],
        "frozen": np.repeat(tracks[:, :1], tracks.shape[1], axis=1),
    }
    ref = motion_fidelity(tracks, tracks)
    assert ref["local"] == pytest.approx(1.0, abs=1e-12) and ref["global"] == pytest.approx(1.0, abs=1e-12)
    for name, copy in broken.items():
        out = motion_fidelity(copy, tracks)
        assert out["local"] < ref["local"] - 0.05, name
        assert out["global"] < ref["global"] - 0.01, name
        assert out["hybrid"] < ref["hybrid"], name


def brute_frechet(p: np.ndarray, q: np.ndarray) -> float:
    """Eiter & Mannila's recursive definition, memoised, in plain Python."""

    def dist(i, j):
        return math.sqrt(sum((float(p[i][c]) - float(q[j][c])) ** 2 for c in range(len(p[i]))))

    @lru_cache(maxsize=None)
    def c(i, j):
        if i == 0 and j == 0:
            return dist(0, 0)
        if i == 0:
            return max(c(0, j - 1), dist(0, j))
        if j == 0:
            return max(c(i - 1, 0), dist(i, 0))
        return max(min(c(i - 1, j), c(i - 1, j - 1), c(i, j - 1)), dist(i, j))

    return c(len(p) - 1, len(q) - 1)


def test_discrete_frechet_matches_recursive_definition():
    rng = np.random.default_rng(1)
    g, s = rng.random((6, 7, 2)), rng.random((5, 7, 2))
    ref = np.array([[brute_frechet(g[m], s[n]) for n in range(5)] for m in range(6)])
    np.testing.assert_allclose(frechet_distances(g, s), ref, rtol=0, atol=1e-9)
    expected_global = (1.0 / (1.0 + ref)).max(axis=1).mean()
    assert motion_fidelity(g, s)["global"] == pytest.approx(expected_global, abs=1e-9)


def test_frechet_is_symmetric_and_bounded_by_endpoints():
    g, s = random_tracks(8, 9, seed=4), random_tracks(6, 9, seed=5)
    d = frechet_distances(g, s)
    np.testing.assert_allclose(d, frechet_distances(s, g).T, atol=1e-12)
    ends = np.maximum(np.linalg.norm(g[:, None, 0] - s[None, :, 0], axis=-1),
                      np.linalg.norm(g[:, None, -1] - s[None, :, -1], axis=-1))
    assert (d >= ends - 1e-12).all()


def official_transcription(gen: np.ndarray, src: np.ndarray) -> float:
    sim = np.zeros((len(gen), len(src)))
    for i in range(len(gen)):
        for j in range(len(src)):
            sim[i, j] = 1.0 / (1.0 + cdist(gen[i], src[j], metric="euclidean").mean())
    return float(sim.max(axis=1).mean())


def test_official_mode_equals_direct_transcription_on_mtbench_sized_tracks(pack_cases):
    gen, src = drawn_tracks(pack_cases, "world-figure-eight"), drawn_tracks(pack_cases, "world-zig-zag")
    out = motion_fidelity(gen, src, mode="official")
    assert out["global"] == pytest.approx(official_transcription(gen, src), abs=1e-9)
    assert out["local"] == pytest.approx(motion_fidelity(gen, src)["local"], abs=1e-15)
    assert out["hybrid"] == pytest.approx(0.5 * out["local"] + 0.5 * out["global"], abs=1e-12)
    weighted = motion_fidelity(gen, src, mode="official", alpha=0.2)
    assert weighted["hybrid"] == pytest.approx(0.2 * out["local"] + 0.8 * out["global"], abs=1e-12)


def test_subsample_picks_the_documented_seeded_subset(pack_cases):
    gen, src = drawn_tracks(pack_cases, "world-figure-eight"), drawn_tracks(pack_cases, "world-zig-zag")
    rng = np.random.default_rng(7)
    ig = rng.choice(len(gen), 30, replace=False)
    is_ = rng.choice(len(src), 30, replace=False)
    out = motion_fidelity(gen, src, mode="official", subsample=30, seed=7)
    assert out["global"] == pytest.approx(official_transcription(gen[ig], src[is_]), abs=1e-9)
    assert out == motion_fidelity(gen, src, mode="official", subsample=30, seed=7)
    assert out != motion_fidelity(gen, src, mode="official", subsample=30, seed=8)
    # a set no larger than subsample is used whole
    assert motion_fidelity(gen, src, subsample=100) == motion_fidelity(gen, src)


def test_frame_alignment_picks_linspace_indices():
    frames = np.arange(49, dtype=np.float64)
    long = np.stack([np.broadcast_to(frames, (3, 49)), np.ones((3, 49))], axis=-1)  # x = frame index
    short = np.zeros((2, 13, 2))
    for a, b in [(long, short), (short, long)]:
        a2, b2 = align_frames(a, b)
        aligned_long = a2 if a is long else b2
        assert aligned_long.shape == (3, 13, 2) and (a2.shape[1], b2.shape[1]) == (13, 13)
        np.testing.assert_array_equal(aligned_long[0, :, 0], np.arange(0, 49, 4))
    same_a, same_b = align_frames(long, long[:1])
    np.testing.assert_array_equal(same_a, long)


def test_zero_length_vectors_follow_the_documented_rule():
    t = 5
    still_x = np.tile([[1.0, 0.0]], (1, t, 1))  # at (1, 0), never moves
    still_y = np.tile([[0.0, 1.0]], (1, t, 1))  # at (0, 1), never moves
    moving = np.stack([1.0 + 0.1 * np.arange(t), np.zeros(t)], axis=-1)[None]  # starts at (1, 0), moves right
    origin = np.zeros((1, t, 2))  # at (0, 0): even the first position is a zero vector
    # start directions orthogonal (0), then T-1 "both still" steps (1 each)
    assert motion_fidelity(still_x, still_y)["local"] == pytest.approx((t - 1) / t, abs=1e-12)
    # same start direction (1), then T-1 "one still" steps (0 each), in both orders
    assert motion_fidelity(still_x, moving)["local"] == pytest.approx(1 / t, abs=1e-12)
    assert motion_fidelity(moving, still_x)["local"] == pytest.approx(1 / t, abs=1e-12)
    assert motion_fidelity(origin, origin)["local"] == pytest.approx(1.0, abs=1e-12)
    assert motion_fidelity(origin, moving)["local"] == pytest.approx(0.0, abs=1e-12)
    for out in [motion_fidelity(origin, still_x, mode=m) for m in ("frechet", "official")]:
        assert all(np.isfinite(v) for v in out.values())


def test_torch_and_numpy_inputs_agree():
    g, s = random_tracks(5, 9, seed=1), random_tracks(4, 9, seed=2)
    assert motion_fidelity(torch.from_numpy(g).float(), torch.from_numpy(s).float()) == pytest.approx(
        motion_fidelity(g.astype(np.float32), s.astype(np.float32)), abs=1e-12)


@pytest.mark.parametrize("gen, src, message", [
    (np.zeros((4, 2)), np.zeros((4, 5, 2)), r"\[tracks, frames, 2\]"),
    (np.zeros((4, 5, 2)), np.zeros((4, 5, 3)), "different point dims"),
    (np.zeros((4, 5, 3)), np.zeros((4, 5, 3)), "2D points"),
    (np.full((4, 5, 2), np.nan), np.zeros((4, 5, 2)), "NaN"),
    (np.zeros((4, 5, 2)), np.full((4, 5, 2), np.inf), "infinite"),
    (np.zeros((4, 1, 2)), np.zeros((4, 5, 2)), "at least 2 frames"),
    (np.zeros((0, 5, 2)), np.zeros((4, 5, 2)), "empty"),
    (np.zeros((4, 5, 2)), np.zeros((0, 5, 2)), "empty"),
])
def test_bad_tracks_are_refused(gen, src, message):
    with pytest.raises(ValueError, match=message):
        motion_fidelity(gen, src)


def test_bad_options_are_refused():
    g = random_tracks(3, 5)
    with pytest.raises(ValueError, match="frechet, official"):
        motion_fidelity(g, g, mode="dtw")
    with pytest.raises(ValueError, match="alpha"):
        motion_fidelity(g, g, alpha=1.5)
    with pytest.raises(ValueError, match="subsample"):
        motion_fidelity(g, g, subsample=0)


# ----------------------------------------------------------------------------------------------- motion difficulty

def grouped_tracks(groups: int, per_group: int = 15, t: int = 13, noise: float = 0.2, seed: int = 0):
    """`groups` sets of points, each with its own constant velocity (4 px/frame, spread over directions and
    speeds), plus small per-frame noise; pixels, [N, T, 2]. Returns the tracks and the group of every point."""
    rng = np.random.default_rng(seed)
    angles = 2 * np.pi * np.arange(groups) / groups
    speeds = 4.0 + 2.0 * (np.arange(groups) % 2)
    vel = np.stack([speeds * np.cos(angles), speeds * np.sin(angles)], -1)  # G 2
    labels = np.repeat(np.arange(groups), per_group)
    start = rng.uniform(0, 500, (len(labels), 1, 2))
    steps = vel[labels][:, None, :] + rng.normal(0, noise, (len(labels), t - 1, 2))
    return np.concatenate([start, start + np.cumsum(steps, axis=1)], axis=1), labels


@pytest.mark.parametrize("groups, level", [(3, "easy"), (5, "medium"), (8, "hard")])
def test_difficulty_counts_separated_motion_groups(groups, level):
    tracks, _ = grouped_tracks(groups)
    out = motion_difficulty(tracks, seed=0)
    assert out["clusters"] == groups and out["level"] == level
    assert 0.5 < out["silhouette"] <= 1.0
    assert motion_difficulty(tracks, seed=0) == out
    assert motion_difficulty(torch.from_numpy(tracks), seed=3)["clusters"] == groups


def test_kmeans_recovers_the_groups():
    tracks, truth = grouped_tracks(8)
    x = np.diff(tracks, axis=1).reshape(len(tracks), -1)
    labels, centers, inertia = kmeans(x, 8, seed=0)
    pairs = {(int(a), int(b)) for a, b in zip(truth, labels)}
    assert len(pairs) == 8 and len({b for _, b in pairs}) == 8  # one label per group, all different
    assert inertia == pytest.approx(((x - centers[labels]) ** 2).sum())


def test_all_points_moving_alike_is_one_easy_cluster():
    tracks = np.zeros((20, 9, 2)) + np.arange(9)[None, :, None] * np.array([3.0, -1.0])
    tracks += np.random.default_rng(0).uniform(0, 300, (20, 1, 2))  # different places, same motion
    assert motion_difficulty(tracks) == {"clusters": 1, "level": "easy", "silhouette": 0.0}


def test_silhouette_matches_brute_force():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(23, 4))
    labels = rng.integers(0, 4, 23)
    labels[0] = 9  # a singleton cluster scores 0
    ref = []
    for i in range(len(x)):
        own = [j for j in range(len(x)) if labels[j] == labels[i] and j != i]
        if not own:
            ref.append(0.0)
            continue
        a = np.mean([np.linalg.norm(x[i] - x[j]) for j in own])
        b = min(np.mean([np.linalg.norm(x[i] - x[j]) for j in range(len(x)) if labels[j] == c])
                for c in set(labels.tolist()) - {labels[i]})
        ref.append((b - a) / max(a, b))
    assert silhouette(x, labels) == pytest.approx(float(np.mean(ref)), abs=1e-9)


def test_difficulty_levels_and_bad_input():
    assert [difficulty_level(k) for k in (1, 3, 4, 6, 7, 14)] == ["easy", "easy", "medium", "medium", "hard",
                                                                  "hard"]
    with pytest.raises(ValueError, match="at least 3 tracks"):
        motion_difficulty(np.array([[[0.0, 0.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]]))
    with pytest.raises(ValueError, match="NaN"):
        motion_difficulty(np.full((5, 4, 2), np.nan))


# ----------------------------------------------------------------------------------------------- CLIP and DINO

def test_clip_similarity_score_properties():
    e = torch.tensor([0.6, 0.8, 0.0])
    o = torch.tensor([0.0, 0.0, 2.0])
    assert clip_similarity_score(e[None], e) == pytest.approx(100.0, abs=1e-9)
    assert clip_similarity_score(3.0 * e[None], e) == pytest.approx(100.0, abs=1e-9)
    assert clip_similarity_score(o[None], e) == pytest.approx(0.0, abs=1e-9)
    assert clip_similarity_score(-e[None], e) == pytest.approx(-100.0, abs=1e-9)
    assert clip_similarity_score(torch.stack([e, o]), e) == pytest.approx(50.0, abs=1e-9)


def test_consistency_score_by_hand():
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # t=1: cos to first 0, to previous 0; t=2: cos 45 deg to both
    assert consistency_score(f) == pytest.approx((0.0 + math.sqrt(0.5)) / 2, abs=1e-9)
    with pytest.raises(ValueError, match="at least 2 frames"):
        consistency_score(f[:1])


def tiny_dino_folder(folder: str, pooler: bool = False, seed: int = 0) -> str:
    """A tiny random DINO (ViT) in Hugging Face format; without a pooler, like the released dino-vitb16."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(seed)
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    image_size=32, patch_size=16)
    ViTModel(cfg, add_pooling_layer=pooler).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def tiny_clip_folder(folder: str) -> str:
    """A tiny random CLIP in Hugging Face format, with a letters-only tokenizer."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    torch.manual_seed(0)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    cfg = CLIPConfig(text_config=dict(vocab_size=len(vocab), max_position_embeddings=64, bos_token_id=0,
                                      eos_token_id=1, pad_token_id=1, **small),
                     vision_config=dict(image_size=32, patch_size=16, **small), projection_dim=16)
    CLIPModel(cfg).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_dino(tmp_path_factory):
    return tiny_dino_folder(str(tmp_path_factory.mktemp("dino")))


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return tiny_clip_folder(str(tmp_path_factory.mktemp("clip")))


def random_video(frames=4, seed=0):
    return torch.rand(frames, 40, 48, 3, generator=torch.Generator().manual_seed(seed))


def test_temporal_consistency_is_one_for_a_still_video_and_lower_otherwise(tiny_dino):
    model, processor = load_dino(tiny_dino)
    still = random_video(1).repeat(5, 1, 1, 1)
    assert temporal_consistency(still, model, processor) == pytest.approx(1.0, abs=1e-5)
    assert temporal_consistency(random_video(5, seed=1), model, processor) < 1.0 - 1e-4
    with pytest.raises(ValueError, match="at least 2 frames"):
        temporal_consistency(still[:1], model, processor)


def test_edit_fidelity_averages_frames(tiny_clip):
    model, processor = load_clip(tiny_clip)
    video = random_video(3, seed=2)
    whole = edit_fidelity(video, "a dog dancing", model, processor)
    per_frame = [edit_fidelity(video[i:i + 1], "a dog dancing", model, processor) for i in range(3)]
    assert -100.0 <= whole <= 100.0
    assert whole == pytest.approx(float(np.mean(per_frame)), abs=1e-4)
    assert len({round(v, 6) for v in per_frame}) == 3  # frames differ, so do their scores
    still = video[:1].repeat(4, 1, 1, 1)
    assert edit_fidelity(still, "a dog dancing", model, processor) == pytest.approx(per_frame[0], abs=1e-4)
    with pytest.raises(ValueError, match="prompt is empty"):
        edit_fidelity(video, "  ", model, processor)
    with pytest.raises(ValueError, match="IMAGE"):
        edit_fidelity(video[0], "a dog", model, processor)


def test_det_edit_fidelity_is_clips_logits_per_image(tiny_clip):
    from det_core.metrics import clip_image_features, clip_text_features
    from det_core.public_eval import clip_logit_score, clip_prompt

    model, processor = load_clip(tiny_clip)
    video = random_video(3, seed=4)
    images = [(f.numpy() * 255).round().astype(np.uint8) for f in video]
    text = clip_prompt("a dog dancing  ")
    with torch.no_grad():  # the public code: the whole model, the prompt once per frame, the diagonal
        out = model(**processor(text=[text] * 3, images=images, return_tensors="pt", padding=True))
    expected = float(torch.diagonal(out.logits_per_image).mean())
    mine = clip_logit_score(clip_image_features(video, model, processor), clip_text_features(text, model, processor),
                            float(model.logit_scale.detach().exp()))
    assert mine == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_dino_pooler_is_used_only_when_the_checkpoint_has_it(tiny_dino, tmp_path):
    from transformers import ViTModel

    model, processor = load_dino(tiny_dino)  # saved without a pooler, like the released dino-vitb16 conversion
    assert model.has_trained_pooler is False
    with pytest.raises(ValueError, match="no trained pooler"):
        dino_features(random_video(2), model, processor, pooled=True)
    folder = tiny_dino_folder(str(tmp_path / "pooled"), pooler=True, seed=1)
    reference = ViTModel.from_pretrained(folder).eval()  # the pooler as saved (transformers' own loading)
    model, processor = load_dino(folder)
    assert model.has_trained_pooler is True
    video = random_video(3, seed=5)
    pix = processor(images=[(f.numpy() * 255).round().astype(np.uint8) for f in video], return_tensors="pt")
    with torch.no_grad():
        expected = reference(**pix).pooler_output
    assert torch.allclose(dino_features(video, model, processor, pooled=True), expected, atol=1e-5)


def test_eval_models_load_from_safetensors_only(tiny_dino, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_dino, folder)
    os.remove(folder / "model.safetensors")
    torch.save({}, folder / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="pickled weights are never loaded"):
        load_dino(str(folder))


@pytest.mark.parametrize("loader", [load_clip, load_dino])
def test_loaders_name_the_missing_folder_and_files(loader, tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere") as err:
        loader(missing)
    assert "config.json" in str(err.value) and "model.safetensors" in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="lacks config.json"):
        loader(str(empty))
