"""`VisionLanguageModel`: vision encoder + adaptor + causal LM, with images entering by an image-token mask."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer

from .cfgutil import complete
from .errors import ConfigError
from .fused_loss import FusedLinearCrossEntropy, chunk_positions
from .spec import VisionSpec
from .vision import VisionEncoder

IGNORE_INDEX = -100


@dataclass
class VLMOutput:
    """Mean next-token loss, the logits (None on the training path), positions the loss averaged, the KV cache."""

    loss: torch.Tensor | None
    logits: torch.Tensor | None
    num_loss_tokens: torch.Tensor | None = None
    past_key_values: Any = None


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean NLL, count) of predicting labels[t+1] from position t, over labels != -100 (computed in fp32)."""
    shift_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    shift_labels = labels[:, 1:].reshape(-1).to(logits.device)
    count = (shift_labels != IGNORE_INDEX).sum()
    total = F.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / count.clamp(min=1), count


LOSS_CHUNK = 1024  # positions per chunk of the fallback path of `chunked_next_token_loss`: 1024 x 102,400 fp32 logits = 0.4 GB


def fusable_head(head: nn.Module) -> bool:
    """True for a plain, hook-free `nn.Linear` with ordinary tensors (the fused loss calls its weight directly); a
    LoRA-wrapped, FSDP2-sharded (DTensor) or hooked head runs its own forward in checkpointed chunks instead."""
    if type(head) is not nn.Linear or head._forward_hooks or head._forward_pre_hooks:
        return False
    return all(type(p) in (torch.Tensor, nn.Parameter) for p in (head.weight, head.bias) if p is not None)


