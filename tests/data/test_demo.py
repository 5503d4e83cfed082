"""Demo data: deterministic, fast, learnable format, tokenizer loadable by AutoTokenizer."""
from __future__ import annotations

import hashlib
import io
import json
import time

import torch
from PIL import Image

from transformers import AutoTokenizer

from dsvl.data import IMAGE_TOKEN, parse_sample, read_tar
from dsvl.data.demo import COLORS, make_demo_data


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "manifest.json":
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_deterministic_and_fast(tmp_path):
    t = time.perf_counter()
    make_demo_data(tmp_path / "a", seed=7, train_size=100, eval_size=20, shard_size=50, parts=False)
    seconds = time.perf_counter() - t
    make_demo_data(tmp_path / "b", seed=7, train_size=100, eval_size=20, shard_size=50, parts=False)
    make_demo_data(tmp_path / "c", seed=8, train_size=100, eval_size=20, shard_size=50, parts=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    assert seconds < 10


def test_layout_splits_and_formats(demo_dir):
    manifest = json.loads((demo_dir / "manifest.json").read_text())
    assert manifest["samples"]["mc"] == {"val": 40, "test": 40}
    for split in ("train", "val", "test"):
        assert list((demo_dir / "sft/multimodal" / split).glob("*.tar"))
    keys = {split: {s["__key__"] for u in (demo_dir / "align/caption" / split).glob("*.tar") for s in read_tar(str(u))}
            for split in ("train", "val", "test")}
    assert len(keys["train"]) == 240 and len(keys["val"]) == 40

    mc = [parse_sample(s) for u in sorted((demo_dir / "mc/val").glob("*.tar")) for s in read_tar(str(u))]
    assert len(mc) == 40
    for s in mc:
        assert s.modality == "multimodal" and s.category in ("color", "shape", "count")
        assert len(s.meta["options"]) == 4 and len(set(s.meta["options"])) == 4
        assert 0 <= s.meta["answer"] < 4
        assert s.conversation[0]["role"] == "user" and s.conversation[0]["content"].startswith(IMAGE_TOKEN)
        assert s.images[0].size == (64, 64)
    colour_qs = [s for s in mc if s.category == "color"]
    assert len(colour_qs) >= len(mc) // 3  # colour is the prominent category
    # the answer is visible: the dominant non-background colour of the image is the answer's colour
    for s in colour_qs:
        answer = s.meta["options"][s.meta["answer"]]
        px = [p for p in s.images[0].getdata() if max(p) - min(p) > 60]
        mean = tuple(sum(c) / len(px) for c in zip(*px))
        nearest = min(COLORS, key=lambda c: sum((a - b) ** 2 for a, b in zip(COLORS[c], mean)))
        assert nearest == answer


def test_tokenizer(demo_dir):
    tok = AutoTokenizer.from_pretrained(str(demo_dir / "tokenizer"))
    assert len(tok) <= 1024
    assert tok.bos_token == "<｜begin▁of▁sentence｜>" and tok.eos_token == "<｜end▁of▁sentence｜>"
    assert tok.pad_token is not None and tok.pad_token_id not in (tok.bos_token_id, tok.eos_token_id)
    img = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    assert tok.image_token == IMAGE_TOKEN
    ids = tok(f"{IMAGE_TOKEN}two blue squares.")["input_ids"]
    assert ids[:2] == [tok.bos_token_id, img]
    assert tok.decode(ids[2:]) == "two blue squares."


def test_iter_samples_reads_mc(demo_dir):
    from dsvl.data import SkipCounter, iter_samples

    counter = SkipCounter()
    samples = list(iter_samples(str(demo_dir / "mc/test"), counter))
    assert len(samples) == 40 and counter.total == 0
    assert samples[0].key == "mc_test_000000" and samples[0].images


def test_parts_deterministic(tmp_path):
    """Same data and seed: bit-identical weights, in one process or in parallel worker processes;
    the saved dirs load as transformers classes."""
    from transformers import LlamaForCausalLM, SamVisionModel, SiglipVisionModel

    from dsvl.demo.parts import make_demo_parts

    # 40 pairs (400 SigLIP images, several batches per part): what is compared does not depend on the data's size
    data = tmp_path / "data"
    make_demo_data(data, seed=0, train_size=40, eval_size=8, shard_size=40, parts=False)
    few = {"siglip": 1, "sam": 1, "llm": 1}
    reports = [make_demo_parts(data, tmp_path / name, epochs=few, workers=w) for name, w in (("a", 1), ("b", 2))]
    for part in ("siglip", "sam", "llm"):
        a, b = ((tmp_path / name / part / "model.safetensors").read_bytes() for name in ("a", "b"))
        assert a == b, part
        assert reports[0][part]["loss_first_epoch"] == reports[1][part]["loss_first_epoch"]
    assert isinstance(SiglipVisionModel.from_pretrained(tmp_path / "a" / "siglip"), SiglipVisionModel)
    assert isinstance(SamVisionModel.from_pretrained(tmp_path / "a" / "sam"), SamVisionModel)
    assert isinstance(LlamaForCausalLM.from_pretrained(tmp_path / "a" / "llm"), LlamaForCausalLM)


def test_parts_learn(demo_dir):
    """The parts the fixture's make_demo_data pretrained: every objective's loss fell."""
    parts = json.loads((demo_dir / "parts" / "parts.json").read_text())
    for part in ("siglip", "sam", "llm"):
        assert parts[part]["loss_last_epoch"] < parts[part]["loss_first_epoch"], (part, parts[part])


def test_demo_model_loads_every_part_weight(demo_dir, tmp_path):
    """The demo recipes build their towers and LLM from the saved part dirs through the per-part
    `pretrained` keys: every weight of SigLIP, SAM and the LLM equals the saved tensor."""
    from safetensors.torch import load_file

    from dsvl.cli._config import compose
    from dsvl.cli.models import build_model

    for recipe in ("demo/align", "demo/pretrain", "demo/sft"):
        cfg = compose([f"experiment={recipe}", f"paths.data_dir={demo_dir}"], output_dir=tmp_path / "run")
        assert cfg.model.llm.pretrained == str(demo_dir / "parts" / "llm")
    model = build_model(cfg.model)
    for module, part in ((model.vision.low.model, "siglip"), (model.vision.high.model, "sam"), (model.llm, "llm")):
        saved = load_file(str(demo_dir / "parts" / part / "model.safetensors"))
        own = module.state_dict()
        assert set(own) == set(saved), part
        for name, tensor in own.items():
            assert torch.equal(tensor, saved[name]), f"{part}: {name} not loaded"


def test_part_scenes_stream_and_labels():
    """The vision parts' own images: deterministic per seed, their own stream (not a stage set's),
    labelled with the words a caption of the scene uses."""
    from dsvl.data.demo import generate_samples
    from dsvl.data.demo_world import PLURAL, part_scenes
    from dsvl.demo.parts import ATTRIBUTES, scene_labels

    a, b = list(part_scenes(20, seed=3)), list(part_scenes(20, seed=3))
    assert [s for s, _ in a] == [s for s, _ in b] and all(x.tobytes() == y.tobytes() for (_, x), (_, y) in zip(a, b))
    assert [s for s, _ in a] != [s for s, _ in part_scenes(20, seed=4)]
    stage = [s["0.png"] for s in generate_samples("align/caption", "train", 20, 3)]
    assert not {im.tobytes() for _, im in a} & {Image.open(io.BytesIO(p)).convert("RGB").tobytes() for p in stage}
    for scene, row in zip((s for s, _ in a), scene_labels([s for s, _ in a]).tolist()):
        words = [ATTRIBUTES[j][k] for j, k in enumerate(row)]
        phrase = scene.phrase
        assert words[0] in phrase and (words[1] in phrase or PLURAL[words[1]] in phrase)
        assert (words[2] in phrase) == (scene.count > 1)


def test_siglip_attribute_objective_learns():
    """The SigLIP part's objective on a few batches of part images: the loss falls, and the saved
    tower is a plain SiglipVisionModel (no heads)."""
    from dsvl.data.demo_world import part_scenes
    from dsvl.demo.parts import _pixels, pretrain_siglip, scene_labels

    scenes, images = zip(*part_scenes(128, seed=0))
    torch.manual_seed(0)
    tower, history = pretrain_siglip(_pixels("siglip", list(images)), scene_labels(list(scenes)), 4,
                                     torch.Generator().manual_seed(0))
    assert history[-1] < history[0] - 0.2, history
    assert not any(k.startswith("head") for k in tower.state_dict())
