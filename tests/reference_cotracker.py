"""The reference CoTracker3 code, for parity tests only: fetched by `make setup` from PyPI (the wheel
napari-cotrack==0.1.7 carries Meta's `cotracker/` package) into the git-ignored .cache/ (a test fetches it only
when set-up did not). It is CC-BY-NC: never committed, never imported by the pack."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, ".cache", "napari-cotrack")
WHEEL = "napari-cotrack==0.1.7"


def reference_dir() -> str:
    """Folder holding the reference `cotracker/` package (downloaded and unpacked once)."""
    target = os.path.join(CACHE, "unpacked")
    if os.path.isfile(os.path.join(target, "cotracker", "models", "core", "cotracker", "cotracker3_offline.py")):
        return target
    os.makedirs(CACHE, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q", "--no-deps",
                    "--python-version", "3.12", "--only-binary=:all:", WHEEL, "-d", CACHE], check=True, timeout=300)
    (wheel,) = glob.glob(os.path.join(CACHE, "napari_cotrack-0.1.7-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        z.extractall(target, [n for n in z.namelist() if n.startswith("cotracker/")])
    return target
