"""det_core.segment with tiny random GroundingDINO / SAM / SAM 2 models saved to disk and loaded back by the
pack's own loaders. Random weights make detections arbitrary, so the tests check behaviour: frame counts,
binary masks, thresholds, the empty-frame report, the loaders' messages and the .pth conversion."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from devtools.tiny_models import DINO_VOCAB as VOCAB  # noqa: E402,F401
from devtools.tiny_models import tiny_grounding_dino as _tiny_dino  # noqa: E402
from devtools.tiny_models import tiny_sam as _tiny_sam, tiny_sam2 as _tiny_sam2  # noqa: E402
from devtools.tiny_models import tiny_sam_config as _tiny_sam_config  # noqa: E402
from det_core.segment import (  # noqa: E402
    MaskReport, detect_boxes, grounded_masks, load_grounding_dino, load_sam, load_sam2, load_sam2_video,
    normalize_prompt, overlay, propagated_masks, sam_config_from_checkpoint, segment_boxes,
)

F, H, W = 4, 40, 56


# ---------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models are all overhead: with a busy CPU, intra-op threads make them up to 100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("segment_models")
    return {"dino": _tiny_dino(str(root / "dino")), "sam": _tiny_sam(str(root / "sam")), "root": root}


@pytest.fixture(scope="module")
def dino(folders):
    return load_grounding_dino(folders["dino"])


@pytest.fixture(scope="module")
def sam(folders):
    return load_sam(folders["sam"])


@pytest.fixture(scope="module")
def frames():
    g = torch.Generator().manual_seed(3)
    return torch.rand(F, H, W, 3, generator=g)


# ---------------------------------------------------------------------------------------------- one frame

def test_prompt_is_lower_case_and_ends_with_a_period():
    assert normalize_prompt("  A Dog ") == "a dog."
    assert normalize_prompt("Person. Ball .") == "person. ball."
    with pytest.raises(ValueError, match="prompt is empty"):
        normalize_prompt(" . ")


def test_detect_boxes_thresholds_and_pixel_boxes(dino, frames):
    model, processor = dino
    img = frames[0]
    boxes, scores, labels = detect_boxes(img, "Dog", model, processor, box_threshold=0.0, text_threshold=0.0)
    assert boxes.shape == (len(scores), 4) and len(labels) == len(scores) > 0
    assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= W).all()
    assert (boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= H).all()
    assert all(isinstance(t, str) and "[SEP]" not in t for t in labels)
    # a higher threshold keeps exactly the boxes scoring above it; uint8 input gives the same result
    cut = float(scores.median())
    b2, s2, _ = detect_boxes((img.numpy() * 255 + 0.5).astype(np.uint8), "dog", model, processor, cut, 0.0)
    assert torch.equal(s2, scores[scores > cut]) and torch.equal(b2, boxes[scores > cut])
    none, _, _ = detect_boxes(img, "dog", model, processor, box_threshold=1.01)
    assert none.shape == (0, 4)


def test_segment_boxes_is_the_union_of_the_box_masks(sam, frames):
    model, processor = sam
    img = frames[1]
    boxes = torch.tensor([[2.0, 3.0, 30.0, 25.0], [20.0, 10.0, 55.0, 39.0], [0.0, 0.0, 56.0, 40.0]])
    union = segment_boxes(img, boxes, model, processor)
    assert union.shape == (H, W) and union.dtype == torch.bool
    singles = [segment_boxes(img, b[None], model, processor) for b in boxes]
    assert torch.equal(union, singles[0] | singles[1] | singles[2])
    assert torch.equal(segment_boxes(img, boxes, model, processor, chunk=1), union)  # chunking changes nothing
    assert not segment_boxes(img, torch.zeros(0, 4), model, processor).any()


# ---------------------------------------------------------------------------------------------- video

def test_grounded_masks_one_binary_mask_per_frame(dino, sam, frames):
    calls = []
    masks, report = grounded_masks(frames, "dog", dino, sam, box_threshold=0.0, text_threshold=0.0,
                                   on_progress=lambda i, n: calls.append((i, n)))
    assert masks.shape == (F, H, W)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert calls == [(i + 1, F) for i in range(F)]
    assert report.frames == F and report.empty_frames == [] and report.warning == ""
    assert all(n > 0 for n in report.boxes_per_frame)
    # each frame's mask is exactly SAM on that frame's GroundingDINO boxes
    for i in (0, F - 1):
        boxes, _, _ = detect_boxes(frames[i], "dog", *dino, 0.0, 0.0)
        assert torch.equal(masks[i].bool(), segment_boxes(frames[i], boxes, *sam))


def test_nothing_on_frame_0_raises_with_the_fix(dino, sam, frames):
    with pytest.raises(ValueError) as err:
        grounded_masks(frames, "red ball", dino, sam, box_threshold=1.01, text_threshold=0.25)
    msg = str(err.value)
    assert "'red ball'" in msg and "frame 0" in msg and "lower box_threshold (now 1.01)" in msg


def test_empty_middle_frame_gets_an_empty_mask_and_is_reported(dino, sam, frames):
    seen = []

    def detector(image, prompt, model, processor, box_threshold, text_threshold):
        seen.append(len(seen))
        if len(seen) - 1 == 2:  # the third frame finds nothing
            return torch.zeros(0, 4), torch.zeros(0), []
        return torch.tensor([[0.0, 0.0, float(W), float(H)]]), torch.ones(1), ["dog"]

    masks, report = grounded_masks(frames, "dog", dino, sam, 0.3, 0.25, detector=detector)
    assert masks.shape == (F, H, W) and seen == list(range(F))
    assert report.empty_frames == [2] and report.boxes_per_frame == [1, 1, 0, 1]
    assert not masks[2].any()
    assert "1 of 4 frames (2)" in report.warning and "lower box_threshold" in report.warning
    full = segment_boxes(frames[3], torch.tensor([[0.0, 0.0, float(W), float(H)]]), *sam)
    assert torch.equal(masks[3].bool(), full)


def test_bad_frames_shape_is_refused(dino, sam):
    with pytest.raises(ValueError, match=r"IMAGE \[F, H, W, 3\]"):
        grounded_masks(torch.zeros(2, 8, 8), "dog", dino, sam)


def test_overlay_tints_only_masked_pixels():
    frames = torch.rand(2, 6, 7, 3, generator=torch.Generator().manual_seed(4))
    masks = torch.zeros(2, 6, 7)
    masks[1, 2:4, 3:6] = 1
    out = overlay(frames, masks, colour=(0.0, 1.0, 0.0), alpha=0.25)
    assert out.shape == frames.shape
    on = masks.bool()
    torch.testing.assert_close(out[~on], frames[~on])
    torch.testing.assert_close(out[on], frames[on] * 0.75 + torch.tensor([0.0, 0.25, 0.0]))
    with pytest.raises(ValueError, match="do not fit"):
        overlay(frames, torch.zeros(2, 5, 7))


# ---------------------------------------------------------------------------------------------- loaders

@pytest.mark.parametrize("loader, name", [(load_grounding_dino, "GroundingDINO"), (load_sam, "SAM"),
                                          (load_sam2, "SAM 2")])
def test_missing_folder_names_the_folder_and_the_download(tmp_path, loader, name):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as err:
        loader(missing)
    assert missing in str(err.value) and f"{name} folder not found" in str(err.value)
    assert "config.json" in str(err.value) and "model.safetensors" in str(err.value)
    assert "facebook/sam" in str(err.value) or "IDEA-Research/grounding-dino-tiny" in str(err.value)


def test_folder_without_files_lists_what_is_missing(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError) as err:
        load_grounding_dino(str(tmp_path))
    msg = str(err.value)
    assert str(tmp_path) in msg and "lacks model.safetensors" in msg and "tokenizer.json or vocab.txt" in msg
    lacks = msg.split(" lacks ")[1].split(";")[0].split(", ")  # config.json is there, so not listed
    assert lacks == ["model.safetensors or model.safetensors.index.json",
                     "preprocessor_config.json or processor_config.json", "tokenizer.json or vocab.txt",
                     "tokenizer_config.json"]
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "sam_vit_b_01ec64.pth"))):
        load_sam(str(tmp_path / "sam_vit_b_01ec64.pth"))


def test_sam2_folder_loads_and_segments(tmp_path, frames):
    pytest.importorskip("transformers", minversion="4.56")
    folder = _tiny_sam2(str(tmp_path / "sam2"))
    model, processor = load_sam2(folder)
    assert type(model).__name__ == "Sam2Model"
    assert type(load_sam(folder)[0]).__name__ == "Sam2Model"  # load_sam follows the config
    boxes = torch.tensor([[2.0, 3.0, 30.0, 25.0], [20.0, 10.0, 55.0, 39.0]])
    union = segment_boxes(frames[0], boxes, model, processor)
    assert union.shape == (H, W) and union.dtype == torch.bool
    singles = [segment_boxes(frames[0], b[None], model, processor) for b in boxes]
    assert torch.equal(union, singles[0] | singles[1])


# ---------------------------------------------------------------------------------------------- SAM 2 video

@pytest.fixture(scope="module")
def sam2_video(folders):
    pytest.importorskip("transformers", minversion="4.56")
    return load_sam2_video(_tiny_sam2(str(folders["root"] / "sam2_video")))


def counting(calls: list, boxes=None):
    """A detector that counts its calls: detect_boxes, or fixed boxes when given."""
    def detector(*args):
        calls.append(1)
        if boxes is None:
            return detect_boxes(*args)
        return boxes, torch.ones(len(boxes)), ["dog"] * len(boxes)
    return detector


def test_propagation_detects_once_and_masks_every_frame(dino, sam, sam2_video, frames):
    assert [type(m).__name__ for m in sam2_video] == ["Sam2VideoModel", "Sam2VideoProcessor"]
    calls, progress = [], []
    masks, report = propagated_masks(frames, "dog", dino, sam2_video, box_threshold=0.0, text_threshold=0.0,
                                     on_progress=lambda i, n: progress.append((i, n)), detector=counting(calls))
    assert masks.shape == (F, H, W) and masks.dtype == torch.float32
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert len(calls) == 1, "propagation detects on frame 0 only"
    assert progress == [(i + 1, F) for i in range(F)]
    boxes, _, _ = detect_boxes(frames[0], "dog", *dino, 0.0, 0.0)
    assert report.mode == "propagate" and report.frames == F and report.boxes_per_frame == [len(boxes)] != [0]
    assert report.empty_frames == [i for i in range(F) if not masks[i].any()]
    assert masks[1:].any(), "the tiny model keeps its objects after frame 0"
    # the per-frame mode detects on every frame
    calls.clear()
    grounded_masks(frames, "dog", dino, sam, 0.0, 0.0, detector=counting(calls))
    assert len(calls) == F


def test_each_frame_0_box_is_tracked_as_its_own_object(dino, sam2_video, frames):
    boxes = torch.tensor([[2.0, 3.0, 30.0, 25.0], [26.0, 12.0, 55.0, 39.0]])
    both, _ = propagated_masks(frames, "dog", dino, sam2_video, detector=counting([], boxes))
    first, _ = propagated_masks(frames, "dog", dino, sam2_video, detector=counting([], boxes[:1]))
    second, _ = propagated_masks(frames, "dog", dino, sam2_video, detector=counting([], boxes[1:]))
    assert not torch.equal(first, second)
    assert torch.equal(both.bool(), first.bool() | second.bool())  # per frame: the union of the two tracks


def test_propagation_without_frame_0_detection_raises_with_the_fix(dino, sam2_video, frames):
    with pytest.raises(ValueError) as err:
        propagated_masks(frames, "red ball", dino, sam2_video, box_threshold=1.01, text_threshold=0.25)
    msg = str(err.value)
    assert "'red ball'" in msg and "frame 0" in msg and "lower box_threshold (now 1.01)" in msg
    with pytest.raises(ValueError, match=r"IMAGE \[F, H, W, 3\]"):
        propagated_masks(frames[0], "dog", dino, sam2_video)


def test_propagation_warning_lists_the_lost_frames():
    report = MaskReport(frames=6, prompt="dog", boxes_per_frame=[2], empty_frames=[3, 5], mode="propagate")
    assert "'dog' mask propagated from frame 0 is empty on 2 of 6 frames (3, 5)" in report.warning
    assert MaskReport(frames=6, prompt="dog", mode="propagate").warning == ""


def test_image_only_sam2_folder_cannot_propagate(tmp_path):
    pytest.importorskip("transformers", minversion="4.56")
    folder = _tiny_sam2(str(tmp_path / "sam2_image"), video=False)
    assert type(load_sam2(folder)[0]).__name__ == "Sam2Model"  # fine for per-frame masks
    with pytest.raises(ValueError) as err:
        load_sam2_video(folder)
    msg = str(err.value)
    assert folder in msg and "image-only SAM 2 folder" in msg and "model_type 'sam2_video'" in msg
    assert "facebook/sam2.1-hiera-tiny" in msg and "models/sam2/" in msg


# ---------------------------------------------------------------------------------------------- SAM .pth

def _to_original_keys(state: dict) -> dict:
    """transformers SamModel keys -> segment-anything keys (the inverse of the pack's mapping, written apart)."""
    fixed = [("vision_encoder.", "image_encoder."), (".patch_embed.projection.", ".patch_embed.proj."),
             (".neck.conv1.", ".neck.0."), (".neck.layer_norm1.", ".neck.1."), (".neck.conv2.", ".neck.2."),
             (".neck.layer_norm2.", ".neck.3."), (".mask_embed.conv1.", ".mask_downscaling.0."),
             (".mask_embed.layer_norm1.", ".mask_downscaling.1."), (".mask_embed.conv2.", ".mask_downscaling.3."),
             (".mask_embed.layer_norm2.", ".mask_downscaling.4."), (".mask_embed.conv3.", ".mask_downscaling.6."),
             (".upscale_conv1.", ".output_upscaling.0."), (".upscale_layer_norm.", ".output_upscaling.1."),
             (".upscale_conv2.", ".output_upscaling.3."), (".layer_norm_final_attn.", ".norm_final_attn."),
             ("prompt_encoder.shared_embedding.positional_embedding",
              "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix")]
    out = {}
    for key, value in state.items():
        if key == "shared_image_embedding.positional_embedding":
            continue  # a copy of the prompt encoder's matrix; the original keeps one
        for new, old in fixed:
            key = key.replace(new, old)
        if key.startswith("image_encoder.layers."):
            key = key.replace("image_encoder.layers.", "image_encoder.blocks.", 1)
        key = re.sub(r"\.layer_norm(\d)\.", r".norm\1.", key)
        key = re.sub(r"\.point_embed\.(\d+)\.", r".point_embeddings.\1.", key)
        m = re.match(r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\."
                     r"(proj_in|proj_out|layers\.(\d+))\.(.*)$", key)
        if m:  # SAM's MLP heads here are 3 deep: proj_in, layers.0, proj_out -> layers.0, 1, 2
            j = {"proj_in": 0, "proj_out": 2}.get(m.group(2), int(m.group(3) or 0) + 1)
            key = f"{m.group(1)}.layers.{j}.{m.group(4)}"
        out[key] = value.clone()
    return out


def test_sam_pth_checkpoint_converts_to_the_same_model(tmp_path):
    from transformers import SamModel

    config = _tiny_sam_config(image_size=128, layers=3, global_idx=(1,), window=3)
    torch.manual_seed(5)
    ref = SamModel(config).eval()
    original = _to_original_keys(ref.state_dict())
    assert {"image_encoder.blocks.2.attn.rel_pos_h", "mask_decoder.iou_prediction_head.layers.2.weight"} <= set(original)
    path = str(tmp_path / "sam_vit_tiny.pth")
    torch.save(original, path)

    # 1. the config read from shapes is the one the model was built with
    found = sam_config_from_checkpoint(torch.load(path, weights_only=True))
    for sub, names in {"vision_config": ["hidden_size", "num_hidden_layers", "num_attention_heads", "image_size",
                                         "patch_size", "window_size", "global_attn_indexes", "mlp_dim",
                                         "output_channels", "num_pos_feats"],
                       "prompt_encoder_config": ["hidden_size", "mask_input_channels", "num_point_embeddings"],
                       "mask_decoder_config": ["hidden_size", "mlp_dim", "num_hidden_layers", "num_attention_heads",
                                               "attention_downsample_rate", "iou_head_depth", "iou_head_hidden_dim",
                                               "num_multimask_outputs"]}.items():
        for name in names:
            assert list(np.atleast_1d(getattr(getattr(found, sub), name))) == \
                list(np.atleast_1d(getattr(getattr(config, sub), name))), (sub, name)

    # 2. the weights are the original ones, and the outputs match
    model, processor = load_sam(path)
    got = model.state_dict()
    assert set(got) == set(ref.state_dict())
    for k, v in ref.state_dict().items():
        assert torch.equal(got[k], v), k
    g = torch.Generator().manual_seed(6)
    pixels = torch.randn(1, 3, 128, 128, generator=g)
    boxes = torch.tensor([[[10.0, 20.0, 90.0, 100.0], [0.0, 0.0, 128.0, 64.0]]])
    with torch.no_grad():
        a = ref(pixel_values=pixels, input_boxes=boxes)
        b = model(pixel_values=pixels, input_boxes=boxes)
    torch.testing.assert_close(b.pred_masks, a.pred_masks)
    torch.testing.assert_close(b.iou_scores, a.iou_scores)
    # the processor made for the checkpoint feeds the model at its size
    img = (torch.rand(50, 70, 3, generator=g) * 255).to(torch.uint8).numpy()
    assert processor(images=img, return_tensors="pt")["pixel_values"].shape[-2:] == (128, 128)
    assert segment_boxes(img, boxes[0], model, processor).shape == (50, 70)


@pytest.mark.parametrize("hidden, layers, heads, global_idx", [
    (768, 12, 12, [2, 5, 8, 11]),      # sam_vit_b
    (1024, 24, 16, [5, 11, 17, 23]),   # sam_vit_l
    (1280, 32, 16, [7, 15, 23, 31]),   # sam_vit_h
])
def test_released_sam_sizes_are_read_from_shapes(hidden, layers, heads, global_idx):
    from transformers import SamConfig, SamModel, SamVisionConfig

    vision = SamVisionConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                             global_attn_indexes=global_idx)
    with torch.device("meta"):  # shapes only, no memory
        original = _to_original_keys(SamModel(SamConfig(vision_config=vision)).state_dict())
    found = sam_config_from_checkpoint(original).vision_config
    assert (found.hidden_size, found.num_hidden_layers, found.num_attention_heads) == (hidden, layers, heads)
    assert list(found.global_attn_indexes) == global_idx and found.window_size == 14
    assert (found.image_size, found.patch_size, found.mlp_dim) == (1024, 16, 4 * hidden)


def test_sam_pth_with_foreign_keys_says_which(tmp_path):
    from transformers import SamModel

    torch.manual_seed(7)
    original = _to_original_keys(SamModel(_tiny_sam_config()).state_dict())
    original["mask_decoder.hf_token.weight"] = torch.zeros(1, 32)  # an HQ-SAM style extra
    del original["mask_decoder.transformer.layers.1.norm4.weight"]
    path = str(tmp_path / "odd.pth")
    torch.save(original, path)
    with pytest.raises(ValueError) as err:
        load_sam(path)
    msg = str(err.value)
    assert path in msg and "1 missing (mask_decoder.transformer.layers.1.layer_norm4.weight)" in msg
    assert "1 unexpected (mask_decoder.hf_token.weight)" in msg
    del original["mask_decoder.iou_token.weight"]
    torch.save(original, path)
    with pytest.raises(ValueError, match="key 'mask_decoder.iou_token.weight' is missing"):
        load_sam(path)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable SAM checkpoint"):
        load_sam(str(tmp_path / "junk.pth"))
