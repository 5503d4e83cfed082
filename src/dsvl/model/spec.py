"""What the data pipeline needs to know about a model's vision side (the only thing `dsvl.data` imports from
`dsvl.model`): each tower's input name, image size and normalisation, and visual tokens per image."""
from __future__ import annotations

from dataclasses import dataclass, field

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ImageInputSpec:
    """One tower's input: the batch key it reads (transformers' names), square size and normalisation."""

    name: str  # "pixel_values" (low-res / SigLIP) or "high_res_pixel_values" (SAM)
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class VisionSpec:
    """All image inputs of a model and the number of visual tokens one image becomes."""

    inputs: tuple[ImageInputSpec, ...] = field(default_factory=tuple)
    num_image_tokens: int = 0

    def input(self, name: str) -> ImageInputSpec | None:
        return next((i for i in self.inputs if i.name == name), None)
