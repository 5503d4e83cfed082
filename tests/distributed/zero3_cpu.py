"""Test helper: Lightning's `DeepSpeedStrategy` on CPU processes (gloo). DeepSpeed runs ZeRO-3 on its CPU accelerator;
only Lightning refuses it, in three places overridden here: `setup_environment` (CUDA only), `setup_distributed`
(device indices) and the device index it hands `deepspeed.initialize` (`root_device.index`, None on CPU). For tests
only: `check_strategy` keeps refusing `trainer=deepspeed*` on CPU for users (this class is not in a config)."""
from __future__ import annotations

import torch
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy
from lightning.fabric.utilities.seed import reset_seed


def skip_jit_ops() -> None:
    """Tell DeepSpeed that none of its C++ ops can be built, so that it neither probes the compiler for each nor
    JIT-compiles its shared-memory collectives on CPU (minutes on a fresh machine): it falls back to plain gloo."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__ = {}


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    def setup_environment(self) -> None:
        DDPStrategy.setup_environment(self)

    def setup_distributed(self) -> None:
        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    @property
    def root_device(self) -> torch.device:
        return torch.device("cpu", self.local_rank)
