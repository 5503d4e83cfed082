"""VisionLanguageModel behaviour: image scattering, text-only batches, loss masking, generate, summaries."""
from __future__ import annotations

import pytest
import torch

from dsvl.cli.models import build_model
from dsvl.model import VisionLanguageModel, next_token_loss

from ._tiny import IMAGE_TOKEN, make_batch


@pytest.fixture(scope="module")
def model(tiny_cfg) -> VisionLanguageModel:
    torch.manual_seed(0)
    m = build_model(tiny_cfg).eval()
    with torch.no_grad():
        m.vision.high.alpha.fill_(0.3)
    return m


def test_images_fill_their_token_positions_in_order(model):
    batch = make_batch([2, 0, 1])  # three images: two in row 0, none in row 1, one in row 2
    with torch.no_grad():
        embeds = model.embed_inputs(batch["input_ids"], batch["pixel_values"], batch["high_res_pixel_values"])
        features = model.encode_images(batch["pixel_values"], batch["high_res_pixel_values"])
        text = model.llm.get_input_embeddings()(batch["input_ids"])
    mask = batch["input_ids"] == IMAGE_TOKEN
    assert torch.equal(embeds[mask], features.reshape(-1, features.shape[-1]))
    assert torch.equal(embeds[~mask], text[~mask])
    # each image is independent of the others: encoding image 2 alone gives the same rows
    with torch.no_grad():
        alone = model.encode_images(batch["pixel_values"][2:], batch["high_res_pixel_values"][2:])
    assert torch.allclose(embeds[2][mask[2]], alone[0], atol=1e-6)


def test_image_token_count_mismatch_is_a_clear_error(model):
    batch = make_batch([1, 1])
    with pytest.raises(ValueError, match=r"32 image tokens .* 3 images x 16 tokens per image = 48"):
        model(batch["input_ids"], pixel_values=torch.randn(3, 3, 32, 32), high_res_pixel_values=torch.randn(3, 3, 64, 64))
    with pytest.raises(ValueError, match="no pixel_values"):
        model(batch["input_ids"])
    with pytest.raises(ValueError, match="needs `high_res_pixel_values`"):
        model(batch["input_ids"], pixel_values=batch["pixel_values"])


def test_text_only_batch_never_runs_the_vision_towers(model):
    calls: list[str] = []
    hooks = [
        part.register_forward_pre_hook(lambda mod, args, name=name: calls.append(name))
        for name, part in model.parts().items()
        if name.startswith("vision") or name == "adaptor"
    ]
    try:
        batch = make_batch([0, 0])
        out = model(**batch)
        new = model.generate(batch["input_ids"][:1, :5], max_new_tokens=2, do_sample=False)
        assert calls == []
        model(**make_batch([1, 0]))  # the hooks do fire when there are images
        assert sorted(calls) == ["adaptor", "vision.high", "vision.low"]
    finally:
        for h in hooks:
            h.remove()
    assert out.loss is not None and torch.isfinite(out.loss) and new.shape[0] == 1


def test_loss_is_mean_next_token_nll_over_supervised_positions(model):
    batch = make_batch([1, 1], seed=5)
    labels = batch["labels"].clone()
    labels[0, :20] = -100  # a masked prompt
    out = model(**{**batch, "labels": labels})
    logp = torch.log_softmax(out.logits.float(), -1)
    nll, n = 0.0, 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1] - 1):
            if labels[b, t + 1] != -100:
                nll -= logp[b, t, labels[b, t + 1]].item()
                n += 1
    assert out.num_loss_tokens.item() == n
    assert out.loss.item() == pytest.approx(nll / n, rel=1e-5)
    # the first label is never predicted (nothing precedes it): changing it leaves the loss alone
    first = labels.clone()
    first[:, 0] = 7
    assert next_token_loss(out.logits, first)[0].item() == pytest.approx(out.loss.item())
    # nothing supervised: loss 0 with a graph (no NaN), count 0
    empty = model(**{**batch, "labels": torch.full_like(labels, -100)})
    assert empty.num_loss_tokens.item() == 0 and empty.loss.item() == 0.0 and empty.loss.requires_grad


def _greedy_by_hand(model, batch, steps):
    ids = batch["input_ids"]
    images = {k: batch[k] for k in ("pixel_values", "high_res_pixel_values") if k in batch}
    new = []
    for _ in range(steps):
        with torch.no_grad():
            logits = model(ids, **images).logits
        token = logits[:, -1].argmax(-1, keepdim=True)
        new.append(token)
        ids = torch.cat([ids, token], dim=1)
    return torch.cat(new, dim=1)


