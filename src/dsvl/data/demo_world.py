"""The demo world: scenes of 1-4 copies of one shape in one colour, drawn the same way for the stage data
(`dsvl.data.demo`) and for the vision parts' own image stream (`dsvl.demo.parts`)."""
from __future__ import annotations

import io
import random
from dataclasses import dataclass
from typing import Iterator

from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
    "yellow": (235, 200, 30), "purple": (140, 60, 180), "orange": (240, 130, 30),
}
SHAPES = ("circle", "square", "triangle", "diamond")
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "diamond": "diamonds"}
NUMBERS = ("one", "two", "three", "four")


@dataclass(frozen=True)
class Scene:
    color: str
    shape: str
    count: int
    background: int  # grey level

    @property
    def phrase(self) -> str:
        """'a red circle' / 'two blue squares'."""
        if self.count == 1:
            return f"a {self.color} {self.shape}"
        return f"{NUMBERS[self.count - 1]} {self.color} {PLURAL[self.shape]}"


def random_scene(rng: random.Random) -> Scene:
    return Scene(rng.choice(list(COLORS)), rng.choice(SHAPES), rng.randint(1, 4), rng.randint(225, 250))


def draw(scene: Scene, rng: random.Random, size: int = 64) -> Image.Image:
    """`scene.count` shapes, one per quadrant (so they never overlap), jittered."""
    img = Image.new("RGB", (size, size), (scene.background,) * 3)
    pen = ImageDraw.Draw(img)
    half = size // 2
    fill = COLORS[scene.color]
    for q in rng.sample(range(4), scene.count):
        r = rng.randint(size // 9, size // 5)
        cx = (q % 2) * half + rng.randint(r + 1, half - r - 1)
        cy = (q // 2) * half + rng.randint(r + 1, half - r - 1)
        box = (cx - r, cy - r, cx + r, cy + r)
        if scene.shape == "circle":
            pen.ellipse(box, fill=fill)
        elif scene.shape == "square":
            pen.rectangle(box, fill=fill)
        elif scene.shape == "triangle":
            pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
        else:
            pen.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    return img


def render(scene: Scene, rng: random.Random, size: int = 64) -> bytes:
    """The scene drawn as PNG bytes (how every data set stores it)."""
    buf = io.BytesIO()
    draw(scene, rng, size).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def part_scenes(n: int, seed: int) -> Iterator[tuple[Scene, Image.Image]]:
    """`n` scenes and their images from the vision parts' own random stream: more images than
    the stage data, never written to a set, so no stage or evaluation sample comes from it."""
    rng = random.Random(f"{seed}/parts/images")
    for _ in range(n):
        scene = random_scene(rng)
        yield scene, draw(scene, rng)
