"""`VLMStage`: the LightningModule shared by the three stages (forward, loss, logging, validation,
optimizer, scheduler, freezing). A stage subclass only says what differs (the paper's Table 4):
which parts train, what its labels supervise, and its optimizer defaults.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import MeanMetric

from dsvl.eval.metrics import MultimodalLoss, MultipleChoiceAccuracy, TextPerplexity
from dsvl.eval.scoring import forward_inputs, score_options
from dsvl.model.vlm import full_numel
from dsvl.stages.freezing import apply_freezing, freeze_table
from dsvl.stages.token_loss import TokenExactLoss, owns_gradients

log = logging.getLogger(__name__)

OptimizerFactory = Callable[[Iterable[Any]], Optimizer]
SchedulerFactory = Callable[[Optimizer], torch.optim.lr_scheduler.LRScheduler]
MODALITY_CODE = {"text": 0, "multimodal": 1}
BETAS = (0.9, 0.95)  # Table 4, all stages


class VLMStage(LightningModule):
    """One training stage over a `VisionLanguageModel`. `optimizer` / `scheduler` are Hydra partials taking the
    parameter groups / the optimizer; None gives AdamW(lr=`default_lr`, betas 0.9/0.95, no decay) as in Table 4.
    `trainable` (None: `default_trainable`) names the parts that train. `global_batch`, `model_config`, `tokenizer`
    and `system_prompt` are saved as hyperparameters, so a `.ckpt` rebuilds its model and chat setup alone."""

    stage_name: ClassVar[str] = "stage"
    default_trainable: ClassVar[tuple[str, ...]] = ("adaptor", "llm")
    supervise: ClassVar[str] = "all"  # what the stage's labels cover (data.supervise): "all" text tokens, or "assistant" answers
    default_lr: ClassVar[float] = 1e-4

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        trainable: Sequence[str] | None = None,
        global_batch: int | None = None,
        model_config: Mapping[str, Any] | None = None,
        tokenizer: str | None = None,
        system_prompt: str | None = None,
    ) -> None:
        super().__init__()
        # plain values only (no nn.Module, no partials): the checkpoint loads with weights_only=True
        self.save_hyperparameters({"stage_name": self.stage_name, "model_config": dict(model_config or {}),
                                   "image_token_id": (model_config or {}).get("image_token_id"), "tokenizer": tokenizer,
                                   "system_prompt": system_prompt or None,
                                   "trainable": list(trainable) if trainable is not None else None,
                                   "global_batch": global_batch})
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.trainable_parts, self.frozen_parts = apply_freezing(model, self.default_trainable if trainable is None else trainable)
        self.val_text_ppl = TextPerplexity()
        self.val_mm_loss = MultimodalLoss()
        self.val_mc_acc = MultipleChoiceAccuracy()
        self.current_modality: str | None = None
        self.token_loss = TokenExactLoss()  # token-exact loss over the global step (dsvl.stages.token_loss)
        # logged metric objects: each step's value (`train/loss`, `train/loss_<modality>`), fed the global sums
        self.train_loss = nn.ModuleDict({k: MeanMetric() for k in ("all", *MODALITY_CODE, "mixed")})
        self._sample_batch: dict[str, Any] | None = None
        self._tokens_per_batch = 0

    # ------------------------------------------------------------------ freezing
    def train(self, mode: bool = True) -> VLMStage:
        """Train mode for trainable parts only: frozen parts stay in eval mode (dropout, norms)."""
        super().train(mode)
        if mode:
            parts = self.model.parts()
            for name in self.frozen_parts:
                parts[name].eval()
        return self

    def on_fit_start(self) -> None:
        # Lightning keeps the modes modules come with (it never calls .train() at fit start): frozen parts to eval here
        self.train(True)
        self._report_freezing()

    def configure_model(self) -> None:
        from dsvl.stages.strategies import configure_model  # FSDP2 / ZeRO-3 sharding, a meta build materialised

        configure_model(self)

    @rank_zero_only
    def _report_freezing(self) -> None:
        rows = list(self.model.parameter_summary())
        log.info("stage %s: training %s, frozen %s\n%s", self.stage_name, self.trainable_parts or "-",
                 self.frozen_parts or "-", freeze_table(rows))
        params = {f"parts/{r['part']}/total": int(r["total"]) for r in rows}
        params |= {f"parts/{r['part']}/trainable": int(r["trainable"]) for r in rows}
        params |= {"stage/name": self.stage_name, "stage/trainable": ",".join(self.trainable_parts),
                   "stage/frozen": ",".join(self.frozen_parts)}
        for logger in self.loggers:
            logger.log_hyperparams(params)

    # ------------------------------------------------------------------ forward / loss
    def forward(self, batch: Mapping[str, Any]) -> Any:
        inputs = forward_inputs(batch)
        if batch.get("labels") is not None:
            inputs["labels"] = batch["labels"]
        return self.model(**inputs)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        """Add the micro-batch to its global step's token-exact loss (`dsvl.stages.token_loss`) and return
        what to backpropagate; `train/loss` is logged once per global step, in `on_before_optimizer_step`."""
        out = self(batch)
        modality = str(batch.get("modality", "text"))
        self.current_modality = modality
        self._tokens_per_batch = int(batch["input_ids"].numel())
        accumulate = int(self.trainer.accumulate_grad_batches)
        returned = self.token_loss.micro_batch(out.loss, out.num_loss_tokens, batch_idx % accumulate == 0, accumulate,
                                               self.trainer.world_size, owns_gradients(self.trainer))
        size = int(batch["input_ids"].shape[0])
        self.log("train/modality", float(MODALITY_CODE.get(modality, -1)), on_step=True, batch_size=size)
        return returned  # the core gives 0 (with a graph) for a micro-batch without supervised tokens

    @property
    def flops_per_batch(self) -> int:
        """Training FLOPs of the last micro-batch, 6 x parameters x tokens (forward 2, backward 4), for
        Lightning's ThroughputMonitor (`train/flops_per_sec`, `train/mfu` on known accelerators)."""
        return 6 * sum(map(full_numel, self.model.parameters())) * self._tokens_per_batch

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Token-exact gradients and the step's `train/loss` (the global token mean, all ranks and
        micro-batches), then the total gradient norm of the trainable parameters, before clipping."""
        params = [p for g in optimizer.param_groups for p in g["params"]]
        sums = self.token_loss.finish_step(params, owns_gradients(self.trainer))
        if sums is not None:
            nll, tokens = sums
            for key in ("all", self.current_modality):
                metric = self.train_loss[key]
                metric(nll / tokens.clamp(min=1), tokens)  # forward: the step's own token-weighted value, already global
                self.log("train/loss" if key == "all" else f"train/loss_{key}", metric, on_step=True, on_epoch=False,
                         prog_bar=key == "all")
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if grads:  # torch's own total norm: Lightning's grad_norm cannot read FSDP2's sharded (DTensor) gradients
            norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
            self.log("train/grad_norm", norm.full_tensor() if hasattr(norm, "full_tensor") else norm, on_step=True, on_epoch=False)

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        if "row_option" in batch:
            scores = score_options(self.model, batch)
            self.val_mc_acc.update(scores, batch["answer"], batch.get("categories"), batch.get("keys"))
            return
        if self._sample_batch is None and batch.get("modality") == "multimodal":  # for `sample_predictions`, on CPU
            self._sample_batch = {k: (v.detach().cpu() if torch.is_tensor(v) else v) for k, v in batch.items()}
        out = self(batch)
        metric = self.val_text_ppl if batch.get("modality", "text") == "text" else self.val_mm_loss
        metric.update(out.loss.detach(), out.num_loss_tokens)

    @torch.no_grad()
    def sample_predictions(self, limit: int = 4, max_new_tokens: int = 24) -> list[dict[str, Any]]:
        """Greedy answers (`dsvl.eval.generation`) for up to `limit` samples of the kept validation batch: rows
        of `image` (HxWx3 uint8 of the first image), `prompt`, `prediction`, `target` (W&B tables)."""
        from dsvl.eval.generation import ChatGenerator, GenerationSettings

        batch, self._sample_batch = self._sample_batch, None
        dm = self.trainer.datamodule if self._trainer is not None else None
        tokenizer = getattr(getattr(getattr(dm, "encoder", None), "text", None), "tokenizer", None)
        if batch is None or tokenizer is None:
            return []
        generator, settings = ChatGenerator(self.model, tokenizer), GenerationSettings(max_new_tokens=max_new_tokens)
        spec, image_token_id = self.model.vision_spec, self.model.image_token_id
        images_before, rows = 0, []
        for i in range(min(limit, batch["input_ids"].shape[0])):
            ids, labels = batch["input_ids"][i], batch["labels"][i]
            length = int(batch["attention_mask"][i].sum())
            n_images = int((ids == image_token_id).sum()) // max(int(spec.num_image_tokens), 1)
            supervised = (labels[:length] != -100).nonzero()
            start = int(supervised[0]) if len(supervised) else length
            inputs = {"input_ids": ids[None, :start], "attention_mask": torch.ones(1, start, dtype=torch.long)}
            inputs |= {inp.name: batch[inp.name][images_before:images_before + n_images]
                       for inp in spec.inputs if inp.name in batch and n_images}
            [answer] = generator.generate_ids(inputs, settings)
            image = None
            if n_images and spec.inputs and spec.inputs[0].name in batch:
                low = spec.inputs[0]
                x = batch[low.name][images_before].float()
                mean, std = torch.tensor(low.mean).view(3, 1, 1), torch.tensor(low.std).view(3, 1, 1)
                image = ((x * std + mean).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
            rows.append({"image": image, "prompt": generator.decode(ids[:start][ids[:start] != image_token_id].tolist()),
                         "prediction": generator.decode(answer), "target": generator.decode(ids[start:length].tolist())})
            images_before += n_images
        if self.model.training:
            self.train(True)  # generate_ids put the whole model back in train mode: frozen parts to eval
        return rows

    def on_validation_epoch_start(self) -> None:
        self._sample_batch = None

    def on_validation_epoch_end(self) -> None:
        for name, metric in (("val/text_ppl", self.val_text_ppl), ("val/mm_loss", self.val_mm_loss), ("val/mc_acc", self.val_mc_acc)):
            # decided on the global count: a rank that saw no batch of a kind must still join compute()'s sync
            count = torch.tensor(float(metric.update_count), device=self.device)
            if self._trainer is not None and self.trainer.world_size > 1:
                count = self.trainer.strategy.reduce(count, reduce_op="sum")
            if count.item():
                value = metric.compute()
                if not math.isnan(float(value)):
                    self.log(name, value.float(), prog_bar=name == "val/mc_acc", sync_dist=False)
            metric.reset()

    # ------------------------------------------------------------------ optimizer
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters only; biases and norms (ndim < 2) never decay. The group names show
        in LearningRateMonitor's metrics (`train/lr/decay`, `train/lr/no_decay`)."""
        decay, no_decay = [], []
        for p in self.trainable_parameters():
            (decay if p.ndim >= 2 else no_decay).append(p)
        groups = [{"params": decay, "name": "decay"}, {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]
        return [g for g in groups if g["params"]]

    def configure_optimizers(self) -> Any:
        groups = self.parameter_groups()
        if not groups:
            raise ValueError(f"stage {self.stage_name}: no trainable parameters (stage.trainable is empty)")
        factory = self.optimizer_factory or partial(torch.optim.AdamW, lr=self.default_lr, betas=BETAS, weight_decay=0.0)
        optimizer = factory(groups)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1, "name": "train/lr"}}
