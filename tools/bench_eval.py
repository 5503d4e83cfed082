"""Benchmark questions/s of multiple-choice scoring: every option row encoding its own copy of the
question's images (dsvl before issue 15) vs each question's images encoded once and the features
shared by its option rows (`dsvl.eval.score_options` now). Same questions, same model, same
batches; the option scores of both must agree.

    python tools/bench_eval.py [--questions 48] [--device cuda]   (also a section of tools/bench.py)
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

# the mid-size hybrid of tools/bench.py: 4-layer LLM of width 256, towers at 64 / 128 px (64 image tokens)
MID = ["model.llm.hidden_size=256", "model.llm.intermediate_size=688", "model.llm.num_hidden_layers=4",
       "model.llm.num_attention_heads=8", "model.llm.num_key_value_heads=8",
       "model.vision.low.image_size=64", "model.vision.low.hidden_size=64", "model.vision.low.intermediate_size=128",
       "model.vision.high.image_size=128"]


def mid_model(tokenizer: Any, device: str) -> torch.nn.Module:
    """The mid-size hybrid with random weights, fitted to the tokenizer (image token, vocabulary)."""
    from omegaconf import OmegaConf

    from dsvl.cli._config import compose
    from dsvl.data.chat import IMAGE_TOKEN
    from dsvl.cli.models import build_model

    node = OmegaConf.to_container(compose(["model=tiny", *MID]).model, resolve=True)
    node["image_token_id"] = int(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    node["llm"]["vocab_size"] = max(int(node["llm"]["vocab_size"]), len(tokenizer))
    torch.manual_seed(0)
    return build_model(node).to(device).eval()


def _best_seconds(fns: list[Any], repeats: int, device: str) -> list[float]:
    """Fastest of `repeats` runs of each function, run in turns so both see the same machine load."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


@torch.no_grad()
def bench_option_scoring(data_dir: Path, questions: int = 48, repeats: int = 3, device: str = "cpu",
                         batch_size: int = 8) -> dict[str, Any]:
    """Questions/s of option scoring before (pixels per option row) and after (images encoded once per question)."""
    from transformers import AutoTokenizer

    from dsvl.data.demo import generate_samples
    from dsvl.data.multiple_choice import MultipleChoiceCollator, mc_sample_from_json
    from dsvl.eval.benchmarks.base import load_image
    from dsvl.eval.scoring import forward_inputs, score_options, sequence_nll, to_model_device

    tokenizer = AutoTokenizer.from_pretrained(str(data_dir / "tokenizer"))
    model = mid_model(tokenizer, device)
    collator = MultipleChoiceCollator(tokenizer, model.vision_spec, mode="text")
    samples = [mc_sample_from_json(s["json"], f"q{i}", [load_image(s["0.png"], f"q{i}")])
               for i, s in enumerate(generate_samples("mc", "val", questions, seed=0))]
    batches = [to_model_device(collator(samples[i:i + batch_size]), model) for i in range(0, len(samples), batch_size)]

    def before() -> list[torch.Tensor]:
        out = []
        for b in batches:
            sums, counts = sequence_nll(model(**forward_inputs(b)).logits, b["labels"])
            scores = torch.full((len(b["keys"]), int(b["row_option"].max()) + 1), float("inf"), device=sums.device)
            scores[b["row_sample"], b["row_option"]] = sums / counts
            out.append(scores)
        return out

    def after() -> list[torch.Tensor]:
        return [score_options(model, b) for b in batches]

    diff = max(float((a - b).abs().max()) for a, b in zip(before(), after()))  # also the warm-up pass
    t_before, t_after = _best_seconds([before, after], repeats, device)
    rows = sum(int(b["input_ids"].shape[0]) for b in batches)
    return {"questions": len(samples), "option_rows": rows, "image_tokens_per_image": model.num_image_tokens,
            "before_questions_per_s": len(samples) / t_before, "after_questions_per_s": len(samples) / t_after,
            "ratio": t_before / t_after, "max_abs_score_diff": diff, "device": device}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "demo")
    ap.add_argument("--questions", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.data_dir / "tokenizer").is_dir():
        from dsvl.data.demo import make_demo_data

        make_demo_data(args.data_dir)
    print(json.dumps(bench_option_scoring(args.data_dir, args.questions, args.repeats, args.device), indent=2))


if __name__ == "__main__":
    main()
