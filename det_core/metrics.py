"""MTBench metrics of DeT: motion fidelity, motion difficulty, edit fidelity and temporal consistency.

Track metrics take point tracks laid out `[K, T, 2]` (K tracks, T frames, (x, y)); motion fidelity expects
normalised coordinates (x/W, y/H), motion difficulty pixels. Numpy arrays or torch tensors go in, plain floats
and dicts come out; everything is computed in float64 and is deterministic.

Frame alignment (as the public MTBench code does): when the two track sets have T1 != T2 frames, the longer one
is read at frames `linspace(0, T_long - 1, T_short).astype(int)`.

Motion fidelity, local part. Each track p_0 .. p_{T-1} becomes the vector sequence

    v = [p_0, p_1 - p_0, ..., p_{T-1} - p_{T-2}]           (first position, then per-frame displacements)

and every 2D vector is L2-normalised. For a generated track m and a source track n

    S[m, n] = 1/T * sum_t cos(v_m[t], v_n[t])
    local   = mean_m max_n S[m, n]

Zero-length vectors (norm <= ZERO_NORM) have no direction; the rule used here is "both still agrees, one still
disagrees": cos(0, 0) = 1 and cos(0, w) = cos(w, 0) = 0 for w != 0. It is computed without any branch by giving
every time step a third component, the indicator z = [|v| <= ZERO_NORM], next to the unit vector u (0 when z = 1):
u_a . u_b + z_a z_b is exactly the cosine with that rule, so S is one matrix product over (time, component).

Motion fidelity, global part, two modes:
- "frechet" (default, what the DeT paper names): d[m, n] is the exact discrete Frechet distance between the two
  polylines, by the dynamic programme over the T x T point-distance matrix D[i, j] = |g_i - s_j|:

      c[0, 0] = D[0, 0]
      c[i, j] = max(D[i, j], min(c[i-1, j], c[i-1, j-1], c[i, j-1]))      (out-of-range cells are +inf)
      d       = c[T-1, T-1]

  run on all pairs at once, one anti-diagonal i + j = k at a time (cells on it depend only on the two previous
  anti-diagonals).
- "official" (the public MTBench code): d[m, n] = mean over all T x T entries of D, the average distance between
  any point of one track and any point of the other (not a Frechet distance).

In both modes sim = 1 / (1 + d), global = mean_m max_n sim[m, n], and hybrid = alpha * local + (1 - alpha) * global.

Motion difficulty: per-point displacement sequences [N, 2(T-1)] (pixels) are clustered with k-means for
k = 2 .. 14 (k < N); the k with the best mean silhouette wins; 1-3 clusters are "easy", 4-6 "medium", 7+ "hard".
k-means (k-means++ seeding, a fixed number of restarts, lowest inertia kept) and the silhouette are implemented
here, seeded and deterministic.

Edit fidelity: 100 * cos(CLIP text embedding of the prompt, CLIP image embedding of a frame), averaged over frames
(not clamped at 0). Temporal consistency: DINO ViT-B/16 CLS features f_t of the last hidden state,

    TC = 1/(F-1) * sum_{t>=1} (cos(f_t, f_0) + cos(f_t, f_{t-1})) / 2

a fraction in [-1, 1] (MTBench tables report it x 100).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .hf_folder import PREPROCESSOR, WEIGHTS, FolderSpec, check_folder
from .video import to_uint8

GLOBAL_MODES = ("frechet", "official")
ZERO_NORM = 1e-12
"""A motion vector with an L2 norm at or below this is treated as zero length (no direction)."""
MAX_CLUSTERS = 14
_CELL_BUDGET = 1 << 22
"""Float64 cells per working array when chunking over generated tracks (about 32 MiB)."""


# ----------------------------------------------------------------------------------------------------------------
# input checks and frame alignment
# ----------------------------------------------------------------------------------------------------------------

def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _check_tracks(x: Any, name: str, min_tracks: int = 1) -> np.ndarray:
    """A track set as float64 [K, T, D] after checking rank, size and finiteness (D is checked by the caller)."""
    arr = _as_numpy(x)
    if arr.ndim != 3:
        raise ValueError(f"{name} must be tracks laid out [tracks, frames, 2], got an array of shape "
                         f"{tuple(arr.shape)}; MTBench tracks.npy files are [frames, points, 3]: transpose them to "
                         f"[points, frames] and drop the visibility channel")
    if arr.shape[0] < min_tracks:
        raise ValueError(f"{name} is empty: it holds {arr.shape[0]} tracks, at least {min_tracks} needed")
    if arr.shape[1] < 2:
        raise ValueError(f"{name} has {arr.shape[1]} frame(s); motion needs at least 2 frames")
    bad = ~np.isfinite(arr)
    if bad.any():
        k, t, _ = np.argwhere(bad)[0]
        raise ValueError(f"{name} has NaN or infinite coordinates ({int(bad.any(-1).sum())} points, the first at "
                         f"track {k}, frame {t}); fill or drop those tracks first")
    return arr


def _check_point_dims(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> None:
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"{names[0]} and {names[1]} have different point dims ({a.shape[-1]} vs {b.shape[-1]}); "
                         f"both must be [tracks, frames, 2]")
    if a.shape[-1] != 2:
        raise ValueError(f"{names[0]} and {names[1]} must hold 2D points (x, y), got {a.shape[-1]} values per point; "
                         f"drop a visibility channel before scoring")


def align_frames(a: Any, b: Any, names: tuple[str, str] = ("a", "b")) -> tuple[np.ndarray, np.ndarray]:
    """Bring track sets a [M, T1, 2] and b [N, T2, 2] to the same T = min(T1, T2) frames.

    The longer set is read at frames `linspace(0, T_long - 1, T_short).astype(int)` (both ends kept), as the public
    MTBench code does. Returns both sets as float64 numpy arrays [M, T, 2], [N, T, 2]; raises ValueError on bad input
    (`names` are the names used in its messages).
    """
    a = _check_tracks(a, names[0])
    b = _check_tracks(b, names[1])
    _check_point_dims(a, b, names)
    t_short = min(a.shape[1], b.shape[1])
    if a.shape[1] > t_short:
        a = a[:, np.linspace(0, a.shape[1] - 1, t_short).astype(int)]
    if b.shape[1] > t_short:
        b = b[:, np.linspace(0, b.shape[1] - 1, t_short).astype(int)]
    return a, b


def _subsample(tracks: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    if tracks.shape[0] <= count:
        return tracks
    return tracks[np.sort(rng.choice(tracks.shape[0], size=count, replace=False))]


def _row_chunk(rows: int, cells_per_row: int) -> int:
    return max(1, min(rows, _CELL_BUDGET // max(1, cells_per_row)))


# ----------------------------------------------------------------------------------------------------------------
# motion fidelity: local part
# ----------------------------------------------------------------------------------------------------------------

def motion_directions(tracks: np.ndarray) -> np.ndarray:
    """Tracks [K, T, 2] -> unit motion vectors with a zero indicator, [K, T, 3].

    Time step 0 holds the first position, step t >= 1 the displacement p_t - p_{t-1}; components 0-1 are the
    L2-normalised vector (0 when its norm <= ZERO_NORM), component 2 is 1 for a zero-length vector, else 0. The dot
    product of two such rows is the cosine with the rule "both still agrees (1), one still disagrees (0)".
    """
    v = np.concatenate([tracks[:, :1], np.diff(tracks, axis=1)], axis=1)  # K T 2
    norm = np.linalg.norm(v, axis=-1, keepdims=True)  # K T 1
    still = norm <= ZERO_NORM  # K T 1
    unit = np.where(still, 0.0, v / np.where(still, 1.0, norm))  # K T 2
    return np.concatenate([unit, still.astype(np.float64)], axis=-1)  # K T 3


def local_similarity_rowmax(generated: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Aligned tracks [M, T, 2], [N, T, 2] -> [M] max over source tracks of S[m, n] (mean cosine over time).

    S is one matrix product per chunk of generated tracks: S[m, n] = sum_{t,c} a[m, t, c] b[n, t, c] / T.
    """
    t = generated.shape[1]
    a = motion_directions(generated).reshape(generated.shape[0], -1)  # M (T 3)
    b = motion_directions(source).reshape(source.shape[0], -1)  # N (T 3)
    chunk = _row_chunk(a.shape[0], b.shape[0])
    out = np.empty(a.shape[0])
    for start in range(0, a.shape[0], chunk):
        s = np.einsum("mk,nk->mn", a[start:start + chunk], b, optimize=True) / t  # Mc N
        out[start:start + chunk] = s.max(axis=1)
    return out


