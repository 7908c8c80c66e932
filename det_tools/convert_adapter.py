"""Convert DeT adapters between the authors' files and this pack's.

    python -m det_tools.convert_adapter motion_embedding.pth my_motion.safetensors [--base-model wan21]
    python -m det_tools.convert_adapter my_motion.safetensors motion_embedding.pth      # back, for their scripts

The direction follows the input: the authors' `.pth` (or a `.safetensors` in their key layout, without the pack's
`det.*` metadata) becomes a pack adapter (`.safetensors`, `det.*` metadata, `det.source` naming the file); a pack
adapter becomes the authors' layout (`.pth` as their scripts save it, or `.safetensors`), in bf16. C, m and k come
from the tensor shapes, the architecture from the key prefix and the width (det_core.authors_format). Nothing is
written when the input is refused, and an existing output is kept unless --overwrite.

Exit codes: 0 done, 2 bad arguments or a refused file.
"""

from __future__ import annotations

import argparse
import os
import sys


def _is_pack_adapter(path: str) -> bool:
    if not path.endswith(".safetensors"):
        return False
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            return "det.format_version" in (f.metadata() or {})
    except Exception:
        return False


def convert(src: str, dst: str, base_model: str | None = None, overwrite: bool = False) -> str:
    """Convert `src` to `dst` (see the module doc); returns a one-line description. ValueError on refusal."""
    from det_core.adapter import DeTAdapter
    from det_core.authors_format import read_authors_file, write_authors_file

    if not os.path.isfile(src):
        raise ValueError(f"{src}: no such file")
    if os.path.exists(dst) and not overwrite:
        raise ValueError(f"{dst} exists; pass --overwrite to replace it")
    if _is_pack_adapter(src):
        if base_model:
            raise ValueError("--base-model is for reading the authors' files; a pack adapter names its own")
        adapter = DeTAdapter.load(src)
        write_authors_file(adapter, dst)
        return f"{src} -> {dst} (the authors' layout, bf16): {adapter.describe()}"
    if not dst.endswith(".safetensors"):
        raise ValueError(f"{dst}: a pack adapter is a .safetensors file")
    adapter = read_authors_file(src, base_model)
    adapter.save(dst)
    return f"{src} -> {dst}: {adapter.describe()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m det_tools.convert_adapter", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="the authors' motion_embedding.pth, or a pack adapter (.safetensors)")
    parser.add_argument("dst", help="where the converted adapter goes")
    parser.add_argument("--base-model", help="the pack architecture of an authors' file when its width does not "
                                             "say it (hunyuan_video, hunyuan_video_15, wan21, wan22_ti2v)")
    parser.add_argument("--overwrite", action="store_true")
    ns = parser.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        print(convert(ns.src, ns.dst, ns.base_model, ns.overwrite))
    except ValueError as e:  # AdapterMismatch too
        print(f"convert_adapter: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
