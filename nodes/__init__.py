"""ComfyUI nodes of the DeT pack: thin wrappers that check inputs, call det_core and wrap the result."""
