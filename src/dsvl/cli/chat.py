"""`dsvl-chat`: talk to a trained model (a dsvl `.ckpt` or an exported directory).

    dsvl-chat --model run/checkpoints/last.ckpt --image a.png --image b.png "Compare the images."
    dsvl-chat --model outputs/export/demo --image a.png        # interactive: one question per line

Images go into the first question (before its text, unless it has `<image_placeholder>`s).
The interactive loop keeps the conversation and ends on EOF, an empty line or "exit".
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from typing import TextIO

from dsvl.cli._config import fail
from dsvl.cli._config import OneLineParser, positive_int, ranged

PROG = "dsvl-chat"
EXIT_WORDS = {"exit", "quit", ":q"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = OneLineParser(prog=PROG, description="Answer questions about images with a dsvl model.")
    p.add_argument("question", nargs="?", help="the question; without it, read questions from stdin (interactive)")
    p.add_argument("--model", required=True, help="exported model directory (save_pretrained) or a dsvl-train .ckpt")
    p.add_argument("--adapter", help="a peft LoRA adapter directory (a finetune/lora run's adapter/), merged onto --model")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the model directory / the run's tokenizer)")
    p.add_argument("--image", action="append", default=[], help="an image file (repeat for several images)")
    p.add_argument("--system-prompt", default="auto",
                   help='system prompt: "auto" (the one the model trained with, else DeepSeek-VL\'s), "" for none, or the text')
    p.add_argument("--max-new-tokens", type=positive_int, default=128)
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=ranged(float, 0.0, low_open=True), default=1.0)
    p.add_argument("--top-p", type=ranged(float, 0.0, 1.0, low_open=True), default=1.0)
    p.add_argument("--top-k", type=ranged(int, 0), default=0, help="0: no top-k filter")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    p.add_argument("--dtype", default=None, help="bf16 | fp16 | fp32 (default: the weights' dtype)")
    return p.parse_args(argv)


def _questions(stream: TextIO) -> Iterator[str]:
    """Lines of the interactive session until EOF, an empty line or an exit word."""
    interactive = stream.isatty()
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        question = stream.readline().strip()  # "" at EOF
        if not question or question.lower() in EXIT_WORDS:
            return
        yield question


def main(argv: Sequence[str] | None = None, stdin: TextIO | None = None) -> int:
    """Console script `dsvl-chat`; returns the exit code (2 with a one-line message on bad input)."""
    args = parse_args(argv)
    from transformers.utils import logging as hf_logging

    from dsvl.cli.evaluate import EvalError, load_for_inference, pick_system_prompt
    from dsvl.eval.generation import ChatGenerator, GenerationSettings, load_image, user_turn

    hf_logging.disable_progress_bar()
    try:
        images = [load_image(path) for path in args.image]
        loaded = load_for_inference(args.model, args.tokenizer, args.device, args.dtype, adapter=args.adapter)
        if images and not loaded.model.vision_spec.inputs:
            raise EvalError(f"{args.model} has no vision tower: it cannot take --image")
        generator = ChatGenerator(loaded.model, loaded.tokenizer, pick_system_prompt(args.system_prompt, loaded))
        settings = GenerationSettings(max_new_tokens=args.max_new_tokens, do_sample=args.sample, temperature=args.temperature,
                                      top_p=args.top_p, top_k=args.top_k, seed=args.seed)
        history: list[dict[str, str]] = []
        for question in [args.question] if args.question is not None else _questions(stdin or sys.stdin):
            turn = user_turn(question, 0 if history else len(images))
            answer = generator.generate([[*history, turn]], [images], settings)[0]
            print(answer, flush=True)
            history += [turn, {"role": "assistant", "content": answer}]
        return 0
    except (ValueError, OSError) as e:  # dsvl's user errors are ValueErrors; unreadable files OSErrors
        fail(PROG, e)


if __name__ == "__main__":
    sys.exit(main())