def local_score(generated: np.ndarray, source: np.ndarray) -> float:
    """Local motion fidelity of aligned tracks: mean over generated tracks of the best mean cosine (module doc)."""
    return float(local_similarity_rowmax(generated, source).mean())


# ----------------------------------------------------------------------------------------------------------------
# motion fidelity: global part
# ----------------------------------------------------------------------------------------------------------------

def _point_distances(generated: np.ndarray, source: np.ndarray) -> np.ndarray:
    """[Mc, T, 2], [N, T, 2] -> D[i, j, (m n)] = |g_m[i] - s_n[j]|, laid out [T, T, Mc*N] (pairs last)."""
    gx, gy = generated[..., 0].T, generated[..., 1].T  # T Mc
    sx, sy = source[..., 0].T, source[..., 1].T  # T N
    dx = gx[:, None, :, None] - sx[None, :, None, :]  # Ti Tj Mc N
    dy = gy[:, None, :, None] - sy[None, :, None, :]  # Ti Tj Mc N
    dx *= dx
    dy *= dy
    dx += dy
    d = np.sqrt(dx, out=dx)  # Ti Tj Mc N
    return d.reshape(d.shape[0], d.shape[1], -1)  # Ti Tj (Mc N)


def _frechet_from_distances(d: np.ndarray) -> np.ndarray:
    """Point-distance matrices [T1, T2, P] -> discrete Frechet distance of each of the P pairs, [P].

    c is kept with a +inf border row and column (c_pad[i+1, j+1] = c[i, j]); each anti-diagonal is one vectorised
    update over its cells and all pairs.
    """
    t1, t2, p = d.shape
    c = np.full((t1 + 1, t2 + 1, p), np.inf)  # (T1+1) (T2+1) P
    c[1, 1] = d[0, 0]
    for k in range(1, t1 + t2 - 1):
        i = np.arange(max(0, k - t2 + 1), min(k, t1 - 1) + 1)  # cells (i, k - i) on anti-diagonal k
        j = k - i
        prev = np.minimum(np.minimum(c[i, j + 1], c[i, j]), c[i + 1, j])  # L P: up, diagonal, left
        c[i + 1, j + 1] = np.maximum(d[i, j], prev)  # L P
    return c[t1, t2]


