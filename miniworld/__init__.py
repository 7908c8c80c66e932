"""A small synthetic world in which the whole DeT method can run and be measured on a CPU.

Used by the tests, `make demo` and `benchmarks/motion_transfer_mini.py`; never loaded by the shipped pack.
- `world`: the renderer (one object, five colours, three shapes, random and named motions, exact tracks);
- `codec`: the stand-in VAE (16 channels, 4x temporal, 8x spatial, as HunyuanVideo's) and caption encoder;
- `model`: the base model, ComfyUI's own HunyuanVideo class at a small size (2 heads);
- `train`: `python -m miniworld.train` reproduces the committed weights in `miniworld/weights/`;
- `measure`: colour segmentation of generated frames into object tracks, colour and shape.

Loaded into a ComfyUI server as a custom node folder, `comfy_entrypoint` adds the world's nodes (encode, decode,
caption, clip drawing, a fine-tune baseline). Plain `import miniworld` imports nothing of ComfyUI.
"""


async def comfy_entrypoint():
    from .comfy_nodes import MiniWorldExtension

    return MiniWorldExtension()
