"""Hugging Face datasets read with `datasets`, in the layout their columns match (`LAYOUTS`,
docs/data_format.md, "`hf`"). Image columns stay the stored ``{bytes, path}`` structs (Arrow
format): decoded once, by the converter, not by the reader.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from dsvl.data.bad_samples import BadSample, SkipReason
from dsvl.data.chat import IMAGE_TOKEN
from dsvl.data.convert import formats
from dsvl.data.convert.common import Draft, Options, as_list, chat_draft, message, record_id
from dsvl.errors import DataError

LAYOUTS = {"cauldron": ("images", "texts"), "llava": ("image", "conversations"), "messages": ("messages", "images"),
           "caption": ("image", "caption"), "text": ("text",)}


def layout_of(columns: list[str], mapping: dict[str, str]) -> str:
    """The first layout whose columns the dataset has (after `mapping`), or a one-line DataError."""
    names = (set(columns) - set(mapping.values())) | {k for k, v in mapping.items() if v in columns}
    for name, needed in LAYOUTS.items():
        if set(needed) <= names:
            return name
    known = "; ".join(f"{k}: {' + '.join(v)}" for k, v in LAYOUTS.items())
    raise DataError(f"dataset columns {sorted(columns)} match no known layout ({known}); "
                    "map yours with --column NAME=COLUMN")


def load(source: str, split: str = "train", subset: str | None = None) -> Any:
    """A `datasets` Dataset from a save_to_disk folder, parquet/arrow files (a folder of them or
    one file) or a hub id, in Arrow format."""
    import datasets

    path = Path(source)
    try:
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise DataError(f"{source}: no split {split!r} (has {sorted(ds)}); choose one with --split")
                ds = ds[split]
        elif path.exists():
            files = sorted(str(p) for p in (path.rglob("*") if path.is_dir() else [path])
                           if p.suffix in (".parquet", ".arrow"))
            if not files:
                raise DataError(f"{source}: no .parquet or .arrow files (nor a save_to_disk folder)")
            kind = "arrow" if files[0].endswith(".arrow") else "parquet"
            ds = datasets.load_dataset(kind, data_files=files, split="train", streaming=True)
        else:
            ds = datasets.load_dataset(source, subset, split=split, streaming=True)
    except DataError:
        raise
    except Exception as e:  # the hub unreachable, a wrong id or config, unreadable files
        raise DataError(f"cannot load dataset {source!r}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    return ds.with_format("arrow")


def read_records(source: str, split: str = "train", subset: str | None = None) -> tuple[list[str], Iterator[dict[str, Any]]]:
    """The dataset's column names and its rows as plain dicts (images as {bytes, path} structs)."""
    ds = load(source, split, subset)
    columns = list(ds.column_names or ds.features or [])

    def rows() -> Iterator[dict[str, Any]]:
        for batch in ds.iter(batch_size=256):
            yield from batch.to_pylist()

    return columns, rows()


def _cauldron(record: dict[str, Any], opts: Options) -> Draft:
    msgs = []
    for turn in record["texts"]:
        msgs += [message("user", turn["user"]), message("assistant", turn["assistant"])]
    return chat_draft(msgs, as_list(record["images"]), record_id(record))


def _caption(record: dict[str, Any], opts: Options) -> Draft:
    caption = record["caption"]
    if isinstance(caption, list):  # flickr30k / COCO: several captions per image; the first
        caption = next((c for c in caption if isinstance(c, str) and c.strip()), None)
    if not isinstance(caption, str):
        raise BadSample(SkipReason.MISSING_FIELD, "no caption string")
    if record["image"] is None:
        raise BadSample(SkipReason.MISSING_FIELD, "no image")
    return Draft(text=IMAGE_TOKEN + caption.strip(), images=[record["image"]], meta=record_id(record))


def draft(record: dict[str, Any], opts: Options) -> Draft:
    drafts = {"cauldron": _cauldron, "caption": _caption, "llava": formats.llava, "messages": formats.messages,
              "text": formats.text}
    return drafts[opts.layout](record, opts)
