"""`dsvl-eval`: public benchmarks, multiple choice by perplexity and held-out text perplexity of a trained model
(a `dsvl-train` `.ckpt` or an exported directory, loaded by `load_for_inference`, shared with `dsvl-chat`);
prints a table and writes a JSON report. The evaluation itself is `dsvl.eval.evaluate` and `dsvl.eval.benchmarks`.

    dsvl-eval checkpoint=outputs/train/<run>/checkpoints/last.ckpt mc.shards=data/demo/mc/val
    dsvl-eval checkpoint=outputs/export/demo text.shards=data/demo/pretrain/text/val mc.modes=[text,letter]
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from transformers.utils import logging as hf_logging

from dsvl.cli._config import hydra_app, one_line
from dsvl.data.chat import DEFAULT_SYSTEM_PROMPT, IMAGE_TOKEN
from dsvl.eval.benchmarks import BenchmarkSpec
from dsvl.eval.evaluate import EvalError, evaluate_benchmark, evaluate_mc, evaluate_text, format_table

log = logging.getLogger(__name__)

PROG = "dsvl-eval"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
SYSTEM_PROMPT_AUTO = "auto"


@dataclass
class LoadedModel:
    """A model ready for inference with its tokenizer and where they came from."""

    model: nn.Module
    tokenizer: Any
    source: str  # "checkpoint" or "exported"
    path: Path
    tokenizer_path: str
    system_prompt: str | None  # the one the model trained with when known, else DeepSeek-VL's default


def _check_tokenizer_dir(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir() or not any((p / f).is_file() for f in TOKENIZER_FILES):
        raise EvalError(f"no tokenizer in {p} (expected tokenizer.json / tokenizer_config.json); pass --tokenizer / tokenizer=DIR")
    return p


def _check_tokenizer(model: nn.Module, tokenizer: Any) -> None:
    """The tokenizer must name the model's image token and fit its vocabulary."""
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if model.vision_spec.inputs and image_id != model.image_token_id:
        raise EvalError(f"tokenizer's {IMAGE_TOKEN} is id {image_id} but the model expects {model.image_token_id}: wrong tokenizer?")
    vocab = model.llm.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        raise EvalError(f"tokenizer has {len(tokenizer)} tokens but the model's vocabulary is {vocab}: wrong tokenizer?")


def load_for_inference(path: str | Path, tokenizer: str | Path | None = None, device: str | torch.device | None = "cpu",
                       dtype: str | None = None, adapter: str | Path | None = None) -> LoadedModel:
    """Model + tokenizer from a dsvl `.ckpt` (weights only; model, tokenizer and system prompt from the
    stage's hyperparameters), an exported directory, or one plus a peft `adapter` directory (system
    prompt from `dsvl_chat.json`, else DeepSeek-VL's default), in eval mode on `device`.
    """
    from dsvl.cli.models import load_stage_checkpoint
    from dsvl.data import load_tokenizer
    from dsvl.model import ConfigError, VisionLanguageModel
    from dsvl.model.export import exported_system_prompt
    from dsvl.stages.checkpoint import InitFromError
    from dsvl.stages.strategies import DTYPES

    p = Path(path).expanduser()
    if not p.exists():
        raise EvalError(f"model not found: {p}")
    tok_path: str | None = str(_check_tokenizer_dir(tokenizer)) if tokenizer else None
    torch_dtype = DTYPES.get(str(dtype).lower()) if dtype else None
    if dtype and torch_dtype is None:
        raise EvalError(f"dtype={dtype}: expected one of {sorted(DTYPES)}")
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except RuntimeError as e:
        raise EvalError(f"device={device}: {one_line(e)}") from None
    system_prompt = DEFAULT_SYSTEM_PROMPT
    try:
        if adapter or p.is_dir():
            if not (p / "config.json").is_file():
                raise EvalError(f"an adapter needs the base model's transformers directory; {p} has no config.json" if adapter
                                else f"{p} is not an exported model directory (no config.json); expected save_pretrained output or a .ckpt")
            tok = load_tokenizer(tok_path := tok_path or str(_check_tokenizer_dir(p)))
            model = VisionLanguageModel.from_pretrained(str(p), adapter=adapter)
            for folder in filter(None, (p, adapter)):  # the adapter's dsvl_chat.json wins over the base's
                system_prompt = exported_system_prompt(folder, system_prompt)
            source = "adapter" if adapter else "exported"
        elif p.suffix in (".ckpt", ".pt", ".pth"):
            saved = load_stage_checkpoint(p)
            if "system_prompt" not in saved.hparams:
                raise EvalError(f"{p}: written by an older dsvl-train (no system_prompt among its hyperparameters); "
                                "retrain it with this version")
            model, system_prompt = saved.model, saved.hparams["system_prompt"]
            tok_path = tok_path or saved.hparams.get("tokenizer")
            if tok_path is None:
                raise EvalError(f"{p}: the checkpoint names no tokenizer; pass --tokenizer / tokenizer=DIR")
            tok = load_tokenizer(str(_check_tokenizer_dir(tok_path)))
            source = "checkpoint"
        else:
            raise EvalError(f"{p}: expected a Lightning .ckpt file or an exported model directory")
    except InitFromError as e:
        raise EvalError(str(e).replace("init_from=", "", 1)) from None
    except ValueError as e:  # peft / transformers on an adapter that does not fit the base
        if not adapter:
            raise
        raise EvalError(f"adapter {adapter}: {one_line(e)}") from None
    except (ConfigError, OSError, KeyError) as e:
        raise EvalError(f"cannot load {p}: {one_line(e)}") from None
    _check_tokenizer(model, tok)
    model = model.to(device=device, dtype=torch_dtype).eval()
    log.info("loaded %s model from %s (tokenizer %s)", source, p, tok_path)
    return LoadedModel(model=model, tokenizer=tok, source=source, path=Path(adapter) if adapter else p,
                       tokenizer_path=str(tok_path), system_prompt=system_prompt)


