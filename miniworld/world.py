"""The small world: one object (disc, square or triangle; five colours) moving over a still background.

Everything is drawn here, seeded, with exact ground truth:
- `random_path` draws the pretraining motions: smooth paths with turns, bounces off the borders and speed changes;
- `reference_path` draws the five named test motions (figure-eight, spiral, zig-zag, stop-and-go, loop), which
  the pretraining paths do not contain as such;
- `render` draws a clip `[F, H, W, 3]` float in [0, 1] (anti-aliased shapes, plain or softly textured background);
- `object_tracks` gives MTBench tracks `[F, N, 3]` (x/W, y/H, visibility) of points spread over the object: the
  objects only translate, so every point moves with the centre.

Coordinates are pixels with pixel centres at integers (x right, y down); MTBench's normalised x/W is x_px / W.
Clip size: 33 frames (4k+1, 9 latent frames) at 96 x 96, chosen so the base model trains in the 45-minute CPU
budget (see `miniworld.train`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

FRAMES = 33
SIZE = 96
FPS = 8.0

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.15, 0.15),
    "green": (0.15, 0.80, 0.20),
    "blue": (0.20, 0.30, 0.95),
    "yellow": (0.95, 0.85, 0.15),
    "white": (0.95, 0.95, 0.95),
}
SHAPES = ("disc", "square", "triangle")
MOTIONS = ("figure_eight", "spiral", "zig_zag", "stop_and_go", "loop")
BACKGROUND_LEVELS = (0.12, 0.32)
"""Grey level range of the background (darker than every object colour, so objects stand out)."""
SIZE_RANGE = (0.10, 0.15)
"""Object half-size as a fraction of the frame side (a 96 px frame: 10-14 px, objects 20-29 px across)."""


@dataclass
class Scene:
    """What one clip shows; `caption` is what the text encoder reads."""

    shape: str
    colour: str
    half_size: float
    """Half the object's width in pixels (disc radius, square half-side, triangle half-base)."""
    path: np.ndarray
    """[F, 2] centre positions in pixels."""
    background: float = 0.2
    texture_seed: int | None = None
    """None: plain background; else the seed of a soft low-frequency texture."""

    @property
    def caption(self) -> str:
        return caption(self.colour, self.shape)


def caption(colour: str, shape: str) -> str:
    check_object(colour, shape)
    return f"a {colour} {shape}"


def check_object(colour: str, shape: str) -> None:
    if colour not in COLOURS:
        raise ValueError(f"colour {colour!r} is not one of {', '.join(COLOURS)}")
    if shape not in SHAPES:
        raise ValueError(f"shape {shape!r} is not one of {', '.join(SHAPES)}")


def parse_caption(text: str) -> tuple[str, str]:
    """'a red disc' -> ('red', 'disc'); a clear error for anything outside the world's vocabulary."""
    words = text.strip().lower().split()
    if words and words[0] in ("a", "an"):
        words = words[1:]
    if len(words) != 2:
        raise ValueError(f"caption {text!r}: write 'a <colour> <shape>', colours {', '.join(COLOURS)}, "
                         f"shapes {', '.join(SHAPES)}")
    check_object(words[0], words[1])
    return words[0], words[1]


# ----------------------------------------------------------------------------------------------------------------
# paths
# ----------------------------------------------------------------------------------------------------------------
def random_path(rng: np.random.Generator, frames: int = FRAMES, size: int = SIZE, half_size: float = 12.0
                ) -> np.ndarray:
    """A smooth random path [F, 2]: heading turns at a rate that changes at random moments, the speed changes
    smoothly, and the object bounces off the borders (reflection keeps it inside)."""
    lo, hi = half_size + 1.0, size - 1.0 - half_size - 1.0
    pos = rng.uniform(lo, hi, size=2)
    heading = rng.uniform(0, 2 * math.pi)
    speed = rng.uniform(0.8, 3.5)
    turn = rng.normal(0, 0.15)
    out = np.empty((frames, 2))
    for f in range(frames):
        out[f] = pos
        if rng.random() < 0.12:  # a new turn rate now and then: straight runs, arcs and sharp turns
            turn = rng.normal(0, 0.25)
        heading += turn
        speed = float(np.clip(speed + rng.normal(0, 0.35), 0.0, 4.5))
        pos = pos + speed * np.array([math.cos(heading), math.sin(heading)])
        for axis in range(2):  # bounce
            if pos[axis] < lo or pos[axis] > hi:
                pos[axis] = 2 * lo - pos[axis] if pos[axis] < lo else 2 * hi - pos[axis]
                heading = math.pi - heading if axis == 0 else -heading
    return out


