"""Drive the real ComfyUI front end in headless Debian Chromium (Playwright for Python, no browser download).

Used by the workflow builder (`python -m devtools.build_workflows`) and the browser tests.
"""

from __future__ import annotations

import json
import os
import urllib.request
from contextlib import contextmanager

CHROMIUM = os.environ.get("DET_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

# Console noise of the host itself when offline, each with the reason it is harmless.
HOST_NOISE = {
    "Failed to load resource: the server responded with a status of 404": "user.css and other optional user files",
    "net::ERR_NAME_NOT_RESOLVED": "the front end looks up api.comfy.org; this machine has no network",
    "net::ERR_INTERNET_DISCONNECTED": "same, reported differently",
    "Cannot read properties of undefined (reading 'id')": "front end 1.32.9 GraphView start-up with a fresh user",
    "api.comfy.org": "registry / release lookups of the front end",
    "Failed to fetch": "the same lookups through fetch()",
}


def is_host_noise(text: str) -> bool:
    return any(k in text for k in HOST_NOISE)


def skip_tutorial(url: str) -> None:
    req = urllib.request.Request(url + "/api/settings/Comfy.TutorialCompleted", data=b"true", method="POST",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()


@contextmanager
def comfy_page(url: str, width: int = 1600, height: int = 1000):
    """A page of the front end, ready (`window.app.graph` exists); yields (page, messages) where messages collects
    console messages and page errors as (kind, text)."""
    from playwright.sync_api import sync_playwright

    skip_tutorial(url)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            messages: list[tuple[str, str]] = []
            page.on("console", lambda m: messages.append((m.type, m.text)))
            page.on("pageerror", lambda e: messages.append(("pageerror", str(e))))
            page.goto(url)
            page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=90000)
            page.wait_for_timeout(1500)
            yield page, messages
        finally:
            browser.close()


def load_workflow(page, workflow: dict) -> dict:
    """Load a UI-format workflow; returns {missing: [types], prompt: API output of graphToPrompt}."""
    return page.evaluate(
        """async (wf) => {
            await window.app.loadGraphData(wf);
            const missing = [...new Set(window.app.graph._nodes
                .filter(n => !LiteGraph.registered_node_types[n.type]).map(n => n.type))];
            const p = await window.app.graphToPrompt();
            return {missing, prompt: p.output};
        }""", workflow)


def pack_json(obj) -> str:
    return json.dumps(obj, indent=1)
