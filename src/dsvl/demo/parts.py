"""The demo's pretrained parts, made locally from the demo world in seconds (DeepSeek-VL starts from a
language model and vision encoders that already work; the demo must too): `llm/` (next-token on the
world's text), `siglip/` (attribute classification of its images), `sam/` (contrastive image-text),
each saved in transformers' layout; objectives and data in docs/demo.md. Sizes live in
`PART_CONFIGS`, which `conf/model/demo.yaml` must describe. Deterministic: fixed seeds and threads.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    SamVisionConfig,
    SamVisionModel,
    SiglipTextConfig,
    SiglipTextModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)
from transformers.models.clip.modeling_clip import image_text_contrastive_loss

from dsvl.data import IMAGE_TOKEN, ImagePreprocessor, TextEncoder, load_tokenizer, parse_sample, read_tar
from dsvl.data.demo_world import COLORS, NUMBERS, SHAPES, Scene, part_scenes
from dsvl.model.spec import CLIP_MEAN, CLIP_STD, SIGLIP_MEAN, SIGLIP_STD, ImageInputSpec, VisionSpec

log = logging.getLogger(__name__)

# transformers config kwargs of each saved part; conf/model/demo.yaml + vision/demo_*.yaml mirror them.
# SigLIP 64 px / patch 16 and SAM 64 px / patch 8 see the demo images at full resolution (shapes of
# 14-24 px, one per quadrant), so shape and count are visible; both give a 4x4 grid of tokens.
PART_CONFIGS: dict[str, dict[str, Any]] = {
    "siglip": {"image_size": 64, "patch_size": 16, "hidden_size": 64, "intermediate_size": 128,
               "num_hidden_layers": 2, "num_attention_heads": 2, "vision_use_head": False},
    "sam": {"image_size": 64, "patch_size": 8, "hidden_size": 32, "mlp_dim": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "window_size": 4, "global_attn_indexes": [1], "output_channels": 16,
            "initializer_range": 0.02},  # SAM's default (1e-10) starts every conv at ~0: a blind tower that cannot learn
    "llm": {"vocab_size": 1024, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 1024,
            "rms_norm_eps": 1.0e-6, "tie_word_embeddings": False},
}
# the objectives' own hyper-parameters (not tuned on any demo metric)
TEXT_TOWER = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
              "max_position_embeddings": 24}
CAPTION_TOKENS = 24
EPOCHS = {"siglip": 2, "sam": 4, "llm": 6}
SIGLIP_IMAGES_PER_PAIR = 10  # the parts' own images: a tiny ViT needs ~10^4 images to see shape (docs/demo.md)
ATTRIBUTES = (tuple(COLORS), SHAPES, NUMBERS)  # what a caption says about its image
BATCH = {"siglip": 64, "sam": 64, "llm": 8}
LR = {"siglip": 3e-3, "sam": 3e-3, "llm": 3e-3}
LLM_ROW = 128


def _samples(root: Path) -> list[Any]:
    urls = sorted(str(p) for p in root.glob("*.tar"))
    if not urls:
        raise FileNotFoundError(f"no shards in {root}; make the demo data first (dsvl-data demo)")
    return [parse_sample(raw) for url in urls for raw in read_tar(url)]


def _fit(params: list[nn.Parameter], loss_fn: Any, batches: list[Any], lr: float, epochs: int,
         gen: torch.Generator) -> list[float]:
    """AdamW over `epochs` shuffled passes of `batches` (index lists); returns the per-epoch mean loss."""
    steps, warm = epochs * len(batches), max(1, epochs * len(batches) // 20)
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    # linear warm-up over 5% of the steps, cosine decay to 0
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    history = []
    for _ in range(epochs):
        total = 0.0
        for k in torch.randperm(len(batches), generator=gen).tolist():
            loss = loss_fn(batches[k])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            total += float(loss.detach())
        history.append(total / len(batches))
        log.debug("epoch %d: loss %.4f", len(history), history[-1])
    return history


def _chunks(n: int, size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Shuffled index batches, all full (in-batch negatives); one batch of all when n < size."""
    if n == 0:
        raise ValueError("no training samples for a demo part")
    size = min(size, n)
    order = torch.randperm(n, generator=gen)
    return [order[i:i + size] for i in range(0, n - size + 1, size)]


