"""A new user's wrong overrides of `experiment=demo/pretrain`, one at a time: each ends with exit
code 2 and exactly one line on stderr that names the key, before any model weights exist. Right
overrides (and every recipe, see tests/recipes) still compose and pass the same checks.

Every case runs in this process. A console-script run composes the config three times (the
one-line composition precheck, then Hydra's mode probe and its run), so the whole table goes
through the checks `dsvl-train` makes after composing (each override applied to the composed
recipe with Hydra's own override grammar); a representative row per kind of check goes through
the console entry itself, with the model's constructor patched to fail the test if weights are built.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

# override -> what the one line must contain (the key, and the value or what is accepted)
CASES: dict[str, list[str]] = {
    # wrong types, refused by the schemas
    "trainer.max_steps=abc": ["trainer.max_steps=abc", "integer"],
    "seed=abc": ["seed=abc", "integer"],
    "stage.global_batch=abc": ["stage.global_batch=abc", "integer"],
    "optim.lr=abc": ["optim.lr=abc", "number"],
    "data.packing=maybe": ["data.packing=maybe", "boolean"],
    "validate_at_end=perhaps": ["validate_at_end=perhaps", "boolean"],
    "trainer.gradient_clip_val=[1,2]": ["trainer.gradient_clip_val", "number"],
    # negative sizes and values out of range
    "optim.lr=-1": ["optim.lr=-1", "greater than 0"],
    "optim.eps=-1e-8": ["optim.eps", "greater than or equal to 0"],
    "optim.weight_decay=-0.1": ["optim.weight_decay=-0.1", "greater than or equal to 0"],
    "data.num_workers=-1": ["data.num_workers=-1", "greater than or equal to 0"],
    "data.max_length=1": ["data.max_length=1", "greater than or equal to 2"],
    "data.val_batch_size=0": ["data.val_batch_size=0", "greater than or equal to 1"],
    "data.micro_batch_size=0": ["data.micro_batch_size=0", "greater than or equal to 1"],
    "data.shuffle_buffer=-5": ["data.shuffle_buffer=-5", "greater than or equal to 0"],
    "data.val_max_batches=0": ["data.val_max_batches=0", "greater than or equal to 1"],
    "+data.prefetch_factor=0": ["data.prefetch_factor=0", "greater than or equal to 1"],
    "trainer.gradient_clip_val=-1": ["trainer.gradient_clip_val=-1", "greater than or equal to 0"],
    "trainer.max_steps=0": ["trainer.max_steps=0", "greater than or equal to 1"],
    "trainer.max_steps=-1": ["trainer.max_steps=-1", "greater than or equal to 1"],
    "trainer.log_every_n_steps=0": ["trainer.log_every_n_steps=0", "greater than or equal to 1"],
    "trainer.num_nodes=0": ["trainer.num_nodes=0", "greater than or equal to 1"],
    "trainer.devices=0": ["trainer.devices=0", "'auto'"],
    "+trainer.accumulate_grad_batches=0": ["trainer.accumulate_grad_batches=0", "greater than or equal to 1"],
    "val_every_n_steps=0": ["val_every_n_steps=0", "greater than or equal to 1"],
    "torch_threads=0": ["torch_threads=0", "greater than or equal to 1"],
    "seed=-1": ["seed=-1", "greater than or equal to 0"],
    "scheduler.warmup_steps=-1": ["scheduler.warmup_steps=-1", "greater than or equal to 0"],
    "mc_val.batch_size=0": ["mc_val.batch_size=0", "greater than or equal to 1"],
    "callbacks.nonfinite_guard.max_consecutive=0": ["callbacks.nonfinite_guard.max_consecutive=0", "greater than or equal to 1"],
    "callbacks.model_checkpoint.every_n_train_steps=0": ["callbacks.model_checkpoint.every_n_train_steps=0", "greater than"],
    # ratios outside [0, 1]
    "data.schedule.target=1.5": ["data.schedule.target=1.5", "less than or equal to 1"],
    "data.schedule.start=-0.1": ["data.schedule.start=-0.1", "greater than or equal to 0"],
    "optim.betas=[0.9,1.5]": ["optim.betas[1]=1.5", "less than 1"],
    "limit_val_batches=1.5": ["limit_val_batches=1.5", "less than or equal to 1"],
    "data.train_sources.text.weight=-1": ["data.train_sources.text.weight=-1", "greater than or equal to 0"],
    # unknown choices
    "trainer.precision=17": ["trainer.precision=17", "'bf16-mixed'", "'32-true'"],
    "trainer.gradient_clip_algorithm=sum": ["trainer.gradient_clip_algorithm=sum", "'norm'", "'value'"],
    "data.mode=bogus": ["data.mode=bogus", "'grouped'", "'multimodal_only'"],
    "data.supervise=answers": ["data.supervise=answers", "'assistant'"],
    "data.schedule.shape=square": ["data.schedule.shape=square", "'cosine'"],
    "data.train_sources.text.modality=image": ["data.train_sources.text.modality=image", "'multimodal'"],
    "mc_val.mode=letters": ["mc_val.mode=letters", "'letter'"],
    "stage.trainable=[adaptor,encoder]": ["stage.trainable", "unknown part 'encoder'", "llm", "aliases: vision"],
    "experiment=demo/nope": ["experiment=demo/nope", "accepted:", "demo/pretrain"],
    "model=tiny_nope": ["model=tiny_nope", "accepted:", "tiny_siglip"],
    "model/adaptor=nope": ["model/adaptor=nope", "accepted:", "mlp_gelu"],
    "trainer.max_stepz=3": ["trainer.max_stepz", "no such key"],
    "optim.lr=1e-3,3e-3": ["optim.lr=1e-3,3e-3", "-m"],
    # bad paths
    "init_from=/etc/passwd": ["init_from=/etc/passwd", "not a checkpoint"],
    "init_from=/nonexistent/last.ckpt": ["init_from=/nonexistent/last.ckpt", "no such file"],
    "init_from={tmp}": ["init_from=", "without config.json"],
    "init_from={tmp}/junk.ckpt": ["init_from=", "junk.ckpt", "not a torch checkpoint"],
    "ckpt_path=/nonexistent/last.ckpt": ["ckpt_path=/nonexistent/last.ckpt", "no such file", "'last'"],
    "data.train_sources.text.urls=/nonexistent/shards": ["data.train_sources", "'text'", "/nonexistent/shards", "no shards"],
    "data.tokenizer=/nonexistent/tokenizer": ["data.tokenizer=/nonexistent/tokenizer", "no such directory"],
    "mc_val.shards=/nonexistent/mc": ["mc_val.shards=/nonexistent/mc", "no shards"],
    # contradictory combinations (with the recipe's other values)
    "scheduler.warmup_steps=1000": ["scheduler.warmup_steps=1000", "trainer.max_steps=500", "accepted: 0 to 500"],
    "scheduler.factors=[0.5]": ["scheduler.milestones", "scheduler.factors", "same length"],
    "stage.global_batch=12": ["stage.global_batch=12", "data.micro_batch_size=8"],
    "data.mode=text_only": None,  # valid here (the recipe has text sources): see RIGHT
    "data.train_sources.text=null": None,
    # found by walking every leaf with wrong values (tests below): targets, numbers for paths, callbacks' ranges
    "data._target_=abc": ["data._target_='abc'", "dotted import path"],
    "scheduler._target_=abc.def": ["scheduler._target_='abc.def' cannot be imported"],
    "init_from=-1": ["init_from=-1", "no such file"],
    "data.train_sources.text.urls=0": ["'text'", "urls=0", "accepted: a folder of .tar shards"],
    "callbacks.throughput.window_size=1": ["callbacks.throughput.window_size=1", "greater than or equal to 2"],
    "callbacks.samples.max_new_tokens=0": ["callbacks.samples.max_new_tokens=0", "greater than or equal to 1"],
    "logger.csv.flush_logs_every_n_steps=0": ["logger.csv.flush_logs_every_n_steps=0", "greater than or equal to 1"],
    "trainer.strategy=abc": ["trainer: invalid settings for", "Trainer", "strategy='abc'"],
    "callbacks.preemption.signals=[SIGTERMX]": ["callbacks.preemption.signals=['SIGTERMX']", "SIGUSR1"],
    "data.tokenizer=-1": ["cannot load tokenizer from -1"],
    "val_benchmarks=abc": ["val_benchmarks=abc", "dictionary"],
    "callbacks.skip_report.dirpath=[1,2]": ["callbacks.skip_report.dirpath=[1, 2]", "string"],
    "data.vision_spec=abc": ["data.vision_spec=abc", "dictionary"],
    # model shapes: the model's own checks, still before any weights
    "model.adaptor.out_dim=48": ["model.adaptor.out_dim=48", "hidden_size", "64"],
    "model.adaptor.low_in_dim=7": ["model.adaptor.low_in_dim=7", "accepted: 64"],
}
WRONG = {k: v for k, v in CASES.items() if v is not None}
RIGHT = [k for k, v in CASES.items() if v is None] + [
    "optim.lr=1e-4", "trainer.precision=bf16-mixed", "trainer.precision=16", "+trainer.enable_progress_bar=false",
    "data.num_workers=0", "val_every_n_steps=null", "stage.trainable=[vision,adaptor,llm]", "limit_val_batches=0.5",
    "seed=0", "trainer.devices=auto", "ckpt_path=hpc",  # SLURM requeue: Lightning finds hpc_ckpt_<n>.ckpt itself
]


class WeightsBuilt(BaseException):
    """Raised by the patched model constructor: no user error handler may swallow it."""


@pytest.fixture
def no_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building the model with real weights fails the test (meta-device builds, which only learn shapes, pass)."""
    from dsvl.model.vlm import VisionLanguageModel

    real_init = VisionLanguageModel.__init__

    def init(self, *args, **kwargs):
        if torch.get_default_device().type != "meta":
            raise WeightsBuilt("model weights were built")
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(VisionLanguageModel, "__init__", init)


