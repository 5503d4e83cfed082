"""Packing: rows hold several samples (text, or multimodal with all their images) and each sample gets
exactly the loss, gradients and logits it has alone; the buffered best-fit packer is deterministic,
loses and duplicates nothing, and resumes exactly in the middle of its buffer."""
from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from dsvl.data import Encoded, collate_rows, pack_rows
from dsvl.data.packing import BufferedPacker
from dsvl.data.tokenize import IGNORE_INDEX


class ListStream:
    """A stream over a list with the peek/pop/state_dict/load_state_dict of `Mixture`."""

    def __init__(self, items):
        self.items, self.i = list(items), 0

    def peek(self):
        return self.items[self.i]

    def pop(self):
        self.i += 1
        return self.items[self.i - 1]

    def state_dict(self):
        return {"i": self.i}

    def load_state_dict(self, state):
        self.i = state["i"]


def _sample(rng, n, key):
    ids = torch.randint(3, 100, (n,), generator=rng).tolist()
    labels = [IGNORE_INDEX] + ids[1:]
    labels[2] = IGNORE_INDEX  # some masked positions inside
    return Encoded(ids, labels, key=key, modality="text")


def _per_token_nll(logits, labels):
    logits, labels = logits[:, :-1], labels[:, 1:]
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")


def _lengths(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [int(x) for x in torch.randint(8, 120, (n,), generator=g)]


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


def test_best_fit_packer_fills_rows_loses_nothing_and_beats_greedy():
    samples = [Encoded([1] * n, [1] * n, key=str(k)) for k, n in enumerate(_lengths(3000))]
    packer = BufferedPacker(ListStream(samples), max_length=256, buffer_size=128)
    batches = [packer.rows(4) for _ in range(100)]
    keys = [s.key for rows in batches for row in rows for s in row]
    pending = [p.sample.key for p in packer.buffer]
    assert len(keys) == len(set(keys))  # nothing duplicated ...
    assert sorted(keys + pending, key=int) == [str(k) for k in range(len(keys) + len(pending))]  # ... nor lost
    assert all(sum(len(s) for s in row) <= 256 for rows in batches for row in rows)
    # no sample waits long: everything drawn before the last few micro-batches' buffer has left
    assert min(int(k) for k in pending) > len(keys) - 4 * 128
    fill = sum(len(s) for rows in batches for row in rows for s in row) / (100 * 4 * 256)
    greedy_stream = ListStream(samples)
    greedy = [pack_rows(greedy_stream, 4, 256) for _ in range(100)]
    greedy_fill = sum(len(s) for rows in greedy for row in rows for s in row) / (100 * 4 * 256)
    assert fill > 0.98 and fill > greedy_fill + 0.03, (fill, greedy_fill)
    # deterministic
    again = BufferedPacker(ListStream(samples), max_length=256, buffer_size=128)
    assert [[s.key for s in row] for row in again.rows(4)] == [[s.key for s in row] for row in batches[0]]


def test_packer_resumes_exactly_in_the_middle_of_its_buffer():
    samples = [Encoded([1] * n, [1] * n, key=str(k)) for k, n in enumerate(_lengths(600, seed=1))]
    packer = BufferedPacker(ListStream(samples), max_length=256, buffer_size=40)
    for _ in range(7):
        packer.rows(3)
    state = packer.state_dict()
    assert 0 < len(state["pending"]) < state["drawn"]  # some of the drawn samples already left the buffer
    expected = [[[s.key for s in row] for row in packer.rows(3)] for _ in range(10)]
    resumed = BufferedPacker(ListStream(samples), max_length=256, buffer_size=40)
    resumed.load_state_dict(state)
    assert [[[s.key for s in row] for row in resumed.rows(3)] for _ in range(10)] == expected


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
        # isolated: no 2D mask, no KV cache (transformers then finds the segments from position_ids)
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
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