def chunked_next_token_loss(hidden: torch.Tensor, head: nn.Module, labels: torch.Tensor,
                            chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`next_token_loss(head(hidden), labels)` without materialising the logits, over supervised positions only, `chunk`
    positions at a time: a plain linear head by `fused_loss` (default: 64 MB of logits), any other head under
    activation checkpointing (default `LOSS_CHUNK`; one chunk's fp32 logits and their gradient at once)."""
    shift_labels = labels[:, 1:].to(hidden.device)
    keep = shift_labels != IGNORE_INDEX
    count = keep.sum()
    states, targets = hidden[:, :-1][keep], shift_labels[keep]
    if fusable_head(head):
        chunk = chunk or chunk_positions(head.weight.shape[0])
        total = FusedLinearCrossEntropy.apply(states, head.weight, head.bias, targets, chunk)
        return total / count.clamp(min=1), count
    total = states.float().sum() * 0.0  # a zero with a graph, also when nothing is supervised
    step = chunk or LOSS_CHUNK
    for i in range(0, int(targets.shape[0]), step):
        part = checkpoint(lambda h, t: F.cross_entropy(head(h).float(), t, reduction="sum"),
                          states[i:i + step], targets[i:i + step], use_reentrant=False)
        total = total + part
    return total / count.clamp(min=1), count


def full_numel(param: torch.Tensor) -> int:
    """Elements of the whole parameter, also when DeepSpeed ZeRO-3 has partitioned it (its local data is then empty)."""
    return int(getattr(param, "ds_numel", param.numel()))


class VisionLanguageModel(nn.Module):
    """DeepSeek-VL-style model: `vision` (low/high towers) -> `adaptor` -> image-token positions of `llm`'s input embeddings."""

    def __init__(
        self,
        vision: VisionEncoder,
        adaptor: nn.Module | Callable[..., nn.Module],
        llm: PreTrainedModel,
        image_token_id: int,
        config: dict[str, Any] | None = None,
    ) -> None:
        """`adaptor` may be a factory (Hydra's `_partial_: true`, a `functools.partial`): it is built with the widths it
        maps between (`in_dim`, `low_in_dim`, `high_in_dim` from the vision side, `out_dim` = the LLM's hidden size).
        The parts are checked to fit (one-line `ConfigError`); build them on meta to check before any weights exist."""
        super().__init__()
        info = getattr(vision, "info", None)
        if info is None:
            raise ConfigError("model.vision must build a module with `info` (widths, token grid), e.g. dsvl.model.vision.VisionEncoder")
        embeddings = llm.get_input_embeddings()
        hidden, vocab = int(embeddings.embedding_dim), int(embeddings.num_embeddings)
        adaptor = complete(adaptor, "model.adaptor", {
            "in_dim": (info.embed_dim, "the vision feature width"),
            "low_in_dim": (info.low.embed_dim if info.low else None, "the low-res (SigLIP) width"),
            "high_in_dim": (info.high.embed_dim if info.high else None, "the high-res (SAM) width"),
            "out_dim": (hidden, "llm hidden_size"),
        })
        if all(p.is_meta for p in adaptor.parameters()):  # a real build was checked on meta before
            with torch.device("meta"):
                out = adaptor(torch.empty(1, info.num_tokens, info.embed_dim)).shape[-1]
            if out != hidden:
                raise ConfigError(f"model.adaptor ({type(adaptor).__qualname__}) maps vision features of width {info.embed_dim} "
                                  f"to width {out}, but llm hidden_size is {hidden}; accepted: an adaptor to {hidden}")
        if isinstance(image_token_id, bool) or not isinstance(image_token_id, int):
            raise ConfigError(f"model.image_token_id must be an int (the tokenizer's image token id), got {image_token_id!r}")
        if not 0 <= image_token_id < vocab:
            raise ConfigError(f"model.image_token_id={image_token_id} is outside the LLM vocabulary [0, {vocab}); "
                              "accepted: a token id of the tokenizer")
        self.vision = vision
        self.adaptor = adaptor
        self.llm = llm
        self.image_token_id = image_token_id
        self.config = config or {}

    def parts(self) -> dict[str, nn.Module]:
        """Part name -> module for freezing and summaries: 'vision.low', 'vision.high', 'adaptor', 'llm' (absent parts left out)."""
        parts = {"vision.low": self.vision.low, "vision.high": self.vision.high, "adaptor": self.adaptor, "llm": self.llm}
        return {name: module for name, module in parts.items() if module is not None}

    def parameter_summary(self) -> list[dict[str, int | str]]:
        """Rows `{part, total, trainable}`, one per part of `parts()`; a parameter shared by two parts counts in the first."""
        seen: set[int] = set()
        rows: list[dict[str, int | str]] = []
        for name, module in self.parts().items():
            params = [p for p in module.parameters() if id(p) not in seen]
            seen.update(id(p) for p in params)
            rows.append({"part": name, "total": sum(map(full_numel, params)),
                         "trainable": sum(full_numel(p) for p in params if p.requires_grad)})
        return rows

    @property
    def vision_spec(self) -> VisionSpec:
        """Image inputs and tokens per image (what `dsvl.data` needs)."""
        return self.vision.info.spec

    @property
    def num_image_tokens(self) -> int:
        return self.vision.info.num_tokens

    def _checkpointable(self) -> list[PreTrainedModel]:
        towers = (getattr(t, "model", None) for t in (self.vision.low, self.vision.high))
        return [m for m in (self.llm, *towers) if isinstance(m, PreTrainedModel) and m.supports_gradient_checkpointing]

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict[str, Any] | None = None) -> None:
        """Activation checkpointing in the LLM and every transformers tower (memory for compute)."""
        kwargs = gradient_checkpointing_kwargs or {"use_reentrant": False}
        for module in self._checkpointable():
            if hasattr(module, "activation_checkpointing_enable"):  # transformers >= 5.x name
                module.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                module.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def block_classes(self) -> set[type[nn.Module]]:
        """The repeated transformer block classes of every part (e.g. SiglipEncoderLayer, SamVisionLayer,
        LlamaDecoderLayer): the units for FSDP's `auto_wrap_policy` and activation-checkpointing policies."""
        return {type(m) for m in self.modules() if isinstance(m, GradientCheckpointingLayer)}

    @property
    def is_gradient_checkpointing(self) -> bool:
        """True when every checkpointable part recomputes activations."""
        return all(any(getattr(m, "gradient_checkpointing", False) for m in part.modules()) for part in self._checkpointable())

    def encode_images(
        self, pixel_values: torch.Tensor | None = None, high_res_pixel_values: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Images -> (num_images, num_image_tokens, llm hidden): towers, then adaptor."""
        return self.adaptor(self.vision(pixel_values=pixel_values, high_res_pixel_values=high_res_pixel_values))

    def embed_inputs(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.Tensor | None = None,
        high_res_pixel_values: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings with image features scattered, in order, over the positions holding `image_token_id`;
        `image_embeds`: features `encode_images` already computed (rows sharing an image reuse them)."""
        embeds = self.llm.get_input_embeddings()(input_ids)
        image_mask = input_ids == self.image_token_id
        if image_embeds is None and pixel_values is None and high_res_pixel_values is None:
            if bool(image_mask.any()):
                raise ValueError(f"input_ids hold {int(image_mask.sum())} image tokens (id {self.image_token_id}) "
                                 "but no pixel_values were given")
            return embeds
        features = image_embeds if image_embeds is not None else self.encode_images(pixel_values, high_res_pixel_values)
        num_images, per_image = features.shape[0], features.shape[1]
        num_tokens = int(image_mask.sum())
        if num_tokens != num_images * per_image:
            raise ValueError(f"input_ids hold {num_tokens} image tokens (id {self.image_token_id}) but {num_images} images x "
                             f"{per_image} tokens per image = {num_images * per_image}; each image needs exactly {per_image} "
                             "consecutive image tokens")
        return embeds.masked_scatter(image_mask.unsqueeze(-1), features.to(embeds.dtype))

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        high_res_pixel_values: torch.Tensor | None = None,
        use_cache: bool = False,
        image_embeds: torch.Tensor | None = None,
        return_logits: bool | None = None,
        **llm_kwargs: Any,
    ) -> VLMOutput:
        """The logits and, with `labels` (unshifted, -100 = no loss), the mean next-token NLL. Training (train mode,
        gradients on; or ``return_logits=False``) computes the loss without the full logits (logits=None)."""
        embeds = self.embed_inputs(input_ids, pixel_values, high_res_pixel_values, image_embeds)
        if position_ids is not None and not use_cache:
            # Packed rows (positions restart at 0 for each sample): transformers keeps attention inside
            # each segment only when no 2D mask is given (masking_utils.find_packed_sequence_indices);
            # with one, samples would attend across boundaries. Padding is a segment of its own.
            attention_mask = None
        inputs = dict(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                      use_cache=use_cache, **llm_kwargs)
        if return_logits is None:
            return_logits = not (self.training and torch.is_grad_enabled())
        # an LLM that is its own FSDP2 unit gathers its head and final norm only inside its own forward: full logits there
        if labels is not None and not return_logits and not use_cache and not isinstance(self.llm, FSDPModule):
            hidden = self.llm.get_decoder()(**inputs).last_hidden_state
            loss, count = chunked_next_token_loss(hidden, self.llm.get_output_embeddings(), labels)
            return VLMOutput(loss=loss, logits=None, num_loss_tokens=count)
        out = self.llm(**inputs)
        loss = count = None
        if labels is not None:
            loss, count = next_token_loss(out.logits, labels)
        return VLMOutput(loss=loss, logits=out.logits, num_loss_tokens=count, past_key_values=out.get("past_key_values"))

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        high_res_pixel_values: torch.Tensor | None = None,
        **generate_kwargs: Any,
    ) -> torch.LongTensor:
        """New token ids (B, new) from the LLM's transformers `generate` on image-filled embeddings (KV cache, sampling, left padding)."""
        embeds = self.embed_inputs(input_ids, pixel_values, high_res_pixel_values)
        # no attention_mask: transformers' generate attends to every position of `inputs_embeds`
        return self.llm.generate(inputs_embeds=embeds, attention_mask=attention_mask, **generate_kwargs)

    @classmethod
    def from_pretrained(cls, dir_or_hub_id: str | Path, adapter: str | Path | None = None, **hf_kwargs: Any) -> "VisionLanguageModel":
        """Load a transformers `deepseek_vl` / `deepseek_vl_hybrid` checkpoint (never remote code); with
        `adapter`, a peft LoRA adapter directory merged onto it. `hf_kwargs`: see `hf_interop.load_hf_pretrained`."""
        from .hf_interop import load_hf_pretrained

        return load_hf_pretrained(cls, dir_or_hub_id, adapter=adapter, **hf_kwargs)

    def save_pretrained(self, save_directory: str | Path, **hf_kwargs: Any) -> None:
        """Write a directory `AutoModelForImageTextToText.from_pretrained` loads (safetensors)."""
        from .hf_interop import save_hf_pretrained

        save_hf_pretrained(self, save_directory, **hf_kwargs)