# Hydra rejects these while composing (group options, keys, sweep syntax): `precheck_overrides`' line
COMPOSITION = {"model=tiny_nope", "model/adaptor=nope", "trainer.max_stepz=3", "optim.lr=1e-3,3e-3", "experiment=demo/nope"}
# the model's own shape checks, made by the run path after `validate_config`
RUN_PATH = {"model.adaptor.out_dim=48", "model.adaptor.low_in_dim=7", "trainer.strategy=abc",
            "callbacks.preemption.signals=[SIGTERMX]", "data.tokenizer=-1"}
# one row per kind of check, through the console entry (sys.argv in, exit code and stderr out)
CONSOLE = ["trainer.max_steps=abc", "optim.lr=-1", "trainer.precision=17", "init_from=/etc/passwd", "mc_val.shards=/nonexistent/mc",
           "model=tiny_nope", "model.adaptor.out_dim=48", "model.adaptor.low_in_dim=7", "trainer.strategy=abc",
           "callbacks.preemption.signals=[SIGTERMX]", "data.tokenizer=-1"]


@pytest.fixture(scope="module")
def recipe(demo_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """`experiment=demo/pretrain` on the demo data, composed once; a folder holding a junk .ckpt."""
    from dsvl.cli._config import compose

    tmp = tmp_path_factory.mktemp("table")
    (tmp / "junk.ckpt").write_bytes(b"not a torch checkpoint")
    return compose(["experiment=demo/pretrain", f"paths.data_dir={demo_data}"], output_dir=tmp / "run"), tmp


def _with_override(base, override: str):
    """`base` with one command-line override applied as Hydra applies it to a composed config."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = copy.deepcopy(base)
    ConfigLoaderImpl._apply_overrides_to_config(OverridesParser.create().parse_overrides([override]), cfg)
    return cfg


def _line(code: int, err: str, expected: list[str]) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err[-2000:]
    assert lines[0].startswith("dsvl-train: error: "), lines[0]
    for part in expected:
        assert part in lines[0], lines[0]


@pytest.mark.parametrize("override", sorted(set(WRONG) - RUN_PATH))
def test_wrong_override_is_one_line_exit_2(override: str, recipe, capsys: pytest.CaptureFixture[str]) -> None:
    from dsvl.cli._config import fail, guarded, precheck_overrides
    from dsvl.cli.validate import validate_config

    base, tmp = recipe
    override = override.format(tmp=tmp)
    with pytest.raises(SystemExit) as exit_:
        if override in COMPOSITION:
            recipe_and_override = [override] if override.startswith("experiment=") else ["experiment=demo/pretrain", override]
            fail("dsvl-train", precheck_overrides(recipe_and_override) or "composed")
        cfg = _with_override(base, override)
        guarded("dsvl-train", lambda: validate_config(cfg))
    _line(exit_.value.code, capsys.readouterr().err, WRONG[override.replace(str(tmp), "{tmp}")])


# mistakes inside the model's parts: Hydra instantiates them (`dsvl.cli.models`), on meta, before any weights
MODEL_CASES: dict[str, list[str]] = {
    "model.vision.low._target_=dsvl.model.vision.NoTower": ["model.vision.low._target_='dsvl.model.vision.NoTower' cannot be imported"],
    "+model.adaptor.dept=3": ["model.adaptor: unknown keys ['dept'] for HybridSplitMLPGelu", "accepted: low_in_dim"],
    "+model.vision.low.hidden_sizee=32": ["model.vision.low: unknown keys ['hidden_sizee'] for transformers' SiglipVisionConfig"],
    "model.llm.model_type=nope": ["model.llm.model_type='nope' is not a transformers model type"],
    "model.llm.num_attention_heads=5": ["model.llm: transformers' LlamaConfig rejects these settings", "not a multiple"],
    "model.vision.low.image_size=30": ["model.vision.low.image_size=30 must be a multiple of patch_size"],
    "model.vision.high.grid=3": ["model.vision.high.grid=3 does not match the low-res tower's grid"],
    "model.adaptor._target_=torch.nn.Identity": ["model.adaptor (Identity) maps vision features of width", "llm hidden_size"],
}


@pytest.mark.parametrize("override", MODEL_CASES)
def test_model_part_mistakes_are_one_line_before_weights(override: str, recipe, no_weights: None,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from dsvl.cli._config import guarded
    from dsvl.cli.models import build_model
    from dsvl.cli.train import check_run

    cfg = _with_override(recipe[0], override)

    def run_path_checks() -> None:  # what `train` does with the model before weights: the parts checked, built on meta
        check_run(cfg)
        build_model(cfg.model, device="meta")

    with pytest.raises(SystemExit) as exit_:
        guarded("dsvl-train", run_path_checks)
    _line(exit_.value.code, capsys.readouterr().err, MODEL_CASES[override])


def _leaves(node: dict, path: str) -> list[str]:
    return [leaf for k, v in node.items() for leaf in (_leaves(v, f"{path}.{k}") if isinstance(v, dict) else [f"{path}.{k}"])]


@pytest.mark.parametrize("value", ["abc", -1, [1, 2], None])
def test_every_train_value_wrong_is_checked_without_a_traceback(value, recipe) -> None:
    """Each leaf of the composed recipe (model aside: below) set to a wrong value, one at a time: `validate_config`
    refuses it in one line or lets it pass (many values are valid); it never raises anything else."""
    from omegaconf import OmegaConf, open_dict

    from dsvl.cli.validate import validate_config
    from dsvl.errors import UserError

    base = recipe[0]
    leaves = [leaf for leaf in _leaves(OmegaConf.to_container(base, resolve=False), "") if not leaf.startswith(".model.")]
    refused = 0
    for leaf in leaves:
        cfg = copy.deepcopy(base)
        with open_dict(cfg):
            OmegaConf.update(cfg, leaf[1:], value, force_add=True)
        try:
            validate_config(cfg)
        except UserError as err:
            assert "\n" not in str(err), (leaf, str(err))
            refused += 1
    assert len(leaves) > 100 and refused > 30


@pytest.mark.parametrize("value", ["abc", -1, 0, [1, 2], None, True])
def test_every_model_value_wrong_is_one_line_or_builds(value, recipe) -> None:
    """Each leaf of the recipe's model node set to a wrong value, one at a time (inputs nobody planned: a negative
    size, a list for a width, a `_target_` that is a number): the meta build either answers in one line with a
    user error, or builds (some values are valid); never a traceback."""
    import copy

    from omegaconf import OmegaConf

    from dsvl.cli.models import build_model
    from dsvl.errors import UserError

    model = OmegaConf.to_container(recipe[0].model, resolve=True)
    built, refused = 0, 0
    for leaf in _leaves(model, "model"):
        if leaf.endswith(".pretrained"):  # weights, not sizes: tests/model/test_part_init.py
            continue
        cfg = copy.deepcopy(model)
        *parents, last = leaf.split(".")[1:]
        node = cfg
        for key in parents:
            node = node[key]
        node[last] = value
        try:
            build_model(cfg, device="meta")
            built += 1
        except UserError as err:
            assert "\n" not in str(err) and str(err).startswith(("model", leaf)), (leaf, str(err))
            refused += 1
    assert refused >= 20 and built + refused >= 40  # the walk reached the parts' keys


@pytest.mark.parametrize("override", CONSOLE)
def test_console_entry_answers_in_one_line_before_any_weights(override: str, demo_data: Path, tmp_path: Path,
                                                              no_weights: None, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from dsvl.cli.train import main

    run_dir = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["dsvl-train", "experiment=demo/pretrain", f"paths.data_dir={demo_data}",
                                      f"hydra.run.dir={run_dir}", override])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main()
    _line(exit_.value.code, capsys.readouterr().err, WRONG[override])
    assert not (run_dir / "checkpoints").exists()


@pytest.mark.parametrize("override", RIGHT)
def test_right_override_validates(override: str, recipe) -> None:
    from dsvl.cli.validate import validate_config

    validate_config(_with_override(recipe[0], override))


def test_type_errors_name_key_value_and_type() -> None:
    """The schema's line names the key, the value as typed and the expected type, for nested list items too."""
    from dsvl.cli.schema import check_schema
    from dsvl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^data\.train_sources\.caption\.urls=\{'a': 1\}: expected a valid string"):
        check_schema({"data": {"train_sources": {"caption": {"urls": {"a": 1}, "modality": "multimodal"}}}})
    with pytest.raises(ConfigError, match=r"^logger\.wandb\.offline=maybe: expected a valid boolean"):
        check_schema({"logger": {"wandb": {"_target_": "lightning.pytorch.loggers.WandbLogger", "offline": "maybe"}}})


