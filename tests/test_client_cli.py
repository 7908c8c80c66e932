"""The headless command-line client (`python -m det_tools.client`): UI-format -> API conversion, `--set`, and
end-to-end runs against the session's real ComfyUI server, including every exit code."""

from __future__ import annotations

import filecmp
import glob
import io
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from det_tools.client import (ComfyClient, ConsoleProgress, convert_ui_to_api, main, parse_value, set_input,
                             to_api_prompt, workflow_format)
from det_tools.host import free_port
from det_graphs import base_nodes, train_node

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _widget_input(name: str, kind: str, link=None) -> dict:
    return {"name": name, "localized_name": name, "type": kind, "widget": {"name": name}, "link": link}


def ui_workflow() -> dict:
    """A workflow as the front end (1.32.9) saves it: every widget also listed as an input socket, linked widgets
    keeping their (stale) value in `widgets_values`, the seed's control value after it, the upload button's
    "image" placeholder last, a PrimitiveNode, a Reroute, a Note, a bypassed and a muted node."""
    nodes = [
        {"id": 1, "type": "EmptyHunyuanLatentVideo", "pos": [0, 0], "size": [300, 130], "flags": {}, "order": 3,
         "mode": 0,
         "inputs": [_widget_input("width", "INT", 8), _widget_input("height", "INT"),
                    _widget_input("length", "INT", 5), _widget_input("batch_size", "INT")],
         "outputs": [{"name": "LATENT", "type": "LATENT", "links": [1, 9]}],
         "properties": {"Node name for S&R": "EmptyHunyuanLatentVideo"},
         "widgets_values": [848, 48, 9, 1]},  # width and length are linked: their values here are stale
        {"id": 2, "type": "DeTLoadVideo", "pos": [-400, 0], "size": [300, 300], "flags": {}, "order": 1, "mode": 0,
         "title": "Reference clip",
         "inputs": [_widget_input("video", "COMBO"), _widget_input("frame_load_cap", "INT"),
                    _widget_input("skip_first_frames", "INT"), _widget_input("select_every_nth", "INT"),
                    _widget_input("force_rate", "FLOAT"), _widget_input("width", "INT"),
                    _widget_input("height", "INT"), _widget_input("snap_to_16", "COMBO"),
                    _widget_input("trim_to_4k_plus_1", "BOOLEAN")],
         "outputs": [{"name": "frames", "type": "IMAGE", "links": []},
                     {"name": "fps", "type": "FLOAT", "links": []},
                     {"name": "frame_count", "type": "INT", "links": [5]},
                     {"name": "info", "type": "STRING", "links": [3, 11]}],
         "properties": {"Node name for S&R": "DeTLoadVideo"},
         "widgets_values": ["source.mp4", 5, 0, 2, 0, 64, 0, "crop", True, "image"]},
        {"id": 3, "type": "DeTTestInspect", "pos": [700, 0], "size": [300, 80], "flags": {}, "order": 6, "mode": 0,
         "inputs": [{"name": "value", "type": "*", "link": 6}, _widget_input("label", "STRING")],
         "outputs": [], "properties": {}, "widgets_values": ["cli"]},
        {"id": 4, "type": "PreviewAny", "pos": [0, 300], "size": [300, 150], "flags": {}, "order": 4, "mode": 0,
         "inputs": [{"name": "source", "type": "*", "link": 3}], "outputs": [], "properties": {},
         "widgets_values": []},
        {"id": 6, "type": "Reroute", "pos": [600, 0], "size": [75, 26], "flags": {}, "order": 5, "mode": 0,
         "inputs": [{"name": "", "type": "*", "link": 2}],
         "outputs": [{"name": "", "type": "LATENT", "links": [6]}],
         "properties": {"showOutputText": False, "horizontal": False}},
        {"id": 7, "type": "Note", "pos": [0, -200], "size": [300, 100], "flags": {}, "order": 0, "mode": 0,
         "inputs": [], "outputs": [], "properties": {}, "widgets_values": ["Run with python -m det_tools.client"]},
        {"id": 8, "type": "PrimitiveNode", "pos": [-300, -150], "size": [210, 82], "flags": {}, "order": 2,
         "mode": 0, "title": "width", "inputs": [],
         "outputs": [{"name": "INT", "type": "INT", "widget": {"name": "width"}, "links": [8]}],
         "properties": {"Run widget replace on values": False}, "widgets_values": [64, "fixed"]},
        {"id": 9, "type": "SaveLatent", "pos": [400, 200], "size": [300, 60], "flags": {}, "order": 7, "mode": 0,
         "inputs": [{"name": "samples", "type": "LATENT", "link": 9},
                    _widget_input("filename_prefix", "STRING")],
         "outputs": [], "properties": {}, "widgets_values": ["cli_test/latent"]},
        {"id": 10, "type": "LatentMultiply", "pos": [350, 0], "size": [250, 60], "flags": {}, "order": 4,
         "mode": 4,  # bypassed: the latent passes straight through
         "inputs": [{"name": "samples", "type": "LATENT", "link": 1}, _widget_input("multiplier", "FLOAT")],
         "outputs": [{"name": "LATENT", "type": "LATENT", "links": [2]}], "properties": {},
         "widgets_values": [2.0]},
        {"id": 11, "type": "PreviewAny", "pos": [0, 500], "size": [300, 150], "flags": {}, "order": 5,
         "mode": 2,  # muted
         "inputs": [{"name": "source", "type": "*", "link": 11}], "outputs": [], "properties": {},
         "widgets_values": []},
        {"id": 12, "type": "DeTTestConditioning", "pos": [0, 700], "size": [300, 150], "flags": {}, "order": 0,
         "mode": 0,
         "inputs": [_widget_input("seed", "INT"), _widget_input("tokens", "INT"), _widget_input("width", "INT"),
                    _widget_input("guidance", "FLOAT")],
         "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": []}], "properties": {},
         "widgets_values": [3, "fixed", 6, 32, 6.5]},  # `seed` gets a control widget by its name
    ]
    links = [[1, 1, 0, 10, 0, "LATENT"], [2, 10, 0, 6, 0, "LATENT"], [3, 2, 3, 4, 0, "STRING"],
             [5, 2, 2, 1, 2, "INT"], [6, 6, 0, 3, 0, "LATENT"], [8, 8, 0, 1, 0, "INT"],
             [9, 1, 0, 9, 0, "LATENT"], [11, 2, 3, 11, 0, "STRING"]]
    return {"id": "0b7c5a56-0000-4000-8000-000000000000", "revision": 0, "last_node_id": 12, "last_link_id": 11,
            "nodes": nodes, "links": links, "groups": [], "config": {}, "extra": {"ds": {"scale": 1, "offset": [0, 0]}},
            "version": 0.4}


