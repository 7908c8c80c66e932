"""DeT (Decouple and Track) motion transfer, the method side of the ComfyUI pack.

Nothing below this package imports ComfyUI: it can be used from plain Python. Importing it has no side
effects (no seeding, no folder registration, no network).
"""

__version__ = "0.1.0"
