"""A small client for ComfyUI's HTTP + websocket API (used by the demo, the tests and headless runs).

    client = ComfyClient("http://127.0.0.1:8188")
    result = client.run(prompt)              # API-format prompt dict; follows progress; raises on errors
    client.download_outputs(result, "out/")  # files the output nodes wrote

Errors are raised as `PromptValidationError` (rejected by `/prompt`), `PromptExecutionError` (a node
raised), `PromptInterrupted`, and `TimeoutError`, each with a readable message.
"""

from __future__ import annotations

import json
import mimetypes
import os
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

    def interrupt(self) -> None:
        self.post_json("/interrupt", {})

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
            return self.post_json("/prompt", body)["prompt_id"]
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

    def download_outputs(self, result: PromptResult, folder: str) -> list[str]:
        """Save every file the prompt's output nodes reported (images, videos, ...) into `folder`."""
        os.makedirs(folder, exist_ok=True)
        saved = []
        for node_output in result.outputs.values():
            for items in node_output.values():
                if not isinstance(items, list):
                    continue
                for item in items:
                    if isinstance(item, dict) and "filename" in item:
                        data = self.view(item["filename"], item.get("subfolder", ""), item.get("type", "output"))
                        dest = os.path.join(folder, item["filename"])
                        with open(dest, "wb") as f:
                            f.write(data)
                        saved.append(dest)
        return saved
