"""`shard_model` cuts the VLM into FSDP2 units per component, in one process on a fake 2-rank group
(no communication: shapes, wrapping and gradient flow only; numerics are in test_distributed.py)."""
from __future__ import annotations

import pytest
import torch

fake_pg = pytest.importorskip("torch.testing._internal.distributed.fake_pg")


@pytest.fixture()
def mesh():
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("fake", store=fake_pg.FakeStore(), rank=0, world_size=2)
    try:
        yield init_device_mesh("cpu", (2,))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("tie", [False, True])
def test_units_per_component_and_frozen_towers_get_no_gradients(mesh, tie):
    from torch.distributed.fsdp import FSDPModule

    from dsvl.cli._config import compose
    from dsvl.cli.models import build_model
    from dsvl.stages.freezing import apply_freezing
    from dsvl.stages.strategies import is_sharded, shard_model

    model = build_model(compose(["model=tiny", f"model.llm.tie_word_embeddings={str(tie).lower()}"]).model)
    apply_freezing(model, ["adaptor", "llm"])  # stage 2: towers frozen
    blocks = tuple(model.block_classes())
    expected = {name: sum(isinstance(m, blocks) for m in part.modules()) for name, part in model.parts().items()}
    counts = shard_model(model, mesh=mesh)
    assert counts == expected and counts["llm"] == 2 and counts["vision.low"] == 2 and counts["vision.high"] == 2
    units = {n for n, m in model.named_modules() if isinstance(m, FSDPModule)}
    assert {"", "vision.low", "vision.high", "adaptor"} <= units
    # the VLM embeds tokens itself: an untied input embedding is its own unit; tied, it stays with the head in the root
    assert ("llm.model.embed_tokens" in units) is (not tie) and ("llm" in units) is (not tie)
    assert all(type(p).__name__ == "DTensor" for p in model.parameters())  # every weight sharded, frozen ones too
    assert is_sharded(model)

    n = model.num_image_tokens
    ids = torch.randint(0, 1000, (2, n + 8))
    ids[0, 2:2 + n] = model.image_token_id
    out = model(input_ids=ids, labels=ids, pixel_values=torch.randn(1, 3, 32, 32),
                high_res_pixel_values=torch.randn(1, 3, 64, 64))
    out.loss.backward()
    trained = [p for p in model.parameters() if p.requires_grad]
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert frozen and all(p.grad is None for p in frozen)
    assert all(p.grad is not None for p in trained)
