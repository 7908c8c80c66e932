"""Start and stop a ComfyUI server process (for `make serve`, the demo and the tests).

Nothing here imports ComfyUI: the host runs in its own process, started from its folder with this Python.
The server listens on 127.0.0.1 only; start-up waits for `/system_stats` with a bounded timeout and stop
ends the process by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from det_core.processes import end_process_group

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK_LINK_NAME = "det-comfyui"
BASE_SUBDIRS = ("custom_nodes", "models", "input", "output", "temp", "user")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cuda_available() -> bool:
    try:
        import torch
        return bool(torch.cuda.is_available())
    except Exception:  # no torch, or a broken CUDA install: run the host on the CPU
        return False


def check_host_dir(host_dir: str) -> str:
    host_dir = os.path.abspath(host_dir)
    if not (os.path.isfile(os.path.join(host_dir, "main.py")) and os.path.isfile(os.path.join(host_dir, "folder_paths.py"))):
        raise FileNotFoundError(f"{host_dir} is not a ComfyUI folder (no main.py / folder_paths.py); run `make setup` "
                                f"or set COMFYUI_DIR to your ComfyUI")
    return host_dir


def find_host_dir(explicit: str | None = None) -> str:
    """The ComfyUI folder the tools run: `explicit`, else $COMFYUI_DIR, else the one `make setup` named in
    `.comfyui-path`, else the pack's `.comfyui/`."""
    if explicit:
        return check_host_dir(explicit)
    if os.environ.get("COMFYUI_DIR"):
        return check_host_dir(os.environ["COMFYUI_DIR"])
    marker = os.path.join(PACK_ROOT, ".comfyui-path")
    if os.path.isfile(marker):
        return check_host_dir(open(marker).read().strip())
    return check_host_dir(os.path.join(PACK_ROOT, ".comfyui"))


def prepare_base_dir(base_dir: str, extra_custom_nodes: dict[str, str] | None = None) -> str:
    """Lay out a ComfyUI base directory (models, input, output, user, custom_nodes) that loads this pack.

    `extra_custom_nodes` maps link names to folders of further node packs (the tests' helper nodes).
    """
    base_dir = os.path.abspath(base_dir)
    for sub in BASE_SUBDIRS:
        os.makedirs(os.path.join(base_dir, sub), exist_ok=True)
    links = {PACK_LINK_NAME: PACK_ROOT, **(extra_custom_nodes or {})}
    for name, target in links.items():
        link = os.path.join(base_dir, "custom_nodes", name)
        if os.path.islink(link) and os.readlink(link) == target:
            continue
        if os.path.lexists(link):
            os.remove(link) if os.path.islink(link) else shutil.rmtree(link)
        os.symlink(target, link)
    return base_dir


def server_command(host_dir: str, port: int, base_dir: str | None = None, extra_args: list[str] | None = None,
                   python: str | None = None) -> list[str]:
    cmd = [python or sys.executable, os.path.join(host_dir, "main.py"), "--listen", "127.0.0.1", "--port", str(port),
           "--disable-auto-launch"]
    if base_dir:
        cmd += ["--base-directory", base_dir]
    extra = list(extra_args or [])
    if not cuda_available() and "--cpu" not in extra:
        cmd.append("--cpu")
    return cmd + extra


class ComfyServer:
    """A ComfyUI server process on 127.0.0.1; use as a context manager or call start() / stop()."""

    def __init__(self, host_dir: str, base_dir: str | None = None, port: int | None = None,
                 extra_args: list[str] | None = None, log_path: str | None = None,
                 env: dict[str, str | None] | None = None):
        self.host_dir = check_host_dir(host_dir)
        self.env = dict(env or {})
        """Environment changes for the server process (a None value removes the variable)."""
        self.base_dir = base_dir
        self.port = port or free_port()
        self.extra_args = list(extra_args or [])
        self.log_path = log_path or os.path.join(base_dir or self.host_dir, f"comfyui-{self.port}.log")
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> "ComfyServer":
        cmd = server_command(self.host_dir, self.port, self.base_dir, self.extra_args)
        self._log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for key, value in self.env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        self.proc = subprocess.Popen(cmd, cwd=self.host_dir, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with code {self.proc.returncode} during start-up; "
                                   f"log {self.log_path}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/system_stats", timeout=2) as r:
                    if r.status == 200:
                        json.load(r)
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer /system_stats within {timeout:.0f} s; log {self.log_path}:\n"
                           f"{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        """End the server by its PID (its process group): SIGTERM, then SIGKILL after `timeout`."""
        proc, self.proc = self.proc, None
        if proc is not None:
            end_process_group(proc, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_text()[-chars:]

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m det_tools.host", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="run ComfyUI with this pack in the foreground on 127.0.0.1")
    serve.add_argument("--host-dir", required=True, help="the ComfyUI folder")
    serve.add_argument("--port", type=int, default=8188)
    serve.add_argument("args", nargs=argparse.REMAINDER, help="passed on to ComfyUI's main.py (after --)")
    ns = parser.parse_args(argv)
    host_dir = check_host_dir(ns.host_dir)
    extra = [a for a in ns.args if a != "--"]
    extra = [tok for a in extra for tok in a.split()]
    cmd = server_command(host_dir, ns.port, None, extra)
    print("[DeT] " + " ".join(cmd), flush=True)
    os.chdir(host_dir)
    os.execv(cmd[0], cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