def _pair_distances(generated: np.ndarray, source: np.ndarray, reduce) -> np.ndarray:
    """[M, N] of `reduce(D)` over each pair's T x T point-distance matrix, D laid out [T, T, pairs], computed for a
    chunk of generated tracks at a time to bound memory."""
    m, n, t = generated.shape[0], source.shape[0], generated.shape[1]
    chunk = _row_chunk(m, n * t * t)
    out = np.empty((m, n))
    for start in range(0, m, chunk):
        g = generated[start:start + chunk]
        out[start:start + len(g)] = reduce(_point_distances(g, source)).reshape(len(g), n)
    return out


def frechet_distances(generated: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Exact discrete Frechet distance of every (generated, source) pair of aligned tracks, [M, N]."""
    return _pair_distances(generated, source, _frechet_from_distances)


def mean_point_distances(generated: np.ndarray, source: np.ndarray) -> np.ndarray:
    """The public MTBench code's "Frechet" distance: mean of all T x T point distances of each pair, [M, N]."""
    return _pair_distances(generated, source, lambda d: d.mean(axis=(0, 1)))


GLOBAL_DISTANCES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "frechet": frechet_distances,
    "official": mean_point_distances,
}


def global_score(generated: np.ndarray, source: np.ndarray, mode: str = "frechet") -> float:
    """Global motion fidelity of aligned tracks: mean over generated tracks of max over source of 1/(1+d)."""
    if mode not in GLOBAL_DISTANCES:
        raise ValueError(f"unknown motion fidelity mode {mode!r}; valid modes: {', '.join(GLOBAL_MODES)}")
    sim = 1.0 / (1.0 + GLOBAL_DISTANCES[mode](generated, source))  # M N
    return float(sim.max(axis=1).mean())