def test_every_user_error_class_has_one_base() -> None:
    """The console scripts catch `dsvl.errors.UserError` only: every error a user can cause derives from it."""
    from dsvl.callbacks.nan_guard import NonFiniteLossError
    from dsvl.data.chat import ConversationError
    from dsvl.errors import CheckpointError, ConfigError, DataError, UserError
    from dsvl.eval.evaluate import EvalError
    from dsvl.model.errors import ConfigError as ModelConfigError
    from dsvl.model.safe_load import UnsafeCheckpointError
    from dsvl.stages.checkpoint import InitFromError
    from dsvl.stages.freezing import FreezeConfigError

    kinds = {ModelConfigError: ConfigError, FreezeConfigError: ConfigError,
             NonFiniteLossError: ConfigError,
             ConversationError: DataError, UnsafeCheckpointError: CheckpointError, InitFromError: CheckpointError,
             EvalError: UserError}
    for cls, kind in kinds.items():
        assert issubclass(cls, kind), cls


def test_a_user_error_wrapped_by_a_library_is_still_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Hydra's `instantiate` chains the user error as `__cause__`; a bug keeps its traceback."""
    from dsvl.cli._config import guarded
    from dsvl.errors import DataError

    def body() -> None:
        try:
            raise DataError("data mode must be one of grouped, mixed")
        except DataError as err:
            raise RuntimeError("Error in call to target 'DSVLDataModule'") from err

    with pytest.raises(SystemExit) as exit_:
        guarded("dsvl-x", body)
    assert exit_.value.code == 2 and capsys.readouterr().err == "dsvl-x: error: data mode must be one of grouped, mixed\n"
    with pytest.raises(KeyError):
        guarded("dsvl-x", lambda: {}["bug"])


