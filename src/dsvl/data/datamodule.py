"""`DSVLDataModule`: the Lightning side of the data pipeline, built from Hydra config (conf/data/). Trainer wiring:
docs/data_format.md, "Trainer wiring"; elastic resume over logical data parts: docs/scale.md."""
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
from dsvl.data.grouped import BatchingConfig, EvalBatches, GlobalStepBatches, layouts, packed_modalities
from dsvl.data.images import ImagePreprocessor
from dsvl.data.mixture import SourceConfig, parse_sources
from dsvl.data.multiple_choice import MultipleChoiceBatches, MultipleChoiceCollator
from dsvl.data.schedule import ModalitySchedule
from dsvl.data.streams import expand_urls
from dsvl.data.tokenize import TextEncoder
from dsvl.errors import DataError
from dsvl.model.spec import ImageInputSpec, VisionSpec

log = logging.getLogger(__name__)
STATE_VERSION = 2  # positions per logical data part (version 1, per rank and worker, is refused)


def load_tokenizer(path: str) -> Any:
    """AutoTokenizer from a local directory (or a hub id), with a one-line error if it is missing."""
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
        parts: int | None = None,
        elastic_restart: bool = False,
    ) -> None:
        super().__init__()
        self.tokenizer_src = tokenizer
        self.train_sources = parse_sources(train_sources)
        self.val_sources = parse_sources(val_sources)
        if not self.train_sources:
            raise DataError("data.train_sources is empty")
        if isinstance(vision_spec, Mapping):  # what `hydra.utils.instantiate` makes of a VisionSpec keyword
            inputs = tuple(ImageInputSpec(str(i["name"]), int(i["size"]), tuple(i["mean"]), tuple(i["std"]))  # type: ignore[arg-type]
                           for i in vision_spec.get("inputs", ()))
            vision_spec = VisionSpec(inputs, int(vision_spec.get("num_image_tokens", 0)))
        self.vision = vision_spec
        self.schedule = schedule if isinstance(schedule, ModalitySchedule) else ModalitySchedule(**dict(schedule or {}))
        self.micro_batch_size, self.val_batch_size = int(micro_batch_size), int(val_batch_size or micro_batch_size)
        self.max_length, self.pad_to_max_length = int(max_length), bool(pad_to_max_length)
        self.packing, self.packing_buffer = packed_modalities(packing), int(packing_buffer)
        self.mode, self.accumulate = mode, accumulate_grad_batches
        self.supervise, self.system_prompt = supervise, system_prompt
        self.num_workers, self.prefetch_factor, self.pin_memory = int(num_workers), prefetch_factor, pin_memory
        self.shuffle_buffer, self.seed, self.val_max_batches = int(shuffle_buffer), int(seed), val_max_batches
        # multiple-choice validation (`val/mc_acc`): {shards, batch_size, limit, mode, max_length}
        self.mc_val = dict(mc_val) if mc_val and mc_val.get("shards") else None
        # logical data parts (null: world_size * max(num_workers, 1) at the first launch, then the checkpoint's)
        self.parts, self.elastic_restart = (int(parts) if parts else None), bool(elastic_restart)
        if self.parts is not None and self.parts < 1:  # the CLI's schema says so too; the Python API needs it here
            raise DataError(f"data.parts must be >= 1 or null, got {parts}")
        BatchingConfig(mode=mode)  # fail early on a bad mode
        has_images = bool(self.vision and self.vision.inputs and self.vision.num_image_tokens > 0)
        if mode != "text_only" and not has_images and any(s.modality == "multimodal" for s in self.train_sources):
            raise DataError("multimodal data sources need a vision_spec with image inputs and num_image_tokens > 0 "
                             "(instantiate with vision_spec=dsvl.cli.models.vision_spec(cfg.model))")
        self.accounting = DataAccounting()
        self._encoder: SampleEncoder | None = None
        self._next_micro_index = 0
        self._parts: int | None = None  # the run's number of data parts, once known
        self._positions: dict[int, dict[str, Any]] = {}  # latest position of each data part (resumed or built)
        self._resume: dict[str, Any] | None = None
        self._skipped_before = SkipCounter()  # counts of a checkpoint whose streams restarted (elastic_restart)

    @property
    def encoder(self) -> SampleEncoder:
        """Tokenizer + image preprocessing, built once (also pickled into the DataLoader workers)."""
        if self._encoder is None:
            tok = self.tokenizer_src  # a tokenizer object, or where to load one from
            if not hasattr(tok, "convert_tokens_to_ids"):
                tok = load_tokenizer(tok)
            n_img = self.vision.num_image_tokens if self.vision else 0
            text = TextEncoder(tok, n_img, supervise=self.supervise, system_prompt=self.system_prompt)  # type: ignore[arg-type]
            images = ImagePreprocessor(self.vision) if self.vision and self.vision.inputs else None
            self._encoder = SampleEncoder(text, images, self.max_length)
        return self._encoder

    @property
    def image_token_id(self) -> int:
        return self.encoder.text.image_token_id

    def _rank_world(self) -> tuple[int, int]:
        if self.trainer is not None:
            return int(self.trainer.global_rank), int(self.trainer.world_size)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _accumulate(self) -> int:
        from_trainer = int(self.trainer.accumulate_grad_batches) if self.trainer is not None else 0
        if self.accumulate and from_trainer and int(self.accumulate) != from_trainer:
            raise DataError(f"data.accumulate_grad_batches={self.accumulate} but the trainer accumulates "
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
                raise DataError(f"{what} source {s.name!r}: no shards at {s.urls!r} (accepted: a folder of .tar shards, a "
                                "glob, a brace pattern, or a list of existing shard files"
                                + ("; make the demo data with `dsvl-data demo`?)" if "demo" in str(s.urls) else ")"))

    def train_dataset(self) -> GlobalStepBatches:
        """The dataset a fresh or resumed run reads, positioned at the next micro-batch."""
        self.check_sources(self.train_sources, "data.train_sources")
        rank, world = self._rank_world()
        layout = world * max(self.num_workers, 1)
        if self._resume is not None:
            self._resume_layout(world, layout)
            self._resume = None
        if self._parts is None:
            self._parts = self.parts or layout
        if self._parts % layout:
            raise DataError(f"data.parts={self._parts} cannot be built by {world} ranks x "
                                  f"{max(self.num_workers, 1)} workers: world_size * max(num_workers, 1) "
                                  f"must be one of {layouts(self._parts)}")
        return GlobalStepBatches(self.train_sources, self.encoder, self.schedule, self.batching(), rank, world,
                                 self._next_micro_index, self._positions, self._parts)

    def _resume_layout(self, world: int, layout: int) -> None:
        """Map the checkpoint's data position onto this run's layout: the same global micro-batch
        and every part's saved position when `layout` divides the saved parts, else (with
        `elastic_restart`) fresh streams from the checkpoint's global step; else a one-line error."""
        saved = self._resume or {}
        saved_world = int(saved.get("world_size", 1))
        global_next = int(saved["next_micro_index"]) * saved_world
        accumulate = self._accumulate()
        per_step, saved_per_step = accumulate * world, int(saved["micro_batches_per_step"])
        parts = int(saved["parts"])
        problem = None
        if self.parts is not None and self.parts != parts:
            problem = f"data.parts={self.parts} but the checkpoint's data is split into {parts} parts"
        elif parts % layout:
            problem = (f"{world} ranks x {max(self.num_workers, 1)} workers cannot continue the checkpoint's {parts} "
                       f"data parts (world_size * max(num_workers, 1) must be one of {layouts(parts)})")
        elif global_next % (saved_per_step if saved_per_step != per_step else world):
            problem = "the checkpoint was saved inside a global step that this layout cannot continue"
        if problem is None:
            if saved_per_step != per_step or int(saved.get("micro_batch_size", 0)) != self.micro_batch_size:
                log.warning("micro-batches per global step (%d -> %d) or micro_batch_size (%s -> %d) changed since the "
                            "checkpoint: every data part continues where it stopped, but the sample order is not an "
                            "uninterrupted run's", saved_per_step, per_step, saved.get("micro_batch_size"),
                            self.micro_batch_size)
                global_next = global_next // saved_per_step * per_step
            self._parts = parts  # self._positions: the checkpoint's, from load_state_dict
            self._next_micro_index = global_next // world
            self._count_micro_batches_anew(saved_per_step // saved_world)
            return
        if not self.elastic_restart:
            raise DataError(f"cannot resume the data exactly: {problem}; resume on an allowed layout, "
                                  "or set data.elastic_restart=true to restart the data streams (samples seen "
                                  "before may repeat)")
        step = global_next // saved_per_step
        log.warning("data.elastic_restart: %s; the data streams restart at global step %d with fresh positions "
                    "(samples seen before may repeat)", problem, step)
        # what every part skipped before the restart
        self._skipped_before = SkipCounter.merged(pos.get("skipped", {}) for by_rank in saved.get("ranks", {}).values()
                                                  for pos in by_rank.values())
        self._parts, self._positions, self._next_micro_index = None, {}, step * accumulate
        self._count_micro_batches_anew(saved_per_step // saved_world)

    def _count_micro_batches_anew(self, saved_accumulate: int) -> None:
        """Lightning puts accumulation boundaries where its count of micro-batches (restored from the
        checkpoint) is a multiple of the accumulation: after a resume with another accumulation, that
        count must be this rank's micro-batches so far, or the first step would take a partial batch."""
        if self.trainer is None or saved_accumulate == self._accumulate():
            return
        progress = self.trainer.fit_loop.epoch_loop.batch_progress  # the train loader is endless: one epoch
        for counts in (progress.current, progress.total):
            counts.ready = counts.started = counts.processed = counts.completed = self._next_micro_index

    def _loader(self, dataset: Any) -> DataLoader:
        return DataLoader(dataset, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory,
                          prefetch_factor=(self.prefetch_factor or None) if self.num_workers > 0 else None)

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
        if (cfg := self.mc_val) is not None:  # scored with this module's tokenizer, images and system prompt
            collator = MultipleChoiceCollator(self.encoder.text.tokenizer, self.vision, mode=str(cfg.get("mode", "text")),
                                              system_prompt=self.system_prompt, max_length=cfg.get("max_length"))
            mc = MultipleChoiceBatches(cfg["shards"], collator, int(cfg.get("batch_size", 8)), cfg.get("limit"), rank, world)
            loaders.append(DataLoader(mc, batch_size=None, num_workers=0))
        return loaders[0] if len(loaders) == 1 else loaders

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Record the data position of each training batch as it is consumed; strip it from the batch."""
        if isinstance(batch, dict) and "state" in batch:
            state = batch.pop("state")
            self._positions[int(state["part"])] = state["position"]
            self.accounting.update(batch["modality"], batch["stats"], int(state["step"]))
            self._next_micro_index = max(self._next_micro_index, int(state["micro_index"]) + 1)
        return batch

    def record(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The same as `on_before_batch_transfer`, for loops without Lightning."""
        return self.on_before_batch_transfer(batch, 0)

    def _mine(self) -> dict[int, dict[str, Any]]:
        """Positions of the data parts this rank builds (part p is built by rank p mod world_size)."""
        rank, world = self._rank_world()
        return {p: pos for p, pos in self._positions.items() if p % world == rank}

    def skip_counts(self) -> SkipCounter:
        """Samples skipped so far by this rank's data parts (training streams as consumed)."""
        c = SkipCounter.merged(s.get("skipped", {}) for s in self._mine().values())
        if self._rank_world()[0] == 0:
            c.merge(self._skipped_before.counts)
        return c

    def state_dict(self) -> dict[str, Any]:
        """Position of every data part, by the rank that builds it. Gathers over ranks when
        torch.distributed runs (Lightning calls this on every rank while saving a checkpoint)."""
        import torch.distributed as dist

        mine = {str(p): pos for p, pos in self._mine().items()}
        rank, world = self._rank_world()
        ranks: dict[str, Any] = {str(rank): mine}
        if world > 1 and dist.is_available() and dist.is_initialized():
            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, (rank, mine))
            ranks = {str(r): m for r, m in gathered}  # type: ignore[misc]
        return {"version": STATE_VERSION, "parts": self._parts or self.parts or world * max(self.num_workers, 1),
                "next_micro_index": self._next_micro_index, "world_size": world, "num_workers": self.num_workers,
                "micro_batches_per_step": self._accumulate() * world, "micro_batch_size": self.micro_batch_size,
                "schedule": self.schedule.state_dict(), "ranks": ranks, "skipped": self.skip_counts().as_dict(),
                "accounting": self.accounting.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise DataError(f"the checkpoint's data state is version {state.get('version')}, this dsvl reads version "
                            f"{STATE_VERSION} (positions per data part): resume with the dsvl that saved it")
        self.schedule.load_state_dict(state.get("schedule", {}))
        self._next_micro_index = int(state["next_micro_index"])
        self._resume = state
        self._positions = {int(p): pos for r in state["ranks"].values() for p, pos in r.items()}
        self.accounting.load_state_dict(state.get("accounting", {}))
        log.info("data resumes at micro-batch %d of %d ranks (global step %d)", self._next_micro_index,
                 int(state.get("world_size", 1)), self._next_micro_index // max(1, int(self.accumulate or 1)))

    def teardown(self, stage: str) -> None:
        log.info("data: %s; consumed %s", self.skip_counts().summary(), self.accounting.as_dict())