EXPECTED_API = {
    "1": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 64, "height": 48, "length": ["2", 2],
                                                              "batch_size": 1},
          "_meta": {"title": "Empty HunyuanVideo 1.0 Latent"}},
    "2": {"class_type": "DeTLoadVideo",
          "inputs": {"video": "source.mp4", "frame_load_cap": 5, "skip_first_frames": 0, "select_every_nth": 2,
                     "force_rate": 0, "width": 64, "height": 0, "snap_to_16": "crop", "trim_to_4k_plus_1": True},
          "_meta": {"title": "Reference clip"}},
    "3": {"class_type": "DeTTestInspect", "inputs": {"value": ["1", 0], "label": "cli"},
          "_meta": {"title": "DeT Test Inspect (tests only)"}},
    "4": {"class_type": "PreviewAny", "inputs": {"source": ["2", 3]}, "_meta": {"title": "Preview as Text"}},
    "9": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "cli_test/latent"},
          "_meta": {"title": "SaveLatent"}},
    "12": {"class_type": "DeTTestConditioning", "inputs": {"seed": 3, "tokens": 6, "width": 32, "guidance": 6.5},
           "_meta": {"title": "DeT Test Conditioning (tests only)"}},
}


@pytest.fixture(scope="module")
def object_info(comfy_server) -> dict:
    return ComfyClient(comfy_server.url).object_info()


