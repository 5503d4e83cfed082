"""Bundled demo data: a synthetic world of coloured shapes, made from a seed in seconds, learnable
by a tiny model on CPU (layout: docs/data_format.md, "Demo data"). Colour is the signal that best
survives a frozen random vision tower, so colour questions are the most frequent; the splits of
every set come from disjoint random streams. `parts/` holds the pretrained LLM, SigLIP and SAM the
demo model starts from (`dsvl.demo.parts`).
"""
from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from dsvl.data.chat import BOS_TOKEN, EOS_TOKEN, IMAGE_TOKEN, PAD_TOKEN, format_conversation
from dsvl.data.demo_world import COLORS, NUMBERS, PLURAL, SHAPES, Scene, random_scene, render
from dsvl.data.shards import write_shards

log = logging.getLogger(__name__)

CORNERS = {"circle": "no", "square": "four", "triangle": "three", "diamond": "four"}
QUESTIONS = {
    "color": "What color is the shape?",
    "shape": "What shape is it?",
    "count": "How many shapes are there?",
}
CATEGORY_WEIGHTS = {"color": 0.5, "shape": 0.25, "count": 0.25}  # colour first: it survives frozen towers
SPLITS = ("train", "val", "test")
SPLIT_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_029}


def _caption(scene: Scene, rng: random.Random) -> str:
    p = scene.phrase
    return rng.choice([f"{p}.", f"a picture of {p}.", f"there is {p}." if scene.count == 1 else f"there are {p}.",
                       f"{p} on a grey background."])


def _answer(scene: Scene, category: str) -> str:
    return {"color": scene.color, "shape": scene.shape, "count": NUMBERS[scene.count - 1]}[category]


def _category(rng: random.Random) -> str:
    return rng.choices(list(CATEGORY_WEIGHTS), weights=list(CATEGORY_WEIGHTS.values()))[0]


def _fact(rng: random.Random) -> tuple[str, str, str]:
    """(statement, question, answer) about the same world, for text-only data."""
    kind = rng.randrange(3)
    if kind == 0:
        s = rng.choice(SHAPES)
        return f"a {s} has {CORNERS[s]} corners.", f"How many corners does a {s} have?", CORNERS[s]
    if kind == 1:
        a = rng.randint(1, 3)
        b = rng.randint(1, 4 - a)
        return (f"{NUMBERS[a - 1]} plus {NUMBERS[b - 1]} is {NUMBERS[a + b - 1]}.",
                f"What is {NUMBERS[a - 1]} plus {NUMBERS[b - 1]}?", NUMBERS[a + b - 1])
    c = rng.choice(list(COLORS))
    s = rng.choice(SHAPES)
    n = rng.randint(2, 4)
    return (f"if you see {NUMBERS[n - 1]} {c} {PLURAL[s]}, you see {NUMBERS[n - 1]} {PLURAL[s]} that are {c}.",
            f"Are {c} {PLURAL[s]} {c}?", "yes")


# --- sample makers: (rng, index) -> sample dict (webdataset fields) ---------------------------------

def _align(rng: random.Random, i: int) -> dict[str, Any]:
    sc = random_scene(rng)
    return {"json": {"modality": "multimodal", "category": "image_caption", "text": IMAGE_TOKEN + _caption(sc, rng)},
            "0.png": render(sc, rng)}


def _interleaved(rng: random.Random, i: int) -> dict[str, Any]:
    scenes = [random_scene(rng) for _ in range(rng.randint(2, 3))]
    parts = [f"{IMAGE_TOKEN}{'here is' if k == 0 else 'and this is'} {s.phrase}." for k, s in enumerate(scenes)]
    out: dict[str, Any] = {"json": {"modality": "multimodal", "category": "interleaved", "text": " ".join(parts)}}
    for k, s in enumerate(scenes):
        out[f"{k}.png"] = render(s, rng)
    return out


def _text(rng: random.Random, i: int) -> dict[str, Any]:
    text = " ".join(_fact(rng)[0] for _ in range(rng.randint(2, 5)))
    return {"json": {"modality": "text", "category": "text", "text": text}}


def _sft_mm(rng: random.Random, i: int) -> dict[str, Any]:
    sc = random_scene(rng)
    conv: list[dict[str, str]] = []
    cats = [_category(rng) for _ in range(rng.randint(1, 2))]
    for k, cat in enumerate(cats):
        q = QUESTIONS[cat]
        conv += [{"role": "user", "content": (IMAGE_TOKEN if k == 0 else "") + q},
                 {"role": "assistant", "content": _answer(sc, cat)}]
    if rng.random() < 0.15:
        conv = [{"role": "user", "content": IMAGE_TOKEN + "Describe the image."},
                {"role": "assistant", "content": _caption(sc, rng)}]
        cats = ["describe"]
    return {"json": {"modality": "multimodal", "category": cats[0], "conversation": conv}, "0.png": render(sc, rng)}


