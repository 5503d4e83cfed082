"""`DSVLDataModule`: the Lightning side of the data pipeline, built from Hydra config (conf/data/).

Trainer wiring (see docs/data_format.md, "Training with DSVLDataModule"):
- the train loader is endless: set ``max_steps`` and an integer ``val_check_interval`` with
  ``check_val_every_n_epoch=None``; ``use_distributed_sampler`` is irrelevant (the dataset
  shards itself by rank and worker and the DataLoader has batch_size=None);
- ``accumulate_grad_batches`` is read from the trainer (one global step = that many
  micro-batches, all of one modality);
- the module's ``on_before_batch_transfer`` strips ``batch["state"]`` and records the position;
  a LightningModule that overrides ``on_before_batch_transfer`` must call
  ``trainer.datamodule.on_before_batch_transfer(batch, idx)`` first.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import lightning as L
from torch.utils.data import DataLoader

from dsvl.data.accounting import DataAccounting
from dsvl.data.bad_samples import SkipCounter
from dsvl.data.chat import DEFAULT_SYSTEM_PROMPT
from dsvl.data.encode import SampleEncoder
from dsvl.data.errors import DataConfigError
from dsvl.data.grouped import BatchingConfig, EvalBatches, GlobalStepBatches, packed_modalities
from dsvl.data.images import ImagePreprocessor
from dsvl.data.mixture import SourceConfig, parse_sources
from dsvl.data.multiple_choice import MultipleChoiceBatches, MultipleChoiceCollator
from dsvl.data.schedule import ModalitySchedule
from dsvl.data.streams import expand_urls
from dsvl.data.tokenize import TextEncoder
from dsvl.model.spec import ImageInputSpec, VisionSpec

log = logging.getLogger(__name__)
STATE_VERSION = 1


def as_vision_spec(spec: VisionSpec | Mapping[str, Any] | None) -> VisionSpec | None:
    """A VisionSpec from an object or a config mapping ``{inputs: [{name, size, mean, std}], num_image_tokens}``."""
    if spec is None or isinstance(spec, VisionSpec):
        return spec
    inputs = tuple(ImageInputSpec(str(i["name"]), int(i["size"]), tuple(i["mean"]), tuple(i["std"]))  # type: ignore[arg-type]
                   for i in spec.get("inputs", ()))
    return VisionSpec(inputs, int(spec.get("num_image_tokens", 0)))


def load_tokenizer(path: str) -> Any:
    """AutoTokenizer from a local directory, with a one-line error if it is missing."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"cannot load tokenizer from {path!r} (make the demo data with `dsvl-data demo`?): "
                                f"{str(e).splitlines()[0]}") from None