@pytest.fixture
def video(pack_cases) -> str:
    return os.path.join(pack_cases, "world-zig-zag", "source.mp4")


def write_json(path, data) -> str:
    with open(path, "w") as f:
        json.dump(data, f)
    return str(path)


def inspect_file(out_dir, node_id="3") -> dict:
    with open(os.path.join(out_dir, f"text_{node_id}.txt")) as f:
        return json.loads(f.read())


def wait_until_idle(comfy: ComfyClient, timeout: float = 120.0) -> None:
    """Interrupt whatever runs and wait until the queue is empty, so later tests find the server free."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        comfy.interrupt()
        state = comfy.queue_state()
        if not state["queue_running"] and not state["queue_pending"]:
            return
        time.sleep(0.5)
    raise AssertionError(f"the server's queue did not empty within {timeout} s: {comfy.queue_state()}")


def long_training(name: str) -> dict:
    g = base_nodes()
    g["train"] = train_node(output_name=name, steps=100000, checkpoint_every=0, overwrite=True)
    g["info"] = {"class_type": "PreviewAny", "inputs": {"source": ["train", 2]}}
    return g


# -- conversion ----------------------------------------------------------------------------------------------------

def test_ui_workflow_converts_to_the_expected_api_prompt(object_info):
    assert workflow_format(ui_workflow()) == "ui"
    assert convert_ui_to_api(ui_workflow(), object_info) == EXPECTED_API


def test_a_front_end_export_converts(object_info):
    """The default workflow as the real front end exported it (shipped in ComfyUI's template package):
    KSampler's widgets_values carry the seed's control value ("randomize") after the seed."""
    found = glob.glob(os.path.join(ROOT, ".venv", "lib", "python*", "site-packages",
                                   "comfyui_workflow_templates_media_other", "templates", "default.json"))
    assert found, "ComfyUI's workflow templates package (a ComfyUI requirement) is not installed in .venv"
    with open(found[0]) as f:
        workflow = json.load(f)
    clip = ["4", 1]
    assert convert_ui_to_api(workflow, object_info) == {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly-fp16.safetensors"},
              "_meta": {"title": "Load Checkpoint"}},
        "3": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "seed": 685468484323813, "steps": 20, "cfg": 8, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0],
            "denoise": 1}, "_meta": {"title": "KSampler"}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]},
              "_meta": {"title": "VAE Decode"}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "SD1.5"},
              "_meta": {"title": "Save Image"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": clip},
              "_meta": {"title": "CLIP Text Encode (Prompt)"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1},
              "_meta": {"title": "Empty Latent Image"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {
            "text": "beautiful scenery nature glass bottle landscape, purple galaxy bottle,", "clip": clip},
            "_meta": {"title": "CLIP Text Encode (Prompt)"}},
    }


FRONT_END_SCRIPT = """async (wf) => {
    await window.app.loadGraphData(wf);
    const loaded = await window.app.graphToPrompt();
    // nodes as a user adds them in the editor: a link into a widget input, seeds with their control widget
    window.app.graph.clear();
    const add = (t) => { const n = LiteGraph.createNode(t); window.app.graph.add(n); return n; };
    const video = add("DeTLoadVideo"), latent = add("EmptyHunyuanLatentVideo");
    add("KSampler"); add("DeTTestConditioning"); add("DeTTrainAdapter"); add("LoadImage");
    video.connect(2, latent, latent.inputs.findIndex(i => i.name === "length"));
    video.widgets.find(w => w.name === "frame_load_cap").value = 7;
    const fresh = await window.app.graphToPrompt();
    return {loaded: [loaded.workflow, loaded.output], fresh: [fresh.workflow, fresh.output]};
}"""


def test_conversion_matches_the_real_front_end(comfy_server, object_info):
    """The real front end (headless Chromium) loads the workflow above and a few nodes made in the editor; its
    own graphToPrompt() and convert_ui_to_api() of what it saves give the same nodes and inputs (titles aside:
    the front end localises them; inputs the server does not declare, such as PreviewAny's "preview", aside)."""
    from devtools import browser

    assert os.path.exists(browser.CHROMIUM), f"no Chromium at {browser.CHROMIUM}: run make setup"
    with browser.comfy_page(comfy_server.url) as (page, _):
        result = page.evaluate(FRONT_END_SCRIPT, ui_workflow())

    def comparable(prompt):
        out = {}
        for node_id, node in prompt.items():
            info = object_info[node["class_type"]]["input"]
            declared = {**info.get("required", {}), **info.get("optional", {})}
            out[node_id] = (node["class_type"], {k: v for k, v in node["inputs"].items() if k in declared})
        return out

    for saved, api in result.values():
        assert comparable(convert_ui_to_api(saved, object_info)) == comparable(api)
    assert comparable(result["loaded"][1]) == comparable(EXPECTED_API)
    fresh = {n["type"]: n["widgets_values"] for n in result["fresh"][0]["nodes"]}
    assert fresh["DeTLoadVideo"][1:] == [7, 0, 1, 0, 0, 0, "crop", True, "image"]  # upload placeholder last
    assert fresh["DeTTestConditioning"][:2] == [0, "randomize"]  # a control value after `seed`, by its name


def test_conversion_errors_name_the_node(object_info):
    wf = ui_workflow()
    wf["nodes"].append({"id": 99, "type": "NoSuchDeTNode", "mode": 0, "inputs": [], "outputs": [],
                        "widgets_values": []})
    with pytest.raises(ValueError, match=r"node 99 \(NoSuchDeTNode\).*install the node pack or check the name"):
        convert_ui_to_api(wf, object_info)

    wf = ui_workflow()
    assert wf["nodes"][0]["id"] == 1
    wf["nodes"][0]["mode"] = 2  # mute the latent: the inspect node's required input loses its source
    with pytest.raises(ValueError, match=r"node 3 \(DeTTestInspect\) needs its input 'value', but node 1 "
                                         r"\(EmptyHunyuanLatentVideo\) is muted"):
        convert_ui_to_api(wf, object_info)

    wf = ui_workflow()
    bypassed = next(n for n in wf["nodes"] if n["id"] == 10)
    bypassed["inputs"][0]["link"] = None  # the bypassed node has nothing to pass through
    with pytest.raises(ValueError, match=r"needs its input 'value', but node 10 \(LatentMultiply\) is bypassed "
                                         r"and has no connected LATENT input"):
        convert_ui_to_api(wf, object_info)


def test_api_prompts_pass_through_unchanged(object_info):
    prompt = {"1": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 64}}}
    assert workflow_format(prompt) == "api"
    assert to_api_prompt(prompt, object_info) is prompt
    with pytest.raises(ValueError, match="not a ComfyUI workflow"):
        to_api_prompt({"hello": "world"}, object_info)


