"""The shipped workflows and the web extension in the real front end (headless Debian Chromium): every workflow
loads with no missing node type and no console error of ours, converts to a prompt whose only /prompt errors are
missing model files, matches what the builder makes from today's nodes, and is listed in the template browser.
The live loss curve arrives while a tiny training runs from the page."""

import json
import os

import pytest

from det_tools.client import PromptValidationError, convert_ui_to_api
from devtools.browser import comfy_page, is_host_noise, load_workflow
from devtools.build_workflows import BUILD_JS, EXAMPLE_VIDEO, WORKFLOWS, comparable
from devtools.tiny_models import TINY_HV_FILE, TINY_TEXT_DIM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.path.join(ROOT, "test_artifacts")
SHIPPED = sorted(f[:-5] for f in os.listdir(os.path.join(ROOT, "workflows")) if f.endswith(".json"))
MODEL_INPUTS = {"unet_name", "clip_name", "clip_name1", "clip_name2", "vae_name", "model_name", "checkpoint", "adapter_name",
                "clip", "dino"}


@pytest.fixture(scope="module")
def page(comfy_server, input_dir, pack_cases):
    import shutil

    for name in (EXAMPLE_VIDEO, "det_generated.mp4"):  # the example videos the workflows name
        shutil.copy(os.path.join(pack_cases, "world-figure-eight", "source.mp4"), os.path.join(input_dir, name))
    with comfy_page(comfy_server.url) as (pg, messages):
        yield pg, messages


def our_errors(messages):
    return [m for m in messages if m[0] in ("error", "pageerror") and not is_host_noise(m[1])]


def test_every_workflow_is_shipped_with_a_thumbnail():
    assert SHIPPED == sorted(WORKFLOWS) == ["det_apply_adapter", "det_evaluate", "det_motion_transfer",
                                            "det_motion_transfer_hunyuan15", "det_motion_transfer_wan21",
                                            "det_train_adapter", "det_wan22_motion_transfer"]
    for name in SHIPPED:
        assert os.path.getsize(os.path.join(ROOT, "workflows", name + ".jpg")) > 5000


FAMILIES = {"det_motion_transfer_wan21": ("wan21", "EmptyHunyuanLatentVideo"),
            "det_wan22_motion_transfer": ("wan21", "EmptyHunyuanLatentVideo"),
            "det_motion_transfer_hunyuan15": ("hunyuan_video_15", "EmptyHunyuanVideo15Latent")}
"""The workflows of one model family: its det_core.arch entry (whose settings the README's table lists) and the
core node that makes its empty latent (16 channels at 8x for Wan 2.1, 32 at 16x for HunyuanVideo 1.5)."""


@pytest.mark.parametrize("name", FAMILIES)
def test_family_workflows_carry_the_settings_of_their_model(name):
    from det_core.arch import arch_named

    arch_name, empty_type = FAMILIES[name]
    arch = arch_named(arch_name)
    d = arch.defaults
    nodes = {n[0]: n for n in WORKFLOWS[name]["nodes"]}
    train, apply, empty = nodes["train"][4], nodes["apply"][4], nodes["empty"][4]
    assert nodes["unet"][4]["unet_name"] in arch.model_files
    assert nodes["empty"][1] == empty_type
    keys = ("kernel_size", "mid_dim", "learning_rate", "warmup_steps", "timestep_sampling")
    assert {k: train[k] for k in keys} == {k: d[k] for k in keys}
    assert (apply["steps"], apply["cfg"], apply["flow_shift"], apply["sampler_name"], apply["scheduler"],
            apply["keep_fraction"]) == (d["steps"], d["cfg"], d["flow_shift"], d["sampler"], d["scheduler"],
                                        d["keep_fraction"])
    assert (empty["width"], empty["height"], empty["length"]) == (d["width"], d["height"], d["frames"])
    assert d["cfg"] > 1 and ("negative", 0, "apply", "negative") in WORKFLOWS[name]["links"]


