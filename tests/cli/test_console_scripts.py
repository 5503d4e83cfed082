"""The console scripts built on argparse answer a usage mistake the way dsvl-train does."""
from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("module, argv", [("data", ["frobnicate"]), ("chat", ["--max-new-tokens", "0"]),
                                          ("demo", ["--bogus"]), ("demo", ["ablation", "--steps", "x"]),
                                          ("pipeline", ["--bogus", "demo"]), ("pipeline", []),
                                          ("chat", ["--model", "m", "--top-p", "5", "q"]),
                                          ("chat", ["--model", "m", "--temperature", "0", "q"]),
                                          ("demo", ["--data-dir", __file__]), ("demo", ["--out", __file__]),
                                          ("pipeline", ["demo", "align:"]), ("pipeline", ["demo", "optim.lr=="])])
def test_argparse_scripts_answer_a_typo_in_one_line(module: str, argv: list[str], capsys) -> None:
    """Every argparse console script (dsvl-data, -chat, -demo, -pipeline) answers a usage mistake with
    one line and exit code 2, as dsvl-train does (argparse alone prints its usage block first)."""
    main = importlib.import_module(f"dsvl.cli.{module}").main
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith("dsvl-") and "error:" in err[0], err
