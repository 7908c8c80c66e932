"""det_core.tracking_loss: the dense tracking loss and the mapping of tracks onto the latent grid."""

import os

import numpy as np
import pytest
import torch

from det_core.tracking_loss import (LatentTracks, TrackError, gather_along_tracks, latent_frame_ids, tracking_loss,
                               tracks_for_latent)


def moving_tracks(t=5, n=4, h=6, w=8):
    """Points that move one cell right per frame, all visible; cell-centred normalised coordinates."""
    rows = torch.arange(n) % h
    xy = torch.zeros(t, n, 2)
    for f in range(t):
        xy[f, :, 0] = ((torch.arange(n) + f) % w + 0.5) / w
        xy[f, :, 1] = (rows + 0.5) / h
    return LatentTracks(xy=xy, visibility=torch.ones(t, n), frame_ids=torch.arange(t))


def features_following(tracks, c=3, h=6, w=8, seed=0):
    """A feature map whose value under every track is that track's own constant vector; noise elsewhere."""
    g = torch.Generator().manual_seed(seed)
    t, n, _ = tracks.xy.shape
    feats = torch.randn(1, c, t, h, w, generator=g)
    vectors = torch.randn(n, c, generator=g)
    for f in range(t):
        for i in range(n):
            col = int(tracks.xy[f, i, 0] * w)
            row = int(tracks.xy[f, i, 1] * h)
            feats[0, :, f, row, col] = vectors[i]
    return feats


def test_zero_when_features_are_constant_along_tracks_positive_when_they_vary():
    tr = moving_tracks()
    feats = features_following(tr)
    assert float(tracking_loss(feats, tr)) == 0.0
    # the same features read along tracks that stand still are not constant: positive loss
    still = LatentTracks(xy=tr.xy[:1].expand_as(tr.xy).clone(), visibility=tr.visibility, frame_ids=tr.frame_ids)
    assert float(tracking_loss(feats, still)) > 0.1
    # and it is the mean squared step along the tracks
    emb = gather_along_tracks(feats, still.xy)[0]  # T N C
    expected = (emb[1:] - emb[:-1]).pow(2).mean()
    torch.testing.assert_close(tracking_loss(feats, still), expected)


def test_invisible_steps_are_ignored():
    tr = moving_tracks()
    feats = features_following(tr)
    # corrupt point 2 at frame 3, and hide it there: both steps touching frame 3 drop out
    col, row = int(tr.xy[3, 2, 0] * 8), int(tr.xy[3, 2, 1] * 6)
    feats[0, :, 3, row, col] += 10.0
    assert float(tracking_loss(feats, tr)) > 1.0
    tr.visibility[3, 2] = 0.0
    assert float(tracking_loss(feats, tr)) == 0.0


def test_gradient_reaches_the_features():
    tr = moving_tracks()
    feats = torch.randn(1, 3, 5, 6, 8, requires_grad=True)
    tracking_loss(feats, tr).backward()
    assert feats.grad.abs().sum() > 0


def test_tracks_map_to_every_fourth_frame_and_the_latent_grid(pack_cases):
    arr = torch.from_numpy(np.load(os.path.join(pack_cases, "world-figure-eight", "tracks.npy")))  # 49 100 3
    w, h = 720, 480
    path = arr[..., :2] * torch.tensor([w, h])
    vis = arr[..., 2] > 0.5
    lt = tracks_for_latent(path, vis, (w, h), latent_frames=13)
    assert lt.frame_ids.tolist() == list(range(0, 49, 4))
    torch.testing.assert_close(lt.xy, arr[::4, :, :2])
    assert torch.equal(lt.visibility.bool(), vis[::4])
    # a point reads the latent cell floor(x/W * 90), floor(y/H * 60) of its latent frame
    feats = torch.zeros(1, 2, 13, 60, 90)
    j, i = 6, 17  # latent frame 6 = pixel frame 24, point 17
    x, y = arr[24, i, 0].item(), arr[24, i, 1].item()
    col, row = min(int(x * 90), 89), min(int(y * 60), 59)
    feats[0, :, j, row, col] = torch.tensor([3.0, 4.0])
    emb = gather_along_tracks(feats, lt.xy)
    assert emb[0, j, i].tolist() == [3.0, 4.0]
    assert float(emb.abs().sum()) == pytest.approx(7.0 * int(((lt.xy[j] * torch.tensor([90, 60])).long() == torch.tensor([col, row])).all(-1).sum()))


def test_frame_counts_that_fit_neither_are_refused():
    path, vis = torch.zeros(20, 3, 2), torch.ones(20, 3, dtype=torch.bool)
    with pytest.raises(TrackError, match="20 frames, which fits neither the latent's 13 frames nor its 49 pixel"):
        tracks_for_latent(path, vis, (64, 64), 13)
    lt = tracks_for_latent(torch.zeros(13, 3, 2), torch.ones(13, 3, dtype=torch.bool), (64, 64), 13)
    assert lt.frame_ids.tolist() == list(range(13))
    with pytest.raises(TrackError, match="no visible point"):
        tracks_for_latent(torch.zeros(13, 3, 2), torch.zeros(13, 3, dtype=torch.bool), (64, 64), 13)
    assert latent_frame_ids(17, 5).tolist() == [0, 4, 8, 12, 16]