def test_hydra_app_answers_like_dsvl_train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A console script made with `hydra_app`: a composition error and an error of the task are one line, exit 2."""
    from dsvl.cli._config import hydra_app

    @hydra_app("dsvl-x", config_name="eval")
    def main(cfg) -> None:
        print(cfg.checkpoint)  # `checkpoint: ???` in conf/eval.yaml: the user did not set it

    for argv, expected in ((["mc.shard=x"], "mc.shard"), ([f"hydra.run.dir={tmp_path}"], "checkpoint")):
        monkeypatch.setattr(sys, "argv", ["dsvl-x", *argv])
        with pytest.raises(SystemExit) as exit_:
            main()
        lines = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and len(lines) == 1 and lines[0].startswith("dsvl-x: error: "), lines
        assert expected in lines[0], lines[0]


def test_a_restarted_job_does_not_need_the_previous_stage(recipe) -> None:
    """`auto_resume=true` with this run's last.ckpt present resumes it: `init_from` is then never read."""
    from dsvl.cli.validate import validate_config
    from dsvl.errors import CheckpointError

    cfg = _with_override(_with_override(recipe[0], "auto_resume=true"), "init_from=/gone/last.ckpt")
    with pytest.raises(CheckpointError, match="init_from=/gone/last.ckpt: no such file"):
        validate_config(cfg)  # a first start needs the previous stage's weights
    last = Path(cfg.paths.ckpt_dir) / "last.ckpt"
    last.parent.mkdir(parents=True)
    torch.save({"global_step": 3, "state_dict": {}}, last)
    try:
        validate_config(cfg)
    finally:
        last.unlink()


