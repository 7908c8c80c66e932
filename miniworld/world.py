"""The small world: one object (disc, square or triangle; five colours) moving over a still background.

Everything is drawn here, seeded, with exact ground truth:
- `random_path` draws the pretraining motions: smooth paths with turns, bounces off the borders and speed changes;
- `reference_path` draws the five named test motions (figure-eight, spiral, zig-zag, stop-and-go, loop), which
  the pretraining paths do not contain as such: global paths of a rigid object;
- `reference_scene` also draws four object-relative test motions (`OBJECT_MOTIONS`), where the object's own motion
  does not depend on where it is: a triangle spinning at a varying speed, a square pulsing in size, a pendulum (a
  disc with a bob on a rod: a two-part object) whose bob swings, and the loop path with the triangle spinning (a
  global path combined with object motion). `random_scene(..., object_motion=True)` adds spin, pulse and swing at
  random to the pretraining clips (the committed base model was trained without them);
- three steady test motions need no clock, the same step on every frame: `drift` (a straight path at constant
  speed, `STEADY_MOTIONS`), `grow` (a square growing by the same factor on every frame) and `turn` (the spin's
  triangle turning at a constant speed) (`STEADY_OBJECT_MOTIONS`);
- `render` draws a clip `[F, H, W, 3]` float in [0, 1] (anti-aliased shapes, plain or softly textured background);
- `object_tracks` gives MTBench tracks `[F, N, 3]` (x/W, y/H, visibility) of points spread over the object, each
  moved by the object's translation, rotation and scale (and, on a pendulum's bob, by the swing).

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
EXTRA_SHAPES = ("pendulum",)
"""Shapes added for the object-relative motions (a disc body with a bob on a rod below it); kept apart from SHAPES
so that the committed base model's random clips and caption vectors stay what they were."""
ALL_SHAPES = SHAPES + EXTRA_SHAPES
MOTIONS = ("figure_eight", "spiral", "zig_zag", "stop_and_go", "loop")
"""The global-path test motions (a rigid object moving along a named path)."""
STEADY_MOTIONS = ("drift",)
"""A global path that needs no clock: the same step on every frame (the five `MOTIONS` turn or halt at fixed
times, which an adapter fed features that do not know the frame cannot place). Not drawn in pretraining."""
OBJECT_MOTIONS = ("spin", "pulse", "swing", "loop_spin")
"""The object-relative test motions; `loop_spin` combines the loop path with spinning."""
STEADY_OBJECT_MOTIONS = ("grow", "turn")
"""Object-relative motions that need no clock: the size grows by the same factor on every frame (the pulse turns
from growing to shrinking at fixed times; pretraining's pulses grow for at most 15 frames), and the triangle turns by
the same angle on every frame, one turn in the clip (the spin speeds up and slows down at fixed times; pretraining's
spins keep a rate for 8 frames on average, so a whole clip at one rate is rare there)."""
POSE_MOTIONS = OBJECT_MOTIONS + STEADY_OBJECT_MOTIONS
"""The motions read by the object's pose (rotation, scale) as well as by its tracks."""
TEST_MOTIONS = MOTIONS + STEADY_MOTIONS + POSE_MOTIONS
MOTION_SHAPE = {"spin": "triangle", "pulse": "square", "swing": "pendulum", "loop_spin": "triangle", "grow": "square",
                "turn": "triangle"}
