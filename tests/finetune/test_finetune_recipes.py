"""Issue 12, done-when: both transformers classes x {finetune/full, finetune/lora} fine-tune a few steps on demo
data, export, and the export runs in transformers (AutoModelForImageTextToText + AutoProcessor) with the
logits of dsvl's model and the answer of dsvl-chat; LoRA checkpoints are adapter-only and small."""
from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from dsvl.cli.models import build_model
from dsvl.model import VisionLanguageModel
from dsvl.model.safe_load import safe_torch_load
from dsvl.cli.train import check_run, train

from .conftest import ARCHS

TOL = 1e-4
QUESTION = "What color is the shape?"


def _run(cfg: Any) -> SimpleNamespace:
    """`dsvl-train` on a composed config; what the tests read of the finished run."""
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    return SimpleNamespace(steps=int(metrics["trainer/global_step"]), output_dir=out, checkpoint=out / "checkpoints" / "last.ckpt",
                           export_dir=Path(cfg.export_dir) if cfg.get("export_dir") else None, trainable=check_run(cfg))


@pytest.fixture(scope="module")
def runs(released, compose_train_module, tmp_path_factory) -> Any:
    """(arch, recipe) -> the finished run (trained lazily, once per module)."""
    done: dict[tuple[str, str], Any] = {}

    def get(arch: str, recipe: str) -> Any:
        if (arch, recipe) not in done:
            out = tmp_path_factory.mktemp(f"{arch}_{recipe}")
            cfg = compose_train_module(
                f"experiment=finetune/{recipe}", f"model.pretrained={released[arch]}", "data=demo_sft", "trainer=cpu",
                "validate_at_end=false", "mc_val.shards=null", "data.max_length=128", "trainer.precision=32-true", "stage.global_batch=4", "model.gradient_checkpointing=false", f"export_dir={out / 'export'}",
                *(["model.lora.r=4", "optim.lr=0.02"] if recipe == "lora" else ["optim.lr=1e-3"]), out=out / "run",
            )
            done[arch, recipe] = (cfg, _run(cfg))
        return done[arch, recipe]

    return get


@pytest.fixture(scope="module")
def compose_train_module(demo_data):
    from dsvl.cli._config import compose

    from .conftest import FAST

    return lambda *overrides, out: compose([f"paths.data_dir={demo_data}", *FAST, *overrides], output_dir=out)


def _image() -> Image.Image:
    img = Image.new("RGB", (48, 40), (30, 60, 200))
    img.paste((220, 40, 40), (10, 8, 30, 28))
    return img


def _dsvl_chat(*args: str) -> str:
    from dsvl.cli.chat import main

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main([*args, "--max-new-tokens", "6", "--device", "cpu"]) == 0
    return buf.getvalue().strip()


def _trained_dsvl(cfg: Any, result: Any) -> VisionLanguageModel:
    """The run's model as dsvl sees it: rebuilt from the run config (base + LoRA) with the checkpoint's weights."""
    model = build_model(cfg.model)
    state = safe_torch_load(result.checkpoint)["state_dict"]
    missing, unexpected = model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()}, strict=False)
    assert not unexpected
    return model.eval()


