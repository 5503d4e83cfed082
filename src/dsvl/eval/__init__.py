"""dsvl.eval: validation metrics (multi-choice PPL, text perplexity, multimodal loss) and scoring.

Public API:
- `MultipleChoiceAccuracy(mode="text"|"letter")`: update(option_nll, answer, categories, keys);
  compute() -> accuracy; summary() -> overall + per-category.
- `TextPerplexity`, `MultimodalLoss`: update(loss, num_tokens) with `VLMOutput.loss` / `.num_loss_tokens`.
- `score_options(model, mc_batch) -> (B, K)` mean option NLLs in one forward pass.
- `sequence_nll(logits, labels) -> (sum, count)` per row.
"""
from dsvl.eval.metrics import MultimodalLoss, MultipleChoiceAccuracy, MultipleChoiceResult, TextPerplexity
from dsvl.eval.scoring import forward_inputs, score_options, sequence_nll

__all__ = [
    "MultipleChoiceAccuracy",
    "MultipleChoiceResult",
    "MultimodalLoss",
    "TextPerplexity",
    "forward_inputs",
    "score_options",
    "sequence_nll",
]
