"""Reading torch files that a user put in a folder: weights only, and an error that names the file, never one that
suggests turning the safety off."""

from __future__ import annotations

import os
from typing import Any

import torch


def load_weights_only(path: str, what: str) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU; a file that holds pickled objects, or is not a torch file
    at all, raises ValueError naming the file and what it should have been."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for pickled objects, RuntimeError / EOFError for other files
        raise ValueError(f"{os.path.basename(path)} is not a valid {what}: it cannot be read as a weights-only torch "
                         f"file ({type(e).__name__}); files holding pickled Python objects are never loaded") from None