class DSVLDataModule(L.LightningDataModule):
    """Grouped (or mixed / single-modality) training batches, validation batches, exact resume."""

    def __init__(
        self,
        tokenizer: str | Any,
        train_sources: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        val_sources: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        vision_spec: VisionSpec | Mapping[str, Any] | None = None,
        micro_batch_size: int = 8,
        val_batch_size: int | None = None,
        max_length: int = 512,
        packing: bool | Mapping[str, bool] = False,
        packing_buffer: int = 256,
        pad_to_max_length: bool = False,
        mode: str = "grouped",
        schedule: Mapping[str, Any] | ModalitySchedule | None = None,
        accumulate_grad_batches: int | None = None,
        supervise: str = "all",
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        num_workers: int = 0,
        prefetch_factor: int | None = None,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        val_max_batches: int | None = None,
        pin_memory: bool = False,
        mc_val: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.tokenizer_src = tokenizer
        self.train_sources = parse_sources(train_sources)
        self.val_sources = parse_sources(val_sources)
        if not self.train_sources:
            raise DataConfigError("data.train_sources is empty")
        self.vision = as_vision_spec(vision_spec)
        if isinstance(schedule, ModalitySchedule):
            self.schedule = schedule
        else:
            self.schedule = ModalitySchedule(**dict(schedule or {}))
        self.micro_batch_size, self.val_batch_size = int(micro_batch_size), int(val_batch_size or micro_batch_size)
        self.max_length, self.pad_to_max_length = int(max_length), bool(pad_to_max_length)
        self.packing, self.packing_buffer = packed_modalities(packing), int(packing_buffer)
        self.mode, self.accumulate = mode, accumulate_grad_batches
        self.supervise, self.system_prompt = supervise, system_prompt
        self.num_workers, self.prefetch_factor, self.pin_memory = int(num_workers), prefetch_factor, pin_memory
        self.shuffle_buffer, self.seed, self.val_max_batches = int(shuffle_buffer), int(seed), val_max_batches
        # multiple-choice validation (`val/mc_acc`): {shards, batch_size, limit, mode, max_length}
        self.mc_val = dict(mc_val) if mc_val and mc_val.get("shards") else None
        BatchingConfig(mode=mode)  # fail early on a bad mode
        has_images = bool(self.vision and self.vision.inputs and self.vision.num_image_tokens > 0)
        if mode != "text_only" and not has_images and any(s.modality == "multimodal" for s in self.train_sources):
            raise DataConfigError("multimodal data sources need a vision_spec with image inputs and num_image_tokens > 0 "
                             "(instantiate with vision_spec=dsvl.model.vision_spec(cfg.model))")
        self.accounting = DataAccounting()
        self._encoder: SampleEncoder | None = None
        self._next_micro_index = 0
        self._worker_states: dict[int, dict[str, Any]] = {}
        self._resume: dict[str, Any] | None = None
        self._val_counter = SkipCounter()

    # --- building blocks ---------------------------------------------------------------------
    @property
    def encoder(self) -> SampleEncoder:
        """Tokenizer + image preprocessing, built once (also pickled into the DataLoader workers)."""
        if self._encoder is None:
            tok = load_tokenizer(self.tokenizer_src) if isinstance(self.tokenizer_src, str) else self.tokenizer_src
            n_img = self.vision.num_image_tokens if self.vision else 0
            text = TextEncoder(tok, n_img, supervise=self.supervise, system_prompt=self.system_prompt)  # type: ignore[arg-type]
            images = ImagePreprocessor(self.vision) if self.vision and self.vision.inputs else None
            self._encoder = SampleEncoder(text, images, self.max_length)
        return self._encoder

    @property
    def image_token_id(self) -> int:
        return self.encoder.text.image_token_id

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "_trainer", None) or getattr(self, "trainer", None)
        if trainer is not None:
            return int(trainer.global_rank), int(trainer.world_size)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _accumulate(self) -> int:
        trainer = getattr(self, "trainer", None)
        from_trainer = int(getattr(trainer, "accumulate_grad_batches", 0) or 0) if trainer is not None else 0
        if self.accumulate and from_trainer and int(self.accumulate) != from_trainer:
            raise DataConfigError(f"data.accumulate_grad_batches={self.accumulate} but the trainer accumulates "
                             f"{from_trainer}: leave the data key null to take the trainer's")
        return int(self.accumulate or from_trainer or 1)

    def batching(self) -> BatchingConfig:
        return BatchingConfig(self.micro_batch_size, self.max_length, self.packing, self.packing_buffer,
                              self.pad_to_max_length, self.mode, self._accumulate(), self.seed, self.shuffle_buffer)

    @staticmethod
    def check_sources(sources: Sequence[SourceConfig], what: str) -> None:
        """Fail before training (one line) when a source matches no shard file."""
        for s in sources:
            urls = expand_urls(s.urls)
            missing = [u for u in urls if "://" not in u and not u.startswith("pipe:") and not os.path.exists(u)]
            if not urls or missing:
                raise DataConfigError(f"{what} source {s.name!r}: no shards at {s.urls!r}"
                                      + (" (make the demo data with `dsvl-data demo`?)" if "demo" in str(s.urls) else ""))

    def train_dataset(self) -> GlobalStepBatches:
        """The dataset a fresh or resumed run reads, positioned at the next micro-batch."""
        self.check_sources(self.train_sources, "data.train_sources")
        rank, world = self._rank_world()
        resume: dict[int, Any] = {}
        start = self._next_micro_index
        if self._resume is not None:
            saved_world = int(self._resume.get("world_size", world))
            if saved_world != world:
                log.warning("world size changed since the checkpoint (%s -> %s): data streams restart at micro-batch "
                            "%s with fresh positions (not an exact resume)", saved_world, world, start)
            else:
                ranks = self._resume.get("ranks", {})
                resume = {int(k): v for k, v in (ranks.get(str(rank)) or ranks.get(rank) or {}).items()}
        return GlobalStepBatches(self.train_sources, self.encoder, self.schedule, self.batching(), rank, world,
                                 start, resume)

    def _loader(self, dataset: Any) -> DataLoader:
        kw: dict[str, Any] = {}
        if self.num_workers > 0 and self.prefetch_factor:
            kw["prefetch_factor"] = self.prefetch_factor
        return DataLoader(dataset, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=False, **kw)

    # --- LightningDataModule -----------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset())

    def val_dataloader(self) -> DataLoader | list:
        """Held-out text/multimodal batches (`val/text_ppl`, `val/mm_loss`) and, with `mc_val`, a
        multiple-choice loader whose batches carry `row_option` (`val/mc_acc`)."""
        rank, world = self._rank_world()
        loaders: list[DataLoader] = []
        if self.val_sources:
            self.check_sources(self.val_sources, "data.val_sources")
            ds = EvalBatches(self.val_sources, self.encoder, self.val_batch_size, rank, world, self.val_max_batches)
            loaders.append(self._loader(ds))
        if self.mc_val is not None:
            loaders.append(DataLoader(self.mc_dataset(rank, world), batch_size=None, num_workers=0))
        return loaders[0] if len(loaders) == 1 else loaders

    def mc_dataset(self, rank: int = 0, world_size: int = 1) -> MultipleChoiceBatches:
        """The `mc_val` shards as scoring batches, with this module's tokenizer, images and system prompt."""
        cfg = self.mc_val or {}
        collator = MultipleChoiceCollator(self.encoder.text.tokenizer, self.vision, mode=str(cfg.get("mode", "text")),
                                          system_prompt=self.system_prompt, max_length=cfg.get("max_length"))
        return MultipleChoiceBatches(cfg["shards"], collator, int(cfg.get("batch_size", 8)), cfg.get("limit"),
                                     rank, world_size, counter=self._val_counter)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Record the data position of each training batch as it is consumed; strip it from the batch."""
        if isinstance(batch, dict) and "state" in batch:
            state = batch.pop("state")
            self._worker_states[int(state["worker"])] = state
            self.accounting.update(batch["modality"], batch["stats"], int(state["step"]))
            self._next_micro_index = max(self._next_micro_index, int(state["micro_index"]) + 1)
        return batch

    def record(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The same as `on_before_batch_transfer`, for loops without Lightning."""
        return self.on_before_batch_transfer(batch, 0)

    @property
    def global_step_of_next_batch(self) -> int:
        return self._next_micro_index // self._accumulate()

    def skip_counts(self) -> SkipCounter:
        """Samples skipped so far on this rank (training streams as consumed, plus validation)."""
        c = SkipCounter.merged(s.get("skipped", {}) for s in self._worker_states.values())
        if self._resume is not None and not self._worker_states:
            c.merge(self._resume.get("skipped", {}))
        return c

    def state_dict(self) -> dict[str, Any]:
        """Position of every (rank, worker) stream. Gathers over ranks when torch.distributed runs
        (Lightning calls this on every rank while saving a checkpoint)."""
        import torch.distributed as dist

        mine = {str(k): v for k, v in self._worker_states.items()}
        rank, world = self._rank_world()
        ranks: dict[str, Any] = {str(rank): mine}
        if world > 1 and dist.is_available() and dist.is_initialized():
            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, (rank, mine))
            ranks = {str(r): m for r, m in gathered}  # type: ignore[misc]
        return {"version": STATE_VERSION, "next_micro_index": self._next_micro_index, "world_size": world,
                "num_workers": self.num_workers, "schedule": self.schedule.state_dict(), "ranks": ranks,
                "skipped": self.skip_counts().as_dict(), "accounting": self.accounting.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state.get("version", 0)) != STATE_VERSION:
            raise DataConfigError(f"data state version {state.get('version')} is not {STATE_VERSION}")
        self.schedule.load_state_dict(state.get("schedule", {}))
        self._next_micro_index = int(state["next_micro_index"])
        self._resume = state
        self._worker_states = {}
        self.accounting.load_state_dict(state.get("accounting", {}))
        log.info("data resumes at micro-batch %d (global step %d)", self._next_micro_index,
                 self._next_micro_index // max(1, int(self.accumulate or 1)))

    def teardown(self, stage: str) -> None:
        log.info("data: %s; consumed %s", self.skip_counts().summary(), self.accounting.as_dict())
