"""dsvl-eval on public benchmark files with a tiny model: the reported numbers equal a hand-computed
scoring of the same model's option losses (one option, one forward, no batching, no shared image
features), MC shards and an MMBench TSV of the same questions agree, and each question's images go
through the towers once."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from dsvl.cli import evaluate
from dsvl.data.bad_samples import BadSample
from dsvl.data.demo import generate_samples
from dsvl.data.images import ImagePreprocessor
from dsvl.data.multiple_choice import LETTER_INSTRUCTION, MultipleChoiceCollator, MultipleChoiceSample
from dsvl.data.shards import write_shards
from dsvl.data.tokenize import TextEncoder
from dsvl.eval.benchmarks import BenchmarkSpec, Question, summarize
from dsvl.eval.benchmarks.base import load_image
from dsvl.eval.evaluate import evaluate_benchmark, evaluate_mc
from dsvl.eval.scoring import forward_inputs, score_options

from . import bench_files as bf
from .eval_helpers import model_config


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """Tiny models gain nothing from a second intra-op thread, and on a busy 2-core machine it costs 10x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def siglip_model(tokenizer: Any) -> torch.nn.Module:
    """The 1.3B layout at tiny size (one tower: the cheapest image encoder for the end-to-end run)."""
    from dsvl.cli.models import build_model

    torch.manual_seed(1)
    return build_model(model_config("tiny_siglip", tokenizer)).eval()


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory, siglip_model: torch.nn.Module, tokenizer: Any) -> Path:
    out = tmp_path_factory.mktemp("bench_export")
    siglip_model.save_pretrained(out)
    tokenizer.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("bench_files")
    out = {"mmbench": {"path": root / "MMBench_DEV_EN.tsv", **bf.write_mmbench(root / "MMBench_DEV_EN.tsv")},
           "seed": bf.write_seed(root / "seed"), "pope": bf.write_pope(root / "pope"),
           "mmmu": {"path": root / "mmmu.parquet", **bf.write_mmmu(root / "mmmu.parquet")},
           "hellaswag": {"path": root / "hs.jsonl", **bf.write_hellaswag(root / "hs.jsonl")},
           "mmlu": {"path": root / "mmlu", **bf.write_mmlu_csv(root / "mmlu")},
           "text_ppl": {"path": root / "pile.jsonl", **bf.write_text(root / "pile.jsonl")}}
    return out


def hand_option_losses(model: torch.nn.Module, tokenizer: Any, q: Question, letters: bool) -> list[float]:
    """Each option's mean NLL from its own forward pass (pixels encoded for every option)."""
    encoder = TextEncoder(tokenizer, model.num_image_tokens, supervise="assistant", system_prompt=None)
    text = q.text
    if letters:
        text += "\n" + "\n".join(f"{'ABCD'[i]}. {o}" for i, o in enumerate(q.options)) + f"\n{LETTER_INSTRUCTION}"
    pixels = ImagePreprocessor(model.vision_spec)([load_image(r, q.key) for r in q.images]) if q.images else {}
    losses = []
    for i, option in enumerate(q.options):
        enc = encoder.encode_answer([{"role": "user", "content": text}], "ABCD"[i] if letters else option)
        out = model(input_ids=torch.tensor([enc.input_ids]), labels=torch.tensor([enc.labels]), **pixels)
        losses.append(float(out.loss))
    return losses


def hand_report(model: torch.nn.Module, tokenizer: Any, spec: BenchmarkSpec, letters: bool = False) -> dict[str, Any]:
    """Accuracy over questions (all circular copies right) and per category, from `hand_option_losses`."""
    from dsvl.eval.benchmarks.results import Record

    records = []
    for q in spec.questions():
        if isinstance(q, BadSample) or q.kind == "open":
            continue
        try:
            losses = hand_option_losses(model, tokenizer, q, letters)
        except BadSample:
            continue
        pred = min(range(len(losses)), key=losses.__getitem__)
        records.append(Record(q.group, q.kind, pred == q.answer, pred, q.answer, q.categories))
    return summarize(records, {})


