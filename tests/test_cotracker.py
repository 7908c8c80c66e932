"""Proof that det_core.cotracker is CoTracker3: the reference implementation (Meta's code, fetched into the cache by
make setup) and ours, with identical random weights, give the same tracks on a video (the pack's drawn zig-zag
case), offline and online. Plus checkpoint loading."""

import os

import pytest
import torch

from det_core.cotracker import CheckpointError, load_cotracker3, track_points
from det_core.video import LoadSettings, load_video
from reference_cotracker import reference_dir


@pytest.fixture(scope="module")
def reference(monkeypatch_module):
    monkeypatch_module.syspath_prepend(reference_dir())
    with torch.random.fork_rng(devices=[]):  # the reference modules seed torch when imported
        from cotracker.models.core.cotracker.cotracker3_offline import CoTrackerThreeOffline
        from cotracker.models.core.cotracker.cotracker3_online import CoTrackerThreeOnline
    return CoTrackerThreeOffline, CoTrackerThreeOnline


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def clip(pack_cases):
    """16 frames of world-zig-zag at the model resolution, (1, T, 3, 384, 512) in 0..255."""
    v = load_video(os.path.join(pack_cases, "world-zig-zag", "source.mp4"),
                   LoadSettings(frame_load_cap=16, width=512, height=384, snap="off", trim_4k_plus_1=False))
    return (v.frames.permute(0, 3, 1, 2) * 255.0)[None]


def queries(n=24, frames=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    t = torch.cat([torch.zeros(n // 2), torch.randint(0, frames, (n - n // 2,), generator=g).float()])
    return torch.stack([t, torch.rand(n, generator=g) * 511, torch.rand(n, generator=g) * 383], dim=-1)[None]


def seeded(cls, seed, **kw):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(stride=4, corr_radius=3, **kw).eval()
    with torch.no_grad():  # the reference zero-initialises nothing we rely on; make every weight non-trivial
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.02)
    return model


def assert_same_tracks(ref_out, ours_out):
    ref_xy, ref_vis, ref_conf = ref_out[0], ref_out[1], ref_out[2]
    xy, vis, conf = ours_out
    assert xy.shape == ref_xy.shape
    err = (xy - ref_xy).abs().max().item()
    assert err < 0.01, f"tracks differ by {err} px"
    assert torch.equal((vis * conf) > 0.6, (ref_vis * ref_conf) > 0.6)
    torch.testing.assert_close(vis, ref_vis, atol=1e-4, rtol=0)
    assert (ref_xy[:, 1:] - ref_xy[:, :1]).abs().max() > 0.1, "the test should move points, not keep them still"


def test_offline_matches_the_reference(reference, clip):
    ref = seeded(reference[0], 0, window_len=60)
    ours = load_cotracker3(ref.state_dict())
    q = queries()
    with torch.no_grad():
        assert_same_tracks(ref(clip, q, iters=4), ours(clip, q, iters=4))


def test_online_matches_the_reference(reference, clip):
    ref = seeded(reference[1], 1, window_len=8)  # 8-frame windows: 16 frames take three windows
    ours = load_cotracker3(ref.state_dict())
    assert ours.window_len == 8
    q = queries(seed=2)
    with torch.no_grad():
        ref.init_video_online_processing()
        for start in range(0, 16 - 4, 4):  # as frames arrive: windows at 0, 4, 8
            out = ref(clip[:, start:start + 8], q, iters=4, is_online=True)
        assert_same_tracks(out, ours.forward_online(clip, q, iters=4))


def test_checkpoints_load_from_pth_and_safetensors_and_bad_ones_are_named(reference, tmp_path, clip):
    from safetensors.torch import save_file

    ref = seeded(reference[0], 3, window_len=60)
    sd = ref.state_dict()
    torch.save({"model": sd}, tmp_path / "scaled_offline.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "scaled_offline.safetensors"))
    a = load_cotracker3(str(tmp_path / "scaled_offline.pth"))
    b = load_cotracker3(str(tmp_path / "scaled_offline.safetensors"))
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    broken = {k: v for k, v in sd.items() if not k.startswith("corr_mlp")}
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"not a CoTracker3 checkpoint: missing \['corr_mlp.fc1.weight'\]"):
        load_cotracker3(str(tmp_path / "broken.pth"))
    with pytest.raises(FileNotFoundError, match="models/cotracker"):
        load_cotracker3(str(tmp_path / "nope.pth"))
    # the predictor: queries come back where they were asked, visible, in video pixels
    frames = clip[0, :6].permute(0, 2, 3, 1) / 255.0
    q = torch.tensor([[0.0, 100.0, 50.0], [2.0, 300.0, 200.0]])
    path, vis = track_points(a, frames, q, iters=2, backward=True)
    assert tuple(path.shape) == (6, 2, 2) and vis[0, 0] and vis[2, 1]
    assert torch.allclose(path[0, 0], q[0, 1:]) and torch.allclose(path[2, 1], q[1, 1:])
