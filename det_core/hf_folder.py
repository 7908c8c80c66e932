"""Checking a local Hugging Face model folder before loading it: what it must hold, and a message that names what
is missing and where to get it. Weights are read from safetensors only; pickled `pytorch_model.bin` is never
loaded."""

from __future__ import annotations

import os
from dataclasses import dataclass

WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PREPROCESSOR = ("preprocessor_config.json", "processor_config.json")


@dataclass(frozen=True)
class FolderSpec:
    """What a model folder must hold, and where the user gets it."""

    what: str
    """Model name in messages."""
    files: tuple[tuple[str, ...], ...]
    """Required files; each entry lists names of which any one will do."""
    repos: tuple[str, ...]
    """Hugging Face repos that hold such a folder."""
    models_dir: str
    """ComfyUI models sub-folder the folder goes into."""

    def hint(self) -> str:
        files = ", ".join(" or ".join(alts) for alts in self.files)
        return (f"a {self.what} folder in Hugging Face format holds {files}; download one of "
                f"{', '.join(self.repos)} from Hugging Face yourself and put its folder under "
                f"ComfyUI/models/{self.models_dir}/")


def check_folder(folder: str, spec: FolderSpec) -> None:
    """FileNotFoundError naming the folder, what it lacks and where to get it."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{spec.what} folder not found: {folder}; {spec.hint()}")
    missing = []
    for alts in spec.files:
        if not any(os.path.isfile(os.path.join(folder, name)) for name in alts):
            note = ""
            if alts == WEIGHTS and os.path.isfile(os.path.join(folder, "pytorch_model.bin")):
                note = " (pytorch_model.bin is there, but pickled weights are never loaded: get model.safetensors)"
            missing.append(" or ".join(alts) + note)
    if missing:
        raise FileNotFoundError(f"{spec.what} folder {folder} lacks {', '.join(missing)}; {spec.hint()}")
