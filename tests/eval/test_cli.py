"""dsvl-chat and dsvl-eval on a tiny model this module trains, exported and as a dsvl checkpoint."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from dsvl.cli import chat
from dsvl.cli._config import compose
from dsvl.cli.evaluate import EvalError, format_table, load_for_inference, run_eval
from dsvl.data.chat import IMAGE_TOKEN
from dsvl.data.demo import generate_samples
from dsvl.data.images import ImagePreprocessor
from dsvl.data.shards import write_shards
from dsvl.data.tokenize import TextEncoder
from dsvl.errors import DataError
from dsvl.cli.models import build_model
from dsvl.stages import VLMStage

from .eval_helpers import model_config

QUESTION = "What color is the shape?"
ANSWER = "red"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any, tokenizer_dir: Path) -> dict[str, Path]:
    """Tiny SigLIP model taught one answer (adaptor + LLM, no system prompt), saved both ways.

    - `export`: `save_pretrained` + tokenizer files (what training's export writes);
    - `ckpt`: a Lightning-layout checkpoint of a `VLMStage` (`state_dict` keys `model.*`, the stage's
      hyperparameters: model config, tokenizer, system prompt).
    """
    root = tmp_path_factory.mktemp("trained")
    cfg = model_config("tiny_siglip", tokenizer)
    torch.manual_seed(0)
    model = build_model(cfg)
    enc = TextEncoder(tokenizer, model.num_image_tokens, supervise="assistant", system_prompt=None)
    sample = enc.encode_conversation([{"role": "user", "content": IMAGE_TOKEN + QUESTION}, {"role": "assistant", "content": ANSWER}])
    image = Image.new("RGB", (48, 64), (220, 40, 40))
    image.save(root / "red.png")
    pixels = ImagePreprocessor(model.vision_spec)([image])
    model.vision.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    ids, labels = torch.tensor([sample.input_ids]), torch.tensor([sample.labels])
    model.train()
    for _ in range(25):
        loss = model(input_ids=ids, labels=labels, **pixels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    export = root / "export"
    model.save_pretrained(export)
    tokenizer.save_pretrained(str(export))
    # what Lightning writes for a stage: its state_dict and the hyperparameters the stage saved
    stage = VLMStage(model, model_config=cfg, tokenizer=str(tokenizer_dir), system_prompt=None)
    (root / "run" / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": stage.state_dict(), "hyper_parameters": dict(stage.hparams), "global_step": 25, "epoch": 0},
               root / "run" / "checkpoints" / "last.ckpt")
    return {"export": export, "ckpt": root / "run" / "checkpoints" / "last.ckpt", "image": root / "red.png", "root": root}


def test_chat_answers_from_export_and_checkpoint(trained: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    # the export has no run config: its default system prompt would differ from training's (none)
    assert chat.main(["--model", str(trained["export"]), "--image", str(trained["image"]), "--system-prompt", "",
                      "--max-new-tokens", "8", QUESTION]) == 0
    assert capsys.readouterr().out.strip() == ANSWER
    # the checkpoint says "no system prompt": auto picks it up
    assert chat.main(["--model", str(trained["ckpt"]), "--image", str(trained["image"]), "--max-new-tokens", "8",
                      QUESTION]) == 0
    assert capsys.readouterr().out.strip() == ANSWER


def test_chat_interactive_loop(trained: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    stdin = io.StringIO(f"{QUESTION}\nand again?\n\nnever asked\n")
    assert chat.main(["--model", str(trained["ckpt"]), "--image", str(trained["image"]), "--max-new-tokens", "4"], stdin=stdin) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0] == ANSWER  # stops at the empty line


@pytest.mark.parametrize("args, message", [
    (["--model", "/nonexistent/model", "q"], "model not found"),
    (["--model", "{root}", "q"], "not an exported model directory"),
    (["--model", "{export}", "--image", "/nonexistent.png", "q"], "image not found"),
    (["--model", "{export}", "--tokenizer", "{root}", "q"], "no tokenizer"),
])
def test_chat_bad_input_is_one_line(trained: dict[str, Path], capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    argv = [a.format(root=trained["root"], export=trained["export"]) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        chat.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and err.startswith("dsvl-chat: error:")


def test_checkpoint_and_export_load_the_same_weights(trained: dict[str, Path]) -> None:
    a = load_for_inference(trained["export"])
    b = load_for_inference(trained["ckpt"])
    assert (a.source, b.source) == ("exported", "checkpoint")
    assert b.system_prompt is None and a.system_prompt  # the run trained without one; the export does not say
    assert a.model.image_token_id == b.model.image_token_id == a.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sb)


def test_eval_writes_report(trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mc_dir, text_dir = tmp_path / "mc", tmp_path / "text"
    mc = list(generate_samples("mc", "val", 6, seed=0))
    mc.append({"__key__": "broken", "json": {"modality": "text", "conversation": [{"role": "user", "content": "q"}],
                                            "options": ["only one"], "answer": 0}})
    write_shards(mc, mc_dir, prefix="mc", max_count=4)
    write_shards(generate_samples("pretrain/text", "val", 5, seed=0), text_dir, prefix="text")
    cfg = compose([f"checkpoint={trained['ckpt']}", f"mc.shards={mc_dir}", f"text.shards={text_dir}",
                   "mc.modes=[text,letter]", "mc.batch_size=4", "device=cpu", f"report={tmp_path / 'report.json'}"],
                  config_name="eval", output_dir=tmp_path)
    report = run_eval(cfg)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert set(saved) >= {"model", "source", "tokenizer", "device", "system_prompt", "mc", "text", "seconds"}
    for mode in ("text", "letter"):
        res = saved["mc"][mode]
        assert set(res) >= {"accuracy", "num_samples", "per_category", "mode", "skipped", "shards"}
        assert res["num_samples"] == 6 and res["skipped"] == {"missing_field": 1} and len(res["shards"]) == 2
        assert 0.0 <= res["accuracy"] <= 1.0
        assert sum(c["num_samples"] for c in res["per_category"].values()) == 6
    text = saved["text"]
    assert text["num_samples"] == 5 and text["num_tokens"] > 0 and text["perplexity"] > 1.0
    table = format_table(report)
    assert "mc/letter/accuracy" in table and "text/perplexity" in table


class Payload:
    """Anything that is not a tensor or a plain container: unpickling it would run code."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (print, ("this must never run",))


def test_checkpoint_with_code_is_refused(trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.save({"state_dict": {}, "payload": Payload()}, tmp_path / "evil.ckpt")
    with pytest.raises(EvalError) as err:
        load_for_inference(tmp_path / "evil.ckpt")
    assert "\n" not in str(err.value) and "checkpoint" in str(err.value)
    assert "this must never run" not in capsys.readouterr().out


@pytest.mark.parametrize("override, message", [
    ("mc.batch_size=abc", "mc.batch_size=abc: expected a valid integer"),
    ("mc.batch_size=0", "mc.batch_size=0: expected a value greater than or equal to 1"),
    ("mc.limit=-1", "mc.limit=-1: expected a value greater than or equal to 1"),
    ("mc.modes=[text,letters]", "mc.modes[1]=letters: expected 'text' or 'letter'"),
    ("text.max_length=1", "text.max_length=1: expected a value greater than or equal to 2"),
    ("text.batch_size=[1,2]", "text.batch_size=[1, 2]: expected a valid integer"),
    ("checkpoint=[1,2]", "checkpoint=[1, 2]: expected a valid string"),
    ("report=null", "report=None: expected a valid string"),
    ("benchmarks.mmbench.path=-1", "benchmarks.mmbench.path=-1: expected a string"),
])
def test_eval_wrong_values_are_one_line_before_weights(override: str, message: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """dsvl-eval answers like dsvl-train: typed values (conf/eval.yaml's schema), one line, exit 2, no weights read."""
    from dsvl.cli._config import guarded

    cfg = compose(["checkpoint=/nonexistent/model", f"mc.shards={tmp_path}", override], config_name="eval", output_dir=tmp_path)
    with pytest.raises(SystemExit) as exit_:
        guarded("dsvl-eval", lambda: run_eval(cfg))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith(f"dsvl-eval: error: {message}"), err


def test_eval_cli_errors(trained: dict[str, Path], tmp_path: Path) -> None:
    cfg = compose([f"checkpoint={trained['export']}"], config_name="eval", output_dir=tmp_path)
    with pytest.raises(EvalError, match="nothing to evaluate"):
        run_eval(cfg)
    cfg = compose([f"checkpoint={trained['export']}", f"mc.shards={tmp_path}/missing"], config_name="eval", output_dir=tmp_path)
    with pytest.raises(DataError, match="no shards at"):
        run_eval(cfg)
    old = tmp_path / "old.ckpt"  # no hyperparameters: written before stages saved them
    torch.save({"state_dict": {}}, old)
    with pytest.raises(EvalError, match="older dsvl-train .no model_config"):
        load_for_inference(old)
    saved = torch.load(trained["ckpt"], weights_only=True)
    del saved["hyper_parameters"]["system_prompt"]
    torch.save(saved, old)
    with pytest.raises(EvalError, match="older dsvl-train .no system_prompt"):
        load_for_inference(old)


def test_dsvl_eval_console_entry(trained: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    from dsvl.cli import evaluate

    write_shards(generate_samples("mc", "val", 3, seed=0), tmp_path / "mc", prefix="mc")
    run_dir = tmp_path / "hydra_run"
    monkeypatch.setattr("sys.argv", ["dsvl-eval", f"checkpoint={trained['export']}", f"mc.shards={tmp_path / 'mc'}",
                                     "device=cpu", f"hydra.run.dir={run_dir}"])
    evaluate.main()
    out = capsys.readouterr().out
    assert "mc/text/accuracy" in out and (run_dir / "eval_report.json").is_file()
    monkeypatch.setattr("sys.argv", ["dsvl-eval", f"mc.shards={tmp_path / 'mc'}", f"hydra.run.dir={run_dir}"])
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err[-1] == "dsvl-eval: error: checkpoint: no value (set it: checkpoint=...)"


@pytest.mark.parametrize("option, message", [({"dtype": "fp8"}, "dtype=fp8: expected one of"),
                                             ({"device": "gpu0"}, "device=gpu0:")])
def test_bad_dtype_or_device_fails_before_weights_load(trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                       option: dict[str, str], message: str) -> None:
    from dsvl.model import VisionLanguageModel

    def no_load(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("weights loaded before the option was checked")

    monkeypatch.setattr(VisionLanguageModel, "from_pretrained", no_load)
    with pytest.raises(EvalError, match=message) as err:
        load_for_inference(trained["export"], **option)
    assert "\n" not in str(err.value)