def test_generate_greedy_equals_an_argmax_loop(model):
    batch = make_batch([1], seq_len=23, seed=7)  # one image and text, no padding
    prompt = {k: batch[k] for k in ("input_ids", "pixel_values", "high_res_pixel_values")}
    out = model.generate(**prompt, max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert out.shape == (1, 6)  # only new tokens
    assert torch.equal(out, _greedy_by_hand(model, prompt, 6))


def test_generate_left_padded_batch_equals_one_by_one(model):
    a = make_batch([1], seq_len=23, seed=8)  # length 18 + 5 = 23, no padding
    b = make_batch([1], seq_len=25, seed=9)
    la, lb = int(a["attention_mask"].sum()), int(b["attention_mask"].sum())
    width = max(la, lb)

    def left(batch, length):
        ids = torch.zeros(1, width, dtype=torch.long)
        mask = torch.zeros(1, width, dtype=torch.long)
        ids[0, width - length :] = batch["input_ids"][0, :length]
        mask[0, width - length :] = 1
        return ids, mask

    (ia, ma), (ib, mb) = left(a, la), left(b, lb)
    pixels = {k: torch.cat([a[k], b[k]]) for k in ("pixel_values", "high_res_pixel_values")}
    kw = dict(max_new_tokens=4, do_sample=False, eos_token_id=None, pad_token_id=0)
    together = model.generate(torch.cat([ia, ib]), torch.cat([ma, mb]), **pixels, **kw)
    for row, (batch, length) in enumerate(((a, la), (b, lb))):
        single = model.generate(
            batch["input_ids"][:, :length],
            pixel_values=batch["pixel_values"],
            high_res_pixel_values=batch["high_res_pixel_values"],
            **kw,
        )
        assert torch.equal(together[row], single[0])


def test_parameter_summary_counts_each_part_and_trainable(tiny_cfg):
    model = build_model({**tiny_cfg, "llm": {**tiny_cfg["llm"], "tie_word_embeddings": True}})
    rows = {r["part"]: r for r in model.parameter_summary()}
    assert list(rows) == ["vision.low", "vision.high", "adaptor", "llm"]
    for name, part in model.parts().items():
        assert rows[name]["total"] == sum(p.numel() for p in part.parameters())  # parameters() dedups the tied head
    assert sum(r["total"] for r in rows.values()) == sum(p.numel() for p in model.parameters())
    # adaptor: Linear(64->32) + Linear(32->32) + Linear(64->64) with biases
    assert rows["adaptor"]["total"] == (64 * 32 + 32) + (32 * 32 + 32) + (64 * 64 + 64)
    model.vision.requires_grad_(False)
    rows = {r["part"]: r for r in model.parameter_summary()}
    assert rows["vision.low"]["trainable"] == rows["vision.high"]["trainable"] == 0
    assert rows["llm"]["trainable"] == rows["llm"]["total"] > 0


def test_siglip_only_model_ignores_high_res_and_has_no_high_part(tiny_siglip_cfg):
    model = build_model(tiny_siglip_cfg)
    assert model.vision.high is None and "vision.high" not in model.parts()
    assert [i.name for i in model.vision_spec.inputs] == ["pixel_values"]
    out = model(**make_batch([1, 2], hybrid=False), return_logits=True)
    assert out.logits.shape[:2] == (2, 48) and torch.isfinite(out.loss)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_cfg):
    batch = make_batch([1, 1], seed=11)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(3)
        model = build_model({**tiny_cfg, "gradient_checkpointing": checkpointing}).train()
        assert model.is_gradient_checkpointing == checkpointing
        model(**batch).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert grads[0].shape == grads[1].shape and torch.allclose(grads[0], grads[1], atol=1e-5)


def test_every_trainable_parameter_gets_a_gradient(tiny_cfg):
    """No dead weights (e.g. an unused pooling head) that would break DDP without find_unused_parameters."""
    torch.manual_seed(4)
    model = build_model(tiny_cfg).train()
    model(**make_batch([1, 1], seed=12)).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []
    assert model.vision.high.alpha.grad is not None and model.vision.high.alpha.item() == 0.0  # starts at 0, learns


def test_packed_rows_with_restarting_positions_do_not_attend_across_samples(model):
    """Packing (data side): position_ids restart per sample and no attention_mask; each sample sees only itself."""
    a = make_batch([1], seq_len=23, seed=13)
    b = make_batch([0], seq_len=5, seed=14)
    ids = torch.cat([a["input_ids"], b["input_ids"]], dim=1)
    positions = torch.cat([torch.arange(23), torch.arange(5)]).unsqueeze(0)
    images = {k: a[k] for k in ("pixel_values", "high_res_pixel_values")}
    with torch.no_grad():
        packed = model(ids, position_ids=positions, **images).logits
        # a collated packed batch also carries a 2D attention mask: isolation must not depend on leaving it out
        packed_masked = model(ids, attention_mask=torch.ones_like(ids), position_ids=positions, **images).logits
        alone_a = model(a["input_ids"], **images).logits
        alone_b = model(b["input_ids"]).logits
    assert torch.allclose(packed[:, :23], alone_a, atol=1e-5)
    assert torch.allclose(packed[:, 23:], alone_b, atol=1e-5)
    assert torch.allclose(packed_masked, packed, atol=1e-6)


def test_bf16_model_accepts_fp32_pixels(tiny_cfg):
    model = build_model(tiny_cfg).to(torch.bfloat16)
    out = model(**make_batch([1, 0], seed=15), return_logits=True)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)


def test_model_package_imports_without_lightning_or_hydra():
    """DESIGN.md: `dsvl.model` works in any PyTorch project. Module-level imports only (functions may import hydra lazily)."""
    import ast
    from pathlib import Path

    import dsvl.model

    banned = {"lightning", "pytorch_lightning", "hydra", "omegaconf"}
    offenders = []
    for path in Path(dsvl.model.__file__).parent.glob("*.py"):
        for node in ast.parse(path.read_text()).body:  # top level only
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                mods = [node.module or ""]
            else:
                continue
            offenders += [f"{path.name}: {m}" for m in mods if m.split(".")[0] in banned]
    assert offenders == []


def test_block_classes_name_each_parts_transformer_layer(model):
    names = {c.__name__ for c in model.block_classes()}
    assert names == {"SiglipEncoderLayer", "SamVisionLayer", "LlamaDecoderLayer"}
