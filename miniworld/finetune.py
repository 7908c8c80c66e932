"""The fine-tune baseline: train the base model's own block weights on the reference (what DeT avoids).

It runs the pack's own training loop (`det_core.train.train_adapter`, flow matching, the same sigma sampling,
optimizer, clipping and per-step seeding as DeT) on a copy of the model, with every double- and single-stream
block's weights trainable instead of an adapter, and no tracking loss. The copy goes back as a new MODEL (a
ModelPatcher around the fine-tuned copy, with the input's object patches such as the flow shift); the input MODEL
is unchanged.
"""

from __future__ import annotations

import copy
import os
import sys

import torch

_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
if _ROOT not in sys.path:  # inside a ComfyUI server this folder is a custom node; det_core sits beside it
    sys.path.insert(0, _ROOT)

from det_core.adapter import AdapterMeta, DeTAdapter  # noqa: E402
from det_core.patch import DeTRuntime, forward_patches, install, make_ordinary  # noqa: E402
from det_core.train import TrainConfig, train_adapter  # noqa: E402


def finetune_blocks(model, samples: torch.Tensor, conditioning, steps: int, learning_rate: float, seed: int,
                    guidance: float = 6.0, on_step=None, should_stop=None):
    """(fine-tuned MODEL, per-step losses)."""
    import comfy.model_management as mm
    import comfy.model_patcher

    mm.load_models_gpu([model])
    cross_attn, extras = conditioning[0]
    with torch.inference_mode(False), torch.enable_grad():
        base = copy.deepcopy(model.model)
        make_ordinary(base)
        dm = base.diffusion_model
        # every block checkpointed on copies of its inputs (the pack's training path), no adapter applied
        empty = DeTAdapter(AdapterMeta(channels=dm.hidden_size, blocks={"double": [], "single": []}))
        remove = install(dm, forward_patches(dm, DeTRuntime(empty, {}), mode="train"))
        trainable = torch.nn.ModuleList([dm.double_blocks, dm.single_blocks])
        kwargs = {"c_crossattn": cross_attn.clone(), "y": extras["pooled_output"].clone(),
                  "guidance": torch.tensor([guidance])}
        x0 = base.process_latent_in(samples.clone().float())
        losses: list[float] = []

        def step_done(entry):
            losses.append(entry.loss)
            if on_step is not None:
                on_step(entry.step)

        config = TrainConfig(steps=steps, learning_rate=learning_rate, tracking_weight=0.0, seed=seed,
                             checkpoint_every=0, optimizer="adamw")
        try:
            train_adapter(trainable, lambda x_t, sigma: base.apply_model(x_t, sigma, **kwargs), base.model_sampling,
                          x0, config, on_step=step_done, should_stop=should_stop)
        finally:
            remove()
    out = comfy.model_patcher.ModelPatcher(base, load_device=model.load_device, offload_device=model.offload_device)
    for name, obj in model.object_patches.items():
        out.add_object_patch(name, obj)
    return out, losses
