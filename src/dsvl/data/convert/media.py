"""Image references of input formats (a path, ``file://``, ``data:`` URL or bare base64, bytes, or an HF
``{"bytes", "path"}`` struct; remote URLs are not fetched) -> image bytes fit for a dsvl shard: decoded
once, fully; kept as they are when already an upright RGB JPEG/PNG/WebP within `max_side`, else
converted as `dsvl.data.images.load_rgb` does and re-encoded (docs/data_format.md, "Converting").
"""
from __future__ import annotations

import base64
import binascii
import io
import warnings
from pathlib import Path
from typing import Any

from PIL import Image

from dsvl.data.bad_samples import BadSample, SkipReason
from dsvl.data.images import load_rgb

_KEEP = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
_ORIENTATION = 0x0112


def image_bytes(ref: Any, root: Path | None) -> bytes:
    """The encoded image a reference points to; missing files are `BadSample(missing_field)`."""
    if isinstance(ref, (bytes, bytearray, memoryview)):
        return bytes(ref)
    if isinstance(ref, dict):  # datasets' Image feature: {"bytes": ..., "path": ...}
        if ref.get("bytes"):
            return bytes(ref["bytes"])
        ref = ref.get("path")
        if not ref:
            raise BadSample(SkipReason.MISSING_FIELD, "image struct without bytes or path")
    if not isinstance(ref, str):
        raise BadSample(SkipReason.BAD_JSON, f"image reference is a {type(ref).__name__}, not a path/url/bytes")
    if ref.startswith("data:"):
        return b64_image(ref.partition(",")[2])
    if ref.startswith(("http://", "https://")):
        raise BadSample(SkipReason.MISSING_FIELD, f"remote image {ref[:80]} (download images first)")
    path = Path(ref[7:] if ref.startswith("file://") else ref)
    if not path.is_absolute() and root is not None:
        path = root / path
    try:
        return path.read_bytes()
    except OSError:
        if len(ref) > 256 and "/" not in ref[:64]:  # transformers also accepts bare base64 strings
            return b64_image(ref)
        raise BadSample(SkipReason.MISSING_FIELD, f"image file {str(path)[:200]} not found") from None


def b64_image(text: str, key: str = "") -> bytes:
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError) as e:
        raise BadSample(SkipReason.BAD_IMAGE, f"bad base64 image: {e}", key) from None


def shard_image(data: bytes, max_side: int) -> tuple[str, bytes]:
    """(extension, bytes) of an image for a shard; undecodable images and decompression bombs
    are `BadSample(bad_image)`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
            ext = _KEEP.get(image.format or "")
            upright = image.getexif().get(_ORIENTATION, 1) == 1
            if (ext and image.mode == "RGB" and upright and max(image.size) <= max_side
                    and getattr(image, "n_frames", 1) == 1):
                image.load()  # decode fully: a truncated file fails here, not in training
                if min(image.size) < 1:
                    raise ValueError("image has no pixels")
                return ext, data
        rgb = load_rgb(data, max_side)
        if max(rgb.size) > max_side:
            rgb.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
        out = io.BytesIO()
        if ext == "jpg":
            rgb.save(out, "JPEG", quality=95)
            return "jpg", out.getvalue()
        rgb.save(out, "PNG")
        return "png", out.getvalue()
    except Exception as e:  # PIL raises many kinds (OSError, SyntaxError, DecompressionBombError...)
        raise BadSample(SkipReason.BAD_IMAGE, f"{type(e).__name__}: {str(e)[:200]}") from None
