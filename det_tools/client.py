"""A small client for ComfyUI's HTTP + websocket API (used by the demo, the tests and headless runs).

    client = ComfyClient("http://127.0.0.1:8188")
    result = client.run(prompt)              # API-format prompt dict; follows progress; raises on errors
    client.download_outputs(result, "out/")  # files the output nodes wrote

Errors are raised as `PromptValidationError` (rejected by `/prompt`), `PromptExecutionError` (a node
raised), `PromptInterrupted`, and `TimeoutError`, each with a readable message.

It is also a headless command-line client that runs a saved workflow (the front end's UI format or the API
format) on a running server, with `--set NODE.INPUT=VALUE` overrides, console progress and the outputs saved
locally:

    python -m det_tools.client WORKFLOW.json --server http://127.0.0.1:8188 \
        --set "Load Video (DeT).video=clip.mp4" --set 5.steps=200 --out outputs/

`convert_ui_to_api(workflow, object_info)` turns a UI-format workflow into an API prompt and
`set_input(prompt, spec)` applies one `--set`. Exit codes: 0 done, 2 bad arguments / `--set` / workflow,
3 the server refused the prompt (validation), 4 a node failed, 5 interrupted, 6 timed out,
7 server unreachable.
"""

from __future__ import annotations

import argparse
import json
import math
import mimetypes
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable


class ComfyError(RuntimeError):
    pass


class PromptValidationError(ComfyError):
    """`/prompt` refused the prompt; `node_errors` maps node id -> {"class_type", "errors": [...]}."""

    def __init__(self, body: dict):
        self.body = body
        self.error = body.get("error", {})
        self.node_errors = body.get("node_errors", {})
        super().__init__(self.describe())

    def messages(self) -> list[str]:
        out = []
        for node_id, info in self.node_errors.items():
            for err in info.get("errors", []):
                out.append(f"node {node_id} ({info.get('class_type')}): {err.get('message')}: {err.get('details')}")
        return out

    def describe(self) -> str:
        head = f"{self.error.get('message', 'prompt rejected')}"
        if self.error.get("details"):
            head += f": {self.error['details']}"
        return "\n".join([head, *self.messages()])


class PromptExecutionError(ComfyError):
    """A node raised while the prompt ran; the fields come from the server's `execution_error` message."""

    def __init__(self, data: dict):
        self.data = data
        self.node_id = data.get("node_id")
        self.node_type = data.get("node_type")
        self.exception_type = data.get("exception_type")
        self.exception_message = data.get("exception_message", "")
        super().__init__(f"node {self.node_id} ({self.node_type}) failed: {self.exception_type}: "
                         f"{self.exception_message}".rstrip())


class PromptInterrupted(ComfyError):
    pass


@dataclass
class PromptResult:
    prompt_id: str
    outputs: dict[str, dict] = field(default_factory=dict)
    """node id -> the node's UI output (images, videos, text, ...), as `/history` gives it."""
    messages: list[tuple[str, dict]] = field(default_factory=list)
    """Every websocket message (type, data) about this prompt, in order."""


