"""det_core.video on videos made here: which frames are kept, at what size, and what bad input says."""

import os

import pytest
import torch

from det_core.video import LoadSettings, SizePlan, VideoError, load_video, synthetic_clip, write_video
from media import empty_video, frame_indices, indexed_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    return indexed_clip(str(tmp_path_factory.mktemp("video") / "indexed.mp4"), frames=40, fps=10.0)


def indices(path, **kw):
    v = load_video(path, LoadSettings(**kw))
    return frame_indices(v.frames), v


def test_all_frames_decode_in_order_and_trim_to_4k_plus_1(clip):
    got, v = indices(clip, trim_4k_plus_1=False)
    assert got == list(range(40))
    got, v = indices(clip)
    assert got == list(range(37)) and v.fps == pytest.approx(10.0)


def test_skip_nth_and_cap_compose_in_order(clip):
    got, v = indices(clip, skip_first_frames=5, select_every_nth=3, frame_load_cap=7, trim_4k_plus_1=False)
    assert got == [5, 8, 11, 14, 17, 20, 23]
    assert v.fps == pytest.approx(10.0 / 3)
    got, _ = indices(clip, skip_first_frames=5, select_every_nth=3, frame_load_cap=7)
    assert got == [5, 8, 11, 14, 17]


@pytest.mark.parametrize("rate, expected", [
    (5.0, list(range(0, 40, 2))),                          # half rate: every other frame
    (20.0, [i // 2 for i in range(80)]),                   # double rate: each frame twice
    (4.0, [int(k * 10 / 4) for k in range(16)]),           # 4 fps from 10 fps: frame floor(2.5 k)
])
def test_force_rate_shows_the_last_frame_at_each_output_time(clip, rate, expected):
    got, v = indices(clip, force_rate=rate, trim_4k_plus_1=False)
    assert got == expected
    assert v.fps == pytest.approx(rate)


def test_force_rate_then_skip(clip):
    got, _ = indices(clip, force_rate=5.0, skip_first_frames=3, trim_4k_plus_1=False)
    assert got == list(range(6, 40, 2))


@pytest.mark.parametrize("src, kw, expected", [
    ((100, 70), dict(snap="crop"), SizePlan(100, 70, 96, 64)),
    ((100, 70), dict(snap="resize"), SizePlan(96, 64, 96, 64)),
    ((100, 70), dict(snap="off"), SizePlan(100, 70, 100, 70)),
    ((720, 480), dict(width=360, snap="crop"), SizePlan(360, 240, 352, 240)),
    ((720, 480), dict(height=100, snap="resize"), SizePlan(144, 96, 144, 96)),
    ((720, 480), dict(width=512, height=320, snap="crop"), SizePlan(512, 320, 512, 320)),
])
def test_size_plan(src, kw, expected):
    kw = {"width": 0, "height": 0, **kw}
    assert SizePlan.make(*src, **kw) == expected


def test_frames_are_cropped_from_the_centre(tmp_path):
    # a clip whose left 10 columns are white: cropping 106 -> 96 wide removes 5 columns each side
    arr = torch.zeros(5, 64, 106, 3)
    arr[:, :, :10] = 1.0
    path = write_video(arr, str(tmp_path / "edge.mp4"), fps=5, crf=0)
    v = load_video(path, LoadSettings(snap="crop"))
    assert tuple(v.frames.shape) == (5, 64, 96, 3)
    col_means = v.frames[0].mean(dim=(0, 2))
    assert col_means[:4].min() > 0.9 and col_means[6:].max() < 0.1


def test_synthetic_clip_round_trips_through_a_file(tmp_path):
    frames = synthetic_clip(frames=9, height=64, width=96, seed=3)
    path = write_video(frames, str(tmp_path / "syn.mp4"), fps=8, crf=0)
    v = load_video(path)
    assert tuple(v.frames.shape) == (9, 64, 96, 3)
    assert (v.frames - frames).abs().mean() < 0.02
    assert not torch.equal(synthetic_clip(frames=9, height=64, width=96, seed=4), frames)


def test_bad_input_names_the_file_and_the_problem(tmp_path, clip):
    missing = str(tmp_path / "nope.mp4")
    with pytest.raises(VideoError, match=r"not found: .*nope\.mp4"):
        load_video(missing)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    with pytest.raises(VideoError, match=r"notes\.mp4 is not a readable video"):
        load_video(str(text))
    empty = empty_video(str(tmp_path / "empty.avi"))
    with pytest.raises(VideoError, match=r"empty\.avi contains no video frames"):
        load_video(empty)
    with pytest.raises(VideoError, match=r"indexed\.mp4: skip_first_frames=40 is past the end: the video has only 40 frames"):
        load_video(clip, LoadSettings(skip_first_frames=40))
    with pytest.raises(VideoError, match=r"only 8 frames at force_rate=2.*raise force_rate"):
        load_video(clip, LoadSettings(force_rate=2.0, skip_first_frames=8))
    with pytest.raises(VideoError, match=r"smaller than 16 px"):
        load_video(clip, LoadSettings(width=8, height=8))
    with pytest.raises(VideoError, match="negative"):
        LoadSettings(width=-4)
    with pytest.raises(ValueError, match="crop, resize, off"):
        LoadSettings(snap="stretch")
    assert os.path.exists(clip)
