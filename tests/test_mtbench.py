"""MTBench as published: the reader on the authors' layout and on the flat one, malformed cases, and the `det`
protocol's scoring against the public code's formulas written out here independently."""

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.distance import cdist

from conftest import need_shared
from det_core import public_eval
from det_tools.bench import main as bench_main
from det_tools.mtbench import read_case, scan

CASES = ("dance-twirl", "dog-agility")


@pytest.fixture(scope="module")
def published(mtbench_examples) -> str:
    return need_shared(os.path.join(os.path.dirname(mtbench_examples), "mtbench_det_layout"))


@pytest.fixture(scope="module")
def drawn_published(pack_cases, tmp_path_factory) -> str:
    """The pack's drawn zig-zag case in the published layout (for the reader's error paths: no real footage needed)."""
    from media import published_case

    root = str(tmp_path_factory.mktemp("published"))
    published_case(os.path.join(pack_cases, "world-zig-zag"), root)
    return root


def test_published_and_flat_layouts_read_the_same(published, mtbench_examples):
    pub, pub_problems = scan(published)
    flat, flat_problems = scan(mtbench_examples)
    assert not pub_problems and not flat_problems
    assert [c.name for c in pub] == [c.name for c in flat] == list(CASES)
    for p, f in zip(pub, flat):
        assert (p.layout, f.layout) == ("published", "flat")
        assert np.array_equal(p.tracks, f.tracks) and p.tracks.shape == (49, 100, 3)
        assert p.caption == f.caption and p.caption == open(os.path.join(published, p.name, "prompts.txt")).read().strip()
        assert p.prompts == f.prompts and len(p.prompts) == 5
        assert all(q == q.strip() and q for q in p.prompts)
        assert os.path.basename(p.video) == f"{p.name}.mp4" and os.path.basename(p.mask) == "00000.png"
        assert np.array_equal(np.array(Image.open(p.mask).convert("L")), np.array(Image.open(f.mask).convert("L")))


def test_one_published_case_folder_is_a_benchmark_of_one(drawn_published):
    cases, problems = scan(os.path.join(drawn_published, "world-zig-zag"))
    assert [c.name for c in cases] == ["world-zig-zag"] and not problems


def test_a_drawn_case_reads_the_same_in_both_layouts(drawn_published, pack_cases):
    pub = read_case(os.path.join(drawn_published, "world-zig-zag"))
    flat = read_case(os.path.join(pack_cases, "world-zig-zag"))
    assert (pub.layout, flat.layout) == ("published", "flat")
    assert np.array_equal(pub.tracks, flat.tracks) and pub.caption == flat.caption
    assert pub.prompts == flat.prompts and pub.size == flat.size == (720, 480)


@pytest.fixture()
def malformed(drawn_published, tmp_path):
    """Five copies of a published-layout case: one sound, four broken in different ways."""
    root = tmp_path / "bench"
    for name in ("a-sound", "b-no-index", "c-points-nowhere", "d-wrong-shape", "e-escapes"):
        shutil.copytree(os.path.join(drawn_published, "world-zig-zag"), root / name)
    os.remove(root / "b-no-index" / "masks.txt")
    (root / "c-points-nowhere" / "videos.txt").write_text("videos/missing.mp4\n")
    torch.save(torch.zeros(49, 100, 2), root / "d-wrong-shape" / "trajectories" / "world-zig-zag.pth")
    (root / "e-escapes" / "videos.txt").write_text("../a-sound/videos/world-zig-zag.mp4\n")
    return str(root)


