"""Run a console script's `main()` in a forked child of the pytest process: a real process (its own exit code,
signals, stdout / stderr, process group) without paying the torch / Lightning / transformers imports of a fresh
interpreter again (about 10 s on a 2-core machine)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


def run_forked(main: Callable[[], Any], argv: Sequence[str], *, env: Mapping[str, str | None] | None = None,
               cwd: Path | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """`main()` with `sys.argv = argv` in a forked child; `env` entries set (None: removed) and `cwd` entered in
    the child only. One torch thread in the child, as DataLoader workers do after a fork. Returns the exit code
    and what the child wrote to its stdout and stderr."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        pid = os.fork()
        if pid == 0:  # child: never returns into pytest
            code = 1
            os.setpgid(0, 0)  # its DataLoader workers join its process group, so they can be reaped with it
            try:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
                for key, value in (env or {}).items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
                if cwd is not None:
                    os.chdir(cwd)
                import torch

                torch.set_num_threads(1)
                sys.argv = list(argv)
                main()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:  # noqa: BLE001 - report like an uncaught error would
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        deadline = time.monotonic() + timeout
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if done[0] == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        try:  # a run that SIGKILLed itself orphans its DataLoader workers, which can block forever on a pipe
            os.killpg(pid, signal.SIGKILL)  # write at exit, holding this process's inherited file descriptors
        except ProcessLookupError:
            pass
        if done[0] == 0:
            raise TimeoutError(f"{' '.join(argv)} did not stop within {timeout}s")
        rc = os.waitstatus_to_exitcode(done[1])
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(list(argv), rc, out.read(), err.read())