def pick_system_prompt(requested: str | None, loaded: LoadedModel) -> str | None:
    """"auto" (or None): the model's training prompt; "" or "none": no system block; else the text."""
    if requested in (None, SYSTEM_PROMPT_AUTO):
        return loaded.system_prompt
    return None if requested.strip().lower() in ("", "none", "null") else requested


def run_eval(cfg: DictConfig, output_dir: str | Path | None = None) -> dict[str, Any]:
    """Everything `dsvl-eval` does, as a function: returns the report and writes it as JSON."""
    from dsvl.cli.schema import EvalConfig, validate_against
    from dsvl.cli.validate import plain

    start = time.perf_counter()
    ev = validate_against(EvalConfig, plain(cfg))  # every value typed and in range, before any weights
    benchmarks = [BenchmarkSpec.from_config(name, e) for name, e in (ev.benchmarks or {}).items() if e and e.get("path")]
    if not ev.mc.shards and not ev.text.shards and not benchmarks:
        raise EvalError("nothing to evaluate: set benchmarks.<name>.path, mc.shards and/or text.shards")
    loaded = load_for_inference(ev.checkpoint, ev.tokenizer, ev.device, ev.dtype, adapter=ev.adapter)
    system_prompt = pick_system_prompt(ev.system_prompt, loaded)
    report: dict[str, Any] = {"model": str(loaded.path), "source": loaded.source, "tokenizer": loaded.tokenizer_path,
                              "device": str(next(loaded.model.parameters()).device), "system_prompt": system_prompt}
    if benchmarks:
        report["benchmarks"] = {spec.name: evaluate_benchmark(loaded.model, loaded.tokenizer, spec, system_prompt)
                                for spec in benchmarks}
    if ev.mc.shards:
        report["mc"] = {mode: evaluate_mc(loaded.model, loaded.tokenizer, ev.mc.shards, mode, ev.mc.batch_size,
                                          ev.mc.limit, system_prompt, ev.mc.max_length) for mode in ev.mc.modes}
    if ev.text.shards:
        report["text"] = evaluate_text(loaded.model, loaded.tokenizer, ev.text.shards, ev.text.batch_size,
                                       ev.text.max_length, ev.text.limit, system_prompt)
    report["seconds"] = round(time.perf_counter() - start, 3)
    path = Path(output_dir or cfg.paths.output_dir) / ev.report  # an absolute report path stays as it is
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    report["report_path"] = str(path)
    return report


@hydra_app(PROG, config_name="eval")
def main(cfg: DictConfig) -> None:
    """Console script `dsvl-eval`: `run_eval`, then the table; a user's mistake is one line and exit 2."""
    hf_logging.disable_progress_bar()  # no per-load progress bars on stderr (errors there must stay one line)
    report = run_eval(cfg)
    print(format_table(report))
    print(f"report: {report['report_path']}")


if __name__ == "__main__":
    main()
