"""Suite-wide settings: nothing downloads, nothing phones home, CPU threads kept small."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

import logging  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_logger_levels():
    """Entry points run in-process (the demo quiets loggers) must not change what later tests, or the
    processes they fork, log."""
    manager = logging.root.manager
    before = {name: (lg.level, lg.propagate) for name, lg in manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    root_level, root_handlers = logging.root.level, list(logging.root.handlers)
    yield
    # a handler an in-process entry point added writes to this test's (then closed) captured stderr
    logging.root.handlers[:] = root_handlers
    # an in-process W&B run exports its service's address; forked runs must start their own service, or a
    # SIGKILLed run's id stays "in use" in this process's service and its restart is refused
    os.environ.pop("WANDB_SERVICE", None)
    for name, lg in list(manager.loggerDict.items()):
        if isinstance(lg, logging.Logger):
            lg.setLevel(before.get(name, (logging.NOTSET, True))[0])
            lg.propagate = before.get(name, (0, True))[1]
    logging.root.setLevel(root_level)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """The demo data set at 240 train / 40 eval samples, its pretrained parts included, made once per session and
    shared read-only by the data, distributed and bench tests (tests/stages, tests/reliability use smaller ones)."""
    from dsvl.data.demo import make_demo_data

    out = tmp_path_factory.mktemp("demo")
    make_demo_data(out, seed=0, train_size=240, eval_size=40, shard_size=40)
    return out


DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "GROUP_RANK")


@pytest.fixture(autouse=True)
def _no_leaked_process_group():
    """A test that runs a distributed strategy in this process must leave no default process group and no
    MASTER_* / RANK variables: later tests could not start their own group, and every subprocess they start
    would inherit the variables and wait for a rendezvous that never comes."""
    before = {k: os.environ.get(k) for k in DIST_ENV}
    yield
    import torch.distributed as dist

    leaked = dist.is_available() and dist.is_initialized()
    if leaked:
        dist.destroy_process_group()
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    assert not leaked, "the test left a default torch.distributed process group in the pytest process"