def test_ckpt_path_hpc_resumes_a_requeue_checkpoint_or_says_there_is_none(recipe) -> None:
    """`ckpt_path=hpc` passes the value checks (Lightning finds the file); with no hpc_ckpt_<n>.ckpt the run
    path answers in one line instead of Lightning's ValueError."""
    from dsvl.cli.train import resume_from
    from dsvl.cli.validate import validate_config
    from dsvl.errors import CheckpointError

    cfg = _with_override(recipe[0], "ckpt_path=hpc")
    validate_config(cfg)
    with pytest.raises(CheckpointError, match=r"^ckpt_path=hpc: no hpc_ckpt_<n>\.ckpt in "):
        resume_from(cfg)
    run_dir = Path(cfg.trainer.get("default_root_dir") or cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": 3}, run_dir / "hpc_ckpt_1.ckpt")
    try:
        assert resume_from(cfg) == "hpc"
    finally:  # the recipe's run dir is shared by this module's tests
        (run_dir / "hpc_ckpt_1.ckpt").unlink()


def test_hydra_full_error_shows_the_traceback_of_a_user_error(monkeypatch: pytest.MonkeyPatch, caplog,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The one line hides where an error came from; HYDRA_FULL_ERROR=1 (Hydra's own switch) logs the chain first."""
    from dsvl.cli._config import guarded
    from dsvl.errors import ConfigError

    def body() -> None:
        raise ConfigError("model.adaptor: invalid settings")

    for value, logged in (("0", False), ("1", True)):
        monkeypatch.setenv("HYDRA_FULL_ERROR", value)
        caplog.clear()
        with pytest.raises(SystemExit):
            guarded("dsvl-x", body)
        assert capsys.readouterr().err == "dsvl-x: error: model.adaptor: invalid settings\n"
        assert any(r.exc_info for r in caplog.records) == logged