class ComfyClient:
    def __init__(self, url: str, client_id: str | None = None, request_timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.client_id = client_id or uuid.uuid4().hex
        self.request_timeout = request_timeout
        self.last_prompt_id: str | None = None
        """The id of the prompt that `queue` (or `run`) queued last."""

    # -- plain HTTP ---------------------------------------------------------------------------------
    def _request(self, path: str, data: bytes | None = None, headers: dict | None = None, method: str | None = None):
        req = urllib.request.Request(self.url + path, data=data, headers=headers or {}, method=method)
        try:
            return urllib.request.urlopen(req, timeout=self.request_timeout)
        except urllib.error.URLError as e:
            if isinstance(e, urllib.error.HTTPError):
                raise
            raise ConnectionError(f"cannot reach ComfyUI at {self.url}: {e.reason}") from None

    def get_json(self, path: str) -> Any:
        with self._request(path) as r:
            return json.load(r)

    def post_json(self, path: str, body: Any) -> Any:
        data = json.dumps(body).encode()
        with self._request(path, data, {"Content-Type": "application/json"}) as r:
            raw = r.read()
            return json.loads(raw) if raw else None

    def object_info(self, node_type: str | None = None) -> dict:
        return self.get_json("/object_info" + (f"/{urllib.parse.quote(node_type)}" if node_type else ""))

    def history(self, prompt_id: str) -> dict:
        return self.get_json(f"/history/{prompt_id}").get(prompt_id, {})

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Interrupt what the server runs now (only `prompt_id`, when given and running)."""
        self.post_json("/interrupt", {"prompt_id": prompt_id} if prompt_id else {})

    def queue_state(self) -> dict:
        """`/queue`: {"queue_running": [...], "queue_pending": [...]}; item[1] is a prompt id."""
        return self.get_json("/queue")

    def cancel(self, prompt_id: str) -> None:
        """Take `prompt_id` off the queue if it is still pending, and interrupt it if it is running."""
        self.post_json("/queue", {"delete": [prompt_id]})
        self.interrupt(prompt_id)

    def upload(self, path: str, subfolder: str = "", overwrite: bool = True) -> str:
        """Upload a local file into the server's input folder; returns the name a loader node takes."""
        boundary = uuid.uuid4().hex
        name = os.path.basename(path)
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        with open(path, "rb") as f:
            payload = f.read()
        parts = []
        for key, value in (("subfolder", subfolder), ("overwrite", "true" if overwrite else "false"), ("type", "input")):
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                     f"Content-Type: {ctype}\r\n\r\n".encode() + payload + b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        with self._request("/upload/image", b"".join(parts),
                           {"Content-Type": f"multipart/form-data; boundary={boundary}"}) as r:
            info = json.load(r)
        return f"{info['subfolder']}/{info['name']}" if info.get("subfolder") else info["name"]

    def view(self, filename: str, subfolder: str = "", folder_type: str = "output") -> bytes:
        q = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": folder_type})
        with self._request(f"/view?{q}") as r:
            return r.read()

    # -- prompts ------------------------------------------------------------------------------------
    def queue(self, prompt: dict, extra_data: dict | None = None) -> str:
        body = {"prompt": prompt, "client_id": self.client_id}
        if extra_data:
            body["extra_data"] = extra_data
        try:
            self.last_prompt_id = self.post_json("/prompt", body)["prompt_id"]
            return self.last_prompt_id
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                raise ComfyError(f"/prompt answered {e.code}: {raw[:500]!r}") from None
            raise PromptValidationError(parsed) from None

    def run(self, prompt: dict, timeout: float = 600.0,
            on_message: Callable[[str, dict], None] | None = None) -> PromptResult:
        """Queue `prompt`, follow it over the websocket until it ends, and return its outputs."""
        import websocket  # websocket-client

        ws_url = self.url.replace("http://", "ws://").replace("https://", "wss://") + f"/ws?clientId={self.client_id}"
        try:
            ws = websocket.create_connection(ws_url, timeout=min(timeout, 30.0))
        except (OSError, websocket.WebSocketException) as e:
            raise ConnectionError(f"cannot open the websocket at {ws_url}: {e}") from None
        try:
            prompt_id = self.queue(prompt)
            result = PromptResult(prompt_id)
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")
                ws.settimeout(min(left, 5.0))
                try:
                    raw = ws.recv()
                except websocket.WebSocketTimeoutException:
                    if self._finished_in_history(prompt_id, result):
                        break
                    continue
                if not isinstance(raw, str):
                    continue  # binary preview images
                msg = json.loads(raw)
                mtype, data = msg.get("type"), msg.get("data", {}) or {}
                if data.get("prompt_id") not in (None, prompt_id):
                    continue
                result.messages.append((mtype, data))
                if on_message:
                    on_message(mtype, data)
                if mtype == "execution_error":
                    raise PromptExecutionError(data)
                if mtype == "execution_interrupted":
                    raise PromptInterrupted(f"prompt {prompt_id} was interrupted at node {data.get('node_id')}")
                if mtype == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                    break
                if mtype == "execution_success":
                    break
        finally:
            ws.close()
        # the server writes /history just after it reports the end over the websocket
        while not self._finished_in_history(prompt_id, result):
            if time.monotonic() > deadline:
                raise TimeoutError(f"prompt {prompt_id} finished but its history did not appear within {timeout:.0f} s")
            time.sleep(0.05)
        return result

    def _finished_in_history(self, prompt_id: str, result: PromptResult) -> bool:
        entry = self.history(prompt_id)
        if not entry:
            return False
        result.outputs = entry.get("outputs", {})
        status = entry.get("status", {})
        for mtype, data in status.get("messages", []):
            if mtype == "execution_error":
                raise PromptExecutionError(data)
            if mtype == "execution_interrupted":
                raise PromptInterrupted(f"prompt {prompt_id} was interrupted at node {data.get('node_id')}")
        return bool(status.get("completed")) or status.get("status_str") == "success"

    def download_outputs(self, result: PromptResult, folder: str, kinds: tuple[str, ...] = ("output",)) -> list[str]:
        """Save the files the prompt's nodes reported (images, videos, ...) into `folder`; by default only saved
        outputs, not the temporary previews nodes show on themselves (`kinds=("output", "temp")` for both)."""
        os.makedirs(folder, exist_ok=True)
        saved = []
        for node_output in result.outputs.values():
            for items in node_output.values():
                if not isinstance(items, list):
                    continue
                for item in items:
                    if isinstance(item, dict) and "filename" in item and item.get("type", "output") in kinds:
                        data = self.view(item["filename"], item.get("subfolder", ""), item.get("type", "output"))
                        dest = local_path(folder, str(item.get("subfolder", "")), str(item["filename"]))
                        os.makedirs(os.path.dirname(dest), exist_ok=True)
                        with open(dest, "xb") as f:  # never over another file
                            f.write(data)
                        saved.append(dest)
        return saved


def local_path(folder: str, subfolder: str, filename: str) -> str:
    """Where a file the server reported goes: under `folder`, in the server's subfolder (its parts without '..',
    '.' or drive and root parts), under the file's base name; a name that is taken gets _1, _2, ... so one output
    never replaces another."""
    parts = [p for p in subfolder.replace("\\", "/").split("/") if p not in ("", ".", "..") and ":" not in p]
    name = os.path.basename(filename.replace("\\", "/")).replace(":", "_")
    if name in ("", ".", ".."):
        raise ValueError(f"the server reported an output file without a usable name: {filename!r}")
    base = os.path.join(os.path.abspath(folder), *parts)
    stem, ext = os.path.splitext(name)
    dest, n = os.path.join(base, name), 0
    while os.path.exists(dest):
        n += 1
        dest = os.path.join(base, f"{stem}_{n}{ext}")
    return dest


# == workflow files: UI format -> API format ========================================================================
#
# What the front end of ComfyUI 0.3.75 (frontend 1.32.9) writes into a saved workflow, read from its bundled source
# and checked three ways: against the workflows it exported into the `comfyui_workflow_templates` packages (162
# of them convert, and the server's validation finds no misplaced value), against its own graphToPrompt() in a
# headless browser (tests/test_client_cli.py), and by the server running the result:
# - `widgets_values` holds one value per widget, in the order the widgets were made: the node's required inputs
#   then its optional inputs, each in `input_order` (the declaration order), every INT / FLOAT / STRING /
#   BOOLEAN / COMBO input that is not `forceInput` being a widget. A widget whose input is linked keeps its widget
#   and so its slot in `widgets_values` (the link wins when the prompt is built).
# - An INT input with `control_after_generate` (or, when the flag is absent, named `seed` / `noise_seed`) is
#   followed by its control widget's value ("fixed", "randomize", ...); a COMBO with `control_after_generate` by
#   two (the control and its filter text).
# - A COMBO with an upload flag takes one value; its upload button comes after all other widgets and writes the
#   placeholder "image" at the end (or nothing), which is ignored here.
# - `PrimitiveNode` (a front-end node) holds a value for the widget input it feeds: [value, control]. `Reroute`
#   passes a link through. `Note` / `MarkdownNote` are comments. Mode 2 (muted) nodes do not run and inputs fed
#   by them are left out; mode 4 (bypassed) nodes pass an input of the matching type through to what they feed
#   (the same slot when its type fits, else the first input of that type), or are left out when they have none.
#   Leaving out an optional input is what the front end does; a required one fails here with a message.

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
UPLOAD_FLAGS = ("image_upload", "video_upload", "animated_image_upload", "audio_upload")
UI_ONLY_NODE_TYPES = ("Note", "MarkdownNote", "Reroute", "PrimitiveNode")
MODE_MUTED, MODE_BYPASSED = 2, 4


def is_api_format(data: Any) -> bool:
    """An API prompt: a non-empty dict of node id -> {"class_type": ..., "inputs": {...}}."""
    return (isinstance(data, dict) and bool(data)
            and all(isinstance(v, dict) and "class_type" in v for v in data.values()))


def is_ui_format(data: Any) -> bool:
    """A workflow as the front end saves it: {"nodes": [...], "links": [...], ...}."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list)


def workflow_format(data: Any) -> str:
    """"api" or "ui"; ValueError for anything else."""
    if is_ui_format(data):
        return "ui"
    if is_api_format(data):
        return "api"
    raise ValueError("not a ComfyUI workflow: expected the front end's saved format (with 'nodes' and 'links') "
                     "or the API format (node id -> {'class_type', 'inputs'})")


def _unwrap(workflow: Any) -> Any:
    """The API prompt inside a saved `/prompt` request body ({"prompt": {...}, ...}); anything else as it is."""
    if isinstance(workflow, dict) and is_api_format(workflow.get("prompt")) and not is_api_format(workflow):
        return workflow["prompt"]
    return workflow


def to_api_prompt(workflow: dict, object_info: dict) -> dict:
    """An API prompt from a workflow in either format (an API prompt is returned unchanged)."""
    workflow = _unwrap(workflow)
    return workflow if workflow_format(workflow) == "api" else convert_ui_to_api(workflow, object_info)


def _spec_type(spec: Any) -> str:
    kind = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
    return "COMBO" if isinstance(kind, (list, tuple)) else str(kind)


def _spec_options(spec: Any) -> dict:
    return spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}


def _upload_flag(spec: Any) -> str | None:
    opts = _spec_options(spec)
    if _spec_type(spec) != "COMBO":
        return None
    return next((flag for flag in UPLOAD_FLAGS if opts.get(flag)), None)


def _is_widget(spec: Any) -> bool:
    opts = _spec_options(spec)
    return _spec_type(spec) in WIDGET_TYPES and not opts.get("forceInput") and not opts.get("defaultInput")


def _extra_widget_values(name: str, spec: Any) -> int:
    """How many values the front end's helper widgets add after this widget's own value."""
    kind, opts = _spec_type(spec), _spec_options(spec)
    control = opts.get("control_after_generate")
    if kind == "INT":
        if control is None:
            control = name in ("seed", "noise_seed")
        return 1 if control else 0
    if kind == "COMBO" and control:
        return 2  # the control and its filter list
    return 0


def _ordered_inputs(info: dict) -> list[tuple[str, Any, bool]]:
    """(name, spec, optional) of a node type's inputs, in the order the front end makes their widgets."""
    declared = info.get("input", {}) or {}
    order = info.get("input_order", {}) or {}
    out = []
    for section, optional in (("required", False), ("optional", True)):
        specs = declared.get(section, {}) or {}
        names = [n for n in order.get(section, []) if n in specs]
        names += [n for n in specs if n not in names]
        out += [(n, specs[n], optional) for n in names]
    return out


def _default_value(spec: Any) -> Any:
    kind, opts = _spec_type(spec), _spec_options(spec)
    if "default" in opts:
        return opts["default"]
    if kind == "COMBO":
        options = spec[0] if isinstance(spec[0], (list, tuple)) else opts.get("options", [])
        return options[0] if options else None
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(kind)


def _widget_values(node: dict, info: dict) -> dict[str, Any]:
    """Input name -> value from the node's `widgets_values` (inputs with no stored value get their default)."""
    inputs = _ordered_inputs(info)
    stored = node.get("widgets_values")
    if isinstance(stored, dict):  # some custom front ends save widgets by name
        return {n: stored.get(n, _default_value(s)) for n, s, _ in inputs if _is_widget(s)}
    stored = list(stored or [])
    widgets = [(n, s, opt) for n, s, opt in inputs if _is_widget(s)]
    needed = sum(1 + _extra_widget_values(n, s) for n, s, _ in widgets)
    # front ends older than input_order put the upload button's "image" between the required and optional widgets
    legacy_gap = None
    if (any(_upload_flag(s) for n, s, _ in widgets) and any(opt for _, _, opt in widgets)
            and len(stored) == needed + 1 and "input_order" not in info):
        legacy_gap = sum(1 + _extra_widget_values(n, s) for n, s, opt in widgets if not opt)
        if stored[legacy_gap] not in ("image", None):
            legacy_gap = None
    values, i = {}, 0
    for name, spec, _ in widgets:
        if i == legacy_gap:
            i += 1
        values[name] = stored[i] if i < len(stored) else _default_value(spec)
        i += 1 + _extra_widget_values(name, spec)
    return values


def _link_table(workflow: dict) -> dict[int, tuple[str, int, str, int, str]]:
    """link id -> (from node, from slot, to node, to slot, type), for list links (schema 0.4) and object links (1)."""
    table = {}
    for link in workflow.get("links") or []:
        if isinstance(link, dict):
            lid, a, a_slot, b, b_slot, kind = (link.get(k) for k in ("id", "origin_id", "origin_slot", "target_id",
                                                                     "target_slot", "type"))
        else:
            lid, a, a_slot, b, b_slot, kind = (list(link) + [None] * 6)[:6]
        table[int(lid)] = (str(a), int(a_slot), str(b), int(b_slot), kind if isinstance(kind, str) else "*")
    return table


def _types_match(a: str | None, b: str | None) -> bool:
    if not a or not b or a == "*" or b == "*":
        return True
    return bool(set(str(a).upper().split(",")) & set(str(b).upper().split(",")))


def _describe(node: dict) -> str:
    title = node.get("title")
    return f"node {node.get('id')} ({node.get('type')}{', ' + repr(title) if title else ''})"


class _Sources:
    """What feeds each link of a UI workflow, following reroutes, primitive nodes and bypassed nodes as the front
    end does."""

    def __init__(self, nodes: dict, links: dict):
        self.nodes, self.links = nodes, links

    def source(self, link_id: int, wanted_type: str | None, seen: frozenset = frozenset()):
        """("link", node id, slot), ("value", v) or ("dropped", why): a muted source, a bypassed one with nothing to
        pass through or an unconnected reroute, which the front end leaves out."""
        if link_id not in self.links:
            raise ValueError(f"link {link_id} is not in the workflow's 'links' (a damaged workflow file)")
        from_id, from_slot, to_id, _, link_type = self.links[link_id]
        if (from_id, from_slot) in seen:
            raise ValueError(f"links loop through node {from_id}")
        seen = seen | {(from_id, from_slot)}
        node = self.nodes.get(from_id)
        if node is None:
            raise ValueError(f"link {link_id} into node {to_id} comes from node {from_id}, which is not in the workflow")
        kind = node.get("type")
        if kind == "Reroute":
            feed = (node.get("inputs") or [{}])[0].get("link")
            if feed is None:
                return ("dropped", f"reroute {from_id} is not connected to anything")
            return self.source(int(feed), wanted_type, seen)
        if kind == "PrimitiveNode":
            values = node.get("widgets_values") or []
            if not values:
                raise ValueError(f"{_describe(node)} holds no value")
            return ("value", values[0])
        mode = node.get("mode", 0)
        if mode == MODE_MUTED:
            return ("dropped", f"{_describe(node)} is muted")
        if mode == MODE_BYPASSED:
            want = wanted_type if wanted_type not in (None, "", "*") else link_type
            pick = self._passed_through(node, from_slot, link_type, want)
            if pick is None:
                return ("dropped", f"{_describe(node)} is bypassed and has no connected {link_type} input to pass "
                                   "through")
            return self.source(int(node["inputs"][pick]["link"]), want, seen)
        return ("link", from_id, from_slot)

    @staticmethod
    def _passed_through(node: dict, slot: int, link_type: str, want: str) -> int | None:
        """The input a bypassed node passes to its output `slot`: the same slot when the types agree, else the first
        input of the wanted type, else the first of a matching type; None when that input is not connected."""
        ins = node.get("inputs") or []
        out_type = ((node.get("outputs") or [])[slot:slot + 1] or [{}])[0].get("type", link_type)
        if slot < len(ins) and _types_match(ins[slot].get("type"), out_type) \
                and _types_match(ins[slot].get("type"), want):
            pick = slot
        else:
            pick = next((i for i, x in enumerate(ins) if x.get("type") == want), None)
            if pick is None:
                pick = next((i for i, x in enumerate(ins) if _types_match(x.get("type"), out_type)
                             and _types_match(x.get("type"), want)), None)
        return None if pick is None or ins[pick].get("link") is None else pick


def _check_expandable(node: dict, subgraphs: set) -> None:
    kind = node.get("type")
    if kind in subgraphs:
        raise ValueError(f"{_describe(node)} is a subgraph, which this client does not expand: convert it back "
                         "to nodes in the front end, or export the workflow with 'Export (API)'")
    if isinstance(kind, str) and kind.startswith(("workflow>", "workflow/")):
        raise ValueError(f"{_describe(node)} is a group node, which this client does not expand: ungroup it in "
                         "the front end, or export the workflow with 'Export (API)'")


def _node_inputs(node: dict, info: dict, sources: _Sources) -> dict:
    """The API inputs of one node: its links (resolved to their sources) and its widget values, in the order the
    node type declares them, then inputs it does not declare (dynamic inputs)."""
    widgets = _widget_values(node, info)
    required = {n for n, _, optional in _ordered_inputs(info) if not optional}
    linked = {}
    for inp in node.get("inputs") or []:
        name = (inp.get("widget") or {}).get("name") or inp.get("name")
        if inp.get("link") is None or not name:
            continue
        fed = sources.source(int(inp["link"]), inp.get("type"), frozenset())
        if fed[0] == "dropped":
            if name in required:
                raise ValueError(f"{_describe(node)} needs its input {name!r}, but {fed[1]}; "
                                 "connect the input or enable that node")
            continue  # an optional input: left out, as the front end does
        linked[name] = [fed[1], fed[2]] if fed[0] == "link" else fed[1]
    inputs = {}
    for name, _, _ in _ordered_inputs(info):
        if name in linked:
            inputs[name] = linked.pop(name)
        elif name in widgets:
            value = widgets[name]
            inputs[name] = {"__value__": value} if isinstance(value, list) else value
    inputs.update(linked)
    return inputs


def convert_ui_to_api(workflow: dict, object_info: dict) -> dict:
    """The API prompt {node id: {"class_type", "inputs", "_meta": {"title"}}} of a UI-format workflow.

    `object_info` is the server's `/object_info`: it names each node type's inputs, which are matched to the
    node's positional `widgets_values` (see the notes above). ValueError names the node for any node type the
    server does not know, subgraphs / group nodes, dangling links, and required inputs fed by a muted node, a
    bypassed node with nothing to pass through or an unconnected reroute.
    """
    if not is_ui_format(workflow):
        raise ValueError("not a UI-format workflow (no 'nodes' list)")
    nodes = {str(n["id"]): n for n in workflow["nodes"]}
    sources = _Sources(nodes, _link_table(workflow))
    subgraphs = {sg.get("id") for sg in (workflow.get("definitions") or {}).get("subgraphs", []) or []}
    prompt = {}
    for node_id, node in nodes.items():
        kind = node.get("type")
        if kind in UI_ONLY_NODE_TYPES or node.get("mode", 0) in (MODE_MUTED, MODE_BYPASSED):
            continue
        _check_expandable(node, subgraphs)
        info = object_info.get(kind)
        if info is None:
            raise ValueError(f"{_describe(node)}: the server has no node type {kind!r}; "
                             "install the node pack or check the name")
        title = node.get("title") or info.get("display_name") or kind
        prompt[node_id] = {"class_type": kind, "inputs": _node_inputs(node, info, sources), "_meta": {"title": title}}
    if not prompt:
        raise ValueError("the workflow has no node to run (only notes, reroutes, muted or bypassed nodes)")
    return prompt


# == --set NODE.INPUT=VALUE =========================================================================================

def _node_title(prompt: dict, node_id: str) -> str:
    node = prompt.get(node_id, {})
    return (node.get("_meta") or {}).get("title") or node.get("class_type", "?")


def _node_list(prompt: dict) -> str:
    return ", ".join(f"{nid} {_node_title(prompt, nid)!r} ({n.get('class_type')})" for nid, n in prompt.items())


def find_node(prompt: dict, key: str) -> str:
    """The id of the node `key` names: an id, else an exact title, else a class_type used by one node only."""
    if key in prompt:
        return key
    by_title = [nid for nid in prompt if (prompt[nid].get("_meta") or {}).get("title") == key]
    if len(by_title) == 1:
        return by_title[0]
    if len(by_title) > 1:
        raise ValueError(f"{len(by_title)} nodes are titled {key!r} (ids {', '.join(by_title)}); use an id")
    by_class = [nid for nid in prompt if prompt[nid].get("class_type") == key]
    if len(by_class) == 1:
        return by_class[0]
    if len(by_class) > 1:
        raise ValueError(f"{len(by_class)} nodes are {key} nodes (ids {', '.join(by_class)}); use an id or a title")
    raise ValueError(f"no node {key!r} in the workflow; nodes (id 'title' (type)): {_node_list(prompt)}")


def parse_value(raw: str, spec: Any = None) -> Any:
    """JSON when `raw` parses as JSON (numbers, true/false, lists, quoted strings), else the text itself; for a
    STRING input a bare number or true/false stays text."""
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    if spec is not None and _spec_type(spec) == "STRING" and not isinstance(value, (str, list)):
        return raw
    if spec is not None and _spec_type(spec) == "COMBO" and not isinstance(value, str):
        options = spec[0] if isinstance(spec[0], (list, tuple)) else _spec_options(spec).get("options", [])
        if raw in options and value not in options:
            return raw
    return value


def set_input(prompt: dict, spec: str, object_info: dict | None = None,
              client: ComfyClient | None = None) -> tuple[str, str, Any]:
    """Apply one `NODE.INPUT=VALUE` to `prompt` (in place); returns (node id, input, value).

    NODE is a node id, an exact title or a class_type used once. VALUE is parsed by `parse_value`. With
    `object_info` and `client`, a VALUE that names a local file for a COMBO input with an upload flag
    (image_upload / video_upload) is uploaded first and replaced by the name the server gave it.
    A list VALUE such as ["4", 0] is taken as a link (node id, output slot), as in the API format.
    """
    target, sep, raw = spec.partition("=")
    node_key, dot, name = target.rpartition(".")
    if not sep or not dot or not node_key or not name:
        raise ValueError(f"bad --set {spec!r}: expected NODE.INPUT=VALUE, NODE being a node id, title or type")
    node_id = find_node(prompt, node_key)
    node = prompt[node_id]
    info = (object_info or {}).get(node.get("class_type"))
    declared = {n: s for n, s, _ in _ordered_inputs(info)} if info else {}
    known = list(dict.fromkeys([*declared, *node.get("inputs", {})]))
    if name not in known:
        raise ValueError(f"node {node_id} {_node_title(prompt, node_id)!r} ({node.get('class_type')}) has no input "
                         f"{name!r}; its inputs: {', '.join(known) or '(none)'}")
    input_spec = declared.get(name)
    value = parse_value(raw, input_spec)
    if (client is not None and input_spec is not None and _upload_flag(input_spec) and isinstance(value, str)
            and os.path.isfile(value)):
        value = client.upload(value, overwrite=False)  # the server keeps one copy of identical content
    node.setdefault("inputs", {})[name] = value
    return node_id, name, value


# == console progress ==============================================================================================

class ConsoleProgress:
    """A websocket message handler for `ComfyClient.run` that shows progress on a console stream: the running
    node, a one-line bar from `progress` messages (value / max, node id and title) and the step / loss of
    `det.train` messages. On a terminal the bar redraws in place; in a log it prints every 10 %."""

    def __init__(self, prompt: dict, stream=None, width: int = 24):
        self.prompt = prompt
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = width
        self.train: dict[str, dict] = {}
        self._open = 0  # length of the bar line on screen (tty)
        self._last_tenth: tuple | None = None

    def label(self, node_id: Any) -> str:
        return f"node {node_id} {_node_title(self.prompt, str(node_id))!r}"

    def _line(self, text: str) -> None:
        self.close_bar()
        print(text, file=self.stream, flush=True)

    def close_bar(self) -> None:
        if self._open:
            print(file=self.stream, flush=True)
            self._open = 0

    def _bar(self, node_id: str, value: float, total: float) -> None:
        frac = min(1.0, max(0.0, value / total)) if total else 0.0
        filled = int(round(frac * self.width))
        text = (f"[{'#' * filled}{'-' * (self.width - filled)}] {value:g}/{total:g} {100 * frac:3.0f}% "
                f"{self.label(node_id)}")
        train = self.train.get(node_id)
        if train and train.get("step") is not None and train.get("loss") is not None:
            text += f"  step {train['step']} loss {train['loss']:.4g}"
        if self.tty:
            self.stream.write("\r" + text.ljust(self._open))
            self.stream.flush()
            self._open = max(len(text), 1)
        else:
            tenth = (node_id, math.floor(10 * frac))
            if tenth != self._last_tenth or value >= total:
                if tenth != self._last_tenth:
                    print(text, file=self.stream, flush=True)
                self._last_tenth = tenth

    def __call__(self, mtype: str, data: dict) -> None:
        if mtype == "execution_start":
            self._line(f"prompt {data.get('prompt_id')} started")
        elif mtype == "execution_cached" and data.get("nodes"):
            self._line("cached: " + ", ".join(self.label(n) for n in data["nodes"]))
        elif mtype == "executing" and data.get("node") is not None:
            self._line(f"running {self.label(data['node'])}")
        elif mtype == "progress":
            self._bar(str(data.get("node")), float(data.get("value", 0)), float(data.get("max", 0) or 0))
        elif mtype == "det.train":
            node = str(data.get("node"))
            self.train[node] = data
            if data.get("step") is not None and data.get("total"):
                self._bar(node, float(data["step"]), float(data["total"]))
        elif mtype == "execution_success":
            self._line("done")

    def close(self) -> None:
        self.close_bar()


# == the command line ==============================================================================================

EXIT_OK, EXIT_BAD_ARGS, EXIT_VALIDATION, EXIT_EXECUTION, EXIT_INTERRUPTED, EXIT_TIMEOUT, EXIT_UNREACHABLE = \
    0, 2, 3, 4, 5, 6, 7


def save_text_outputs(result: PromptResult, folder: str) -> list[str]:
    """Save the text that output nodes reported (Preview as Text, ...) as `text_<node id>.txt` in `folder`."""
    os.makedirs(folder, exist_ok=True)
    saved = []
    for node_id, node_output in result.outputs.items():
        texts = node_output.get("text") if isinstance(node_output, dict) else None
        if isinstance(texts, list) and texts and all(isinstance(t, str) for t in texts):
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(node_id))
            dest = os.path.join(folder, f"text_{safe}.txt")
            with open(dest, "w", encoding="utf-8") as f:
                f.write("\n".join(texts))
            saved.append(dest)
    return saved


