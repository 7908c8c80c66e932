"""Ending a child process group (plain Python, no torch): the ComfyUI server the tools start, the torchrun ranks the
nodes start."""

from __future__ import annotations

import os
import signal
import subprocess


def end_process_group(proc: subprocess.Popen, term_timeout: float, kill_stragglers: bool = False) -> None:
    """End `proc` (started with `start_new_session=True`) by its process group: SIGTERM, then SIGKILL after
    `term_timeout` seconds. `kill_stragglers`: SIGKILL the group once more afterwards, for children that outlived
    their parent (torchrun's ranks)."""
    if proc.poll() is None:
        for sig, wait in ((signal.SIGTERM, term_timeout), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
    if kill_stragglers:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
