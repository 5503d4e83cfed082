"""dsvl.data: shards -> tokenized, modality-grouped (optionally packed) batches for the stages.

Public API (batch format: docs/architecture.md; shard format: docs/data_format.md).
"""
from dsvl.data.bad_samples import BadSample, SkipCounter, SkipReason
from dsvl.data.chat import (BOS_TOKEN, DEFAULT_SYSTEM_PROMPT, EOS_TOKEN, IMAGE_TOKEN, PAD_TOKEN,
                            conversation_segments, format_conversation)
from dsvl.data.accounting import DataAccounting
from dsvl.data.collate import collate, collate_rows
from dsvl.data.datamodule import DSVLDataModule, load_tokenizer
from dsvl.data.encode import SampleEncoder
from dsvl.data.grouped import BatchingConfig, EvalBatches, GlobalStepBatches
from dsvl.data.images import ImagePreprocessor
from dsvl.data.mixture import Mixture, SourceConfig, parse_sources
from dsvl.data.packing import pack_rows
from dsvl.data.schedule import ModalitySchedule
from dsvl.data.schema import Sample, parse_sample
from dsvl.data.streams import expand_urls, iter_samples, read_tar
from dsvl.data.tokenize import IGNORE_INDEX, Encoded, TextEncoder
from dsvl.errors import DataError

__all__ = [
    "BOS_TOKEN", "DEFAULT_SYSTEM_PROMPT", "EOS_TOKEN", "IGNORE_INDEX", "IMAGE_TOKEN", "PAD_TOKEN",
    "BadSample", "BatchingConfig", "DataAccounting", "DataError", "DSVLDataModule", "Encoded", "EvalBatches", "GlobalStepBatches",
    "ImagePreprocessor", "Mixture", "ModalitySchedule", "Sample", "SampleEncoder", "SkipCounter", "SkipReason",
    "SourceConfig", "TextEncoder", "collate", "collate_rows", "conversation_segments", "expand_urls",
    "format_conversation", "iter_samples", "load_tokenizer", "pack_rows", "parse_sample",
    "parse_sources", "read_tar",
]