def _one_line(text: Any) -> str:
    return " | ".join(part.strip() for part in str(text).strip().splitlines() if part.strip())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m det_tools.client",
        description="Run a ComfyUI workflow (saved from the front end, or in API format) on a running server, "
                    "show its progress and save its outputs.",
        epilog="exit codes: 0 done, 2 bad arguments / --set / workflow, 3 prompt refused (validation), "
               "4 a node failed, 5 interrupted, 6 timed out, 7 server unreachable")
    p.add_argument("workflow", metavar="WORKFLOW.json", help="the workflow file (UI or API format)")
    p.add_argument("--server", default="http://127.0.0.1:8188", help="the ComfyUI server (default %(default)s)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="NODE.INPUT=VALUE",
                   help="set an input; NODE is a node id, title or type; VALUE is parsed as JSON when it parses; "
                        "a local file given to an upload input (video, image) is uploaded (repeatable)")
    p.add_argument("--out", default="comfy_outputs", help="folder for the outputs (default ./%(default)s)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="give up after S seconds (the prompt keeps running on the server; default: no limit)")
    p.add_argument("--quiet", action="store_true", help="no progress; print only the saved paths and errors")
    p.add_argument("--dry-run", action="store_true",
                   help="print the API prompt (after conversion and --set) instead of queueing it")
    return p


class _Exit(Exception):
    """Ends the command line with an exit code and the lines to print on stderr."""

    def __init__(self, code: int, *lines: str):
        super().__init__(lines[0] if lines else "")
        self.code, self.lines = code, lines


def _read_workflow(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            workflow = json.load(f)
        workflow_format(_unwrap(workflow))
    except OSError as e:
        raise _Exit(EXIT_BAD_ARGS, f"cannot read the workflow {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise _Exit(EXIT_BAD_ARGS, f"{path}: {_one_line(e)}") from None
    return workflow


def _object_info(client: "ComfyClient") -> dict:
    try:
        return client.object_info()
    except ConnectionError as e:
        raise _Exit(EXIT_UNREACHABLE, f"{e} (is the server running? `make serve PORT=...` starts one)") from None
    except (urllib.error.HTTPError, ValueError) as e:
        raise _Exit(EXIT_UNREACHABLE, f"{client.url}/object_info did not answer like a ComfyUI server: "
                                      f"{_one_line(e)}") from None
    except OSError as e:  # a request that timed out
        raise _Exit(EXIT_UNREACHABLE, f"cannot reach ComfyUI at {client.url}: {e}") from None


def _build_prompt(args, workflow: dict, object_info: dict, client: "ComfyClient") -> dict:
    """The API prompt with every --set applied (uploads included)."""
    try:
        prompt = to_api_prompt(workflow, object_info)
    except ValueError as e:
        raise _Exit(EXIT_BAD_ARGS, f"{args.workflow}: {_one_line(e)}") from None
    for spec in args.sets:
        try:
            set_input(prompt, spec, object_info, client)
        except ValueError as e:
            raise _Exit(EXIT_BAD_ARGS, f"--set {spec!r}: {_one_line(e)}") from None
        except ConnectionError as e:
            raise _Exit(EXIT_UNREACHABLE, str(e)) from None
        except urllib.error.HTTPError as e:
            raise _Exit(EXIT_BAD_ARGS, f"--set {spec!r}: the upload was refused by {client.url}: HTTP {e.code} "
                                       f"{e.reason}") from None
        except OSError as e:
            raise _Exit(EXIT_BAD_ARGS, f"--set {spec!r}: cannot read the file to upload: {e}") from None
    return prompt


def _execute(args, client: "ComfyClient", prompt: dict):
    """Queue the prompt and wait for its result, with progress on the console; _Exit for each way it can fail."""
    import websocket  # websocket-client

    progress = None if args.quiet else ConsoleProgress(prompt)
    timeout = args.timeout if args.timeout is not None else math.inf
    try:
        return client.run(prompt, timeout=timeout, on_message=progress)
    except PromptValidationError as e:
        head = e.error.get("message", "prompt rejected") + (f": {e.error['details']}" if e.error.get("details") else "")
        lines = [f"the server refused the prompt: {_one_line(head)}"]
        lines += [f"node {node_id} {_node_title(prompt, node_id)!r} ({info.get('class_type')}): "
                  f"{_one_line(err.get('message'))}: {_one_line(err.get('details'))}"
                  for node_id, info in e.node_errors.items() for err in info.get("errors", [])]
        raise _Exit(EXIT_VALIDATION, *lines) from None
    except PromptExecutionError as e:
        raise _Exit(EXIT_EXECUTION, f"node {e.node_id} {_node_title(prompt, str(e.node_id))!r} ({e.node_type}) "
                                    f"failed: {e.exception_type}: {_one_line(e.exception_message)}") from None
    except PromptInterrupted as e:
        raise _Exit(EXIT_INTERRUPTED, str(e)) from None
    except TimeoutError:
        raise _Exit(EXIT_TIMEOUT, f"timed out after {args.timeout:g} s; prompt {client.last_prompt_id} is still "
                                  f"queued or running on {client.url} (POST {client.url}/interrupt stops it)") from None
    except ComfyError as e:
        raise _Exit(EXIT_VALIDATION, _one_line(e)) from None
    except (ConnectionError, websocket.WebSocketException) as e:
        raise _Exit(EXIT_UNREACHABLE, f"lost the connection to ComfyUI at {client.url}: {_one_line(e)}") from None
    except KeyboardInterrupt:
        if client.last_prompt_id:
            try:
                client.cancel(client.last_prompt_id)
            except OSError:
                pass
        raise _Exit(EXIT_INTERRUPTED, f"stopped by the user; prompt {client.last_prompt_id} was cancelled") from None
    finally:
        if progress is not None:
            progress.close()


def _save_outputs(client: "ComfyClient", result, out: str) -> list[str]:
    try:
        return client.download_outputs(result, out) + save_text_outputs(result, out)
    except ConnectionError as e:
        raise _Exit(EXIT_UNREACHABLE, str(e)) from None
    except OSError as e:
        raise _Exit(EXIT_BAD_ARGS, f"cannot save the outputs into {out}: {e}") from None


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code (see the module docstring)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse printed the usage and the problem
        return e.code if isinstance(e.code, int) else EXIT_BAD_ARGS
    try:
        if args.timeout is not None and not args.timeout > 0:
            raise _Exit(EXIT_BAD_ARGS, f"--timeout must be a positive number of seconds, not {args.timeout:g}")
        workflow = _read_workflow(args.workflow)
        client = ComfyClient(args.server if "://" in args.server else "http://" + args.server)
        prompt = _build_prompt(args, workflow, _object_info(client), client)
        if args.dry_run:
            print(json.dumps(prompt, indent=2))
            return EXIT_OK
        saved = _save_outputs(client, _execute(args, client, prompt), args.out)
    except _Exit as e:
        for line in e.lines:
            print(f"error: {line}", file=sys.stderr, flush=True)
        return e.code
    for path in saved:
        print(path)
    if not saved:
        print("the prompt finished; its output nodes reported no files or text", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