# -- --set ---------------------------------------------------------------------------------------------------------

def test_set_input_matches_id_title_and_type_and_parses_values(object_info):
    prompt = convert_ui_to_api(ui_workflow(), object_info)
    assert set_input(prompt, "2.frame_load_cap=9", object_info) == ("2", "frame_load_cap", 9)
    assert set_input(prompt, "Reference clip.force_rate=12.5", object_info)[2] == 12.5
    assert set_input(prompt, "SaveLatent.filename_prefix=123", object_info)[2] == "123"  # a STRING stays text
    assert set_input(prompt, "Empty HunyuanVideo 1.0 Latent.length=[\"2\", 2]", object_info)[2] == ["2", 2]
    assert set_input(prompt, "2.trim_to_4k_plus_1=false", object_info)[2] is False
    assert set_input(prompt, "2.snap_to_16=resize", object_info)[2] == "resize"
    assert prompt["2"]["inputs"]["frame_load_cap"] == 9 and prompt["9"]["inputs"]["filename_prefix"] == "123"
    assert parse_value("1e-5") == 1e-5 and parse_value("some text") == "some text"

    with pytest.raises(ValueError, match=r"no node 'nosuch'.*2 'Reference clip' \(DeTLoadVideo\)"):
        set_input(prompt, "nosuch.video=x", object_info)
    with pytest.raises(ValueError, match=r"has no input 'nosuch'; its inputs: video, frame_load_cap"):
        set_input(prompt, "2.nosuch=1", object_info)
    with pytest.raises(ValueError, match="expected NODE.INPUT=VALUE"):
        set_input(prompt, "2.frame_load_cap", object_info)