def _captions(tokenizer: Any, texts: list[str]) -> torch.Tensor:
    """Captions as fixed-length id rows (pad after the text), the layout SigLIP's last-token pooling expects."""
    rows = torch.full((len(texts), CAPTION_TOKENS), int(tokenizer.pad_token_id), dtype=torch.long)
    for i, text in enumerate(texts):
        ids = tokenizer(text.replace(IMAGE_TOKEN, ""), add_special_tokens=False)["input_ids"][:CAPTION_TOKENS]
        rows[i, :len(ids)] = torch.tensor(ids)
    return rows


def scene_labels(scenes: list[Scene]) -> torch.Tensor:
    """(n, 3) class indices of each scene's colour, shape and count (the words its captions use)."""
    return torch.tensor([[ATTRIBUTES[0].index(sc.color), ATTRIBUTES[1].index(sc.shape), sc.count - 1] for sc in scenes])


def pretrain_siglip(pixels: torch.Tensor, labels: torch.Tensor, epochs: int,
                    gen: torch.Generator) -> tuple[SiglipVisionModel, list[float]]:
    """Attribute classification: summed cross-entropy of colour, shape and count heads, linear on
    the mean of the tokens (so the tokens themselves must carry each attribute, not a deep reader);
    returns the tower without the heads."""
    tower = SiglipVisionModel(SiglipVisionConfig(**PART_CONFIGS["siglip"]))
    sizes = [len(a) for a in ATTRIBUTES]
    head = nn.Linear(PART_CONFIGS["siglip"]["hidden_size"], sum(sizes))
    tower.train()

    def loss(idx: torch.Tensor) -> torch.Tensor:
        logits = head(tower(pixel_values=pixels[idx]).last_hidden_state.mean(dim=1)).split(sizes, dim=1)
        return sum(nn.functional.cross_entropy(z, labels[idx, j]) for j, z in enumerate(logits))

    params = list(tower.parameters()) + list(head.parameters())
    history = _fit(params, loss, _chunks(len(pixels), BATCH["siglip"], gen), LR["siglip"], epochs, gen)
    return tower.eval(), history