def reference_path(motion: str, frames: int = FRAMES, size: int = SIZE) -> np.ndarray:
    """One of the named test motions, centred in the frame, [F, 2] pixels."""
    s = np.linspace(0.0, 1.0, frames)
    c, a = (size - 1) / 2.0, size * 0.28  # centre and amplitude
    if motion == "figure_eight":  # a lemniscate: two lobes side by side, once round
        x, y = c + a * np.sin(2 * math.pi * s), c + 0.6 * a * np.sin(4 * math.pi * s)
    elif motion == "spiral":  # 1.5 turns, radius growing from near the centre outwards
        r, th = a * (0.15 + 0.85 * s), 3 * math.pi * s
        x, y = c + r * np.cos(th), c + r * np.sin(th)
    elif motion == "zig_zag":  # left to right, up and down three times
        x = c + a * (2 * s - 1)
        y = c + 0.8 * a * (2 * np.abs(((3 * s) % 1.0) * 2 - 1) - 1)
    elif motion == "stop_and_go":  # along a diagonal, moving and halting in turns
        g = np.clip(np.sin(3 * math.pi * s) * 3, -1, 1)  # gate of the speed
        speed = np.maximum(g, 0.0)
        prog = np.cumsum(speed)
        prog = prog / prog[-1]
        x, y = c + a * (2 * prog - 1), c + 0.6 * a * (2 * prog - 1)
    elif motion == "loop":  # moving right, one loop-the-loop in the middle
        th = 2 * math.pi * np.clip((s - 0.25) / 0.5, 0, 1)
        x = c + a * (2 * s - 1) - 0.45 * a * np.sin(th)
        y = c + 0.1 * a - 0.45 * a * (1 - np.cos(th))
    else:
        raise ValueError(f"motion {motion!r} is not one of {', '.join(MOTIONS)}")
    return np.stack([x, y], axis=-1)


def random_scene(rng: np.random.Generator, frames: int = FRAMES, size: int = SIZE) -> Scene:
    """A pretraining clip: random object, size, background and path."""
    half = rng.uniform(*SIZE_RANGE) * size
    return Scene(shape=SHAPES[rng.integers(len(SHAPES))], colour=list(COLOURS)[rng.integers(len(COLOURS))],
                 half_size=half, path=random_path(rng, frames, size, half),
                 background=rng.uniform(*BACKGROUND_LEVELS),
                 texture_seed=int(rng.integers(1 << 30)) if rng.random() < 0.5 else None)


def reference_scene(motion: str, colour: str = "blue", shape: str = "square", frames: int = FRAMES,
                    size: int = SIZE, background: float = 0.2) -> Scene:
    check_object(colour, shape)
    return Scene(shape=shape, colour=colour, half_size=0.125 * size, path=reference_path(motion, frames, size),
                 background=background)


# ----------------------------------------------------------------------------------------------------------------
# drawing
# ----------------------------------------------------------------------------------------------------------------
def shape_distance(shape: str, dx: torch.Tensor, dy: torch.Tensor, half) -> torch.Tensor:
    """Signed distance (pixels, negative inside) to the shape centred at 0 with half-size `half`."""
    if shape == "disc":
        return torch.hypot(dx, dy) - half
    if shape == "square":
        return torch.maximum(dx.abs(), dy.abs()) - half
    if shape == "triangle":  # upright isosceles: apex at dy = -half, base 2*half wide at dy = +half
        side = (2 * dx.abs() - dy - half) / math.sqrt(5.0)  # inside when |dx| <= (dy + half) / 2
        return torch.maximum(side, dy - half)
    raise ValueError(f"shape {shape!r} is not one of {', '.join(SHAPES)}")


def background_image(scene: Scene, size: int) -> torch.Tensor:
    """[H, W] grey level: plain, or a soft texture (a smooth random field of amplitude 0.05)."""
    base = torch.full((size, size), float(scene.background), dtype=torch.float64)
    if scene.texture_seed is None:
        return base
    g = torch.from_numpy(np.random.default_rng(scene.texture_seed).normal(0, 1, (1, 1, 5, 5)))
    field = torch.nn.functional.interpolate(g, size=(size, size), mode="bilinear", align_corners=True)[0, 0]
    return base + 0.05 * field / field.abs().max().clamp_min(1e-6)


def render_with_alpha(scene: Scene, size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """The clip [F, H, W, 3] float32 in [0, 1] and the object's coverage [F, H, W] (anti-aliased, 0..1)."""
    path = torch.as_tensor(np.asarray(scene.path), dtype=torch.float64)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    dx = xx[None] - path[:, 0, None, None]  # F H W
    dy = yy[None] - path[:, 1, None, None]  # F H W
    alpha = (0.5 - shape_distance(scene.shape, dx, dy, scene.half_size)).clamp(0.0, 1.0)  # F H W
    bg = background_image(scene, size)[None, ..., None]  # 1 H W 1
    colour = torch.tensor(COLOURS[scene.colour], dtype=torch.float64)
    clip = bg * (1 - alpha[..., None]) + colour * alpha[..., None]  # F H W 3
    return clip.clamp(0.0, 1.0).to(torch.float32), alpha.to(torch.float32)


def render(scene: Scene, size: int = SIZE) -> np.ndarray:
    """The clip [F, H, W, 3] float32 in [0, 1]."""
    return render_with_alpha(scene, size)[0].numpy()


def object_points(shape: str, half: float, count: int = 16) -> np.ndarray:
    """Offsets [N, 2] of `count` points spread over the inside of the shape (a fine grid, evenly thinned)."""
    u = np.linspace(-half, half, 15)
    dx, dy = np.meshgrid(u, u)
    inside = (shape_distance(shape, torch.from_numpy(dx), torch.from_numpy(dy), half) < -1.0).numpy()
    pts = np.stack([dx[inside], dy[inside]], axis=-1)
    idx = np.linspace(0, len(pts) - 1, min(count, len(pts))).round().astype(int)
    return pts[idx]


def object_tracks(scene: Scene, size: int = SIZE, count: int = 16) -> np.ndarray:
    """MTBench tracks [F, N, 3] float32: (x/W, y/H, visibility) of points on the object (always visible)."""
    pts = scene.path[:, None, :] + object_points(scene.shape, scene.half_size, count)[None]  # F N 2
    vis = np.ones(pts.shape[:2] + (1,))
    return np.concatenate([pts / size, vis], axis=-1).astype(np.float32)
