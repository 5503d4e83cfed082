"""Small inputs in every format `dsvl-data convert` reads (images made with PIL in several modes)."""
from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

QUESTION, ANSWER = "What color is the shape?", "red"


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` (0 pixels, or a decompression bomb) with one tiny IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kw)
    return out.getvalue()


def make_images(root: Path) -> dict[str, Path]:
    """Images of several sizes and modes; names say what they are."""
    root.mkdir(parents=True, exist_ok=True)
    rgb = Image.new("RGB", (40, 24), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display: 40x24 stored -> 24x40 upright
    grey16 = Image.fromarray(np.full((12, 10), 40000, dtype=np.uint16))
    files = {
        "red.png": encoded(rgb, "PNG"),
        "red.jpg": encoded(rgb, "JPEG", quality=95),
        "rotated.jpg": encoded(rgb, "JPEG", exif=exif),
        "cmyk.jpg": encoded(Image.new("CMYK", (16, 16), (0, 200, 200, 0)), "JPEG"),
        "grey.png": encoded(Image.new("L", (16, 20), 90), "PNG"),
        "palette.png": encoded(Image.new("RGB", (16, 16), (0, 0, 255)).convert("P"), "PNG"),
        "alpha.png": encoded(Image.new("RGBA", (16, 16), (0, 0, 0, 0)), "PNG"),
        "grey16.png": encoded(grey16, "PNG"),
        "gif_named.jpg": encoded(rgb, "GIF"),  # ocr_vqa: GIFs listed as .jpg
        "large.jpg": encoded(Image.new("RGB", (3000, 2000), (20, 120, 20)), "JPEG", quality=50),
        "truncated.jpg": encoded(rgb, "JPEG")[:60],
        "empty.png": b"",
        "bomb.png": png_header(20000, 20000),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    return {name: root / name for name in files}


def write_inputs(tmp: Path) -> dict[str, Path]:
    """One input file (or folder) per format, with good records and each kind of bad one."""
    img = make_images(tmp / "images")
    conv = lambda q, a: [{"from": "human", "value": q}, {"from": "gpt", "value": a}]  # noqa: E731
    llava = [
        {"id": "l0", "image": "red.png", "conversations": conv(f"<image>\n{QUESTION}", ANSWER)},
        {"id": "l1", "conversations": conv("Say hi.", "hi")},  # text-only
        {"id": "l2", "image": "missing.jpg", "conversations": conv("<image>\nWhat?", "x")},
        {"id": "l3", "image": ["rotated.jpg", "cmyk.jpg"], "conversations": conv("<image> left, <image> right?", "both")},
        {"id": "l4", "image": "grey.png", "conversations": [{"from": "system", "value": "Be brief."}, *conv("Shade?", "grey")]},
        {"id": "l5", "image": "truncated.jpg", "conversations": conv("<image>What?", "x")},
        {"id": "l6", "image": "red.png", "conversations": conv("<image><image>two tags one image", "x")},
        {"id": "l7", "conversations": "not a list"},
        {"id": "l8", "image": "gif_named.jpg", "conversations": conv("<image>Which file type?", "gif")},
        {"id": "l9", "image": "bomb.png", "conversations": conv("<image>What?", "x")},
    ]
    (tmp / "llava.json").write_text(json.dumps(llava, indent=1))
    sharegpt = [
        {"messages": [{"role": "user", "content": "<image>Who?"}, {"role": "assistant", "content": "Bob."}],
         "images": ["palette.png"], "system": "You see images."},
        {"conversations": [{"from": "human", "value": "<image>Shade?"}, {"from": "gpt", "value": "dark"}],
         "images": ["grey16.png"]},
        {"messages": [{"role": "user", "content": "<image>Who?"}, {"role": "robot", "content": "x"}], "images": ["red.png"]},
    ]
    (tmp / "sharegpt.json").write_text(json.dumps(sharegpt))
    b64 = base64.b64encode(img["alpha.png"].read_bytes()).decode()
    messages = [
        {"messages": [{"role": "user", "content": [{"type": "image", "path": str(img["red.png"])},
                                                  {"type": "text", "text": QUESTION}]},
                      {"role": "assistant", "content": [{"type": "text", "text": ANSWER}]}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}},
                                                  {"type": "text", "text": "Alpha?"}]},
                      {"role": "assistant", "content": "white"}]},
        {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "From the column?"}]},
                      {"role": "assistant", "content": "yes"}], "images": [f"file://{img['large.jpg']}"]},
        {"messages": [{"role": "developer", "content": "Answer shortly."}, {"role": "user", "content": "2+2?"},
                      {"role": "assistant", "content": "4"}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.jpg"}}]},
                      {"role": "assistant", "content": "?"}]},
    ]
    lines = [json.dumps(m) for m in messages] + ["{broken", "[" * 100_000 + "]" * 100_000]
    (tmp / "messages.jsonl").write_bytes("\n".join(lines).encode() + b"\n\xff\xfe not utf-8 \n")
    mmc4 = [{"url": "http://x", "text_list": ["First sentence.", "Second one.", "Third."],
             "image_info": [{"image_name": "red.jpg", "raw_url": "http://x/1.jpg", "matched_text_index": 1},
                            {"image_name": "never_downloaded.jpg", "raw_url": "http://x/2.jpg", "matched_text_index": 0}]},
            {"text_list": ["A."], "image_info": [{"image_name": "red.jpg", "matched_text_index": 7}]}]
    (tmp / "mmc4.jsonl").write_text("\n".join(json.dumps(d) for d in mmc4) + "\n")
    (tmp / "text.jsonl").write_text("\n".join(json.dumps(d) for d in [
        {"text": "Plain words \u00e9\u00e8.", "meta": {"pile_set_name": "Pile-CC"}}, {"text": ["wrong", "type"]}, {"no_text": 1}]) + "\n")
    return img
