"""Packed rows give each sample exactly the loss it has alone (tiny random Llama, transformers 5)."""
from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from dsvl.data import Encoded, collate_rows, model_inputs_for_packed, pack_rows
from dsvl.data.tokenize import IGNORE_INDEX


class ListStream:
    def __init__(self, items):
        self.items = list(items)

    def peek(self):
        return self.items[0]

    def pop(self):
        return self.items.pop(0)


def _sample(rng, n, key):
    ids = torch.randint(3, 100, (n,), generator=rng).tolist()
    labels = [IGNORE_INDEX] + ids[1:]
    labels[2] = IGNORE_INDEX  # some masked positions inside
    return Encoded(ids, labels, key=key, modality="text")


def _per_token_nll(logits, labels):
    logits, labels = logits[:, :-1], labels[:, 1:]
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")


def test_pack_rows_greedy_and_pending():
    stream = ListStream([Encoded([1] * n, [1] * n, key=str(k)) for k, n in enumerate([5, 4, 3, 6, 2, 7])])
    rows = pack_rows(stream, rows=2, max_length=10)
    assert [[s.key for s in r] for r in rows] == [["0", "1"], ["2", "3"]]
    assert stream.peek().key == "4"  # did not fit: stays for the next micro-batch
    batch = collate_rows(rows, pad_id=0, pad_to=12)
    assert batch["input_ids"].shape == (2, 12)
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 1, 2]
    assert batch["attention_mask"][1].tolist() == [1] * 9 + [0] * 3
    assert batch["stats"] == {"samples": 4, "tokens": 18, "pad_tokens": 6, "images": 0}


def test_packed_losses_equal_single_sample_losses():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    cfg._attn_implementation = "sdpa"
    model = LlamaForCausalLM(cfg).eval()
    rng = torch.Generator().manual_seed(1)
    samples = [_sample(rng, n, f"s{i}") for i, n in enumerate([9, 14, 6, 11, 8])]
    stopper = Encoded([1] * 40, [1] * 40, key="too-long-to-fit")
    rows = pack_rows(ListStream(samples + [stopper]), rows=2, max_length=32)
    assert sum(len(r) for r in rows) == 5 and all(len(r) > 1 for r in rows)
    batch = collate_rows(rows, pad_id=0, pad_to=34)
    with torch.no_grad():
        packed = model(**{k: v for k, v in model_inputs_for_packed(batch).items() if k != "labels"}).logits
        nll = _per_token_nll(packed, batch["labels"])
        # the naive call (2D mask + position_ids) leaks across samples: proves the test can fail
        leaky = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      position_ids=batch["position_ids"]).logits
        leak_nll = _per_token_nll(leaky, batch["labels"])
        worst, leak = 0.0, 0.0
        for b, row in enumerate(rows):
            t = 0
            for s in row:
                alone = model(input_ids=torch.tensor([s.input_ids])).logits
                ref = _per_token_nll(alone, torch.tensor([s.labels]))[0]
                n = len(s)
                got = nll[b, t:t + n - 1]
                mask = torch.tensor(s.labels[1:]) != IGNORE_INDEX
                worst = max(worst, (got[mask] - ref[mask]).abs().max().item())
                assert abs(got[mask].mean().item() - ref[mask].mean().item()) < 1e-5  # per-sample loss
                leak = max(leak, (leak_nll[b, t:t + n - 1][mask] - ref[mask]).abs().max().item())
                t += n
    assert worst < 1e-5
    assert leak > 1e-3