def test_progress_redraws_one_line_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    show = ConsoleProgress({"5": {"class_type": "DeTTrainAdapter", "_meta": {"title": "Train"}}}, stream=screen)
    show("executing", {"node": "5"})
    show("progress", {"node": "5", "value": 1, "max": 4, "prompt_id": "p"})
    show("det.train", {"node": "5", "step": 2, "total": 4, "loss": 0.5})
    show("execution_success", {"prompt_id": "p"})
    text = screen.getvalue()
    assert text.startswith("running node 5 'Train'\n")
    assert "\r[######------------------] 1/4  25% node 5 'Train'" in text
    assert "\r[############------------] 2/4  50% node 5 'Train'  step 2 loss 0.5" in text
    assert text.endswith("\ndone\n") and text.count("\n") == 3


# -- the command line, end to end ----------------------------------------------------------------------------------

def test_cli_runs_a_ui_workflow_and_uploads_the_video(comfy, comfy_server, tmp_path, video, input_dir, capsys):
    wf = write_json(tmp_path / "wf.json", ui_workflow())
    out = tmp_path / "out"
    rc = main([wf, "--server", comfy_server.url, "--set", f"Reference clip.video={video}",
               "--set", "2.frame_load_cap=9", "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    saved = captured.out.split()
    assert saved and all(os.path.isfile(p) and os.path.commonpath([str(out), p]) == str(out) for p in saved)
    # files keep the server's subfolder (the workflow saves under cli_test/); text outputs sit in --out itself
    assert any(p.endswith(".latent") and os.path.dirname(p) == str(out / "cli_test") for p in saved)
    # the video went up into the server's input folder (identical content), and --set reached the nodes
    assert any(filecmp.cmp(video, p, shallow=False) for p in glob.glob(os.path.join(input_dir, "source*.mp4")))
    assert inspect_file(out)["shape"] == [1, 16, 3, 6, 8]  # length = frame_count = 9 -> 3 latent frames
    with open(out / "text_4.txt") as f:
        assert ": 9 frames 64x32" in f.read()


def test_cli_as_a_subprocess(comfy_server, tmp_path, video):
    wf = write_json(tmp_path / "wf.json", ui_workflow())
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "det_tools.client", wf, "--server", comfy_server.url,
                           "--set", f"2.video={video}", "--set", "Empty HunyuanVideo 1.0 Latent.height=32",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    saved = proc.stdout.split()
    assert saved and all(os.path.isfile(p) for p in saved)
    assert "running node 3 'DeT Test Inspect (tests only)'" in proc.stderr and "done" in proc.stderr
    assert inspect_file(out)["shape"] == [1, 16, 2, 4, 8]  # 5 frames, height 32


def test_cli_shows_training_progress_and_loss(comfy_server, tmp_path, capsys):
    g = base_nodes()
    g["train"] = train_node(output_name="cli_progress", steps=4, checkpoint_every=0, overwrite=True)
    g["info"] = {"class_type": "PreviewAny", "inputs": {"source": ["train", 2]}}
    wf = write_json(tmp_path / "api.json", g)  # an API-format file runs as it is
    rc = main([wf, "--server", comfy_server.url, "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "4/4 100% node train 'DeTTrainAdapter'  step 4 loss " in captured.err
    assert os.path.isfile(tmp_path / "out" / "text_info.txt")


def test_cli_bad_arguments_exit_2(comfy_server, tmp_path, capsys):
    wf = write_json(tmp_path / "wf.json", ui_workflow())
    assert main([wf, "--server", comfy_server.url, "--set", "nosuch.video=x"]) == 2
    err = capsys.readouterr().err
    assert "no node 'nosuch'" in err and "'Reference clip'" in err and "'Empty HunyuanVideo 1.0 Latent'" in err
    assert main([wf, "--server", comfy_server.url, "--set", "Reference clip.nosuch=1"]) == 2
    err = capsys.readouterr().err
    assert "has no input 'nosuch'" in err and "frame_load_cap" in err and "trim_to_4k_plus_1" in err
    assert main([str(tmp_path / "missing.json"), "--server", comfy_server.url]) == 2
    assert "cannot read the workflow" in capsys.readouterr().err
    assert main([write_json(tmp_path / "junk.json", {"a": 1}), "--server", comfy_server.url]) == 2
    assert "not a ComfyUI workflow" in capsys.readouterr().err
    assert main(["--server", comfy_server.url]) == 2  # no workflow: argparse's usage message


def test_cli_validation_error_exits_3(comfy_server, tmp_path, video, capsys):
    wf = write_json(tmp_path / "wf.json", ui_workflow())
    rc = main([wf, "--server", comfy_server.url, "--set", f"2.video={video}", "--set", "2.frame_load_cap=-5",
               "--quiet", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 3, err
    assert "the server refused the prompt" in err
    assert "node 2 'Reference clip' (DeTLoadVideo)" in err and "frame_load_cap" in err


def test_cli_execution_error_exits_4(comfy_server, tmp_path, video, capsys):
    wf = write_json(tmp_path / "wf.json", ui_workflow())
    rc = main([wf, "--server", comfy_server.url, "--set", f"2.video={video}", "--set", "2.skip_first_frames=100000",
               "--quiet", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 4, err
    assert "node 2 'Reference clip' (DeTLoadVideo) failed:" in err


def test_cli_unreachable_server_exits_7(tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}"
    wf = write_json(tmp_path / "wf.json", ui_workflow())
    assert main([wf, "--server", url]) == 7
    err = capsys.readouterr().err
    assert url in err and "cannot reach ComfyUI" in err


def test_cli_timeout_exits_6(comfy, comfy_server, tmp_path, capsys):
    wf = write_json(tmp_path / "train.json", long_training("cli_timeout"))
    try:
        t0 = time.monotonic()
        rc = main([wf, "--server", comfy_server.url, "--timeout", "2", "--quiet"])
        err = capsys.readouterr().err
        assert rc == 6, err
        assert time.monotonic() - t0 < 30
        assert "timed out after 2 s" in err and comfy_server.url in err
    finally:
        wait_until_idle(comfy)


def test_cli_interrupted_exits_5(comfy, comfy_server, tmp_path, capsys):
    wf = write_json(tmp_path / "train.json", long_training("cli_interrupt"))
    codes = []
    worker = threading.Thread(target=lambda: codes.append(main([wf, "--server", comfy_server.url, "--quiet"])))
    worker.start()
    try:
        deadline = time.monotonic() + 120
        while not comfy.queue_state()["queue_running"] and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        comfy.interrupt()
        worker.join(120)
        err = capsys.readouterr().err
        assert codes == [5], err
        assert "was interrupted" in err
    finally:
        wait_until_idle(comfy)
        worker.join(10)


def test_downloaded_files_stay_inside_out_and_never_replace_each_other(tmp_path):
    from det_tools.client import local_path

    out = str(tmp_path / "out")
    assert local_path(out, "bench/run1", "clip_00001_.mp4") == os.path.join(out, "bench", "run1", "clip_00001_.mp4")
    # a hostile or odd report cannot leave the folder
    for sub, name in (("../../etc", "passwd"), ("/abs/path", "x.png"), ("ok", "../../../x.png"), ("C:\\temp", "y.png")):
        path = local_path(out, sub, name)
        assert os.path.commonpath([out, path]) == out, (sub, name, path)
    with pytest.raises(ValueError, match="without a usable name"):
        local_path(out, "", "..")
    # a name that is taken gets a number
    first = local_path(out, "", "frame.png")
    os.makedirs(out)
    open(first, "wb").close()
    assert local_path(out, "", "frame.png") == os.path.join(out, "frame_1.png")