class _ContrastiveSam(nn.Module):
    """SAM's vision model, mean-pooled neck output -> projection, against a small text tower."""

    def __init__(self, text_config: SiglipTextConfig) -> None:
        super().__init__()
        self.vision = SamVisionModel(SamVisionConfig(**PART_CONFIGS["sam"]))
        self.text = SiglipTextModel(text_config)
        self.image_proj = nn.Linear(PART_CONFIGS["sam"]["output_channels"], text_config.hidden_size)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's learnable temperature and its init

    def forward(self, pixels: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        image = self.image_proj(self.vision(pixel_values=pixels).last_hidden_state.mean(dim=(2, 3)))
        text = self.text(input_ids=ids).pooler_output
        image, text = nn.functional.normalize(image, dim=-1), nn.functional.normalize(text, dim=-1)
        return image_text_contrastive_loss(text @ image.t() * self.logit_scale.exp().clamp(max=100))


def pretrain_sam(pixels: torch.Tensor, captions: torch.Tensor, tokenizer: Any, epochs: int,
                 gen: torch.Generator) -> tuple[SamVisionModel, list[float]]:
    """Contrastive image-text pretraining of the SAM tower; returns the `SamVisionModel`."""
    model = _ContrastiveSam(SiglipTextConfig(vocab_size=len(tokenizer), pad_token_id=int(tokenizer.pad_token_id),
                                             bos_token_id=int(tokenizer.bos_token_id),
                                             eos_token_id=int(tokenizer.eos_token_id), **TEXT_TOWER))
    model.train()
    history = _fit(list(model.parameters()), lambda idx: model(pixels[idx], captions[idx]),
                   _chunks(len(pixels), BATCH["sam"], gen), LR["sam"], epochs, gen)
    return model.vision.eval(), history


def _token_rows(tokenizer: Any, texts: list[str]) -> torch.Tensor:
    """Documents as BOS text EOS (how stage 2 encodes them), concatenated and cut into rows."""
    encoder = TextEncoder(tokenizer, num_image_tokens=0)
    stream: list[int] = []
    for text in texts:
        stream.extend(encoder.encode_text(text.replace(IMAGE_TOKEN, "")).input_ids)
    n = len(stream) // LLM_ROW
    return torch.tensor(stream[:n * LLM_ROW]).view(n, LLM_ROW)


def pretrain_llm(rows: torch.Tensor, epochs: int, gen: torch.Generator) -> tuple[LlamaForCausalLM, list[float]]:
    """Next-token prediction on packed text rows."""
    model = LlamaForCausalLM(LlamaConfig(**PART_CONFIGS["llm"]))
    model.train()
    history = _fit(list(model.parameters()), lambda idx: model(input_ids=rows[idx], labels=rows[idx]).loss,
                   _chunks(len(rows), BATCH["llm"], gen), LR["llm"], epochs, gen)
    return model.eval(), history


def _pixels(name: str, images: list[Any]) -> torch.Tensor:
    """Images as the tower's training input (size and normalisation of its family)."""
    size = PART_CONFIGS[name]["image_size"]
    spec = (ImageInputSpec("pixel_values", size, SIGLIP_MEAN, SIGLIP_STD) if name == "siglip"
            else ImageInputSpec("high_res_pixel_values", size, CLIP_MEAN, CLIP_STD))
    return ImagePreprocessor(VisionSpec((spec,)))(images)[spec.name]


PART_ORDER = ("llm", "siglip", "sam")  # LLM and SigLIP (about equal) first, SAM after the first to finish
SEED_OFFSET = {"siglip": 0, "sam": 1, "llm": 2}


def make_part(name: str, data_dir: str | Path, out_dir: str | Path, seed: int, epochs: int, threads: int = 1) -> dict[str, Any]:
    """Pretrain one part (`llm`, `siglip` or `sam`) on the demo data and save it to `out_dir/name`;
    the same result in any process (own seeds, fixed thread count)."""
    data, t0, cpu = Path(data_dir), time.perf_counter(), time.process_time()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # results depend on the intra-op thread count
    try:
        tokenizer = load_tokenizer(str(data / "tokenizer"))
        pairs = _samples(data / "align" / "caption" / "train")
        k = SEED_OFFSET[name]
        torch.manual_seed(seed * 1000 + k)  # weight init
        gen = torch.Generator().manual_seed(seed * 1000 + k)  # batch order
        n_images = 0
        if name == "llm":
            texts = [s.text for s in _samples(data / "pretrain" / "text" / "train")] + [s.text for s in pairs]
            model, history = pretrain_llm(_token_rows(tokenizer, texts), epochs, gen)
        elif name == "siglip":
            scenes, images = zip(*part_scenes(SIGLIP_IMAGES_PER_PAIR * len(pairs), seed))
            n_images = len(images)
            model, history = pretrain_siglip(_pixels(name, list(images)), scene_labels(list(scenes)), epochs, gen)
        else:
            n_images = len(pairs)
            model, history = pretrain_sam(_pixels(name, [s.images[0] for s in pairs]),
                                          _captions(tokenizer, [s.text for s in pairs]), tokenizer, epochs, gen)
        model.save_pretrained(Path(out_dir) / name)
    finally:
        torch.set_num_threads(before)
    seconds = time.perf_counter() - t0
    log.info("demo part %s: loss %.3f -> %.3f in %.1fs", name, history[0], history[-1], seconds)
    return {"loss_first_epoch": round(history[0], 4), "loss_last_epoch": round(history[-1], 4), "epochs": epochs,
            "images": n_images, "seconds": round(seconds, 2), "cpu_seconds": round(time.process_time() - cpu, 2)}


def make_demo_parts(data_dir: str | Path, out_dir: str | Path | None = None, seed: int = 0, workers: int = 2,
                    epochs: dict[str, int] | None = None) -> dict[str, Any]:
    """Pretrain the three parts on the demo data in `data_dir`; save them under `out_dir` (default
    `data_dir/parts`) as `siglip/`, `sam/` and `llm/` transformers directories plus `parts.json`.

    `workers` > 1 trains parts in parallel processes of one thread each (the result is the same)."""
    out = Path(out_dir) if out_dir is not None else Path(data_dir) / "parts"
    epochs = {**EPOCHS, **(epochs or {})}
    start = time.perf_counter()
    args = [(name, str(data_dir), str(out), seed, epochs[name]) for name in PART_ORDER]
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(make_part, *zip(*args)))
    else:
        results = [make_part(*a) for a in args]
    report: dict[str, Any] = {"seed": seed, "workers": workers, **dict(zip(PART_ORDER, results)),
                              "seconds": round(time.perf_counter() - start, 2)}
    (out / "parts.json").write_text(json.dumps(report, indent=2))
    log.info("demo parts in %s (%.1fs): %s", out, report["seconds"],
             ", ".join(f"{n} loss {report[n]['loss_first_epoch']:.3f} -> {report[n]['loss_last_epoch']:.3f}" for n in PART_ORDER))
    return report