@pytest.mark.parametrize("recipe", ["full", "lora"])
@pytest.mark.parametrize("arch", ARCHS)
def test_finetune_export_runs_in_transformers_like_dsvl(arch: str, recipe: str, runs, tmp_path: Path) -> None:
    cfg, result = runs(arch, recipe)
    assert result.steps == 2 and result.export_dir is not None
    assert set(result.trainable) == ({"adaptor", "llm", "vision.low"} if recipe == "full" else {"adaptor", "llm"})
    export = result.export_dir
    hf = AutoModelForImageTextToText.from_pretrained(export).eval()
    processor = AutoProcessor.from_pretrained(export)
    assert type(hf).__name__.lower().startswith(arch.replace("_", "")) and processor.num_image_tokens == 16

    # the export is the merged model: same logits as dsvl's (LoRA layers unmerged) on the processor's inputs
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == f"User: <image_placeholder>{QUESTION}\n\nAssistant:"  # demo_sft trains without a system prompt
    image = _image().save(tmp_path / "img.png") or tmp_path / "img.png"
    inputs = processor(text=prompt, images=[Image.open(image)], return_tensors="pt")
    trained = _trained_dsvl(cfg, result)
    base = AutoModelForImageTextToText.from_pretrained(cfg.model.pretrained).eval()
    with torch.no_grad():
        ref = hf(**inputs).logits
        ours = trained(**inputs).logits
        before = base(**inputs).logits
    assert (ours - ref).abs().max().item() <= TOL
    assert (before - ref).abs().max().item() > 100 * TOL  # training (the merged adapter) changed the model

    # generation: transformers on the export == dsvl-chat on the export (== base + adapter for LoRA)
    new = hf.generate(**inputs, max_new_tokens=6, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    answer = processor.decode(new, skip_special_tokens=True).strip()
    assert _dsvl_chat("--model", str(export), "--image", str(image), QUESTION) == answer
    if recipe == "lora":
        adapter = result.output_dir / "adapter"
        assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
        assert _dsvl_chat("--model", str(cfg.model.pretrained), "--adapter", str(adapter), "--image", str(image), QUESTION) == answer


def test_peft_loads_the_adapter_onto_the_base_like_the_merged_export(runs, released, tmp_path) -> None:
    from peft import PeftModel

    from dsvl.model.export import merge_adapter

    cfg, result = runs("deepseek_vl_hybrid", "lora")
    adapter = result.output_dir / "adapter"
    base = AutoModelForImageTextToText.from_pretrained(released["deepseek_vl_hybrid"])
    peft_model = PeftModel.from_pretrained(base, str(adapter)).eval()
    merged = AutoModelForImageTextToText.from_pretrained(result.export_dir).eval()
    offline = merge_adapter(released["deepseek_vl_hybrid"], adapter, tmp_path / "merged")  # the QLoRA way
    assert (offline / "chat_template.jinja").read_text() == (result.export_dir / "chat_template.jinja").read_text()
    offline_model = AutoModelForImageTextToText.from_pretrained(offline).eval()
    ids = torch.tensor([[1, 5, 9, 17, 33, 65, 100]])
    with torch.no_grad():
        ref = merged(input_ids=ids).logits
        assert (peft_model(input_ids=ids).logits - ref).abs().max().item() <= TOL
        assert (offline_model(input_ids=ids).logits - ref).abs().max().item() <= TOL


def test_lora_checkpoint_is_adapter_only_and_small(runs) -> None:
    _, full = runs("deepseek_vl_hybrid", "full")
    cfg, lora = runs("deepseek_vl_hybrid", "lora")
    ckpt = safe_torch_load(lora.checkpoint)
    model = build_model(cfg.model)
    from dsvl.stages.freezing import apply_freezing

    apply_freezing(model, cfg.stage.trainable)
    trainable = {f"model.{n}": p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert set(ckpt["state_dict"]) == set(trainable)  # adapters + the adaptor, no frozen weight
    state = ckpt["optimizer_states"][0]["state"]
    assert len(state) == len(trainable)  # AdamW state for trainable parameters only
    assert sum(s["exp_avg"].numel() for s in state.values()) == sum(trainable.values())
    ratio = lora.checkpoint.stat().st_size / full.checkpoint.stat().st_size
    assert ratio < 0.2, f"LoRA checkpoint is {ratio:.1%} of the full one"  # measured ~ (see report)


def test_lora_resume_from_an_adapter_only_checkpoint_is_exact(released, compose_train_module, tmp_path) -> None:
    """Dropout 0: resume restores weights, optimizer, scheduler and data position, not the dropout RNG."""
    from safetensors.torch import load_file

    def run(out: Path, steps: int, *extra: str) -> Any:
        cfg = compose_train_module(
            "experiment=finetune/lora", f"model.pretrained={released['deepseek_vl']}", "data=demo_sft", "trainer=cpu",
            "validate_at_end=false", "mc_val.shards=null", "data.max_length=128", "trainer.precision=32-true",
            "stage.global_batch=4", "model.lora.r=4", "model.lora.dropout=0", "optim.lr=0.02", "export_dir=null",
            f"trainer.max_steps={steps}",
            "scheduler.warmup_steps=1", "scheduler.total_steps=3", *extra, out=out)
        return _run(cfg)

    straight = run(tmp_path / "straight", 3)
    first = run(tmp_path / "chain", 2)
    resumed = run(tmp_path / "chain", 3, f"ckpt_path={first.checkpoint}")
    assert resumed.steps == 3
    want, got = (load_file(str(r.output_dir / "adapter" / "adapter_model.safetensors")) for r in (straight, resumed))
    assert want.keys() == got.keys() and all(torch.allclose(want[k], got[k], atol=1e-6, rtol=0) for k in want)