"""The reference object's shape for each object-relative motion (one whose motion can be seen: a disc's spin
cannot)."""
BACKGROUND_LEVELS = (0.12, 0.32)
"""Grey level range of the background (darker than every object colour, so objects stand out)."""
SIZE_RANGE = (0.10, 0.15)
"""Object half-size as a fraction of the frame side (a 96 px frame: 10-14 px, objects 20-29 px across)."""
OBJECT_HALF_FRACTION = 3 / 16
"""The object-relative test motions' half-size (18 px): at the global paths' 1/8 the committed VAE loses a
triangle's turn (`benchmarks/object_codec_sizes.py`: spin pose fidelity 0.65 at 1/8, 0.98 at 3/16)."""
OBJECT_SIZE_RANGE = (0.12, 0.21)
"""Half-size range of the pretraining clips drawn with `object_motion` (around `OBJECT_HALF_FRACTION`)."""


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
    angle: np.ndarray | None = None
    """[F] rotation in radians (clockwise on screen), None = 0."""
    scale: np.ndarray | None = None
    """[F] size factor, None = 1."""
    swing: np.ndarray | None = None
    """[F] a pendulum's rod angle in radians (0 = hanging straight down, positive = bob to the right), None = 0."""

    def per_frame(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(angle, scale, swing), each [F]."""
        f = len(self.path)
        return tuple(np.zeros(f) + (d if v is None else np.asarray(v, dtype=np.float64))
                     for v, d in ((self.angle, 0.0), (self.scale, 1.0), (self.swing, 0.0)))

    @property
    def caption(self) -> str:
        return caption(self.colour, self.shape)


def caption(colour: str, shape: str) -> str:
    check_object(colour, shape)
    return f"a {colour} {shape}"


def check_object(colour: str, shape: str) -> None:
    if colour not in COLOURS:
        raise ValueError(f"colour {colour!r} is not one of {', '.join(COLOURS)}")
    if shape not in ALL_SHAPES:
        raise ValueError(f"shape {shape!r} is not one of {', '.join(ALL_SHAPES)}")


def parse_caption(text: str) -> tuple[str, str]:
    """'a red disc' -> ('red', 'disc'); a clear error for anything outside the world's vocabulary."""
    words = text.strip().lower().split()
    if words and words[0] in ("a", "an"):
        words = words[1:]
    if len(words) != 2:
        raise ValueError(f"caption {text!r}: write 'a <colour> <shape>', colours {', '.join(COLOURS)}, "
                         f"shapes {', '.join(ALL_SHAPES)}")
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
                pos[axis] = min(max(pos[axis], lo), hi)  # a step longer than the room left (large objects)
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
    elif motion == "drift":  # stop-and-go's diagonal without the halts: the same step on every frame
        x, y = c + a * (2 * s - 1), c + 0.6 * a * (2 * s - 1)
    elif motion == "loop":  # moving right, one loop-the-loop in the middle
        th = 2 * math.pi * np.clip((s - 0.25) / 0.5, 0, 1)
        x = c + a * (2 * s - 1) - 0.45 * a * np.sin(th)
        y = c + 0.1 * a - 0.45 * a * (1 - np.cos(th))
    else:
        raise ValueError(f"motion {motion!r} is not one of {', '.join(MOTIONS + STEADY_MOTIONS)}")
    return np.stack([x, y], axis=-1)


def spin_angle(frames: int = FRAMES) -> np.ndarray:
    """One turn in the clip at a varying speed (from a quarter to 1.75 times the mean): [F] radians."""
    s = np.linspace(0.0, 1.0, frames)
    return 2 * math.pi * (s - 0.12 * np.sin(2 * math.pi * s))


def extent(shape: str, scale: float = 1.0, spins: bool = False) -> float:
    """How far the object reaches from its centre, in half-sizes (for keeping it inside the frame)."""
    reach = {"disc": 1.0, "square": math.sqrt(2.0), "triangle": math.sqrt(2.0), "pendulum": PENDULUM_REACH}[shape]
    return (reach if spins or shape == "pendulum" else 1.0) * scale


SPIN_RATE_RANGE = (0.02, 0.36)


def spin_rate(rng: np.random.Generator) -> float:
    """A pretraining spin's turn per frame, radians: either direction, its size uniform in `SPIN_RATE_RANGE`, so
    that the draws cover the spin reference's rates (0.05-0.34, median 0.20) evenly."""
    return float(rng.choice((-1.0, 1.0)) * rng.uniform(*SPIN_RATE_RANGE))


def random_object_motion(rng: np.random.Generator, shape: str, frames: int) -> tuple:
    """(angle, scale, swing) [F] each or None: spin (40 % of clips; the turn rate, `spin_rate`, is redrawn on
    12 % of frames), pulse (35 %; a sine of random amplitude and period) and, for pendulums, a swing (80 %)."""
    angle = scale = swing = None
    if rng.random() < 0.4:
        out, a = np.empty(frames), rng.uniform(0, 2 * math.pi)
        rate = spin_rate(rng)
        for f in range(frames):
            out[f] = a
            if rng.random() < 0.12:
                rate = spin_rate(rng)
            a += rate
        angle = out
    f = np.arange(frames)
    if rng.random() < 0.35:
        scale = 1 + rng.uniform(0.1, 0.35) * np.sin(2 * math.pi * f / rng.uniform(10, 30) + rng.uniform(0, 2 * math.pi))
    if shape == "pendulum" and rng.random() < 0.8:
        swing = rng.uniform(0.2, 1.0) * np.sin(2 * math.pi * f / rng.uniform(10, 30) + rng.uniform(0, 2 * math.pi))
    return angle, scale, swing


def random_scene(rng: np.random.Generator, frames: int = FRAMES, size: int = SIZE,
                 object_motion: bool = False) -> Scene:
    """A pretraining clip: random object, size, background and path. With `object_motion` the object may also be
    a pendulum (a quarter of clips), spin, pulse and swing (`random_object_motion`), and in 30 % of clips it stays
    almost in place (its path shrunk to a sixth), so that motion in place is common, as in the object-relative
    test motions; its half-size is drawn from `OBJECT_SIZE_RANGE`, around the object-relative test motions' size.
    Without it the draws are exactly those the committed base model was trained on."""
    if not object_motion:
        half = rng.uniform(*SIZE_RANGE) * size
        return Scene(shape=SHAPES[rng.integers(len(SHAPES))], colour=list(COLOURS)[rng.integers(len(COLOURS))],
                     half_size=half, path=random_path(rng, frames, size, half),
                     background=rng.uniform(*BACKGROUND_LEVELS),
                     texture_seed=int(rng.integers(1 << 30)) if rng.random() < 0.5 else None)
    shape = "pendulum" if rng.random() < 0.25 else SHAPES[rng.integers(len(SHAPES))]
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    half = rng.uniform(*OBJECT_SIZE_RANGE) * size
    angle, scale, swing = random_object_motion(rng, shape, frames)
    reach = extent(shape, 1.0 if scale is None else float(scale.max()), angle is not None)
    half = min(half, 0.47 * size / reach)  # a large swinging or pulsing object is drawn smaller, to fit the frame
    path = random_path(rng, frames, size, half * reach)
    if rng.random() < 0.3:
        path = path[0] + (path - path[0]) / 6.0
    return Scene(shape=shape, colour=colour, half_size=half, path=path, background=rng.uniform(*BACKGROUND_LEVELS),
                 texture_seed=int(rng.integers(1 << 30)) if rng.random() < 0.5 else None,
                 angle=angle, scale=scale, swing=swing)


def reference_scene(motion: str, colour: str = "blue", shape: str | None = None, frames: int = FRAMES,
                    size: int = SIZE, background: float = 0.2, half_fraction: float | None = None) -> Scene:
    """A named test motion: a global path (`MOTIONS`, `STEADY_MOTIONS`; a square by default) or an object-relative
    motion (`POSE_MOTIONS`, the shape of `MOTION_SHAPE` by default), centred in the frame; the object's half-size is
    `half_fraction` of the frame (default: 1/8 on the global paths, `OBJECT_HALF_FRACTION` on the object-relative
    motions)."""
    shape = shape or MOTION_SHAPE.get(motion, "square")
    check_object(colour, shape)
    if half_fraction is None:
        half_fraction = OBJECT_HALF_FRACTION if motion in POSE_MOTIONS else 0.125
    half = half_fraction * size
    if motion in MOTIONS + STEADY_MOTIONS:
        return Scene(shape=shape, colour=colour, half_size=half, path=reference_path(motion, frames, size),
                     background=background)
    s = np.linspace(0.0, 1.0, frames)
    c = np.full((frames, 2), (size - 1) / 2.0)
    if motion == "spin":
        return Scene(shape, colour, half, c, background, angle=spin_angle(frames))
    if motion == "pulse":  # two cycles between 0.7 and 1.3 times its size
        return Scene(shape, colour, half, c, background, scale=1 + 0.3 * np.sin(2 * math.pi * 2 * s))
    if motion == "grow":  # from 0.7 to 1.3 times its size (the pulse's range), the same factor on every frame
        return Scene(shape, colour, half, c, background, scale=0.7 * (1.3 / 0.7) ** s)
    if motion == "turn":  # one turn, the same angle (11.25 degrees) on every frame
        return Scene(shape, colour, half, c, background, angle=2 * math.pi * s)
    if motion == "swing":  # the bob swings 1.5 times, up to 0.8 rad each side; the body sits above the centre
        return Scene(shape, colour, half, c - [0.0, 0.7 * half], background,
                     swing=0.8 * np.sin(2 * math.pi * 1.5 * s))
    if motion == "loop_spin":
        return Scene(shape, colour, half, reference_path("loop", frames, size), background, angle=spin_angle(frames))
    raise ValueError(f"motion {motion!r} is not one of {', '.join(TEST_MOTIONS)}")


# ----------------------------------------------------------------------------------------------------------------
# drawing
# ----------------------------------------------------------------------------------------------------------------
PENDULUM = dict(body=0.65, rod=1.3, bob=0.55, width=0.14)
"""A pendulum in half-sizes: body disc radius, pivot-to-bob distance from the body's bottom, bob radius, rod
half-width."""
PENDULUM_REACH = PENDULUM["body"] + PENDULUM["rod"] + PENDULUM["bob"]


def bob_centre(half, swing) -> tuple:
    """(x, y) of a pendulum's bob centre relative to the body centre: the rod hangs from the body's bottom."""
    sin, cos = (torch.sin, torch.cos) if torch.is_tensor(swing) else (np.sin, np.cos)
    rod = PENDULUM["rod"] * half
    return rod * sin(swing), PENDULUM["body"] * half + rod * cos(swing)


def shape_distance(shape: str, dx: torch.Tensor, dy: torch.Tensor, half, swing=0.0) -> torch.Tensor:
    """Signed distance (pixels, negative inside) to the shape centred at 0 with half-size `half` (a pendulum's bob
    at rod angle `swing`)."""
    if shape == "pendulum":
        swing = torch.as_tensor(swing, dtype=dx.dtype)
        bx, by = bob_centre(half, swing)
        body = torch.hypot(dx, dy) - PENDULUM["body"] * half
        bob = torch.hypot(dx - bx, dy - by) - PENDULUM["bob"] * half
        px, py = dx, dy - PENDULUM["body"] * half  # from the pivot
        ux, uy = torch.sin(swing), torch.cos(swing)
        along = torch.minimum((px * ux + py * uy).clamp(min=0.0), torch.as_tensor(PENDULUM["rod"] * half))
        rod = torch.hypot(px - along * ux, py - along * uy) - PENDULUM["width"] * half
        return torch.minimum(torch.minimum(body, bob), rod)
    if shape == "disc":
        return torch.hypot(dx, dy) - half
    if shape == "square":
        return torch.maximum(dx.abs(), dy.abs()) - half
    if shape == "triangle":  # upright isosceles: apex at dy = -half, base 2*half wide at dy = +half
        side = (2 * dx.abs() - dy - half) / math.sqrt(5.0)  # inside when |dx| <= (dy + half) / 2
        return torch.maximum(side, dy - half)
    raise ValueError(f"shape {shape!r} is not one of {', '.join(ALL_SHAPES)}")


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
    angle, scale, swing = (torch.from_numpy(v)[:, None, None] for v in scene.per_frame())  # F 1 1 each
    c, s = torch.cos(angle), torch.sin(angle)
    ox, oy = c * dx + s * dy, -s * dx + c * dy  # F H W: into the object's own frame (undo the rotation)
    dist = shape_distance(scene.shape, ox, oy, scene.half_size * scale, swing)
    alpha = (0.5 - dist).clamp(0.0, 1.0)  # F H W
    bg = background_image(scene, size)[None, ..., None]  # 1 H W 1
    colour = torch.tensor(COLOURS[scene.colour], dtype=torch.float64)
    clip = bg * (1 - alpha[..., None]) + colour * alpha[..., None]  # F H W 3
    return clip.clamp(0.0, 1.0).to(torch.float32), alpha.to(torch.float32)


def render(scene: Scene, size: int = SIZE) -> np.ndarray:
    """The clip [F, H, W, 3] float32 in [0, 1]."""
    return render_with_alpha(scene, size)[0].numpy()


def object_points(shape: str, half: float, count: int = 16) -> np.ndarray:
    """Offsets [N, 2] of `count` points spread over the inside of the shape (a fine grid, evenly thinned); on a
    pendulum, 10 on the body and 6 on the bob hanging straight down (`on_bob` tells which)."""
    if shape == "pendulum":
        body = object_points("disc", PENDULUM["body"] * half, count - count * 3 // 8)
        bob = object_points("disc", PENDULUM["bob"] * half, count * 3 // 8) + np.array(bob_centre(half, 0.0))
        return np.concatenate([body, bob])
    u = np.linspace(-half, half, 15)
    dx, dy = np.meshgrid(u, u)
    inside = (shape_distance(shape, torch.from_numpy(dx), torch.from_numpy(dy), half) < -1.0).numpy()
    pts = np.stack([dx[inside], dy[inside]], axis=-1)
    idx = np.linspace(0, len(pts) - 1, min(count, len(pts))).round().astype(int)
    return pts[idx]


def on_bob(shape: str, count: int = 16) -> np.ndarray:
    """[N] bool: which of `object_points`' points lie on a pendulum's bob."""
    n_bob = count * 3 // 8 if shape == "pendulum" else 0
    return np.arange(count) >= count - n_bob


def object_tracks(scene: Scene, size: int = SIZE, count: int = 16) -> np.ndarray:
    """MTBench tracks [F, N, 3] float32: (x/W, y/H, visibility) of points on the object (always visible): each
    point's offset in the object's own frame (a bob's points move with the swing) is scaled, rotated and added to
    the path."""
    angle, scale, swing = scene.per_frame()
    offsets = object_points(scene.shape, scene.half_size, count)  # N 2, unit scale, no rotation, bob down
    local = np.broadcast_to(offsets, (len(angle),) + offsets.shape).copy()  # F N 2
    if scene.shape == "pendulum":
        moved = np.stack(bob_centre(scene.half_size, swing), axis=-1) - np.array(bob_centre(scene.half_size, 0.0))
        local[:, on_bob(scene.shape, len(offsets))] += moved[:, None]
    c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
    rotated = np.stack([c * local[..., 0] - s * local[..., 1], s * local[..., 0] + c * local[..., 1]], -1)
    pts = scene.path[:, None, :] + scale[:, None, None] * rotated  # F N 2
    vis = np.ones(pts.shape[:2] + (1,))
    return np.concatenate([pts / size, vis], axis=-1).astype(np.float32)
