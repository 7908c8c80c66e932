"""Adapter nodes: load, save, and patch a MODEL with a DeT adapter."""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io, ui

from ..det_core.adapter import DeTAdapter
from ..det_core.authors_format import read_authors_file
from .common import (ADAPTER_FOLDER, DetAdapterType, adapter_files, adapter_output_path, applied_blocks, attach,
                     check_finite, not_a_file_name, video_transformer)


def strength_inputs() -> list:
    return [
        io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.05,
                       tooltip="Multiplier of the adapter output (0 = off, 1 = as trained)."),
        io.String.Input("double_blocks", default="trained",
                        tooltip="Blocks to apply: HunyuanVideo's double-stream blocks, Wan's blocks. 'trained' (all "
                                "that have an adapter) or a list like '0-9'."),
        io.String.Input("single_blocks", default="trained",
                        tooltip="HunyuanVideo's single-stream blocks to apply: 'trained' or a list like '0-5', "
                                "'none'. Wan has none."),
        io.Float.Input("keep_fraction", default=1.0, min=0.0, max=1.0, step=0.05,
                       tooltip="Keep only the first fraction of the applied blocks by depth (the DeT code's 'drop "
                               "ratio' is 1 - this; its CogVideoX runs kept about 0.35)."),
    ]


class DeTLoadAdapter(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DeTLoadAdapter",
            display_name="Load DeT Adapter",
            category="DeT",
            description="Loads a trained DeT adapter from models/det_adapters/: the pack's .safetensors, or the DeT "
                        "authors' motion_embedding.pth (converted on load: C, m and k from the shapes, the model "
                        "from the key names and the width).",
            inputs=[io.Combo.Input("adapter_name", options=adapter_files(authors=True),
                                   tooltip="A .safetensors adapter, or an authors' .pth, in models/det_adapters/.")],
            outputs=[DetAdapterType.Output(display_name="adapter"), io.String.Output(display_name="info")],
        )

    @classmethod
    def validate_inputs(cls, adapter_name):
        wrong = not_a_file_name("adapter_name", adapter_name, f"a .safetensors file in models/{ADAPTER_FOLDER}/")
        if wrong:
            return wrong
        if folder_paths.get_full_path(ADAPTER_FOLDER, adapter_name) is None:
            return f"adapter not found: {adapter_name}; put it in models/{ADAPTER_FOLDER}/"
        return True

    @classmethod
    def fingerprint_inputs(cls, adapter_name):
        path = folder_paths.get_full_path(ADAPTER_FOLDER, adapter_name)
        return (path, os.path.getmtime(path)) if path else adapter_name

    @classmethod
    def execute(cls, adapter_name):
        path = folder_paths.get_full_path_or_raise(ADAPTER_FOLDER, adapter_name)
        if path.endswith(".safetensors"):
            adapter = DeTAdapter.load(path)
            return io.NodeOutput(adapter, adapter.describe())
        adapter = read_authors_file(path)
        return io.NodeOutput(adapter, f"{adapter.describe()}; converted from the DeT authors' file {adapter_name} "
                                      f"(save it with Save DeT Adapter to keep the pack's format)")


class DeTSaveAdapter(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DeTSaveAdapter",
            display_name="Save DeT Adapter",
            category="DeT",
            description="Writes a DeT adapter into models/det_adapters/<name>.safetensors.",
            inputs=[
                DetAdapterType.Input("adapter", tooltip="The adapter to save."),
                io.String.Input("name", default="det_motion", tooltip="File name (no folders) in models/det_adapters/."),
                io.Boolean.Input("overwrite", default=False, tooltip="Replace a file of the same name."),
            ],
            outputs=[io.String.Output(display_name="path")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, adapter, name, overwrite):
        path = adapter_output_path(name)
        if os.path.exists(path) and not overwrite:
            raise ValueError(f"{path} exists; turn on overwrite or choose another name")
        adapter.save(path)
        return io.NodeOutput(path, ui=ui.PreviewText(f"saved {path}\n{adapter.describe()}"))


class DeTPatchModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DeTPatchModel",
            display_name="Patch Model with DeT",
            category="DeT",
            description="Returns a copy of the video MODEL with the DeT adapter applied, for any sampler.",
            inputs=[io.Model.Input("model", tooltip="The video model the adapter was trained on (Load Diffusion "
                                                    "Model)."),
                    DetAdapterType.Input("adapter", tooltip="A trained DeT adapter."), *strength_inputs()],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, adapter, strength, double_blocks, single_blocks, keep_fraction):
        check_finite(strength=strength, keep_fraction=keep_fraction)
        arch, _ = video_transformer(model)
        patched, _ = attach(model, adapter, applied_blocks(arch, adapter, double_blocks, single_blocks, keep_fraction),
                            strength)
        return io.NodeOutput(patched)


NODES = [DeTLoadAdapter, DeTSaveAdapter, DeTPatchModel]