def _sft_text(rng: random.Random, i: int) -> dict[str, Any]:
    _, q, a = _fact(rng)
    return {"json": {"modality": "text", "category": "text_sft",
                     "conversation": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}}


def _mc(rng: random.Random, i: int) -> dict[str, Any]:
    sc = random_scene(rng)
    cat = _category(rng)
    answer = _answer(sc, cat)
    pool = {"color": list(COLORS), "shape": list(SHAPES), "count": list(NUMBERS)}[cat]
    options = [answer] + rng.sample([o for o in pool if o != answer], 3)
    rng.shuffle(options)
    return {"json": {"modality": "multimodal", "category": cat,
                     "conversation": [{"role": "user", "content": IMAGE_TOKEN + QUESTIONS[cat]}],
                     "options": options, "answer": options.index(answer)},
            "0.png": render(sc, rng)}


SETS: dict[str, tuple[Callable[[random.Random, int], dict[str, Any]], tuple[str, ...]]] = {
    "align/caption": (_align, SPLITS),
    "pretrain/caption": (_align, SPLITS),
    "pretrain/interleaved": (_interleaved, SPLITS),
    "pretrain/text": (_text, SPLITS),
    "sft/multimodal": (_sft_mm, SPLITS),
    "sft/text": (_sft_text, SPLITS),
    "mc": (_mc, ("val", "test")),
}


def generate_samples(name: str, split: str, n: int, seed: int) -> Iterator[dict[str, Any]]:
    """Samples of one set and split; each split has its own random stream (held out by construction)."""
    make, _ = SETS[name]
    rng = random.Random(f"{seed}/{name}/{SPLIT_OFFSET[split]}")
    tag = name.replace("/", "_")
    for i in range(n):
        s = make(rng, i)
        s["__key__"] = f"{tag}_{split}_{i:06d}"
        yield s


def sample_texts(sample: dict[str, Any]) -> str:
    """The text a sample contributes to tokenizer training (conversations rendered with the template)."""
    meta = sample["json"]
    if "text" in meta:
        return meta["text"]
    return format_conversation(meta["conversation"], system_prompt=None) + " " + " ".join(meta.get("options", []))


def train_tokenizer(texts: list[str], out_dir: str | Path, vocab_size: int = 1024) -> Path:
    """Byte-level BPE on `texts`, saved as a transformers PreTrainedTokenizerFast directory.

    Special tokens: BOS, EOS, pad and <image_placeholder> (also exposed as `tokenizer.image_token`,
    as DeepseekVLProcessor expects); encoding with special tokens adds BOS like DeepSeek's tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, IMAGE_TOKEN]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id(BOS_TOKEN)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A $B",
                                                       special_tokens=[(BOS_TOKEN, bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
                                   extra_special_tokens={"image_token": IMAGE_TOKEN}, model_max_length=4096)
    out = Path(out_dir)
    fast.save_pretrained(out)
    return out


def make_demo_data(out_dir: str | Path, seed: int = 0, train_size: int = 2000, eval_size: int = 200,
                   shard_size: int = 500, vocab_size: int = 1024, parts: bool = True) -> dict[str, Any]:
    """Write all demo sets and the tokenizer under `out_dir`, then (with `parts`) pretrain the demo
    model's parts on them into `out_dir/parts`; returns a summary (also saved as manifest.json)."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts: list[str] = []
    counts: dict[str, dict[str, int]] = {}
    for name, (_, splits) in SETS.items():
        for split in splits:
            n = train_size if split == "train" else eval_size
            samples = list(generate_samples(name, split, n, seed))
            if split == "train":
                texts.extend(sample_texts(s) for s in samples)
            d = out / name / split
            for old in d.glob("*.tar"):
                old.unlink()
            write_shards(samples, d, prefix=name.replace("/", "_") + f"_{split}", max_count=shard_size)
            counts.setdefault(name, {})[split] = n
    train_tokenizer(texts, out / "tokenizer", vocab_size)
    manifest = {"seed": seed, "train_size": train_size, "eval_size": eval_size, "shard_size": shard_size,
                "samples": counts, "seconds": round(time.perf_counter() - t0, 2)}
    if parts:
        from dsvl.demo.parts import make_demo_parts  # torch + transformers: only when parts are wanted

        # two worker processes pay for their start-up only at full size (tests make small sets)
        manifest["parts"] = make_demo_parts(out, seed=seed, workers=2 if train_size >= 1000 else 1)
        manifest["seconds"] = round(time.perf_counter() - t0, 2)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    log.info("demo data in %s: %s", out, manifest)
    return manifest