def test_malformed_cases_are_reported_and_skipped(malformed, tmp_path, capsys):
    cases, problems = scan(malformed)
    assert [c.name for c in cases] == ["a-sound"]
    found = {p.case: (p.file, p.reason) for p in problems}
    assert found["b-no-index"] == ("masks.txt", "missing")
    assert found["c-points-nowhere"] == ("videos.txt", "points to videos/missing.mp4, which does not exist")
    assert found["d-wrong-shape"][0] == os.path.join("trajectories", "world-zig-zag.pth")
    assert "shape (49, 100, 2)" in found["d-wrong-shape"][1]
    assert found["e-escapes"][0] == "videos.txt" and "outside the case folder" in found["e-escapes"][1]
    # the runner says so and goes on with the sound case
    assert bench_main([malformed, "--dry-run", "--protocol", "det", "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "skipping case b-no-index: masks.txt: missing" in printed
    assert ("skipping case d-wrong-shape: trajectories/world-zig-zag.pth: world-zig-zag.pth holds an array"
            in printed)
    assert "a-sound (published layout" in printed


def test_a_pickled_trajectory_is_refused_by_name(drawn_published, tmp_path):
    case = tmp_path / "pickled"
    shutil.copytree(os.path.join(drawn_published, "world-zig-zag"), case)
    torch.save({"tracks": torch.zeros(49, 100, 3), "note": object()}, case / "trajectories" / "world-zig-zag.pth")
    with pytest.raises(Exception, match="world-zig-zag.pth is not a valid tracks file") as err:
        read_case(str(case))
    assert "weights_only=False" not in str(err.value)


# ---------------------------------------------------------------------------------------------------------------
# the det protocol against the public formulas, transcribed independently


def public_reference(gen: torch.Tensor, src: torch.Tensor, seed: int) -> tuple[float, float]:
    """(local, global) as the public evaluation computes them, loop by loop."""
    n1, n2 = gen.shape[1], src.shape[1]
    if n1 > n2:
        gen = gen[:, torch.linspace(0, n1 - 1, n2).to(torch.int32)]
    elif n1 < n2:
        src = src[:, torch.linspace(0, n2 - 1, n1).to(torch.int32)]
    a = torch.cat([gen[:, :1], gen[:, 1:] - gen[:, :-1]], dim=1)
    b = torch.cat([src[:, :1], src[:, 1:] - src[:, :-1]], dim=1)
    a, b = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    local = torch.einsum("ntc,mtc->nmt", a, b).mean(-1).max(dim=1)[0].mean()
    torch.manual_seed(seed)
    ids = torch.randint(0, gen.shape[0], size=(50,))
    g, s = gen[ids], src[ids]
    dist = np.zeros((50, 50))
    for i in range(50):
        for j in range(50):
            dist[i, j] = cdist(g[i].numpy(), s[j].numpy(), metric="euclidean").mean()
    return float(local), float((1 / (1 + dist)).max(axis=1).mean())


@pytest.mark.parametrize("seed", [0, 7])
def test_det_motion_fidelity_equals_the_public_formulas(seed):
    rng = np.random.default_rng(seed)
    gen = torch.from_numpy(np.cumsum(rng.normal(0, 0.01, (120, 49, 2)), axis=1) + 0.5)
    src = torch.from_numpy(np.cumsum(rng.normal(0, 0.01, (120, 33, 2)), axis=1) + 0.4)
    local, glob = public_reference(gen, src, seed)
    mine = public_eval.motion_fidelity(gen.numpy(), src.numpy(), seed=seed)
    assert mine["local"] == pytest.approx(local, abs=1e-9) and mine["global"] == pytest.approx(glob, abs=1e-9)
    assert mine["hybrid"] == pytest.approx(0.5 * local + 0.5 * glob, abs=1e-9)
    assert mine["seed"] == seed and mine["tracks"] == 120
    other = public_eval.motion_fidelity(gen.numpy(), src.numpy(), seed=seed + 1)["global"]
    assert other != pytest.approx(glob, abs=1e-6)  # the pairing does depend on the seed
    with pytest.raises(ValueError, match="same number of tracks"):
        public_eval.motion_fidelity(gen.numpy(), src[:60].numpy(), seed=seed)


def test_det_points_are_the_public_grid_inside_the_mask_box(drawn_published):
    mask = np.array(Image.open(os.path.join(drawn_published, "world-zig-zag", "masks", "world-zig-zag", "00000.png")))
    # the public code: box from the mask's non-zero rows / columns, ends exclusive; 50 x 50 grid at 384 x 512
    m = torch.from_numpy(mask).float() / 255
    nz = m.nonzero()
    box = torch.zeros_like(m)
    box[nz[:, 0].min():nz[:, 0].max(), nz[:, 1].min():nz[:, 1].max()] = 1
    box = torch.nn.functional.interpolate(box[None, None], (384, 512), mode="nearest")[0, 0]
    margin = 512 / 64
    gy, gx = torch.meshgrid(torch.linspace(margin, 384 - margin, 50), torch.linspace(margin, 512 - margin, 50),
                            indexing="ij")
    grid = torch.stack([gx, gy], dim=-1).reshape(-1, 2)
    expected = grid[box[grid[:, 1].round().long(), grid[:, 0].round().long()].bool()]
    points = public_eval.grid_queries(public_eval.box_mask(mask), (384, 512))
    assert 50 < len(points) < 2500
    assert torch.equal(points, expected)
    with pytest.raises(ValueError, match="mask is empty"):
        public_eval.box_mask(np.zeros_like(mask))


def test_det_temporal_consistency_counts_frame_zero_as_the_public_code():
    feats = torch.randn(6, 16, generator=torch.Generator().manual_seed(1))
    f = torch.nn.functional.normalize(feats, p=2, dim=-1)
    first = f[[0]].repeat(6, 1)
    prev_ids = torch.arange(0, 6) - 1
    prev_ids[0] = 0
    expected = (torch.diagonal(f @ first.T).mean() + torch.diagonal(f @ f[prev_ids].T).mean()) / 2
    assert public_eval.consistency_score(feats) == pytest.approx(float(expected), abs=1e-6)
    assert public_eval.clip_prompt("A cat running.  ") == "A cat running."
    assert public_eval.clip_prompt("A cat running") == "A cat running."
