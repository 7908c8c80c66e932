"""Which ComfyUI folder the tools run (`det_tools.host.find_host_dir`): one rule for the tests, the benchmarks and
the small world's training script."""

import os

import pytest

from det_tools import host


def comfy_folder(path) -> str:
    os.makedirs(path)
    for name in ("main.py", "folder_paths.py"):
        open(os.path.join(path, name), "w").close()
    return str(path)


def test_explicit_then_environment_then_marker(tmp_path, monkeypatch):
    a, b, c = (comfy_folder(tmp_path / n) for n in ("a", "b", "c"))
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / ".comfyui-path").write_text(c + "\n")
    monkeypatch.setattr(host, "PACK_ROOT", str(pack))
    monkeypatch.setenv("COMFYUI_DIR", b)
    assert host.find_host_dir(a) == a
    assert host.find_host_dir() == b
    monkeypatch.delenv("COMFYUI_DIR")
    assert host.find_host_dir() == c
    (pack / ".comfyui-path").unlink()
    with pytest.raises(FileNotFoundError, match=r"\.comfyui is not a ComfyUI folder.*make setup"):
        host.find_host_dir()


def test_a_wrong_folder_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("COMFYUI_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} is not a ComfyUI folder.*COMFYUI_DIR"):
        host.find_host_dir()