@pytest.mark.parametrize("name", SHIPPED)
def test_workflow_loads_and_only_model_files_are_missing(page, comfy, name):
    pg, messages = page
    start = len(messages)
    wf = json.load(open(os.path.join(ROOT, "workflows", name + ".json")))
    out = load_workflow(pg, wf)
    assert out["missing"] == []
    assert our_errors(messages[start:]) == []
    notes = [n for n in wf["nodes"] if n["type"] == "Note"]
    assert notes and "models/" in notes[0]["widgets_values"][0]
    with pytest.raises(PromptValidationError) as err:
        comfy.queue(out["prompt"])
    bad = []
    for node_id, info in err.value.node_errors.items():
        for e in info["errors"]:
            name_ = e.get("extra_info", {}).get("input_name")
            if name_ not in MODEL_INPUTS:
                bad.append((node_id, info["class_type"], e["message"], e.get("details")))
    assert bad == [], bad
    # the headless client converts the file to the same prompt as the front end
    info = comfy.object_info()
    declared = lambda node: {**info[node["class_type"]]["input"].get("required", {}),
                             **info[node["class_type"]]["input"].get("optional", {})}
    comparable = lambda p: {k: (n["class_type"], {i: v for i, v in n["inputs"].items() if i in declared(n)})
                            for k, n in p.items()}
    assert comparable(convert_ui_to_api(wf, info)) == comparable(out["prompt"])
    if name == "det_motion_transfer":
        os.makedirs(ARTIFACTS, exist_ok=True)
        pg.screenshot(path=os.path.join(ARTIFACTS, "det_motion_transfer.png"))


def test_shipped_workflows_match_what_the_builder_makes_today(page):
    """A node whose inputs changed since the workflows were built would leave stale widgets_values behind."""
    pg, _ = page
    for name, spec in WORKFLOWS.items():
        nodes = [list(n) + [None] * (6 - len(n)) for n in spec["nodes"]]
        pg.evaluate(BUILD_JS, {"nodes": nodes, "links": spec["links"]})
        fresh = pg.evaluate("() => window.app.graph.serialize()")
        shipped = json.load(open(os.path.join(ROOT, "workflows", name + ".json")))
        assert comparable(fresh) == comparable(shipped), \
            f"{name} is stale: run .venv/bin/python -m devtools.build_workflows {name}"


def test_template_browser_lists_the_workflows(comfy):
    listed = comfy.get_json("/workflow_templates")
    assert sorted(listed.get("det-comfyui", [])) == SHIPPED
    with comfy._request("/api/workflow_templates/det-comfyui/det_motion_transfer.json") as r:
        assert json.load(r)["nodes"]


def test_live_loss_curve_reaches_the_train_node_in_the_page(page, comfy_server):
    pg, messages = page
    spec = {"nodes": [
        ["unet", "UNETLoader", "tiny", [40, 40], {"unet_name": TINY_HV_FILE, "weight_dtype": "default"}, None],
        ["cond", "DeTTestConditioning", "cond", [40, 200], {"seed": 1, "tokens": 6, "width": TINY_TEXT_DIM, "guidance": 6.0}, None],
        ["lat", "DeTTestLatent", "latent", [40, 400], {"seed": 0, "frames": 5, "height": 6, "width": 8}, None],
        ["train", "DeTTrainAdapter", "Train DeT Adapter", [400, 40], {
            "steps": 12, "learning_rate": 1e-3, "mid_dim": 8, "kernel_size": 3, "double_blocks": "all",
            "single_blocks": "none", "tracking_weight": 0.1, "tracking_features": "x0", "feature_block": "double:1",
            "guidance": 6.0, "warmup_steps": 0, "optimizer": "auto", "seed": 0, "control_after_generate": "fixed",
            "output_name": "browser_curve", "checkpoint_every": 0, "overwrite": True, "resume_from": "none",
            "caption": ""}, None],
        ["view", "PreviewImage", "curve", [800, 40], {}, None]],
        "links": [["unet", 0, "train", "model"], ["lat", 0, "train", "latent"], ["cond", 0, "train", "conditioning"],
                  ["train", 1, "view", "images"]]}
    pg.evaluate(BUILD_JS, spec)
    train_id = pg.evaluate("() => String(window.app.graph._nodes.find(n => n.type === 'DeTTrainAdapter').id)")
    start = len(messages)
    pg.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    pg.wait_for_function(f"() => (window.DeT.curves['{train_id}'] || []).length === 12", timeout=120000)
    curve = pg.evaluate(f"() => window.DeT.curves['{train_id}'].map(p => [p.step, p.loss])")
    assert [s for s, _ in curve] == list(range(1, 13)) and all(l > 0 for _, l in curve)
    assert pg.evaluate(f"() => window.app.graph.getNodeById(Number('{train_id}')).detCurve.length") == 12
    assert our_errors(messages[start:]) == []
