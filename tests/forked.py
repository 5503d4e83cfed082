"""Run an entry point's `main()` in forked children of the pytest process: real processes (their own exit codes,
signals, stdout / stderr, process groups) without paying the torch / Lightning / transformers imports of a fresh
interpreter again (about 10 s per process on a 2-core machine).

`run_forked`: one process, as a console script runs. `run_ranks`: the ranks of one node, each a child with the
environment torchrun gives its workers (so Lightning sees a torchelastic launch and joins their process group)."""
from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

Env = Mapping[str, "str | None"]
# imported once in pytest (the suite's in-process tests import them anyway) rather than in every child
PRELOAD = ("lightning.pytorch", "transformers", "dsvl.callbacks", "dsvl.cli.validate", "dsvl.data", "dsvl.model",
           "dsvl.model.export", "dsvl.stages", "dsvl.stages.strategies")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fork(main: Callable[[], Any], argv: Sequence[str], env: Env, cwd: Path | None, out: IO[str], err: IO[str]) -> int:
    """Fork a child that runs `main()` with `sys.argv = argv` and `env` (None: removed), stdout / stderr into `out` /
    `err`, one torch thread (as DataLoader workers after a fork); returns its pid (its own process group)."""
    pid = os.fork()
    if pid:
        return pid
    code = 1  # child: never returns into pytest
    os.setpgid(0, 0)  # its DataLoader workers join its process group, so they can be reaped with it
    try:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
        for key, value in env.items():
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


def _run(main: Callable[[], Any], argv: Sequence[str], envs: Sequence[Env], cwd: Path | None,
         timeout: float) -> subprocess.CompletedProcess:
    """One child per entry of `envs`, all started at once; when one fails the others are killed (as torchrun does).
    Returns the first failing exit code (else 0) and the children's stdout / stderr, one after the other."""
    for name in PRELOAD:
        importlib.import_module(name)
    files = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")) for _ in envs]
    try:
        pids = [_fork(main, argv, env, cwd, out, err) for env, (out, err) in zip(envs, files)]
        codes: dict[int, int] = {}
        deadline = time.monotonic() + timeout
        while len(codes) < len(pids) and time.monotonic() < deadline:
            for pid in pids:
                if pid not in codes and (done := os.waitpid(pid, os.WNOHANG))[0]:
                    codes[pid] = os.waitstatus_to_exitcode(done[1])
            if any(codes.values()):
                break
            time.sleep(0.05)
        failed = next((c for c in codes.values() if c), 0)
        timed_out = len(codes) < len(pids) and not failed
        for pid in pids:
            if pid not in codes:
                os.kill(pid, signal.SIGKILL)
                codes[pid] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            try:  # a run that SIGKILLed itself orphans its DataLoader workers, which can block forever on a pipe
                os.killpg(pid, signal.SIGKILL)  # write at exit, holding this process's inherited file descriptors
            except ProcessLookupError:
                pass
        if timed_out:
            raise TimeoutError(f"{' '.join(argv)} did not stop within {timeout}s")
        texts = []
        for out, err in files:
            out.seek(0)
            err.seek(0)
            texts.append((out.read(), err.read()))
        return subprocess.CompletedProcess(list(argv), failed, "".join(o for o, _ in texts), "".join(e for _, e in texts))
    finally:
        for out, err in files:
            out.close()
            err.close()


def run_forked(main: Callable[[], Any], argv: Sequence[str], *, env: Env | None = None, cwd: Path | None = None,
               timeout: float = 240) -> subprocess.CompletedProcess:
    """`main()` with `sys.argv = argv` in one forked child; `env` entries set (None: removed) and `cwd` entered in the
    child only. Returns its exit code and what it wrote to stdout and stderr."""
    return _run(main, argv, [env or {}], cwd, timeout)


def run_ranks(main: Callable[[], Any], argv: Sequence[str], nproc: int = 2, *, env: Env | None = None,
              cwd: Path | None = None, timeout: float = 500) -> subprocess.CompletedProcess:
    """`main()` on `nproc` ranks of one node (as `torchrun --nproc_per_node NPROC`): each a forked child with the
    variables torchrun sets for its workers (a fresh rendezvous port, one OpenMP thread) plus `env`."""
    common = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(nproc),
              "LOCAL_WORLD_SIZE": str(nproc), "ROLE_WORLD_SIZE": str(nproc), "GROUP_RANK": "0", "GROUP_WORLD_SIZE": "1",
              "ROLE_NAME": "default", "TORCHELASTIC_RUN_ID": uuid.uuid4().hex, "TORCHELASTIC_RESTART_COUNT": "0",
              "TORCHELASTIC_MAX_RESTARTS": "0", "OMP_NUM_THREADS": "1", **(env or {})}
    envs = [{**common, "RANK": str(r), "LOCAL_RANK": str(r), "ROLE_RANK": str(r)} for r in range(nproc)]
    return _run(main, argv, envs, cwd, timeout)