def motion_fidelity(generated: Any, source: Any, mode: str = "frechet", alpha: float = 0.5,
                    subsample: int | None = None, seed: int = 0) -> dict[str, float]:
    """Motion fidelity of generated tracks [M, T1, 2] against source tracks [N, T2, 2] (normalised x/W, y/H).

    Args:
        generated: tracks of the generated video, [M, T1, 2].
        source: tracks of the reference video, [N, T2, 2].
        mode: "frechet" (exact discrete Frechet distance, default) or "official" (the public code's mean of all
            T x T point distances) for the global part.
        alpha: weight of the local part in hybrid = alpha * local + (1 - alpha) * global.
        subsample: if given, a random subset of this many tracks is taken from each set that has more
            (numpy default_rng(seed), without replacement; generated first, then source), before anything else.
        seed: seed of that subset.

    Cost: the local part is one matrix product (2,500 x 2,500 tracks of 49 frames take well under a second); the
    Frechet part is O(M N T^2) and runs a few thousand pairs per 0.1 s, so give `subsample` for large sets.

    Returns:
        {"local": float, "global": float, "hybrid": float}.
    """
    if mode not in GLOBAL_MODES:
        raise ValueError(f"unknown motion fidelity mode {mode!r}; valid modes: {', '.join(GLOBAL_MODES)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    gen, src = align_frames(generated, source, names=("generated", "source"))
    if subsample is not None:
        if int(subsample) < 1:
            raise ValueError(f"subsample must be a positive number of tracks or None, got {subsample}")
        rng = np.random.default_rng(seed)
        gen = _subsample(gen, int(subsample), rng)
        src = _subsample(src, int(subsample), rng)
    local = local_score(gen, src)
    glob = global_score(gen, src, mode)
    return {"local": local, "global": glob, "hybrid": alpha * local + (1.0 - alpha) * glob}


# ----------------------------------------------------------------------------------------------------------------
# motion difficulty: k-means + silhouette
# ----------------------------------------------------------------------------------------------------------------

def _sq_distances(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """[N, F], [K, F] -> squared distances [N, K] (expansion, clamped at 0)."""
    d = (x * x).sum(1)[:, None] + (centers * centers).sum(1)[None, :] - 2.0 * x @ centers.T  # N K
    return np.maximum(d, 0.0)


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: first centre uniform, each next one drawn with probability ~ squared distance."""
    idx = [int(rng.integers(x.shape[0]))]
    d2 = _sq_distances(x, x[idx])[:, 0]  # N
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0.0:  # fewer distinct points than k: take any point not chosen yet
            free = np.setdiff1d(np.arange(x.shape[0]), idx)
            nxt = int(free[rng.integers(len(free))])
        else:
            nxt = int(rng.choice(x.shape[0], p=d2 / total))
        idx.append(nxt)
        d2 = np.minimum(d2, _sq_distances(x, x[nxt:nxt + 1])[:, 0])
    return x[idx].copy()


def kmeans(x: np.ndarray, k: int, seed: int | Sequence[int] = 0, restarts: int = 10, max_iter: int = 300
           ) -> tuple[np.ndarray, np.ndarray, float]:
    """Lloyd's k-means on x [N, F]: `restarts` k-means++ seedings from default_rng(seed), lowest inertia kept.

    An empty cluster takes the point farthest from its current centre. Returns (labels [N], centres [k, F],
    inertia = sum of squared distances to the assigned centres).
    """
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"k must lie in [1, {x.shape[0]}] for {x.shape[0]} points, got {k}")
    if restarts < 1:
        raise ValueError(f"restarts must be at least 1, got {restarts}")
    rng = np.random.default_rng(seed)
    best: tuple[np.ndarray, np.ndarray, float] | None = None
    for _ in range(restarts):
        centers = _kmeans_pp(x, k, rng)
        labels = np.full(x.shape[0], -1)
        for _ in range(max_iter):
            d2 = _sq_distances(x, centers)  # N k
            new = d2.argmin(axis=1)
            for c in range(k):
                counts = np.bincount(new, minlength=k)
                if counts[c] == 0:  # empty: take the farthest point of a cluster that keeps a member
                    own = np.where(counts[new] > 1, d2[np.arange(len(new)), new], -1.0)  # N
                    new[int(own.argmax())] = c
            if np.array_equal(new, labels):
                break
            labels = new
            onehot = np.eye(k)[labels]  # N k
            centers = (onehot.T @ x) / onehot.sum(0)[:, None]  # k F
        inertia = float(((x - centers[labels]) ** 2).sum())
        if best is None or inertia < best[2] - 1e-12:
            best = (labels.copy(), centers.copy(), inertia)
    return best


def pairwise_distances(x: np.ndarray) -> np.ndarray:
    """Euclidean distances [N, N] of the rows of x [N, F], by direct differences in row chunks."""
    n = x.shape[0]
    out = np.empty((n, n))
    chunk = _row_chunk(n, n * x.shape[1])
    for start in range(0, n, chunk):
        diff = x[start:start + chunk, None, :] - x[None, :, :]  # Nc N F
        out[start:start + chunk] = np.sqrt((diff * diff).sum(-1))
    return out


def silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette (b - a) / max(a, b) over points x [N, F] with cluster labels [N].

    a: mean distance to the other points of the own cluster; b: lowest mean distance to another cluster's points.
    A point alone in its cluster scores 0 (as is usual), as does a point with a = b = 0.
    """
    uniq, lab = np.unique(labels, return_inverse=True)
    if not 2 <= len(uniq) <= x.shape[0] - 1:
        raise ValueError(f"the silhouette needs 2 to N-1 clusters, got {len(uniq)} for {x.shape[0]} points")
    d = pairwise_distances(x)  # N N
    onehot = np.eye(len(uniq))[lab]  # N k
    sums = d @ onehot  # N k: summed distance of each point to each cluster
    sizes = onehot.sum(0)  # k
    n = np.arange(x.shape[0])
    own = sizes[lab]  # N
    a = sums[n, lab] / np.maximum(own - 1, 1)  # N
    mean_other = sums / sizes[None, :]  # N k
    mean_other[n, lab] = np.inf
    b = mean_other.min(axis=1)  # N
    denom = np.maximum(a, b)
    s = np.where((own > 1) & (denom > 0), (b - a) / np.where(denom > 0, denom, 1.0), 0.0)
    return float(s.mean())


def difficulty_level(clusters: int) -> str:
    """MTBench difficulty from the number of motion clusters: 1-3 easy, 4-6 medium, 7+ hard."""
    if clusters < 1:
        raise ValueError(f"clusters must be at least 1, got {clusters}")
    if clusters <= 3:
        return "easy"
    if clusters <= 6:
        return "medium"
    return "hard"


def motion_difficulty(tracks_px: Any, seed: int = 0, restarts: int = 10, still_tol: float = 1e-6
                      ) -> dict[str, Any]:
    """MTBench difficulty of source tracks [N, T, 2] in pixels (points first, then frames).

    Each point's per-frame displacements form one feature row [N, 2(T-1)]; k-means is run for k = 2 .. 14 with
    k < N and k at most the number of distinct rows (seed per k: (seed, k)); the k with the highest mean silhouette
    wins (ties: the smaller k). If every row lies within `still_tol` pixels of the first (all points move alike),
    the answer is 1 cluster with silhouette 0.0.

    Returns:
        {"clusters": int, "level": "easy" | "medium" | "hard", "silhouette": float}.
    """
    tracks = _check_tracks(tracks_px, "tracks_px")
    if tracks.shape[-1] != 2:
        raise ValueError(f"tracks_px must be [points, frames, 2] pixels, got {tracks.shape[-1]} values per point")
    x = np.diff(tracks, axis=1).reshape(tracks.shape[0], -1)  # N (T-1 2)
    if np.linalg.norm(x - x[:1], axis=1).max() <= still_tol:
        return {"clusters": 1, "level": difficulty_level(1), "silhouette": 0.0}
    if x.shape[0] < 3:
        raise ValueError(f"choosing the number of motion clusters needs at least 3 tracks, got {x.shape[0]}")
    distinct = np.unique(x, axis=0).shape[0]
    best_k, best_s = 0, -np.inf
    for k in range(2, min(MAX_CLUSTERS, x.shape[0] - 1, distinct) + 1):
        labels, _, _ = kmeans(x, k, seed=(seed, k), restarts=restarts)
        s = silhouette(x, labels)
        if s > best_s:
            best_k, best_s = k, s
    return {"clusters": best_k, "level": difficulty_level(best_k), "silhouette": float(best_s)}


# ----------------------------------------------------------------------------------------------------------------
# edit fidelity (CLIP) and temporal consistency (DINO)
# ----------------------------------------------------------------------------------------------------------------

CLIP_FOLDER = FolderSpec("CLIP model", (("config.json",), WEIGHTS, PREPROCESSOR, ("tokenizer.json", "vocab.json"),
                                        ("tokenizer_config.json",)), ("openai/clip-vit-base-patch32",), "det_eval")
DINO_FOLDER = FolderSpec("DINO model", (("config.json",), WEIGHTS, PREPROCESSOR), ("facebook/dino-vitb16",), "det_eval")


def _weight_names(folder: str) -> set[str]:
    """Tensor names in a Hugging Face folder's safetensors file(s), read from the headers only."""
    from safetensors import safe_open

    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        import json

        with open(index) as f:
            return set(json.load(f)["weight_map"])
    with safe_open(os.path.join(folder, "model.safetensors"), "pt") as f:
        return set(f.keys())


def load_clip(folder: str, device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """CLIPModel + CLIPProcessor from a local Hugging Face folder (openai/clip-vit-base-patch32 for MTBench);
    safetensors weights only."""
    from transformers import CLIPModel, CLIPProcessor

    check_folder(folder, CLIP_FOLDER)
    model = CLIPModel.from_pretrained(folder, local_files_only=True, use_safetensors=True).to(device).eval()
    processor = CLIPProcessor.from_pretrained(folder, local_files_only=True)
    return model, processor


def load_dino(folder: str, device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """ViTModel + image processor from a local Hugging Face folder (facebook/dino-vitb16 for MTBench); safetensors
    weights only. The pooler is built only when the checkpoint holds its weights (`model.has_trained_pooler`):
    the released DINO conversion has none, and a randomly initialised pooler is never used."""
    from transformers import AutoImageProcessor, ViTModel

    check_folder(folder, DINO_FOLDER)
    pooler = any(n.endswith("pooler.dense.weight") for n in _weight_names(folder))
    model = ViTModel.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                     add_pooling_layer=pooler).to(device).eval()
    model.has_trained_pooler = pooler
    processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    return model, processor


def _frames_uint8(frames: torch.Tensor) -> list[np.ndarray]:
    """IMAGE [F, H, W, 3] float 0..1 -> list of F uint8 arrays [H, W, 3] (what a decoded video would give)."""
    if not isinstance(frames, torch.Tensor):
        frames = torch.as_tensor(np.asarray(frames))
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be an IMAGE [frames, height, width, 3] with at least one frame, got "
                         f"{tuple(frames.shape)}")
    if not torch.isfinite(frames).all():
        raise ValueError("frames contain NaN or infinite values")
    return list(to_uint8(frames))  # F x (H W 3)


def _model_input(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    p = next(model.parameters())
    return pixel_values.to(p.device, p.dtype)


def _pooled(out: Any) -> torch.Tensor:
    """get_*_features returns a tensor (transformers 4) or an output whose pooler_output is projected (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def clip_image_features(frames: torch.Tensor, model: Any, processor: Any, batch_size: int = 16) -> torch.Tensor:
    """IMAGE [F, H, W, 3] -> L2-normalised CLIP image embeddings [F, E] (float32, CPU)."""
    images = _frames_uint8(frames)
    feats = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            pix = processor(images=images[start:start + batch_size], return_tensors="pt")["pixel_values"]
            feats.append(_pooled(model.get_image_features(pixel_values=_model_input(model, pix))).float().cpu())
    return torch.nn.functional.normalize(torch.cat(feats), dim=-1)  # F E


def clip_text_features(prompt: str, model: Any, processor: Any) -> torch.Tensor:
    """Prompt -> L2-normalised CLIP text embedding [E] (float32, CPU); truncated to the model's context length."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt is empty: edit fidelity compares the frames with a text prompt")
    max_len = int(model.config.text_config.max_position_embeddings)
    tok = processor(text=[prompt], return_tensors="pt", padding=True, truncation=True, max_length=max_len)
    device = next(model.parameters()).device
    with torch.inference_mode():
        out = model.get_text_features(input_ids=tok["input_ids"].to(device),
                                      attention_mask=tok["attention_mask"].to(device))
    return torch.nn.functional.normalize(_pooled(out).float().cpu()[0], dim=-1)  # E


def clip_similarity_score(image_features: torch.Tensor, text_features: torch.Tensor) -> float:
    """100 x cosine(text, frame) averaged over frames; image_features [F, E], text_features [E] (any scale)."""
    img = torch.nn.functional.normalize(torch.as_tensor(image_features).double(), dim=-1)  # F E
    txt = torch.nn.functional.normalize(torch.as_tensor(text_features).double().reshape(-1), dim=0)  # E
    if img.ndim != 2 or img.shape[-1] != txt.shape[0]:
        raise ValueError(f"image features {tuple(img.shape)} do not match text features {tuple(txt.shape)}")
    return float(100.0 * (img @ txt).mean())


def edit_fidelity(frames: torch.Tensor, prompt: str, model: Any, processor: Any) -> float:
    """CLIP edit fidelity: 100 x cos(text embedding, frame embedding), averaged over the frames of IMAGE [F,H,W,3]."""
    return clip_similarity_score(clip_image_features(frames, model, processor), clip_text_features(prompt, model,
                                                                                                   processor))


def dino_features(frames: torch.Tensor, model: Any, processor: Any, batch_size: int = 16,
                  pooled: bool = False) -> torch.Tensor:
    """IMAGE [F, H, W, 3] -> DINO features [F, C] (float32, CPU): the CLS token (token 0 of last_hidden_state), or
    with `pooled` the pooler's output (only for a checkpoint with trained pooler weights, see load_dino)."""
    if pooled and not getattr(model, "has_trained_pooler", False):
        raise ValueError("this DINO checkpoint has no trained pooler weights: pooler_output would be random")
    images = _frames_uint8(frames)
    feats = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            pix = processor(images=images[start:start + batch_size], return_tensors="pt")["pixel_values"]
            out = model(pixel_values=_model_input(model, pix))
            feats.append((out.pooler_output if pooled else out.last_hidden_state[:, 0]).float().cpu())  # B C
    return torch.cat(feats)  # F C


def consistency_score(features: torch.Tensor) -> float:
    """Mean over t >= 1 of (cos(f_t, f_0) + cos(f_t, f_{t-1})) / 2 for per-frame features [F, C], F >= 2."""
    f = torch.nn.functional.normalize(torch.as_tensor(features).double(), dim=-1)  # F C
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"temporal consistency needs features of at least 2 frames, got {tuple(f.shape)}")
    to_first = f[1:] @ f[0]  # F-1
    to_prev = (f[1:] * f[:-1]).sum(-1)  # F-1
    return float((0.5 * (to_first + to_prev)).mean())


def temporal_consistency(frames: torch.Tensor, model: Any, processor: Any) -> float:
    """DINO temporal consistency of IMAGE [F, H, W, 3] (F >= 2): see consistency_score; 1.0 for a still video."""
    if getattr(frames, "shape", (0,))[0] < 2:
        raise ValueError("temporal consistency needs a video of at least 2 frames")
    return consistency_score(dino_features(frames, model, processor))
