"""det_core.tracks: query sampling on the real MTBench masks, layout conversions, the track picture."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from det_core.tracks import (draw_tracks, from_mtbench, from_wan_json, make_tracks, neighbour_counts, sample_grid,
                             sample_mask_weighted, sample_queries, to_mtbench, to_wan_json)


def real_mask(examples, case):
    return torch.from_numpy(np.array(Image.open(os.path.join(examples, case, "mask_first_frame.png")).convert("L")) > 127)


@pytest.mark.parametrize("case", ["dance-twirl", "dog-agility"])
def test_weighted_sampling_stays_inside_is_seeded_and_favours_thin_parts(mtbench_examples, case):
    mask = real_mask(mtbench_examples, case)
    pts = sample_mask_weighted(mask, 100, seed=0)
    assert len(pts) == 100 and len({tuple(p) for p in pts.tolist()}) == 100  # without replacement
    assert mask[pts[:, 1].long(), pts[:, 0].long()].all()
    assert torch.equal(pts, sample_mask_weighted(mask, 100, seed=0))
    assert not torch.equal(pts, sample_mask_weighted(mask, 100, seed=1))
    # thin parts: points whose 5-px disk is less than half foreground
    counts = neighbour_counts(mask)
    disk = float(neighbour_counts(torch.ones(11, 11, dtype=torch.bool))[5, 5])  # pixels in a full 5-px disk
    thin = lambda p: float((counts[p[:, 1].long(), p[:, 0].long()] < disk / 2).float().mean())
    ys, xs = torch.nonzero(mask, as_tuple=True)
    weighted, uniform = [], []
    for seed in range(5):
        weighted.append(thin(sample_mask_weighted(mask, 100, seed=seed)))
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(ys), generator=g)[:100]
        uniform.append(thin(torch.stack([xs[pick], ys[pick]], -1)))
    assert np.mean(weighted) > 1.5 * np.mean(uniform), (weighted, uniform)


def test_grid_sampling(pack_cases):
    mask = real_mask(pack_cases, "world-zig-zag")
    pts = sample_grid(480, 720, 100, mask)
    assert len(pts) == 100 and mask[pts[:, 1].long(), pts[:, 0].long()].all()
    full = sample_grid(480, 720, 100)
    assert len(full) == 100 and full[:, 0].max() < 720 and full[:, 1].max() < 480
    q = sample_queries("grid", 16, 64, 64)
    assert q.shape == (16, 3) and (q[:, 0] == 0).all()
    with pytest.raises(ValueError, match="needs a MASK"):
        sample_queries("mask-weighted", 10, 64, 64)
    with pytest.raises(ValueError, match="the mask is empty"):
        sample_mask_weighted(torch.zeros(8, 8, dtype=torch.bool), 3)
    with pytest.raises(ValueError, match="not one of"):
        sample_queries("random", 10, 64, 64, torch.ones(64, 64))


def test_conversions_round_trip_exactly(pack_cases):
    arr = np.load(os.path.join(pack_cases, "world-figure-eight", "tracks.npy"))
    tracks = from_mtbench(arr, 720, 480)
    assert tuple(tracks["track_path"].shape) == (49, 100, 2) and tuple(tracks["track_visibility"].shape) == (49, 100)
    back = to_mtbench(tracks)
    assert np.array_equal(back[..., :2], arr[..., :2])
    assert np.array_equal(back[..., 2], (arr[..., 2] > 0.5).astype(np.float32))
    again = from_wan_json(to_wan_json(tracks), (720, 480))
    assert torch.equal(again["track_path"], tracks["track_path"])
    doc = json.loads(to_wan_json(tracks, 360, 240))  # rescaled for a smaller target
    assert len(doc) == 100 and len(doc[0]) == 49
    assert doc[3][7]["x"] == pytest.approx(float(tracks["track_path"][7, 3, 0]) / 2)
    with pytest.raises(ValueError, match=r"\[frames, points, 3\]"):
        from_mtbench(arr[..., :2], 720, 480)


def test_drawn_points_carry_their_colour():
    frames = torch.zeros(3, 40, 60, 3)
    path = torch.tensor([[[10.0, 10.0], [40.0, 30.0]]] * 3)
    path[:, 0, 0] += torch.arange(3) * 5
    tracks = make_tracks(path, torch.ones(3, 2, dtype=torch.bool), (60, 40))
    out = draw_tracks(frames, tracks)
    assert out.shape == frames.shape
    a, b = out[2, 10, 20], out[2, 30, 40]  # point 0 at x=20 on frame 2, point 1 at (40, 30)
    assert a.max() > 0.5 and b.max() > 0.5 and not torch.allclose(a, b)
    assert out[2, 10, 5].max() == 0  # nothing drawn far from the points
