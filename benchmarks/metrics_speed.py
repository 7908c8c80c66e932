"""Speed of the vectorised motion fidelity metrics against a straightforward per-pair Python loop of the same formulas.

Local score: ours on 2,500 x 2,500 random tracks of 49 frames; the loop on a 50 x 50 subset, its per-pair time
extrapolated to 2,500 x 2,500 (labelled as such). Frechet global: both on 50 x 50 tracks of 49 frames. On each
subset both versions are run on the same tracks and their largest absolute difference is printed.

    .venv/bin/python benchmarks/metrics_speed.py
"""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from det_core.metrics import ZERO_NORM, frechet_distances, local_similarity_rowmax  # noqa: E402

FRAMES = 49


def random_tracks(k: int, seed: int) -> np.ndarray:
    """Random walks in normalised coordinates, [k, FRAMES, 2]; about 5 % of steps are exactly still."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, 0.01, (k, FRAMES - 1, 2)) * (rng.random((k, FRAMES - 1, 1)) > 0.05)
    start = rng.random((k, 1, 2))
    return np.concatenate([start, start + np.cumsum(steps, axis=1)], axis=1)


def loop_mean_cosine(p: np.ndarray, q: np.ndarray) -> float:
    """S[m, n] for one pair, one time step at a time (zero vectors: both still 1, one still 0)."""
    vp = np.concatenate([p[:1], np.diff(p, axis=0)])
    vq = np.concatenate([q[:1], np.diff(q, axis=0)])
    total = 0.0
    for a, b in zip(vp, vq):
        na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
        if na <= ZERO_NORM or nb <= ZERO_NORM:
            total += 1.0 if (na <= ZERO_NORM and nb <= ZERO_NORM) else 0.0
        else:
            total += float(a @ b) / (na * nb)
    return total / len(vp)


def loop_frechet(p: np.ndarray, q: np.ndarray) -> float:
    """The classic per-pair dynamic programme over the T x T point-distance matrix."""
    t1, t2 = len(p), len(q)
    d = [[math.dist(p[i], q[j]) for j in range(t2)] for i in range(t1)]
    c = [[0.0] * t2 for _ in range(t1)]
    for i in range(t1):
        for j in range(t2):
            if i == 0 and j == 0:
                best = 0.0
            elif i == 0:
                best = c[0][j - 1]
            elif j == 0:
                best = c[i - 1][0]
            else:
                best = min(c[i - 1][j], c[i - 1][j - 1], c[i][j - 1])
            c[i][j] = max(best, d[i][j])
    return c[-1][-1]


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main() -> int:
    big_g, big_s = random_tracks(2500, 0), random_tracks(2500, 1)
    sub_g, sub_s = big_g[:50], big_s[:50]
    print(f"CPU threads: {os.cpu_count()}, numpy {np.__version__}, tracks of {FRAMES} frames")
    print(f"{'metric':<18}{'pairs':>12}{'vectorised (s)':>16}{'per-pair loop (s)':>20}  note")

    # local score
    ours_big, t_big = timed(lambda: local_similarity_rowmax(big_g, big_s).mean())
    ours_sub, t_sub = timed(lambda: local_similarity_rowmax(sub_g, sub_s).mean())
    loop_s, t_loop = timed(lambda: np.array([[loop_mean_cosine(p, q) for q in sub_s] for p in sub_g]))
    per_pair = t_loop / (len(sub_g) * len(sub_s))
    print(f"{'local':<18}{'50 x 50':>12}{t_sub:>16.4f}{t_loop:>20.3f}  measured")
    print(f"{'local':<18}{'2500 x 2500':>12}{t_big:>16.3f}{per_pair * 2500 * 2500:>20.1f}  loop EXTRAPOLATED "
          f"({per_pair * 1e6:.0f} us/pair x 6.25 M pairs)")

    # Frechet global
    d_ours, t_f = timed(frechet_distances, sub_g, sub_s)
    d_loop, t_fl = timed(lambda: np.array([[loop_frechet(p, q) for q in sub_s] for p in sub_g]))
    print(f"{'frechet distance':<18}{'50 x 50':>12}{t_f:>16.4f}{t_fl:>20.3f}  measured")

    print(f"speed-up: local {per_pair * 2500 * 2500 / t_big:.0f}x (vs extrapolated loop), "
          f"frechet {t_fl / t_f:.0f}x")
    print(f"agreement on 50 x 50: local score |diff| = {abs(ours_sub - loop_s.max(axis=1).mean()):.2e}, "
          f"frechet distances max |diff| = {np.abs(d_ours - d_loop).max():.2e}")
    print(f"local score 2500 x 2500 = {ours_big:.6f}; frechet global 50 x 50 = "
          f"{(1 / (1 + d_ours)).max(axis=1).mean():.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