def counts(report: dict[str, Any]) -> dict[tuple[str, str], int]:
    return {(f, k): v["num_samples"] for f, values in report["per_category"].items() for k, v in values.items()}


def accuracies(report: dict[str, Any]) -> dict[tuple[str, str], float]:
    return {(f, k): v["accuracy"] for f, values in report["per_category"].items() for k, v in values.items()}


@torch.no_grad()
def test_dsvl_eval_reports_hand_computed_numbers(export: Path, files: dict[str, dict[str, Any]], siglip_model: torch.nn.Module,
                                                 tokenizer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    args = [f"benchmarks.{name}.path={info['path']}" for name, info in files.items()]
    args += [f"benchmarks.{name}.images={files[name]['images']}" for name in ("seed", "pope")]
    args += ["benchmarks.mmbench_cn.path=" + str(files["mmbench"]["path"]), "benchmarks.mmbench_cn.mode=ppl_letter",
             "benchmarks.pope.mode=generate", "benchmarks.pope.max_new_tokens=3", "benchmarks.mmlu.batch_size=2"]
    monkeypatch.setattr("sys.argv", ["dsvl-eval", f"checkpoint={export}", "device=cpu", "system_prompt=none",
                                     f"hydra.run.dir={tmp_path}", *args])
    evaluate.main()
    out = capsys.readouterr().out
    assert "mmbench/accuracy" in out and "pope/f1" in out and "text_ppl/perplexity" in out and "mmbench/l2-category/" in out
    report = json.loads((tmp_path / "eval_report.json").read_text())["benchmarks"]
    model = siglip_model
    for name in ("mmbench", "seed", "mmmu", "hellaswag", "mmlu", "mmbench_cn"):
        letters = name == "mmbench_cn"
        spec = BenchmarkSpec(name=name, reader="mmbench" if letters else "", path=str(files["mmbench" if letters else name]["path"]),
                             images=str(files[name]["images"]) if "images" in files.get(name, {}) else None)
        hand = hand_report(model, tokenizer, spec, letters=letters)
        got = report[name]
        assert got["accuracy"] == pytest.approx(hand["accuracy"]), name
        assert got["num_samples"] == hand["num_samples"] and counts(got) == counts(hand), name
        assert accuracies(got) == pytest.approx(accuracies(hand)), name
    assert report["mmbench"]["num_samples"] == 5 and report["mmbench"]["num_rows"] == 7
    assert report["mmbench"]["skipped"] == files["mmbench"]["skipped"]
    assert report["seed"]["num_samples"] == 3 and report["seed"]["skipped"] == files["seed"]["skipped"]
    assert report["mmmu"]["num_samples"] == 2 and report["mmmu"]["skipped"] == {**files["mmmu"]["skipped"], "open_question": 1}
    assert report["mmlu"]["num_samples"] == 3 and set(report["mmlu"]["per_category"]["subject"]) == {"algebra", "virology"}
    pope = report["pope"]
    assert pope["mode"] == "generate" and pope["num_samples"] == 4 and pope["skipped"] == files["pope"]["skipped"]
    assert set(pope) >= {"accuracy", "precision", "recall", "f1", "yes_ratio"} and 0 <= pope["yes_ratio"] <= 1
    # perplexity: every document's first tokens scored as pretraining sees them
    text = TextEncoder(tokenizer, 0, supervise="all", system_prompt=None)
    nll = tokens = 0.0
    for doc in [json.loads(line)["text"] for line in files["text_ppl"]["path"].read_text().splitlines()][:2]:
        enc = text.encode_text(doc)
        ids, labels = torch.tensor([enc.input_ids[:1024]]), torch.tensor([enc.labels[:1024]])
        out = model(input_ids=ids, labels=labels)
        nll, tokens = nll + float(out.loss) * int(out.num_loss_tokens), tokens + int(out.num_loss_tokens)
    assert report["text_ppl"]["perplexity"] == pytest.approx(math.exp(nll / tokens), rel=1e-4)
    assert report["text_ppl"]["num_samples"] == 2 and report["text_ppl"]["skipped"] == {"malformed_row": 1}


def test_generate_mode_answers_open_and_lettered_questions(tiny_model: torch.nn.Module, tokenizer: Any,
                                                            files: dict[str, dict[str, Any]]) -> None:
    spec = BenchmarkSpec(name="mmmu", path=str(files["mmmu"]["path"]), mode="generate", max_new_tokens=2)
    report = evaluate_benchmark(tiny_model, tokenizer, spec, system_prompt=None)
    assert report["num_samples"] == 3 and report["skipped"] == files["mmmu"]["skipped"]  # the open question counts here
    assert 0.0 <= report["accuracy"] <= 1.0


def test_mc_shards_and_mmbench_tsv_agree(tiny_model: torch.nn.Module, tokenizer: Any, tmp_path: Path) -> None:
    samples = list(generate_samples("mc", "val", 8, seed=3))
    write_shards(samples, tmp_path / "mc", prefix="mc")
    bf.write_tsv(tmp_path / "same.tsv", [bf.mc_sample_to_mmbench(i, s) for i, s in enumerate(samples)])
    shards = evaluate_mc(tiny_model, tokenizer, str(tmp_path / "mc"), mode="text", batch_size=3, system_prompt=None)
    tsv = evaluate_benchmark(tiny_model, tokenizer, BenchmarkSpec(name="mmbench", path=str(tmp_path / "same.tsv"), batch_size=3),
                             system_prompt=None)
    assert tsv["num_samples"] == shards["num_samples"] == 8
    assert tsv["accuracy"] == pytest.approx(shards["accuracy"])
    assert {k: v["accuracy"] for k, v in tsv["per_category"]["category"].items()} == \
        pytest.approx({k: v["accuracy"] for k, v in shards["per_category"].items()})


@torch.no_grad()
def test_option_rows_share_one_image_encoding(tiny_model: torch.nn.Module, tokenizer: Any) -> None:
    samples = [MultipleChoiceSample(f"q{i}", [{"role": "user", "content": "<image_placeholder>" * n + "Which?"}],
                                    ["red", "green", "blue", "a long yellow one"][: 2 + i], i % 2, modality="multimodal",
                                    images=[load_image(bf.png(i + j), "x") for j in range(n)])
               for i, n in enumerate([1, 2, 1])]
    batch = MultipleChoiceCollator(tokenizer, tiny_model.vision_spec)(samples)
    seen: list[int] = []
    hook = tiny_model.vision.register_forward_hook(lambda m, args, kwargs, out: seen.append(int(out.shape[0])), with_kwargs=True)
    try:
        shared = score_options(tiny_model, batch)
    finally:
        hook.remove()
    assert seen == [4]  # 1 + 2 + 1 images, not one copy per option row (2 + 6 + 4)
    out = tiny_model(**forward_inputs(batch))  # every row encodes its own copy of the pixels
    from dsvl.eval.scoring import sequence_nll

    sums, counts = sequence_nll(out.logits, batch["labels"])
    naive = torch.full_like(shared, float("inf"))
    naive[batch["row_sample"], batch["row_option"]] = sums / counts
    torch.testing.assert_close(shared, naive, rtol=1e-5, atol=1e-5)


def test_dsvl_eval_typo_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for typo in ("mc.shard=x", "benchmarks.mmbnch.path=x"):
        monkeypatch.setattr("sys.argv", ["dsvl-eval", "checkpoint=X", typo])
        with pytest.raises(SystemExit) as exit_info:
            evaluate.main()
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and err.count("\n") == 0 and err.startswith("dsvl-eval: error:") and typo.split("=")[0] in err
