"""`model.lora` and the fine-tuning CLIs fail in one line (exit 2) before any weights: QLoRA without CUDA /
bitsandbytes, bad LoRA keys, a model=from_pretrained without a checkpoint, dsvl-chat given a bad adapter."""
from __future__ import annotations

import pytest

from dsvl.model import ConfigError
from dsvl.model.lora import lora_settings
from dsvl.cli.train import check_run

LLM = {"targets": {"llm": ["q_proj"]}}


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA: the no-CUDA error cannot happen")
def test_qlora_without_cuda_stops_before_any_weights(compose_train, released, monkeypatch) -> None:
    import dsvl.model.hf_interop as hf_interop

    monkeypatch.setattr(hf_interop, "AutoModelForImageTextToText", None)  # any weight loading would crash differently
    cfg = compose_train("experiment=finetune/qlora", f"model.pretrained={released['deepseek_vl']}", "data=demo_sft", "trainer=cpu")
    with pytest.raises(ConfigError, match=r"load_in_4bit=true \(QLoRA\) needs a CUDA GPU") as err:
        check_run(cfg)
    assert "\n" not in str(err.value)


def test_qlora_without_bitsandbytes_is_one_line(monkeypatch) -> None:
    import importlib.util

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ConfigError, match="needs bitsandbytes: pip install bitsandbytes"):
        lora_settings({**LLM, "load_in_4bit": True})


@pytest.mark.parametrize(("node", "message"), [
    ({**LLM, "rank": 8}, r"unknown keys \['rank'\]"),
    ({"targets": {"adaptor": ["0"]}}, "unknown parts"),
    ({"targets": {"llm": []}}, "names no module"),
    ({**LLM, "dropout": 1.5}, r"dropout=1.5 in \[0, 1\)"),
])
def test_bad_lora_settings_are_one_line(node, message) -> None:
    with pytest.raises(ConfigError, match=message):
        lora_settings(node)


def test_lora_targets_that_match_nothing_are_an_error(tiny_cfg_plain) -> None:
    from dsvl.cli.models import build_model

    with pytest.raises(ConfigError, match=r"matches no module"):
        build_model({**tiny_cfg_plain, "lora": {"targets": {"llm": ["qkv"]}}})


def test_from_pretrained_without_a_checkpoint_is_one_line(compose_train, tmp_path) -> None:
    cfg = compose_train("experiment=finetune/lora", f"model.pretrained={tmp_path}", "data=demo_sft", "trainer=cpu")
    with pytest.raises(ConfigError, match=r"model.pretrained=.*no transformers checkpoint there"):
        check_run(cfg)


@pytest.mark.parametrize("args", [["--adapter", "{tmp}"], ["--adapter", "{released}"]])
def test_dsvl_chat_with_a_bad_adapter_exits_2(args, released, tmp_path, capsys) -> None:
    from dsvl.cli.chat import main

    argv = ["--model", str(released["deepseek_vl"]), *(a.format(tmp=tmp_path, released=released["deepseek_vl"]) for a in args), "Hi"]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "not a peft adapter directory" in err and len(err.splitlines()) == 1


@pytest.fixture(scope="module")
def tiny_cfg_plain() -> dict:
    from dsvl.cli.presets import model_config

    return model_config("tiny")
