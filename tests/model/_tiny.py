"""Tiny sizes and batches shared by the model tests: real transformers classes, random weights, CPU, milliseconds."""
from __future__ import annotations

import torch

IMAGE_TOKEN = 1023
TOKENS_PER_IMAGE = 16  # tiny SigLIP: 32 px / patch 8 = 4x4

# The same sizes as the tiny presets, written out independently as transformers configs.
HF_SIGLIP = dict(
    model_type="siglip_vision_model", image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
    num_hidden_layers=2, num_attention_heads=2,
)
HF_SAM = dict(
    model_type="sam_vision_model", image_size=64, patch_size=8, hidden_size=32, mlp_dim=64, num_hidden_layers=2,
    num_attention_heads=2, window_size=4, global_attn_indexes=[1], output_channels=16,
)
HF_LLAMA = dict(
    model_type="llama", vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024, rms_norm_eps=1e-6,
)


def make_batch(images_per_sample: list[int], seq_len: int = 48, hybrid: bool = True, seed: int = 0) -> dict:
    """Right-padded batch; sample i holds images_per_sample[i] runs of image tokens between text tokens."""
    g = torch.Generator().manual_seed(seed)
    rows, labels, masks = [], [], []
    for i, n in enumerate(images_per_sample):
        ids: list[int] = []
        for _ in range(n):
            ids += torch.randint(3, 1000, (2,), generator=g).tolist() + [IMAGE_TOKEN] * TOKENS_PER_IMAGE
        ids += torch.randint(3, 1000, (5 + 2 * i,), generator=g).tolist()
        pad = seq_len - len(ids)
        assert pad >= 0
        rows.append(ids + [0] * pad)
        masks.append([1] * len(ids) + [0] * pad)
        labels.append([t if t != IMAGE_TOKEN else -100 for t in ids] + [-100] * pad)
    total = sum(images_per_sample)
    batch = {
        "input_ids": torch.tensor(rows),
        "attention_mask": torch.tensor(masks),
        "labels": torch.tensor(labels),
    }
    if total:
        batch["pixel_values"] = torch.randn(total, 3, 32, 32, generator=g)
        if hybrid:
            batch["high_res_pixel_values"] = torch.randn(total, 3, 64, 64, generator=g)
    return batch
