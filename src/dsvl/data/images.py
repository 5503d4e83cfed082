"""Per-tower image preprocessing (DeepSeek-VL paper), tensor-for-tensor the same as transformers'
DeepseekVLImageProcessor / DeepseekVLHybridImageProcessor (PIL backends), but without their
per-call kwarg validation and numpy round trips, so it is cheap enough for data workers.

Steps: resize the longest side to S (PIL bicubic, which antialiases; sides rounded, at least
`min_size`), pad to a centred square filled with int(mean*255), scale by 1/255, normalise.
With two towers (hybrid) the smaller input is resized from the larger one's padded square, as
transformers does; with one tower it is made from the original image.
"""
from __future__ import annotations

import io
import warnings
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from dsvl.errors import DataError
from dsvl.model.spec import ImageInputSpec, VisionSpec


_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB as transformers' processors make it (`convert_to_rgb`: alpha composited on white, CMYK,
    grey and palette converted), except that 16-bit greys are scaled to 8 bits instead of clipped."""
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT or image.mode == "F":
        arr = np.asarray(image)
        arr = arr.astype(np.float64) / 257.0 if image.mode != "F" else arr  # 65535 -> 255
        image = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255)), rgba).convert("RGB")


def load_rgb(data: bytes, max_side: int | None = None) -> Image.Image:
    """Decode image bytes fully (truncated files fail here), apply the EXIF orientation (as
    transformers' `load_image` does) and convert to RGB. JPEGs larger than `max_side` are decoded
    at a reduced DCT scale (PIL `draft`, never below `max_side`), so a large scan needs bounded
    memory. PIL's decompression-bomb limit raises `Image.DecompressionBombError`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = Image.open(io.BytesIO(data))
        if max_side and image.format == "JPEG" and max(image.size) > max_side:
            image.draft("RGB", (max_side, max_side))
        image.load()
        if min(image.size) < 1:
            raise ValueError(f"image has no pixels ({image.size[0]}x{image.size[1]})")
        ImageOps.exif_transpose(image, in_place=True)
    return to_rgb(image)


def resize_longest_side(image: Image.Image, size: int, min_size: int = 14) -> Image.Image:
    """Resize so the longest side is `size` (bicubic), keeping the aspect ratio; sides >= min_size."""
    w, h = image.size
    scale = size / max(w, h)
    new_w, new_h = max(round(w * scale), min_size), max(round(h * scale), min_size)
    return image.resize((new_w, new_h), resample=Image.Resampling.BICUBIC)


def pad_to_square(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Centre the image on a square canvas of its longest side filled with `background`."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), background)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def background_color(mean: Sequence[float]) -> tuple[int, int, int]:
    """DeepSeek-VL's padding colour: int(mean * 255) per channel (7B SAM: 122, 116, 104)."""
    return tuple(int(m * 255) for m in mean)  # type: ignore[return-value]


class ImagePreprocessor:
    """Turns a list of PIL images into ``{input name: (N, 3, S, S) float32}`` for a `VisionSpec`."""

    def __init__(self, spec: VisionSpec, min_size: int = 14) -> None:
        if not spec.inputs:
            raise DataError("VisionSpec has no image inputs: a text-only model takes no images")
        self.spec = spec
        self.min_size = min_size
        # largest first: smaller towers are derived from its padded square (hybrid processor order)
        self.inputs: list[ImageInputSpec] = sorted(spec.inputs, key=lambda i: -i.size)
        # (x/255 - mean)/std == x * scale + bias, applied in place to the whole batch
        self._affine = {
            i.name: (1.0 / (torch.tensor(i.std, dtype=torch.float64) * 255.0),
                     -torch.tensor(i.mean, dtype=torch.float64) / torch.tensor(i.std, dtype=torch.float64))
            for i in self.inputs
        }

    def squares(self, image: Image.Image) -> dict[str, Image.Image]:
        """The padded square PIL image of each tower (uint8, before scaling and normalisation)."""
        out: dict[str, Image.Image] = {}
        image = image if image.mode == "RGB" else image.convert("RGB")
        for spec in self.inputs:  # smaller towers are made from the largest one's padded square
            src = out[self.inputs[0].name] if out else image
            out[spec.name] = pad_to_square(resize_longest_side(src, spec.size, self.min_size), background_color(spec.mean))
        return out

    def __call__(self, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        out = {i.name: torch.empty(len(images), 3, i.size, i.size) for i in self.inputs}
        for k, image in enumerate(images):
            for name, sq in self.squares(image).items():
                out[name][k].copy_(torch.from_numpy(np.array(sq, dtype=np.uint8)).permute(2, 0, 1))
        for name, t in out.items():
            scale, bias = self._affine[name]
            t.mul_(scale.to(t.dtype).view(3, 1, 1)).add_(bias.to(t.dtype).view(3, 1, 1))
        return out
