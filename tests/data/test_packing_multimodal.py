"""Multimodal packing through the real core (tiny hybrid VLM): rows mixing 0-, 1-, 2- and 3-image samples of
different lengths give every sample the loss, gradients and logits it has alone (1e-5)."""
from __future__ import annotations

import pytest
import torch

from dsvl.data import Encoded, collate_rows
from dsvl.data.tokenize import IGNORE_INDEX
from dsvl.cli.models import build_model
from dsvl.cli.presets import model_config

IMAGE_INPUTS = [("pixel_values", 32), ("high_res_pixel_values", 64)]
PER_IMAGE = 16  # tiny SigLIP: 32 px / patch 8 = 4 x 4 tokens


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model(model_config("tiny")).train()  # train mode: the loss takes the chunked training path
    with torch.no_grad():
        m.vision.high.alpha.fill_(0.3)  # let the high-resolution tower contribute
    return m


def _sample(g: torch.Generator, images: int, text: int, key: str, image_token: int) -> Encoded:
    ids = [1]
    for _ in range(images):
        ids += torch.randint(3, 1000, (2,), generator=g).tolist() + [image_token] * PER_IMAGE
    ids += torch.randint(3, 1000, (text,), generator=g).tolist()
    labels = [IGNORE_INDEX] + [t if t != image_token else IGNORE_INDEX for t in ids[1:]]
    pixels = {name: torch.randn(images, 3, size, size, generator=g) for name, size in IMAGE_INPUTS} if images else {}
    return Encoded(ids, labels, num_images=images, key=key, modality="multimodal", pixels=pixels)


def _inputs(batch):
    keys = ("input_ids", "attention_mask", "position_ids", "pixel_values", "high_res_pixel_values")
    return {k: batch[k] for k in keys if k in batch}


def test_packed_multimodal_rows_equal_each_sample_alone(model):
    g = torch.Generator().manual_seed(3)
    tok = model.image_token_id
    rows = [[_sample(g, 1, 5, "a1", tok), _sample(g, 3, 11, "b3", tok), _sample(g, 0, 7, "c0", tok)],
            [_sample(g, 2, 9, "d2", tok), _sample(g, 1, 14, "e1", tok)]]
    batch = collate_rows(rows, pad_id=0, image_inputs=IMAGE_INPUTS, pad_to=120)
    assert batch["pixel_values"].shape[0] == 7 and batch["input_ids"].shape == (2, 120)
    params = [p for p in model.parameters() if p.requires_grad]

    def grads(loss):
        got = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, got)]

    packed = model(**_inputs(batch), return_logits=True).logits
    nll = torch.nn.functional.cross_entropy(packed[:, :-1].transpose(1, 2), batch["labels"][:, 1:], reduction="none",
                                            ignore_index=IGNORE_INDEX)
    with torch.no_grad():  # without position ids the samples see each other: the comparison can fail
        leaky = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                      **{k: batch[k] for k in ("pixel_values", "high_res_pixel_values")}).logits
    worst_loss = worst_grad = worst_logit = leak = 0.0
    for b, row in enumerate(rows):
        t = 0
        for s in row:
            n = len(s)
            alone_batch = collate_rows([[s]], pad_id=0, image_inputs=IMAGE_INPUTS)
            supervised = (alone_batch["labels"][0, 1:] != IGNORE_INDEX).sum()
            alone = model(**_inputs(alone_batch), labels=alone_batch["labels"], return_logits=True)
            assert int(alone.num_loss_tokens) == int(supervised)
            packed_sum = nll[b, t:t + n - 1].sum()
            worst_loss = max(worst_loss, abs(float(packed_sum / supervised - alone.loss)))
            ref = grads(alone.loss * supervised)
            # relative to each gradient's largest entry (the random SAM tower's reach ~1e5)
            worst_grad = max(worst_grad, max(float((x - y).abs().max()) / max(1.0, float(y.abs().max()))
                                             for x, y in zip(grads(packed_sum), ref)))
            alone_logits = alone.logits[0].detach()
            worst_logit = max(worst_logit, float((packed[b, t:t + n].detach() - alone_logits).abs().max()))
            leak = max(leak, float((leaky[b, t:t + n] - alone_logits).abs().max()))
            t += n
    assert worst_loss < 1e-5 and worst_grad < 1e-5 and worst_logit < 1e-5, (worst_loss, worst_grad, worst_logit)
    assert leak > 1e-3
